"""The cluster-side storage manifests: kfp-launcher, cong-storage and the credentials Secret, per overlay.

There is no cluster here. Each overlay (and `manifests/credentials`, from its committed example env file) is
rendered with kustomize when a kustomize v5 is on PATH (`kustomize` or `kubectl kustomize`), otherwise by the small
renderer below, which knows exactly the kustomize features these manifests use; when both are available their
outputs must be equal, so the fallback stays faithful. The rendered objects are checked against the published
Kubernetes OpenAPI schema (kubernetes-validate, bundled schemas, offline) and against what KFP's launcher reads from
`providers` (its Go structs: endpoint, region, disableSSL, forcePathStyle, credentials.secretRef).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
OVERLAYS = ("seaweedfs", "minio", "aws-s3")
PLACEHOLDER = "REPLACE_ME"
# ConfigMap, Secret and ServiceAccount have had the same schema for years; one recent version is enough.
KUBERNETES_VERSION = "1.32.0"
# KFP's launcher accepts a pipeline root of this shape (backend/src/v2/objectstore: bucketPattern).
PIPELINE_ROOT = re.compile(r"^s3://([^/?]+)(/[^?]*)?$")

# What each overlay must say: (endpoint in providers or None, disableSSL, forcePathStyle, CONG_S3_ADDRESSING).
EXPECTED = {
    "seaweedfs": ("http://seaweedfs.kubeflow:8333", True, True, "path"),
    "minio": ("http://minio-service.kubeflow:9000", True, True, "path"),
    "aws-s3": (None, False, False, "virtual"),
}


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


def render_in_python(folder: Path) -> list[dict]:
    """kustomize build for the features used here: resources, labels, secretGenerator from env files, patches."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "labels", "secretGenerator", "patches"}
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
@pytest.mark.parametrize("folder", [f"overlays/{name}" for name in OVERLAYS] + ["credentials"])
def test_python_renderer_matches_kustomize(tree, folder):
    assert by_name(render_in_python(tree / folder)) == by_name(render(tree / folder))


@pytest.mark.parametrize("name", [*OVERLAYS, "credentials"])
def test_rendered_objects_match_the_kubernetes_schema(rendered, name):
    for obj in rendered[name].values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", OVERLAYS)
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


@pytest.mark.parametrize("name", OVERLAYS)
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


@pytest.mark.parametrize("name", OVERLAYS)
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
