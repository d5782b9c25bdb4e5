"""A stand-in for the Kubeflow Pipelines API server, on 127.0.0.1, for the commands that speak to it.

It implements the v2beta1 endpoints `cong submit`, `schedule`, `runs` and `lineage RUN_ID` call, with the paths and
query parameters of the published API (kfp-server-api 2.17), and answers in the shapes the 2.17.0 server's code builds
(kubeflow/pipelines at tag 2.17.0, backend/src/apiserver; files below are under it):
- JSON as protojson writes it with UseProtoNames and no unpopulated fields (common/utils.go CustomMarshaler): zero
  values, empty lists and empty maps are left out, so an empty list answer is `{}`; the recurring runs list's key is
  `recurringRuns`, as its proto names it (backend/api/v2beta1/recurring_run.proto);
- errors as grpc-gateway writes a google.rpc.Status, the short message again in `details` (common/util/error.go
  GRPCStatus); the multipart upload's as `{error_message, error_details}` (server/pipeline_upload_server.go
  writeErrorToResponse);
- healthz as main.go's newHealthzResponse writes it at 2.17.0, and as 2.16.1's hand-built string (a space after each
  comma);
- a pipeline version whose YAML has a platform document: its spec wrapped as {pipeline_spec, platform_spec}
  (server/api_util.go YamlStringToPipelineSpecStruct);
- a run's task details one per Argo node (server/api_converter.go toModelTasks, toApiPipelineTaskDetail), named as the
  Argo compiler names them (backend/src/v2/compiler/argocompiler), with the launcher's nameless cache entries
  (backend/src/v2/cacheutils/cache.go); see `execute`.
It records every request, so tests assert what the backend would receive.
"""

import email.parser
import email.policy
import hashlib
import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"
TOKEN = "test-bearer-token"
SESSION = "authservice_session=MTcwMDAwMDAwMHxEdi1CQkFFQ180SUFBUkFCRUFBQV8t"
# The server answers at most this many items per page (as a server may), so every list is read page by page.
SERVER_PAGE = 2


class FakeKfp:
    """The state of a KFP backend and the requests it got; `fail` maps (method, path) to a canned answer."""

    def __init__(self, version: str = "2.17.0"):
        self.version = version
        self.pipelines, self.versions, self.experiments, self.runs, self.schedules = {}, {}, {}, {}, {}
        self.requests = []
        self.fail = {}
        self.clock = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def now(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == f"{API}{path}"]


def listing(items: list[dict], query: dict, key: str) -> dict:
    """A list answer: the filter's EQUALS predicates applied, sorted, then one page."""
    if "filter" in query:
        for predicate in json.loads(query["filter"])["predicates"]:
            assert predicate["operation"] == "EQUALS"
            items = [i for i in items if i.get(predicate["key"]) == predicate["string_value"]]
    if query.get("sort_by") == "created_at desc":
        items = sorted(items, key=lambda i: i["created_at"], reverse=True)
    start = int(query.get("page_token") or 0)
    size = min(int(query.get("page_size", 20)), SERVER_PAGE)
    answer = {key: items[start : start + size], "total_size": len(items)}
    if start + size < len(items):
        answer["next_page_token"] = str(start + size)
    return {name: value for name, value in answer.items() if value}


def make_handler(kfp: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status: int, body, content_type="application/json", headers=None):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, message: str, short: str | None = None):
            """A google.rpc.Status: the wrapped message, and the short one in its details."""
            code = {400: 3, 401: 16, 404: 5, 409: 6}[status]
            detail = {"@type": "type.googleapis.com/google.rpc.Status", "code": code, "message": short or message}
            self.answer(status, {"code": code, "message": message, "details": [detail]})

        def upload_error(self, status: int, message: str):
            self.answer(status, {"error_message": message, "error_details": f"{message}\n(stack trace)"})

        def handle_any(self, method: str):
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record = {"method": method, "path": url.path, "query": query, "headers": dict(self.headers), "raw": raw}
            if self.headers.get("Content-Type", "").startswith("application/json"):
                record["json"] = json.loads(raw)
            kfp.requests.append(record)
            if (method, url.path) in kfp.fail:
                return self.answer(*kfp.fail[(method, url.path)])
            # As a multi-user Kubeflow's gateway: a bearer token, or the login proxy's session cookie.
            if self.headers.get("Authorization") != f"Bearer {TOKEN}" and self.headers.get("Cookie") != SESSION:
                return self.error(401, "Unauthenticated: missing or invalid bearer token")
            path = url.path.removeprefix(API)
            for pattern, route in ROUTES:
                match = re.fullmatch(pattern, f"{method} {path}")
                if match:
                    return route(self, kfp, query, record, *match.groups())
            self.error(404, f"no route for {method} {path}")

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_DELETE(self):
            self.handle_any("DELETE")

    return Handler


def healthz(h, kfp, query, record):
    """As the server of `kfp.version` writes it: 2.17's encoding/json of its healthzResponse (compact), 2.16's string
    with a space after each comma."""
    if kfp.version.startswith("2.16"):
        body = (
            f'{{"commit_sha":"0123abc", "tag_name":"{kfp.version}", "multi_user":false, "pipeline_store": "database"}}'
        )
        return h.answer(200, body.encode())
    h.answer(200, {"commit_sha": "0123abc", "tag_name": kfp.version, "multi_user": False, "pipeline_store": "database"})


def list_pipelines(h, kfp, query, record):
    items = [p for p in kfp.pipelines.values() if p.get("namespace", "") == query.get("namespace", "")]
    h.answer(200, listing(items, query, "pipelines"))


def create_pipeline(h, kfp, query, record):
    body = record["json"]
    if any(p["name"] == body["name"] for p in kfp.pipelines.values()):
        return h.error(409, f"Already exist error: pipeline {body['name']} already exists")
    pipeline = {**body, "pipeline_id": str(uuid.uuid4()), "created_at": kfp.now()}
    kfp.pipelines[pipeline["pipeline_id"]] = pipeline
    h.answer(200, pipeline)


def upload_version(h, kfp, query, record):
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + h.headers["Content-Type"].encode() + b"\r\n\r\n" + record["raw"]
    )
    files = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    package = files["uploadfile"].get_payload(decode=True)
    assert files["uploadfile"].get_filename().endswith(".yaml"), "the server picks the format by the file's extension"
    if query["pipelineid"] not in kfp.pipelines:
        return h.upload_error(404, f"Failed to create a pipeline version: Pipeline {query['pipelineid']} not found")
    if any(v["name"] == query["name"] for v in kfp.versions.values() if v["pipeline_id"] == query["pipelineid"]):
        return h.upload_error(409, f"Already exist error: version {query['name']} already exists")
    documents = list(yaml.load_all(package, Loader=yaml.CSafeLoader))
    platform = next((d for d in documents if "kubernetes" in (d.get("platforms") or {})), None)
    spec = next(d for d in documents if "platforms" not in d)
    version = {
        "pipeline_id": query["pipelineid"],
        "pipeline_version_id": str(uuid.uuid4()),
        "name": query["name"],
        "display_name": query.get("display_name", query["name"]),
        "created_at": kfp.now(),
        "pipeline_spec": {"pipeline_spec": spec, "platform_spec": platform} if platform else spec,
        "package": package,
    }
    kfp.versions[version["pipeline_version_id"]] = version
    h.answer(200, {k: v for k, v in version.items() if k != "package"})


def list_versions(h, kfp, query, record, pipeline_id):
    items = [
        {k: v for k, v in version.items() if k not in ("package", "pipeline_spec")}
        for version in kfp.versions.values()
        if version["pipeline_id"] == pipeline_id
    ]
    h.answer(200, listing(items, query, "pipeline_versions"))


def get_version(h, kfp, query, record, pipeline_id, version_id):
    version = kfp.versions.get(version_id)
    if version is None or version["pipeline_id"] != pipeline_id:
        return h.error(404, f"Pipeline version {version_id} not found")
    h.answer(200, {k: v for k, v in version.items() if k != "package"})


def list_experiments(h, kfp, query, record):
    items = [e for e in kfp.experiments.values() if e.get("namespace", "") == query.get("namespace", "")]
    h.answer(200, listing(items, query, "experiments"))


def create_experiment(h, kfp, query, record):
    experiment = {**record["json"], "experiment_id": str(uuid.uuid4()), "created_at": kfp.now()}
    experiment["storage_state"] = "AVAILABLE"
    kfp.experiments[experiment["experiment_id"]] = experiment
    h.answer(200, experiment)


def create_run(h, kfp, query, record):
    body = record["json"]
    if body["pipeline_version_reference"]["pipeline_version_id"] not in kfp.versions:
        return h.error(404, "Pipeline version not found")
    run = {**body, "run_id": str(uuid.uuid4()), "created_at": kfp.now(), "state": "PENDING"}
    run["finished_at"] = "1970-01-01T00:00:00Z"
    kfp.runs[run["run_id"]] = run
    h.answer(200, run)


def list_runs(h, kfp, query, record):
    items = [r for r in kfp.runs.values() if r["experiment_id"] == query.get("experiment_id")]
    h.answer(200, listing(items, query, "runs"))


def get_run(h, kfp, query, record, run_id):
    if run_id not in kfp.runs:
        message = f"Failed to get a run: Failed to fetch run {run_id}: ResourceNotFoundError: Run {run_id} not found"
        return h.error(404, message, f"Run {run_id} not found")
    h.answer(200, kfp.runs[run_id])


def list_schedules(h, kfp, query, record):
    items = [s for s in kfp.schedules.values() if s["experiment_id"] == query.get("experiment_id")]
    h.answer(200, listing(items, query, "recurringRuns"))


def create_schedule(h, kfp, query, record):
    body = record["json"]
    if not 1 <= int(body["max_concurrency"]) <= 10:
        return h.error(400, "Max concurrency of a recurring run must be at least 1 and at most 10")
    schedule = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": kfp.now(), "status": "ENABLED"}
    kfp.schedules[schedule["recurring_run_id"]] = schedule
    h.answer(200, schedule)


def delete_schedule(h, kfp, query, record, schedule_id):
    if kfp.schedules.pop(schedule_id, None) is None:
        return h.error(404, f"Recurring run {schedule_id} not found")
    h.answer(200, {})


ROUTES = [
    (r"GET /healthz", healthz),
    (r"GET /pipelines", list_pipelines),
    (r"POST /pipelines", create_pipeline),
    (r"POST /pipelines/upload_version", upload_version),
    (r"GET /pipelines/([^/]+)/versions", list_versions),
    (r"GET /pipelines/([^/]+)/versions/([^/]+)", get_version),
    (r"GET /experiments", list_experiments),
    (r"POST /experiments", create_experiment),
    (r"POST /runs", create_run),
    (r"GET /runs", list_runs),
    (r"GET /runs/([^/]+)", get_run),
    (r"GET /recurringruns", list_schedules),
    (r"POST /recurringruns", create_schedule),
    (r"DELETE /recurringruns/([^/]+)", delete_schedule),
]


def serve(state: FakeKfp) -> ThreadingHTTPServer:
    """Serve `state` on a free port of 127.0.0.1 (in a thread); sets `state.url`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


# ------------------------------------------------------------------------------------------------- a run, executed
# What the server reports of a run that Argo executed: one task per Argo node (server/api_converter.go toModelTasks
# takes every node of the workflow's status, of every type), whose display name is the Argo node's: the workflow's
# name for its root node, `root-driver` and `root`, then per task of the spec (argocompiler/dag.go): a container task
# K as `K-driver`, the DAG `K` and its pod `executor` (container.go; SKIPPED on a cache hit); a DAG task (a condition,
# a sub-pipeline) as `K-driver` and `K`, SKIPPED with nothing inside when its condition is false (argo-workflows
# v4.0.5 workflow/controller/dag.go); an importer as the pod `K` alone (importer.go); a ParallelFor K as `K`,
# `iteration-driver`, `iteration-iterations` and per item `iteration-iterations(i:i)`, `iteration-item-driver`,
# `iteration-item`. Every task's create_time is the workflow's; no task has inputs, outputs, error or pod_name
# (toApiPipelineTaskDetail: "TODO parse input and output artifacts"). The launcher adds one nameless task (no name,
# no state, an execution_id) per executed task whose cache is on (component/launcher_v2.go -> cacheutils CreateTaskV1).


def execute(kfp: FakeKfp, run_id: str, plan: dict, cached: frozenset = frozenset(), failed: str | None = None) -> dict:
    """Run `run_id` to its end as Argo would: `plan` holds the plan task's output parameters (which decide the
    conditions and the loops), `cached` the task keys the cache answers, `failed` the task key whose pod fails.
    Sets the run's state, times and task details as the server reports them; returns the run."""
    run = kfp.runs[run_id]
    version = kfp.versions[run["pipeline_version_reference"]["pipeline_version_id"]]
    spec = version["pipeline_spec"].get("pipeline_spec", version["pipeline_spec"])
    workflow = f"{spec['pipelineInfo']['name']}-x7k2p"
    argo = _Argo(kfp, spec, plan, cached, failed)
    top = argo.node(workflow, None)
    argo.node("root-driver", top, "Succeeded")
    root = argo.node("root", top)
    argo.finish(root, argo.dag(spec["root"]["dag"], root))
    argo.finish(top, argo.nodes[root]["phase"])
    state = "FAILED" if argo.nodes[top]["phase"] == "Failed" else "SUCCEEDED"
    details = []
    for node in argo.nodes:
        detail = {
            "run_id": run_id,
            "task_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{node['id']}")),
            "display_name": node["name"],
            "create_time": run["created_at"],
            "start_time": node["start"],
            "end_time": node["end"],
            "state": {"Succeeded": "SUCCEEDED", "Skipped": "SKIPPED", "Failed": "FAILED"}[node["phase"]],
            "child_tasks": [{"pod_name": child} for child in node["children"]],
        }
        detail["state_history"] = [{"update_time": node["end"], "state": detail["state"]}]
        details.append({key: value for key, value in detail.items() if value})
    for number, (start, end) in enumerate(argo.cache_entries, start=11):
        entry = {"run_id": run_id, "task_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/cache/{number}"))}
        details.append(
            {**entry, "create_time": start, "start_time": start, "end_time": end, "execution_id": str(number)}
        )
    # The tasks come from a GROUP_CONCAT without ORDER BY (storage/run_store.go): in no order a client may rely on.
    details.sort(key=lambda d: hashlib.sha256(d["task_id"].encode()).hexdigest())
    history = [{"update_time": run["created_at"], "state": "PENDING"}, {"update_time": kfp.now(), "state": "RUNNING"}]
    finished = kfp.now()
    run.update(state=state, finished_at=finished, state_history=[*history, {"update_time": finished, "state": state}])
    run["run_details"] = {"task_details": details}
    return run


class _Argo:
    """The Argo nodes of one run of `spec`, in the order they start."""

    def __init__(self, kfp: FakeKfp, spec: dict, plan: dict, cached: frozenset, failed: str | None):
        self.kfp, self.spec, self.plan, self.cached, self.failed = kfp, spec, plan, cached, failed
        self.nodes: list[dict] = []
        self.cache_entries: list[tuple[str, str]] = []

    def node(self, name: str, parent: int | None, phase: str | None = None) -> int:
        path = name if parent is None else f"{self.nodes[parent]['path']}.{name}"
        node_id = (
            path
            if parent is None
            else f"{self.nodes[0]['path']}-{int(hashlib.sha1(path.encode()).hexdigest()[:8], 16)}"
        )
        self.nodes.append({"name": name, "path": path, "id": node_id, "start": self.kfp.now(), "children": []})
        if parent is not None:
            self.nodes[parent]["children"].append(node_id)
        if phase:
            self.finish(len(self.nodes) - 1, phase)
        return len(self.nodes) - 1

    def finish(self, index: int, phase: str) -> str:
        self.nodes[index].update(phase=phase, end=self.kfp.now())
        return phase

    def dag(self, dag: dict, parent: int) -> str:
        """Run a DAG's tasks in dependency order; a task after a failed one is never started."""
        done: dict[str, str] = {}
        pending = dict(dag.get("tasks", {}))
        while pending:
            key, task = next(
                (k, t) for k, t in sorted(pending.items()) if set(t.get("dependentTasks", [])) <= set(done)
            )
            del pending[key]
            if any(done[d] == "Failed" for d in task.get("dependentTasks", [])):
                done[key] = "Failed"
                continue
            done[key] = self.task(key, task, parent)
        return "Failed" if "Failed" in done.values() else "Succeeded"

    def task(self, key: str, task: dict, parent: int) -> str:
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"].get(component.get("executorLabel", ""), {})
        if "importer" in executor:
            self.node(key, parent, "Succeeded")
            return "Succeeded"
        if "parameterIterator" in task:
            return self.loop(key, task, component, parent)
        self.node(f"{key}-driver", parent, "Succeeded")
        if "dag" in component:
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition and not self.holds(condition):
                self.node(key, parent, "Skipped")
                return "Skipped"
            inner = self.node(key, parent)
            return self.finish(inner, self.dag(component["dag"], inner))
        outer = self.node(key, parent)
        if key in self.cached:
            self.node("executor", outer, "Skipped")
            return self.finish(outer, "Succeeded")
        pod = self.node("executor", outer, "Failed" if key == self.failed else "Succeeded")
        if key != self.failed and task.get("cachingOptions", {}).get("enableCache"):
            self.cache_entries.append((self.nodes[pod]["start"], self.nodes[pod]["end"]))
        return self.finish(outer, self.nodes[pod]["phase"])

    def loop(self, key: str, task: dict, component: dict, parent: int) -> str:
        outer = self.node(key, parent)
        self.node("iteration-driver", outer, "Succeeded")
        channel = task["parameterIterator"]["items"]["inputParameter"]
        items = self.plan[channel.removeprefix("pipelinechannel--plan-")]
        group = self.node("iteration-iterations", outer, None if items else "Skipped")
        phases = []
        for index, _ in enumerate(items):
            iteration = self.node(f"iteration-iterations({index}:{index})", group)
            self.node("iteration-item-driver", iteration, "Succeeded")
            item = self.node("iteration-item", iteration)
            phases.append(self.finish(iteration, self.finish(item, self.dag(component["dag"], item))))
        if items:
            self.finish(group, "Failed" if "Failed" in phases else "Succeeded")
        return self.finish(outer, "Failed" if "Failed" in phases else "Succeeded")

    def holds(self, condition: str) -> bool:
        """The branch's trigger condition (CEL over the plan's outputs, as the driver evaluates it)."""
        expression = re.sub(r"inputs\.parameter_values\['pipelinechannel--plan-(\w+)'\]", r"plan['\1']", condition)
        expression = expression.replace("!(", "not (").replace("&&", " and ").replace("||", " or ")
        expression = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expression))
        return bool(eval(expression, {"__builtins__": {}}, {"plan": self.plan}))
