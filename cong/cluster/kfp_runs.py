"""Runs on a Kubeflow Pipelines backend as `cong runs` and `cong lineage RUN_ID` show them.

The v2beta1 API reports a run (state, times, runtime config) and its tasks (name, state, times, and the
ML Metadata ids of their input and output artifacts where the backend fills them in); it does not report
artifact URIs or metadata, which the UI's artifact pages show. A finished run publishes its own lineage.json
(cong.stages.lineage), which `cong lineage RUN_ID` prints; before that, or without access to the store, `lineage`
here gives the DAG the run executed, read from its compiled pipeline spec (which task's output fed which task), with
each task's state and artifact id from the run's task details (matched to the spec's tasks by display name) and
each artifact's UI page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cong.errors import CongError

PLACEHOLDER_STAGE = "not_selected"
ROOT_STAGE = "evaluate"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time of the API; None for an unset one (a run that has not finished)."""
    if not value:
        return None
    # protobuf JSON writes up to 9 fractional digits; datetime reads at most 6.
    moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))
    return None if moment.timestamp() <= 0 else moment


def duration(start: str | None, end: str | None, now: datetime) -> str:
    """`1h 02m`, `3m 07s`: from start to end, or to now while running."""
    began, ended = parse_time(start), parse_time(end)
    if began is None:
        return "-"
    seconds = int(((ended or now) - began).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _when(value: str | None) -> str:
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def format_runs(runs: list[dict[str, Any]], now: datetime) -> str:
    """One line per run: name, id, state, created, duration (so far, while it runs)."""
    rows = [
        (
            run.get("display_name", ""),
            run.get("run_id", ""),
            run.get("state", "-"),
            _when(run.get("created_at")),
            duration(run.get("created_at"), run.get("finished_at"), now),
        )
        for run in runs
    ]
    return _table(("name", "id", "state", "created", "duration"), rows)


def format_run(run: dict[str, Any], url: str, now: datetime) -> str:
    """A run's status, its error if it failed, and the state of every task the backend reports."""
    lines = [
        f"run {run.get('display_name', '')}  {run.get('run_id', '')}",
        f"  state     {run.get('state', '-')}",
        f"  created   {_when(run.get('created_at'))}",
        f"  finished  {_when(run.get('finished_at'))}",
        f"  duration  {duration(run.get('created_at'), run.get('finished_at'), now)}",
        f"  url       {url}",
    ]
    config = (run.get("runtime_config") or {}).get("parameters", {}).get("config")
    if isinstance(config, dict) and "name" in config:
        lines.append(f"  config    {config['name']} (methods: {', '.join(config.get('methods', []))})")
    message = (run.get("error") or {}).get("message")
    if message:
        lines.append(f"  error     {' '.join(message.split())}")
    tasks = (run.get("run_details") or {}).get("task_details") or []
    if not tasks:
        lines += ["", "no task details reported yet."]
        return "\n".join(lines)
    rows = [
        (
            task.get("display_name", ""),
            task.get("state", "-"),
            _when(task.get("start_time")),
            duration(task.get("start_time"), task.get("end_time"), now),
            " ".join(((task.get("error") or {}).get("message") or "").split()),
        )
        for task in sorted(tasks, key=_started)
    ]
    lines += ["", _table(("task", "state", "started", "duration", "error"), rows)]
    return "\n".join(lines)


def _started(task: dict[str, Any]) -> tuple[str, str]:
    return task.get("start_time") or task.get("create_time") or "", task.get("display_name", "")


def run_config(run: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The config a run was started with: its runtime parameter, else the compiled default."""
    config = (run.get("runtime_config") or {}).get("parameters", {}).get("config")
    if config is None:
        default = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}).get("config", {})
        config = default.get("defaultValue")
    if not isinstance(config, dict) or "name" not in config:
        raise CongError(f"run {run.get('run_id')} has no cong config parameter: it is not a run of this pipeline.")
    return config


def lineage(run: dict[str, Any], spec: dict[str, Any], page: Callable[[str], str]) -> dict[str, Any]:
    """The lineage of a cluster run in the shape `cong.storage.lineage.render` prints: from each of the config's methods
    (an input of the evaluate task) back through the tasks whose outputs fed it. `page(route)` gives a UI URL."""
    config = run_config(run, spec)
    dag = SpecDag(spec)
    reported = {t.get("display_name"): t for t in (run.get("run_details") or {}).get("task_details") or []}
    evaluate = next((key for key, task in dag.tasks.items() if task["stage"] == ROOT_STAGE), None)
    if evaluate is None:
        raise CongError(f"run {run.get('run_id')}: its pipeline has no {ROOT_STAGE} task to start the lineage from.")
    artifacts: dict[str, dict[str, Any]] = {}

    def visit(task_key: str, output: str) -> str:
        key = f"{task_key}/{output}"
        if key in artifacts:
            return key
        task = dag.tasks[task_key]
        detail = reported.get(task["display"], {})
        ids = ((detail.get("outputs") or {}).get(output) or {}).get("artifact_ids") or []
        metadata = {"stage": task["stage"], **task["constants"], "config": config["name"]}
        if detail.get("state"):
            metadata["state"] = detail["state"]
        if ids:
            metadata["artifact_id"] = ids[0]
        node = {"uri": page(f"artifacts/{ids[0]}") if ids else None, "inputs": {}, "metadata": metadata}
        artifacts[key] = node
        for name in task["artifact_inputs"]:
            source = dag.source(task_key, name, reported)
            if source is not None:
                node["inputs"][name] = visit(*source)
        return key

    methods = {}
    for method in config.get("methods", []):
        if method in dag.tasks[evaluate]["artifact_inputs"]:
            source = dag.source(evaluate, method, reported)
            if source is not None:
                methods[method] = visit(*source)
    inputs = {
        name: {"uri": ref, "from": f"config {section}.{name}"}
        for section in ("models", "data")
        for name, ref in config.get(section, {}).items()
        if isinstance(ref, str)
    }
    header = {
        "id": run.get("display_name") or run.get("run_id"),
        "config": config["name"],
        "kfp_run_id": run.get("run_id"),
        "published": page(f"runs/details/{run.get('run_id')}"),
        "methods": methods,
    }
    return {"run": header, "inputs": inputs, "artifacts": artifacts}


class SpecDag:
    """The tasks of a compiled pipeline spec (nested DAGs of conditions, loops and sub-pipelines flattened) and where
    each executor's input artifacts come from. A task keeps its name as its key, unless another DAG has a task of
    that name (each input's sub-pipeline has an `importer`): then it is `<enclosing task>/<name>`."""

    def __init__(self, spec: dict[str, Any]):
        self.components = spec.get("components", {})
        self.tasks: dict[str, dict[str, Any]] = {}
        self._keys: dict[tuple[str | None, str], str] = {}
        found: list[tuple[str | None, str, dict[str, Any]]] = []
        self._walk(spec.get("root", {}).get("dag", {}), None, found)
        names = [name for _, name, _ in found]
        for parent, name, task in found:
            key = name if names.count(name) == 1 else f"{parent}/{name}"
            self._keys[(parent, name)] = key
            self.tasks[key] = {**task, "parent": parent}

    def _walk(self, dag: dict[str, Any], parent: str | None, found: list) -> None:
        for name, task in dag.get("tasks", {}).items():
            component_name = task["componentRef"]["name"]
            component = self.components.get(component_name, {})
            parameters = task.get("inputs", {}).get("parameters", {})
            entry = {
                "spec": task,
                "component": component_name,
                "name": name,
                "display": task.get("taskInfo", {}).get("name", name),
                "stage": re.sub(r"-\d+$", "", component_name.removeprefix("comp-")).replace("-", "_"),
                "constants": {
                    p: v["runtimeValue"]["constant"]
                    for p, v in parameters.items()
                    if p == "method" and "constant" in v.get("runtimeValue", {})
                },
                "artifact_inputs": list(task.get("inputs", {}).get("artifacts", {})),
            }
            found.append((parent, name, entry))
            if "dag" in component:
                # Names inside a DAG are unique there; the enclosing task's own key is settled once all are found.
                self._walk(component["dag"], self._pending(parent, name), found)

    @staticmethod
    def _pending(parent: str | None, name: str) -> str:
        return name if parent is None else f"{parent}/{name}"

    def key(self, parent: str | None, name: str) -> str:
        return self._keys[(parent, name)]

    def source(self, task_key: str, name: str, reported: dict[str, Any]) -> tuple[str, str] | None:
        """The executor task and output that fed input `name` of `task_key`. Of the branches a dsl.OneOf joins,
        the placeholder of an unselected method is not a source; where several remain, the one that succeeded."""
        candidates = [c for c in self.sources(task_key, name) if self.tasks[c[0]]["stage"] != PLACEHOLDER_STAGE]
        ran = [c for c in candidates if reported.get(self.tasks[c[0]]["display"], {}).get("state") == "SUCCEEDED"]
        chosen = ran or candidates
        return chosen[0] if chosen else None

    def sources(self, task_key: str, name: str) -> list[tuple[str, str]]:
        """Every executor task and output that may feed input `name` of `task_key` (all branches of a dsl.OneOf)."""
        task = self.tasks[task_key]
        spec = task["spec"].get("inputs", {}).get("artifacts", {}).get(name, {})
        if "taskOutputArtifact" in spec:
            out = spec["taskOutputArtifact"]
            return self._outputs(self.key(task["parent"], out["producerTask"]), out["outputArtifactKey"])
        if "componentInputArtifact" in spec and task["parent"] is not None:
            return self.sources(self._by_path(task["parent"]), spec["componentInputArtifact"])
        return []

    def _by_path(self, path: str) -> str:
        parent, _, name = path.rpartition("/")
        return self.key(parent or None, name)

    def _outputs(self, task_key: str, output: str) -> list[tuple[str, str]]:
        component = self.components.get(self.tasks[task_key]["component"], {})
        if "dag" not in component:
            return [(task_key, output)]
        selected = component["dag"].get("outputs", {}).get("artifacts", {}).get(output, {})
        inner = self._pending(self.tasks[task_key]["parent"], self.tasks[task_key]["name"])
        found = []
        for selector in selected.get("artifactSelectors", []):
            found += self._outputs(self.key(inner, selector["producerSubtask"]), selector["outputArtifactKey"])
        return found
