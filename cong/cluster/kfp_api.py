"""The Kubeflow Pipelines v2beta1 REST API, as `cong submit`, `cong schedule`, `cong runs` and `cong lineage` use it.

Plain HTTP (requests) rather than `kfp.Client`: every call is one request with a JSON body we build (so the
tests assert exactly what the backend receives), authentication is a bearer token or the login proxy's session
cookie, and every failure (an unreachable host, an HTTP error with the server's message, a login page instead of
JSON) becomes one CongError line. kfp.Client follows an auth proxy's redirect to its login page and reads the
page as an empty answer: behind Dex with an expired session, its `list_experiments()` returns no experiments
rather than an error (measured with kfp 2.17; the README's "Run it on a cluster" has the comparison). Request and
response fields are the v2beta1 protos' JSON names (snake_case), as in kfp-server-api.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from cong.errors import CongError

API = "/apis/v2beta1"
HOST_ENV = "KFP_HOST"
UI_ENV = "KFP_UI_URL"
NAMESPACE_ENV = "KFP_NAMESPACE"
EXPERIMENT_ENV = "KFP_EXPERIMENT"
TOKEN_ENV = "KFP_TOKEN"
# The session cookie of a multi-user Kubeflow's login proxy, as kfp.Client's `cookies` takes it:
# `authservice_session=...` (oidc-authservice, Dex) or `_oauth2_proxy=...` (oauth2-proxy).
COOKIES_ENV = "KFP_COOKIES"
# The projected service-account token a pod gets for the KFP API (the variable and path kfp's own client reads).
TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
TOKEN_FILE = "/var/run/secrets/kubeflow/pipelines/token"
PAGE_SIZE = 100
LOGIN_HINT = (
    f"Set {TOKEN_ENV} to a bearer token the KFP API accepts, or {COOKIES_ENV} to your login's session cookie (from "
    "the browser, logged in to Kubeflow: authservice_session=... for Dex/oidc-authservice, _oauth2_proxy=... for "
    "oauth2-proxy)."
)
# A run that has not finished reports this time (the protobuf zero timestamp).
UNSET_TIME = "1970-01-01T00:00:00Z"
# The oldest KFP backend the compiled pipeline runs on. Before 2.17.0 the driver resolves a dsl.OneOf over artifacts by
# taking its last selector, the Else placeholder in every branch of ours (backend/src/v2/driver/resolve.go,
# GetProducerTask; fixed by kubeflow/pipelines#13437, first released in 2.17.0), so every run fails at its first
# method branch; 2.15 also ignores the pods' security context.
OLDEST_BACKEND = (2, 17)


@dataclass(frozen=True)
class Connection:
    """Where the KFP API is and who we are: host, optional UI address, namespace (multi-user Kubeflow), a bearer
    token and/or the login proxy's session cookie."""

    host: str
    namespace: str | None = None
    ui: str | None = None
    token: str | None = field(default=None, repr=False)
    cookies: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, host: str | None = None, namespace: str | None = None, ui: str | None = None) -> Connection:
        """Flags first, then KFP_HOST / KFP_NAMESPACE / KFP_UI_URL; the token from KFP_TOKEN or the token file, the
        session cookie from KFP_COOKIES (secrets come from the environment, never from a command line)."""
        host = host or os.environ.get(HOST_ENV)
        if not host:
            raise CongError(
                f"no Kubeflow Pipelines host: pass --host URL or set {HOST_ENV}, e.g. http://localhost:8888 after "
                "`kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`, or your Kubeflow address + /pipeline."
            )
        if not re.match(r"^https?://[^/]", host):
            raise CongError(
                f"KFP host {host!r}: give the scheme, e.g. http://localhost:8888 or https://kf.example.com."
            )
        token = os.environ.get(TOKEN_ENV) or None
        token_file = Path(os.environ.get(TOKEN_FILE_ENV, TOKEN_FILE))
        if token is None and token_file.is_file():
            token = token_file.read_text().strip() or None
        return cls(
            host=host.rstrip("/"),
            namespace=namespace or os.environ.get(NAMESPACE_ENV) or None,
            ui=(ui or os.environ.get(UI_ENV) or host).rstrip("/"),
            token=token,
            cookies=os.environ.get(COOKIES_ENV) or None,
        )

    def page(self, route: str) -> str:
        """An address in the Kubeflow Pipelines UI, e.g. `runs/details/<id>`."""
        return f"{self.ui or self.host}/#/{route}"


class KfpClient:
    """One session against the v2beta1 API; every method returns the decoded JSON or raises CongError."""

    def __init__(self, connection: Connection, timeout: tuple[float, float] = (10, 120)):
        import requests

        self.connection = connection
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if connection.token:
            self.session.headers["Authorization"] = f"Bearer {connection.token}"
        if connection.cookies:
            self.session.headers["Cookie"] = connection.cookies

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import requests

        url = f"{self.connection.host}{API}{path}"
        where = f"KFP API {method} {API}{path}"
        try:
            # No redirects: an auth proxy answers an unauthenticated call with a redirect to its login page.
            response = self.session.request(method, url, timeout=self.timeout, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise CongError(
                f"cannot reach the Kubeflow Pipelines API at {self.connection.host} ({_reason(exc)}). Check --host / "
                f"{HOST_ENV} and that the port-forward or ingress is up."
            ) from None
        if 300 <= response.status_code < 400:
            raise CongError(
                f"{where}: redirected to {response.headers.get('Location', '?')} (HTTP {response.status_code}): the "
                f"endpoint wants a login. {LOGIN_HINT}"
            )
        if response.status_code >= 400:
            hint = {
                401: f" {LOGIN_HINT}",
                403: f" The token's identity may not act in namespace {self.connection.namespace or '(none)'}.",
            }.get(response.status_code, "")
            raise CongError(
                f"{where}: HTTP {response.status_code} {response.reason}: {_server_message(response)}.{hint}"
            )
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise CongError(
                f"{where}: the answer is not JSON ({response.headers.get('Content-Type', 'no content type')}): is "
                f"{self.connection.host} the KFP API (Kubeflow address + /pipeline), and is the token valid?"
            ) from None

    def pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, page by page."""
        token = ""
        while True:
            answer = self.request("GET", path, params={"page_size": PAGE_SIZE, **params, "page_token": token})
            yield from answer.get(key, [])
            token = answer.get("next_page_token", "")
            if not token:
                return

    def scoped(self, **params: Any) -> dict[str, Any]:
        """Query parameters with the namespace added where one is set."""
        namespace = self.connection.namespace
        return {**params, **({"namespace": namespace} if namespace else {})}

    def find(self, path: str, key: str, name: str, **params: Any) -> dict[str, Any] | None:
        """The item of a list whose display name (or name) is `name`. The server filters; we check the match."""
        query = {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]}
        for item in self.pages(path, key, self.scoped(filter=json.dumps(query), **params)):
            if name in (item.get("display_name"), item.get("name")):
                return item
        return None


def backend_version(client: KfpClient) -> str:
    """The backend's release as its healthz answer names it (`tag_name`: `2.17.0`; `unknown` from a build that was
    not given one). The answer is a plain HTTP handler's (backend/src/apiserver/main.go, newHealthzResponse), not a
    gRPC message: `{"commit_sha", "tag_name", "multi_user", "pipeline_store"}`."""
    return str(client.request("GET", "/healthz").get("tag_name") or "unknown")


def check_backend(client: KfpClient) -> str | None:
    """Refuse a backend older than OLDEST_BACKEND; returns a warning when its version cannot be told (a development
    build reports `unknown`, one built from master `master`), None when it is supported."""
    tag = backend_version(client)
    found = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?", tag)
    oldest = ".".join(map(str, OLDEST_BACKEND))
    if found is None:
        return (
            f"the Kubeflow Pipelines backend at {client.connection.host} reports version {tag!r}, which says nothing "
            f"of its release: this pipeline needs {oldest} or newer."
        )
    if (int(found.group(1)), int(found.group(2))) < OLDEST_BACKEND:
        raise CongError(
            f"the Kubeflow Pipelines backend at {client.connection.host} is {tag} (its healthz tag_name); this "
            f"pipeline needs {oldest} or newer: before 2.17.0 the driver resolves dsl.OneOf over artifacts by its last "
            f"branch (kubeflow/pipelines#13436), so every run would fail at its first method branch. Fix: upgrade "
            f"Kubeflow Pipelines to {oldest} or newer (its manifests' install or upgrade of the backend)."
        )
    return None


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    name: str
    uploaded: bool

    def reference(self) -> dict[str, str]:
        return {"pipeline_id": self.pipeline_id, "pipeline_version_id": self.version_id}


def version_name(label: str, package: bytes) -> str:
    """A version named from the compiled pipeline's content: the same code and config give the same name."""
    return f"{label}-{hashlib.sha256(package).hexdigest()[:16]}"


def upload(client: KfpClient, pipeline: str, package: Path, label: str, description: str) -> PipelineVersion:
    """The pipeline version holding `package`: created (with the pipeline, the first time) unless one of the
    same content exists, so that submitting the same code again adds nothing."""
    content = package.read_bytes()
    name = version_name(label, content)
    found = client.find("/pipelines", "pipelines", pipeline)
    if found is None:
        found = client.request(
            "POST",
            "/pipelines",
            json={
                "name": pipeline,
                "display_name": pipeline,
                "description": description,
                **({"namespace": client.connection.namespace} if client.connection.namespace else {}),
            },
        )
    pipeline_id = found["pipeline_id"]
    for version in client.pages(f"/pipelines/{pipeline_id}/versions", "pipeline_versions", {}):
        if name in (version.get("name"), version.get("display_name")):
            return PipelineVersion(pipeline_id, version["pipeline_version_id"], name, uploaded=False)
    created = client.request(
        "POST",
        "/pipelines/upload_version",
        params={"pipelineid": pipeline_id, "name": name, "display_name": name, "description": description},
        files={"uploadfile": (f"{name}.yaml", content, "application/x-yaml")},
    )
    return PipelineVersion(pipeline_id, created["pipeline_version_id"], name, uploaded=True)


def experiment_id(client: KfpClient, name: str, create: bool = True) -> str | None:
    """The id of the experiment `name` in the namespace, created when missing (None if not and not `create`)."""
    found = client.find("/experiments", "experiments", name)
    if found is not None:
        if found.get("storage_state") == "ARCHIVED":
            raise CongError(
                f"the experiment {name!r} is archived: restore it in the Kubeflow Pipelines UI, or pass --experiment "
                "with another name."
            )
        return found["experiment_id"]
    if not create:
        return None
    namespace = client.connection.namespace
    body = {"display_name": name, **({"namespace": namespace} if namespace else {})}
    return client.request("POST", "/experiments", json=body)["experiment_id"]


def runtime_config(parameters: dict[str, Any], pipeline_root: str | None) -> dict[str, Any]:
    return {"parameters": parameters, **({"pipeline_root": pipeline_root} if pipeline_root else {})}


def create_run(
    client: KfpClient,
    experiment: str,
    version: PipelineVersion,
    name: str,
    parameters: dict[str, Any],
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    body = {
        "display_name": name,
        "experiment_id": experiment,
        "pipeline_version_reference": version.reference(),
        "runtime_config": runtime_config(parameters, pipeline_root),
        **({"service_account": service_account} if service_account else {}),
    }
    return client.request("POST", "/runs", json=body)


def create_schedule(
    client: KfpClient,
    experiment: str,
    version: PipelineVersion,
    name: str,
    cron: str,
    parameters: dict[str, Any],
    catchup: bool = False,
    replace: bool = False,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A recurring run on `cron` (6 fields, seconds first; see cong.cluster.cron), one run at a time. A schedule of the
    same name in the experiment is an error, or with `replace` deleted first: the backend cannot change one."""
    # The list's key is camelCase: its proto field is named so (backend/api/v2beta1/recurring_run.proto).
    existing = client.find("/recurringruns", "recurringRuns", name, experiment_id=experiment)
    if existing is not None:
        if not replace:
            raise CongError(
                f"a schedule named {name!r} already exists in this experiment (id {existing['recurring_run_id']}, "
                f"cron {existing.get('trigger', {}).get('cron_schedule', {}).get('cron', '?')!r}): pass --replace to "
                "delete it and create it anew, or --name for another schedule."
            )
        client.request("DELETE", f"/recurringruns/{existing['recurring_run_id']}")
    namespace = client.connection.namespace
    body = {
        "display_name": name,
        "experiment_id": experiment,
        "pipeline_version_reference": version.reference(),
        "runtime_config": runtime_config(parameters, pipeline_root),
        "trigger": {"cron_schedule": {"cron": cron}},
        # int64 is a string in the protobuf JSON mapping; the backend accepts 1 to 10.
        "max_concurrency": "1",
        "no_catchup": not catchup,
        "mode": "ENABLE",
        **({"namespace": namespace} if namespace else {}),
        **({"service_account": service_account} if service_account else {}),
    }
    return client.request("POST", "/recurringruns", json=body)


def list_runs(client: KfpClient, experiment: str, limit: int) -> list[dict[str, Any]]:
    """The experiment's `limit` most recent runs, newest first."""
    params = client.scoped(experiment_id=experiment, page_size=min(limit, PAGE_SIZE), sort_by="created_at desc")
    return list(islice(client.pages("/runs", "runs", params), limit))


def get_run(client: KfpClient, run_id: str) -> dict[str, Any]:
    return client.request("GET", f"/runs/{run_id}")


def pipeline_spec(client: KfpClient, run: dict[str, Any]) -> dict[str, Any]:
    """The compiled pipeline a run executes: inline in the run, or its pipeline version's. A spec uploaded with a
    platform document comes back as {pipeline_spec, platform_spec} (2.17.0 backend/src/apiserver/server/api_util.go
    YamlStringToPipelineSpecStruct); the pipeline spec alone otherwise."""
    spec = run.get("pipeline_spec")
    if not spec:
        ref = run.get("pipeline_version_reference") or {}
        if not ref.get("pipeline_id") or not ref.get("pipeline_version_id"):
            raise CongError(f"run {run.get('run_id')} names neither a pipeline spec nor a pipeline version.")
        version = client.request("GET", f"/pipelines/{ref['pipeline_id']}/versions/{ref['pipeline_version_id']}")
        spec = version.get("pipeline_spec") or {}
    return spec["pipeline_spec"] if "pipeline_spec" in spec else spec


def _server_message(response: Any) -> str:
    """The server's own message: v2beta1 errors are google.rpc.Status JSON (`message`), the upload endpoints'
    `error_message` (backend/src/apiserver/server/pipeline_upload_server.go), older ones `error`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = isinstance(body, dict) and (body.get("message") or body.get("error_message") or body.get("error"))
    if message:
        return _one_line(str(message))
    return _one_line(response.text)[:500] or "(empty answer)"


def _reason(exc: Exception) -> str:
    """Why a request got no answer (`[Errno 111] Connection refused`), without urllib3's wrapping around it."""
    import requests

    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    cause = re.search(r"\[Errno -?\d+\] [^\"')]+", str(exc))
    return cause.group(0) if cause else f"{type(exc).__name__}: {_one_line(str(exc))[:300]}"


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")
