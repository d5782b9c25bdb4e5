"""A stand-in for the Kubeflow Pipelines API server, on 127.0.0.1, for the commands that speak to it.

It implements the v2beta1 endpoints `cong submit`, `schedule`, `runs` and `lineage RUN_ID` call, with the paths,
query parameters, JSON field names and error body (google.rpc.Status) of the published API (kfp-server-api 2.17),
and healthz as the 2.17.0 and 2.16.1 servers build it (kubeflow/pipelines backend/src/apiserver/main.go,
newHealthzResponse at 2.17.0; a hand-built string with a space after each comma at 2.16.1). It records every request,
so tests assert what the backend would receive.
"""

import email.parser
import email.policy
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
    return answer


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

        def error(self, status: int, message: str):
            self.answer(
                status, {"error": message, "code": {400: 3, 401: 16, 404: 5, 409: 6}[status], "message": message}
            )

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
        return h.error(404, f"Pipeline {query['pipelineid']} not found")
    if any(v["name"] == query["name"] for v in kfp.versions.values() if v["pipeline_id"] == query["pipelineid"]):
        return h.error(409, f"Already exist error: version {query['name']} already exists")
    version = {
        "pipeline_id": query["pipelineid"],
        "pipeline_version_id": str(uuid.uuid4()),
        "name": query["name"],
        "display_name": query.get("display_name", query["name"]),
        "created_at": kfp.now(),
        "pipeline_spec": next(yaml.load_all(package, Loader=yaml.CSafeLoader)),
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
        return h.error(404, f"Failed to get run: ResourceNotFoundError: Run {run_id} not found")
    h.answer(200, kfp.runs[run_id])


def list_schedules(h, kfp, query, record):
    items = [s for s in kfp.schedules.values() if s["experiment_id"] == query.get("experiment_id")]
    h.answer(200, listing(items, query, "recurring_runs"))


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
