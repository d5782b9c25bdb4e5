"""Multi-node training through a Kubeflow Trainer v2 TrainJob (cong/cluster/: trainjob, kube, trainjob_run;
components/trainjob).

There is no Kubernetes cluster here. The tests speak the real protocols instead:
- the Kubernetes API: a local HTTP server on 127.0.0.1 implements the endpoints the library calls (custom
  objects create/get/delete for trainjobs, the task's own pod, pod list, pod log) the way the API server answers
  them (status codes, Status bodies, a followed log), and acts as the Trainer: on create it runs the job's command
  as the contract says (fetches the config and inputs from the URIs in the arguments, publishes a model at the output
  URI), then reports the job Complete or Failed;
- storage: a real SeaweedFS on 127.0.0.1 (the `store` fixture);
- the TrainJob schema: the manifests the component creates are parsed by the models of the PyPI package
  kubeflow-trainer-api 2.3.0 (generated from Kubeflow Trainer's OpenAPI spec) and must come back unchanged,
  so every field they use is one the schema declares, with its declared type;
- KFP: the compiled IR (both YAML documents).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from cong.cluster.kube import Cluster
from cong.cluster.trainjob import (
    API_VERSION,
    NAME_MAX,
    NEEDED,
    PLURAL,
    RUN_ANNOTATION,
    TaskSettings,
    job_name,
    manifest,
    trainer_command,
)
from cong.cluster.trainjob_run import delete_jobs, trainjob_keys
from cong.config import load_config
from cong.errors import CongError
from cong.stages.step import for_task
from cong.storage.folders import localize, publish_dir
from cong.storage.s3 import ensure_bucket
from cong.vocabulary import SFT_METHODS
from pipelines.compile import COMMITTED
from tests.conftest import compiled_documents

NAMESPACE = "team-a"
# A kfp.local run's id: the task reads it from its outputs' paths (cong.storage.runs).
RUN_ID = "cong-2026-12-07-08-00-00-000000"
# The task's pod and the run's Argo Workflow, its controller (argo-workflows v4.0.5, workflowpod.go).
POD_NAME = "cong-8c2f1-system-container-impl-4127"
WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "cong-8c2f1", "uid": "9b1e-wf-uid"}
ROOT = Path(__file__).resolve().parent.parent
JOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
DISCOVERY = "/apis/trainer.kubeflow.org/v1alpha1"
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# What the KFP driver puts in a task's dsl.TaskConfig (Kubernetes JSON, as backend/src/v2/driver builds it).
TASK = TaskSettings(
    resources={"limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}, "requests": {"cpu": "16"}},
    env=[
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "cong-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}},
        },
        {
            "name": "AWS_ENDPOINT_URL_S3",
            "valueFrom": {"configMapKeyRef": {"name": "cong-storage", "key": "AWS_ENDPOINT_URL_S3"}},
        },
        {"name": "HF_HOME", "value": "/tmp/a"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
    ],
    node_selector={"cloud.example.com/gpu": "h100"},
    affinity={
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    },
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    volumes=[{"name": "kfp-workspace", "persistentVolumeClaim": {"claimName": "run-1-kfp-workspace"}}],
    volume_mounts=[{"name": "kfp-workspace", "mountPath": "/kfp-workspace"}],
)


def assert_trainjob_schema(body):
    """The TrainJob parses with the published models and serializes back to the same object: a field the schema
    does not declare would be dropped, a wrong type rejected."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    assert TrainerV1alpha1TrainJob.from_dict(body).to_dict() == body


def launch_arguments_of(command):
    """The `cong.stages.launch` arguments in a trainer command, parsed by cong.stages.launch's own parser."""
    from cong.stages.launch import _inputs, make_parser

    args = make_parser().parse_args(command[command.index("cong.stages.launch") + 1 :])
    return args.stage, args.config, _inputs(args.input), args.output, args.method


class FakeKubernetes:
    """The Kubernetes API endpoints cong.cluster.trainjob calls, plus the Trainer's part: a created job runs `trainer`
    (the test's stand-in for the training nodes), then reports `outcome` after `polls` status reads."""

    def __init__(self, trainer=None, outcome=("Complete", "JobsCompleted", "all jobs completed"), polls=2):
        self.trainer, self.outcome, self.polls = trainer, outcome, polls
        self.jobs, self.reads, self.requests, self.fail = {}, {}, [], {}
        self.log_lines = ["loading model", "step 1/2 loss 2.31", "step 2/2 loss 1.87"]
        self.denied: set[tuple[str, str, str, str]] = set()  # (group, resource, subresource, verb) refused
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def host(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def cluster(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.host
        return Cluster(client.ApiClient(configuration), NAMESPACE, poll_s=0.05)

    def calls(self, method, path_prefix=""):
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)]

    def add(self, body, conditions=None):
        body = json.loads(json.dumps(body))
        body["status"] = {"conditions": conditions or []}
        self.jobs[body["metadata"]["name"]] = body
        self.reads[body["metadata"]["name"]] = 0

    def _status(self, name):
        """The job as the API returns it: the outcome appears after `polls` reads."""
        self.reads[name] += 1
        job = self.jobs[name]
        if self.reads[name] > self.polls and not job["status"]["conditions"]:
            kind, reason, message = self.outcome
            job["status"]["conditions"] = [{"type": kind, "status": "True", "reason": reason, "message": message}]
        return job

    def _pods(self, name):
        failed = self.jobs[name]["status"]["conditions"] and self.outcome[0] == "Failed"
        return [
            {
                "metadata": {
                    "name": f"{name}-node-0-{index}-x7k2p",
                    "namespace": NAMESPACE,
                    "uid": f"uid-{name}-{index}",
                    "labels": {
                        "jobset.sigs.k8s.io/jobset-name": name,
                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                        "batch.kubernetes.io/job-completion-index": str(index),
                    },
                },
                "status": {
                    "phase": "Failed" if failed and index == 1 else "Running",
                    "containerStatuses": [
                        {
                            "name": "node",
                            "image": "cong-train:0.1.0",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}}
                            if failed and index == 1
                            else {"running": {}},
                        }
                    ],
                },
            }
            for index in range(2)
        ]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _problem(self, status, reason, message):
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
                self._send(status, {**body, "reason": reason, "code": status})

            def _serve(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                request = {"method": method, "path": url.path, "query": parse_qs(url.query), "body": body}
                with fake.lock:
                    fake.requests.append(request)
                    if (method, url.path) in fake.fail:
                        return self._problem(*fake.fail[(method, url.path)])
                    self._route(method, url.path, request)

            def _route(self, method, path, request):
                name = path.rsplit("/", 1)[-1]
                if method == "POST" and path == JOBS:
                    body = request["body"]
                    if body["metadata"]["name"] in fake.jobs:
                        return self._problem(
                            409, "AlreadyExists", f'trainjobs "{body["metadata"]["name"]}" already exists'
                        )
                    if fake.trainer:
                        fake.trainer(body)
                    fake.add(body)
                    return self._send(201, fake.jobs[body["metadata"]["name"]])
                if path.startswith(JOBS + "/") and name not in fake.jobs:
                    return self._problem(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
                if method == "GET" and path.startswith(JOBS + "/"):
                    return self._send(200, fake._status(name))
                if method == "DELETE" and path.startswith(JOBS + "/"):
                    del fake.jobs[name]
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                if method == "GET" and path == PODS:
                    selector = request["query"]["labelSelector"][0]
                    job = selector.split("=", 1)[1]
                    items = fake._pods(job) if job in fake.jobs else []
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                if method == "GET" and path == DISCOVERY:
                    trainjobs = {"name": PLURAL, "singularName": "trainjob", "namespaced": True, "kind": "TrainJob"}
                    resources = [{**trainjobs, "verbs": ["create", "delete", "get", "list", "patch", "watch"]}]
                    listing = {"kind": "APIResourceList", "groupVersion": API_VERSION, "resources": resources}
                    return self._send(200, listing)
                if method == "POST" and path == REVIEWS:
                    spec = request["body"]["spec"]["resourceAttributes"]
                    assert spec["namespace"] == NAMESPACE
                    asked = (spec.get("group", ""), spec["resource"], spec.get("subresource", ""), spec["verb"])
                    return self._send(201, {**request["body"], "status": {"allowed": asked not in fake.denied}})
                if method == "GET" and path == f"{PODS}/{POD_NAME}":
                    owner = {**WORKFLOW, "controller": True, "blockOwnerDeletion": True}
                    meta = {"name": POD_NAME, "namespace": NAMESPACE, "ownerReferences": [owner]}
                    return self._send(200, {"kind": "Pod", "apiVersion": "v1", "metadata": meta})
                if method == "GET" and path.startswith(PODS + "/") and path.endswith("/log"):
                    text = "".join(f"{line}\n" for line in fake.log_lines).encode()
                    return self._send(200, text, "text/plain")
                return self._problem(404, "NotFound", f"no route {method} {path}")

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        return Handler


def rbac_verbs(requests) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of each request, as RBAC sees it: GET of a collection is `list`."""
    used = set()
    for r in requests:
        parts = r["path"].strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[parts.index("namespaces") + 2 :]
        resource = "/".join([rest[0], *rest[2:]])
        verb = {"POST": "create", "DELETE": "delete"}.get(r["method"], "get" if len(rest) > 1 else "list")
        used.add((group, resource, verb))
    return used


def needed_rules() -> set[tuple[str, str, str]]:
    """What cong.cluster.trainjob.NEEDED asks of the Role (tests/test_backend_rules.py checks the Role grants it)."""
    return {(group, resource, verb) for group, resource, verbs in NEEDED for verb in verbs}


def sft_config():
    sft = {"cpu": "32", "memory": "256Gi", "gpus": 8, "nodes": 4, "shm": "64Gi", "timeout": "12h"}
    return load_config(
        preset="tiny", overrides={"resources": {"sft": sft}, "scheduling": {"pod_labels": {"team": "a"}}}
    )


def a_training_node(settings, expected_config, expected_data: Path):
    """What the training nodes do with the job's command, checked against what the task published."""

    def train(body):
        stage, config_uri, inputs, output_uri, method = launch_arguments_of(body["spec"]["trainer"]["command"])
        assert (stage, method) == ("sft", "weak_sft")
        config = json.loads(Path(localize(config_uri, settings)).read_text())
        assert config == expected_config
        assert Path(localize(inputs["data"], settings)).read_bytes() == expected_data.read_bytes()
        model = expected_data.parent / "trained"
        model.mkdir()
        (model / "config.json").write_text('{"trained": true}')
        (model / "model.safetensors").write_bytes(b"\0" * 2048)
        publish_dir(model, output_uri, settings=settings)

    return train


def test_only_sft_and_dpo_accept_more_than_one_node():
    with pytest.raises(CongError, match=r"resources\.auxconf\.nodes = 2: only sft and dpo train on more than one"):
        load_config(preset="tiny", overrides={"resources": {"auxconf": {"nodes": 2}}})
    with pytest.raises(CongError, match=r"trainjob\.runtime"):
        load_config(preset="tiny", overrides={"trainjob": {"runtime": "mpi-distributed"}})
    assert load_config(preset="tiny", overrides={"resources": {"dpo": {"nodes": 2}}}).resources["dpo"].nodes == 2


def test_names_are_dns_labels_fixed_by_run_stage_and_method():
    names = {job_name(run, stage, method) for run in ("r1", "r2") for stage, method in (("sft", "cong_s"), ("dpo", ""))}
    assert len(names) == 4
    assert job_name("r1", "sft", "cong_s") == job_name("r1", "sft", "cong_s")
    long = job_name("x" * 300, "sft", "a-method-with-a-very-long-name_and_underscores")
    for name in [*names, long]:
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= NAME_MAX, name


def task_config(settings: TaskSettings):
    from kfp import dsl

    return dsl.TaskConfig(**vars(settings))


@pytest.fixture
def in_a_pod(store, monkeypatch):
    """The task's environment on the cluster: the store's settings and credentials as variables, and the
    Kubernetes API of `kube` (set by the test) as the pod's service account would reach it."""
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KFP_POD_NAME", POD_NAME)
    reach = {}
    monkeypatch.setattr(Cluster, "connect", classmethod(lambda cls, poll_s=10.0: reach["kube"].cluster()))
    return reach


def test_sft_component_runs_a_trainjob_end_to_end(store, in_a_pod, tmp_path, capfd):
    """The sft_trainjob component: create, stream the rank-0 log, wait for Complete, fetch the published model,
    delete. The body is a valid TrainJob that forwards the task's settings, its command's URIs hold what the
    task published, and the model artifact records its lineage."""
    from kfp import dsl

    from components.trainjob.component import sft_trainjob

    settings = store.settings()
    cfg = sft_config()
    ensure_bucket(cfg.storage.located().bucket, settings)
    run = tmp_path / "kfp" / RUN_ID
    data = dsl.Dataset(uri=str(run / "sft" / "data"))
    Path(data.path).parent.mkdir(parents=True)
    Path(data.path).write_text('{"prompt": "p", "response": "r"}\n')
    model, metrics = (
        dsl.Model(uri=str(run / "sft-trainjob" / "model")),
        dsl.Metrics(uri=str(run / "sft-trainjob" / "metrics")),
    )
    # The imported strong base: on the cluster the launcher made no copy that the training nodes could read, so the
    # config they get names its URI.
    strong_base = dsl.Model(uri="s3://cong/inputs/strong_base-0123", metadata={"digest": "sha256:0123"})
    expected, _ = for_task(cfg.as_parameter(), "sft", metrics, local_copies=False, strong_base=strong_base)
    assert expected["models"]["strong_base"] == strong_base.uri
    with FakeKubernetes(trainer=a_training_node(settings, expected, Path(data.path))) as kube:
        in_a_pod["kube"] = kube
        sft_trainjob.python_func(
            config=cfg.as_parameter(),
            strong_base=strong_base,
            data=data,
            model=model,
            metrics=metrics,
            task_config=task_config(TASK),
            method="weak_sft",
            image="registry.example.com/cong-train:0.1.0",
        )
        (create,) = kube.calls("POST", JOBS)
        (delete,) = kube.calls("DELETE", JOBS)
        assert kube.calls("GET", PODS), "the trainer pods were listed"
    assert rbac_verbs(kube.requests) == needed_rules(), "NEEDED is exactly what the stage uses"
    body = create["body"]
    name = job_name(RUN_ID, "sft", "weak_sft")
    assert_trainjob_schema(body)
    assert body["metadata"]["name"] == name and body["metadata"]["namespace"] == NAMESPACE
    assert body["metadata"]["annotations"][RUN_ANNOTATION] == RUN_ID
    assert body["metadata"]["ownerReferences"] == [WORKFLOW], "the run's Workflow owns the job"
    assert body["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    assert body["spec"]["activeDeadlineSeconds"] == 12 * 3600, "the stage's timeout bounds the job"
    trainer = body["spec"]["trainer"]
    assert trainer["image"] == "registry.example.com/cong-train:0.1.0"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    assert trainer["resourcesPerNode"] == TASK.resources
    assert trainer["command"][:3] == ["torchrun", "-m", "cong.stages.launch"]
    assert {e["name"]: e for e in trainer["env"]}["HF_HOME"] == {"name": "HF_HOME", "value": "/tmp/hf"}
    assert len(trainer["env"]) == 3, "one entry per variable (the API keys the list by name)"
    (patch,) = body["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node"
    labels = node["template"]["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/part-of": "cong",
        "cong/stage": "sft",
        "cong/workload": "training",
        "team": "a",
    }
    assert pod["nodeSelector"] == TASK.node_selector and pod["tolerations"] == TASK.tolerations
    assert pod["affinity"] == TASK.affinity
    writable = [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}
    assert pod["volumes"] == [*TASK.volumes, shm, *writable]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    assert container["volumeMounts"] == [
        *TASK.volume_mounts,
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": "/home/cong"},
    ]
    # Pod Security Standards "restricted": non-root, no escalation, no capability, the runtime's seccomp profile;
    # the root filesystem is read-only, and the trainer writes only to the volumes above.
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": True,
    }

    out = Path(model.path)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "config.json").read_text() == '{"trained": true}'
    assert metrics.metadata["nodes"] == 4 and metrics.metadata["procs_per_node"] == 8
    lineage = model.metadata
    assert (lineage["stage"], lineage["method"], lineage["trainjob"], lineage["nodes"]) == ("sft", "weak_sft", name, 4)
    assert lineage["run_id"] == RUN_ID
    assert lineage["inputs"] == {
        "strong_base": {"uri": strong_base.uri, "digest": "sha256:0123"},
        "data": {"uri": data.uri, "run_id": RUN_ID},
    }
    assert delete["path"] == f"{JOBS}/{name}" and delete["query"]["propagationPolicy"] == ["Foreground"]
    err = capfd.readouterr().err
    rank0 = f"{name}-node-0-0-x7k2p"
    assert f"[{rank0}] step 2/2 loss 1.87" in err
    assert f"{name}-node-0-1-x7k2p" not in err, "only rank 0's log is streamed"
    assert f"[trainjob] {name}: pods 2 Running" in err


def test_a_failed_dpo_trainjob_fails_the_task_and_is_deleted(store, in_a_pod, tmp_path):
    from kfp import dsl

    from components.trainjob.component import dpo_trainjob

    cfg = load_config(preset="tiny", overrides={"resources": {"dpo": {"nodes": 2}}})
    ensure_bucket(cfg.storage.located().bucket, store.settings())
    policy, pairs = dsl.Model(uri=str(tmp_path / "policy")), dsl.Dataset(uri=str(tmp_path / "pairs"))
    task = tmp_path / "kfp" / RUN_ID / "dpo-trainjob"
    Path(policy.path).mkdir()
    (Path(policy.path) / "config.json").write_text("{}")
    Path(pairs.path).write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    outcome = ("Failed", "JobsFailed", "node-0-1 exited with 137 (OOMKilled)")
    with FakeKubernetes(outcome=outcome) as kube:
        in_a_pod["kube"] = kube
        with pytest.raises(CongError, match=r"trainjob team-a/cong-dpo-\w+ failed: JobsFailed: .*OOMKilled"):
            dpo_trainjob.python_func(
                config=cfg.as_parameter(),
                model=policy,
                pairs=pairs,
                aligned=dsl.Model(uri=str(task / "aligned")),
                metrics=dsl.Metrics(uri=str(task / "metrics")),
                task_config=task_config(TaskSettings()),
            )
        (delete,) = kube.calls("DELETE", JOBS)
    assert delete["path"] == f"{JOBS}/{job_name(RUN_ID, 'dpo')}"
    assert not (task / "aligned").exists(), "nothing is published for a failed job"


def test_deepspeed_runtime_launches_with_mpirun_and_patches_both_jobs():
    env = [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}, {"name": "AWS_REGION", "value": "y"}]
    command = trainer_command("deepspeed-distributed", ["dpo", "--config", "s3://b/c.json"], [e["name"] for e in env])
    assert command[:3] == ["mpirun", "--hostfile", "/etc/mpi/hostfile"]
    assert command[3:7] == ["-x", "AWS_ACCESS_KEY_ID", "-x", "AWS_REGION"], "mpirun passes the env to other nodes"
    assert command[7:10] == ["python", "-m", "cong.stages.launch"]
    body = manifest(
        job_name(RUN_ID, "dpo"),
        namespace=NAMESPACE,
        runtime="deepspeed-distributed",
        runtime_ref="cong-deepspeed",
        image="cong-train:0.1.0",
        command=command,
        nodes=2,
        procs_per_node=1,
        task=TaskSettings(env=env, tolerations=TASK.tolerations),
        labels={"cong/stage": "dpo"},
        annotations={RUN_ANNOTATION: RUN_ID},
        shm=False,
    )
    assert_trainjob_schema(body)
    assert body["spec"]["runtimeRef"] == {"name": "cong-deepspeed"}, "a runtime whose node pods run our image"
    jobs = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [job["name"] for job in jobs] == ["launcher", "node"]
    assert "volumes" not in jobs[0]["template"]["spec"]["template"]["spec"], "one GPU a node: no /dev/shm volume"


def test_without_task_settings_the_runtime_defaults_apply():
    body = manifest(
        "cong-sft-0123456789",
        namespace=NAMESPACE,
        runtime="torch-distributed",
        image="cong-train:0.1.0",
        command=["torchrun", "-m", "cong.stages.launch", "sft"],
        nodes=2,
        procs_per_node=1,
        task=TaskSettings.of(object()),
        labels={},
        annotations={RUN_ANNOTATION: RUN_ID},
        shm=False,
    )
    assert_trainjob_schema(body)
    assert "resourcesPerNode" not in body["spec"]["trainer"]
    (patch,) = body["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert set(pod) == {"volumes", "containers"}, "only the trainer's privileges and writable folders are patched"
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]


def job_body(cluster, run_id=RUN_ID):
    name = job_name(run_id, "dpo")
    return manifest(
        name,
        namespace=cluster.namespace,
        runtime="torch-distributed",
        image="cong-train:0.1.0",
        command=["torchrun", "-m", "cong.stages.launch", "dpo"],
        nodes=2,
        procs_per_node=8,
        task=TaskSettings(),
        labels={},
        annotations={RUN_ANNOTATION: run_id},
        shm=False,
    )


def test_a_retry_adopts_the_running_job_and_replaces_a_failed_one():
    with FakeKubernetes() as kube:
        cluster = kube.cluster()
        body = job_body(cluster)
        name = body["metadata"]["name"]
        kube.add(body)
        cluster.create_or_adopt(body)
        assert len(kube.calls("POST", JOBS)) == 1 and not kube.calls("DELETE")
        cluster.wait(name, "torch-distributed")

        kube.add(body, [{"type": "Failed", "status": "True", "reason": "JobsFailed", "message": "OOMKilled"}])
        cluster.create_or_adopt(body)
        methods = [r["method"] for r in kube.requests if r["path"].startswith(JOBS)]
        assert methods[-5:] == ["POST", "GET", "DELETE", "GET", "POST"], "409, read, delete, gone, create"
        assert kube.jobs[name]["status"]["conditions"] == [], "the failed job was replaced by a new one"


def test_a_job_of_another_run_is_not_adopted():
    with FakeKubernetes() as kube:
        cluster = kube.cluster()
        mine = job_body(cluster)
        other = json.loads(json.dumps(mine))
        other["metadata"]["annotations"][RUN_ANNOTATION] = "another-run"
        kube.add(other)
        with pytest.raises(CongError, match=r"belongs to run 'another-run'.*kubectl delete trainjob"):
            cluster.create_or_adopt(mine)


def test_a_failed_job_is_reported_with_its_reason_and_failed_pods(capfd):
    outcome = ("Failed", "JobsFailed", "jobset node failed: node-0-1 exited with 137 (OOMKilled)")
    with FakeKubernetes(outcome=outcome) as kube:
        cluster = kube.cluster()
        body = job_body(cluster)
        cluster.create_or_adopt(body)
        with pytest.raises(CongError) as error:
            cluster.wait(body["metadata"]["name"], "torch-distributed")
    message = str(error.value)
    assert "OOMKilled" in message and "JobsFailed" in message
    assert f"{body['metadata']['name']}-node-0-1-x7k2p" in message and f"kubectl logs -n {NAMESPACE}" in message
    assert "pods 1 Failed (CrashLoopBackOff), 1 Running" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (
            403,
            "Forbidden",
            r'cannot create resource "trainjobs".*needs a Role in namespace team-a.*"create", "get", "delete"',
        ),
        (404, "NotFound", r"the server could not find the requested resource.*Kubeflow Trainer v2 installed"),
        (422, "Invalid", r"422 Unprocessable Entity.*spec.runtimeRef: unsupported runtime"),
    ],
)
def test_api_errors_reach_the_user_as_clear_messages(status, reason, expected):
    messages = {
        403: 'trainjobs.trainer.kubeflow.org is forbidden: User "system:serviceaccount:team-a:pipeline-runner" '
        'cannot create resource "trainjobs"',
        404: "the server could not find the requested resource",
        422: "spec.runtimeRef: unsupported runtime",
    }
    with FakeKubernetes() as kube:
        kube.fail[("POST", JOBS)] = (status, reason, messages[status])
        cluster = kube.cluster()
        with pytest.raises(CongError, match=expected):
            cluster.create_or_adopt(job_body(cluster))


def test_an_unreachable_api_server_is_named():
    with FakeKubernetes() as kube:
        cluster = kube.cluster()
        host = kube.host
    with pytest.raises(CongError, match=f"cannot reach the Kubernetes API at {host}"):
        cluster.get("cong-dpo-0123456789")


def test_without_a_cluster_the_stage_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(CongError, match="needs a cluster: run it with nodes: 1 here"):
        Cluster.connect()


def test_exit_handler_deletes_the_runs_jobs_by_name():
    cfg = load_config(preset="tiny", overrides={"resources": {"sft": {"nodes": 2}, "dpo": {"nodes": 2}}})
    keys = trainjob_keys(cfg)
    assert keys == [*(["sft", m] for m in SFT_METHODS), ["dpo", ""]]
    with FakeKubernetes() as kube:
        cluster = kube.cluster()
        left = job_body(cluster)
        kube.add(left)
        deleted = delete_jobs(RUN_ID, keys, cluster)
        assert deleted == [left["metadata"]["name"]] and not kube.jobs
        assert {r["path"] for r in kube.calls("DELETE")} == {f"{JOBS}/{job_name(RUN_ID, *key)}" for key in keys}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainjob") / "p.yaml"
    cfg = load_config(
        preset="qwen2.5-3b-to-7b",
        overrides={
            "resources": {
                "sft": {"cpu": "32", "memory": "256Gi", "gpus": 8, "nodes": 4},
                "dpo": {"cpu": "32", "memory": "384Gi", "gpus": 8, "nodes": 2},
            }
        },
    )
    return compiled_documents(cfg, out)


def test_multi_node_stages_compile_to_trainjob_tasks_with_passthroughs(compiled):
    spec, platform = compiled
    components = spec["components"]
    executors = spec["deploymentSpec"]["executors"]
    assert "exec-sft" not in executors and "exec-dpo" not in executors, "every sft and dpo task runs a TrainJob"
    for stage in ("sft-trainjob", "dpo-trainjob"):
        component = components[f"comp-{stage}"]
        assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
        passthroughs = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
        assert passthroughs == {
            "RESOURCES": False,
            "ENV": True,
            "KUBERNETES_NODE_SELECTOR": False,
            "KUBERNETES_AFFINITY": False,
            "KUBERNETES_TOLERATIONS": False,
            "KUBERNETES_VOLUMES": True,
        }
    resources = executors["exec-dpo-trainjob"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "8" and resources["resourceMemoryLimit"] == "384Gi"
    # What the passthroughs forward to the TrainJob: the storage env, the GPU pool's node selector and taints.
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-dpo-trainjob"]
    assert kube["secretAsEnv"][0]["secretName"] == "cong-s3-credentials"
    assert kube["nodeSelector"]["labels"] and kube["tolerations"], "the preset's default GPU pool"
    tasks = {name: t for c in components.values() for name, t in c.get("dag", {}).get("tasks", {}).items()}
    assert tasks["dpo-trainjob"]["retryPolicy"]["maxRetryCount"] == 2, "a retried task adopts its TrainJob"
    sft_tasks = [t for c in components.values() for t in c.get("dag", {}).get("tasks", {}).values()]
    methods = {
        t["inputs"]["parameters"]["method"]["runtimeValue"]["constant"]
        for t in sft_tasks
        if t["componentRef"]["name"].startswith("comp-sft-trainjob")
    }
    assert methods == set(SFT_METHODS)


def test_the_exit_handler_deletes_every_trainjob_whatever_happened(compiled):
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    cleanup = root["delete-trainjobs"]
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert cleanup["cachingOptions"] == {}, "cleanup is never a cache hit"
    assert cleanup["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    keys = cleanup["inputs"]["parameters"]["keys"]["runtimeValue"]["constant"]
    assert keys == [*(["sft", m] for m in SFT_METHODS), ["dpo", ""]]
    handler = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    (inner,) = handler.values()
    assert inner["componentRef"]["name"] == "comp-cong", "the whole DAG runs inside the exit handler"
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["resources"]["sft"]["nodes"] == 4


def test_single_node_configs_compile_without_trainjobs():
    """The committed pipeline (tiny preset, one node a stage; test_compile checks it matches a fresh compile)."""
    spec = next(yaml.safe_load_all(COMMITTED.read_text()))
    assert not any("trainjob" in name or "exit-handler" in name for name in spec["components"])
    assert {"exec-sft", "exec-dpo"} <= set(spec["deploymentSpec"]["executors"])


def test_the_plan_task_checks_the_clusters_trainjob_prerequisites(monkeypatch):
    """The pipeline's first task, in a pod, asks the API server (discovery, SelfSubjectAccessReviews) whether the
    TrainJob API is there and the service account has every verb the multi-node stages use."""
    from cong.stages.validate import cluster_problems

    cfg = load_config(preset="tiny", overrides={"resources": {"sft": {"nodes": 2}}})
    assert cluster_problems(load_config(preset="tiny")) == [], "no multi-node stage: nothing asked"
    with FakeKubernetes() as kube:
        monkeypatch.setattr(Cluster, "connect", classmethod(lambda cls, poll_s=10.0: kube.cluster()))
        assert cluster_problems(cfg) == []
        reviews = [r["body"]["spec"]["resourceAttributes"] for r in kube.calls("POST", REVIEWS)]
        asked = {
            (a.get("group", ""), "/".join(filter(None, (a["resource"], a.get("subresource")))), a["verb"])
            for a in reviews
        }
        assert asked == needed_rules()

        kube.denied = {("trainer.kubeflow.org", "trainjobs", "", "delete"), ("", "pods", "log", "get")}
        (problem,) = cluster_problems(cfg)
        assert problem.startswith("resources.sft.nodes > 1: the service account may not delete trainjobs, get pods/log")
        assert "manifests/base/role.yaml" in problem

        kube.fail[("GET", DISCOVERY)] = (404, "NotFound", "the server could not find the requested resource")
        (problem,) = cluster_problems(cfg)
        assert "Is Kubeflow Trainer v2 installed" in problem


SIGTERMED_TASK = """
import sys
from pathlib import Path

from cong.cluster.trainjob import TaskSettings
from cong.cluster.trainjob_run import run_stage
from cong.config import load_config

cfg = load_config(preset="tiny", overrides={"resources": {"dpo": {"nodes": 2}}, "storage": {"bucket": "cong"}})
output = ("aligned", Path(sys.argv[2]))
run_stage(cfg, "dpo", run_id=sys.argv[1], image="cong-train:0.1.0", task=TaskSettings(), inputs={}, output=output)
"""


def test_a_task_stopped_with_sigterm_deletes_its_job(store, tmp_path):
    """A terminated KFP run stops its pods (kubeflow/pipelines 2.17.0, backend/src/apiserver/resource/
    resource_manager.go TerminateWorkflow sets the Workflow's activeDeadlineSeconds to 0; argo-workflows v4.0.5,
    workflow/controller/exec_control.go then signals each running pod with `argoexec kill 15 1`, workflow/signal/
    signal.go, and the emissary passes SIGTERM on to the task's process). There is no cluster here. The process
    (connected through a kubeconfig, as outside a pod) deletes the job it is waiting for and exits 143, in one API
    request, well inside a pod's grace period."""
    ensure_bucket("cong", store.settings())
    with FakeKubernetes(polls=10**6) as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": kube.host}}],
                    "users": [{"name": "task", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "run", "context": {"cluster": "stand-in", "user": "task", "namespace": NAMESPACE}}
                    ],
                    "current-context": "run",
                }
            )
        )
        env = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
        env.update(store.env(), KUBECONFIG=str(kubeconfig))
        task = subprocess.Popen(
            [sys.executable, "-c", SIGTERMED_TASK, RUN_ID, str(tmp_path / "aligned")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not kube.calls("GET", f"{JOBS}/") and task.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert task.poll() is None, f"the task ended before its job ran: {task.stderr.read()}"
        assert kube.jobs, "the job is in flight"
        task.send_signal(signal.SIGTERM)
        assert task.wait(timeout=30) == 128 + signal.SIGTERM, task.stderr.read()
        name = job_name(RUN_ID, "dpo")
        assert [r["path"] for r in kube.calls("DELETE", JOBS)] == [f"{JOBS}/{name}"]
        assert not kube.jobs, "no job outlives the task"
