"""Runs on a Kubeflow Pipelines backend as `cong runs` and `cong lineage RUN_ID` show them.

The v2beta1 API reports a run (state, times, runtime config) and its task details, which the 2.17 server builds one
per Argo node of the run's workflow (kubeflow/pipelines 2.17.0, backend/src/apiserver/server/api_converter.go
toModelTasks): each is named as the Argo compiler names its nodes, by the spec's task keys (`<key>-driver`, `<key>`,
and `executor`, `root`, `iteration-...` around them; backend/src/v2/compiler/argocompiler), never by the display
names the UI shows; an untaken branch is SKIPPED with nothing inside; the launcher adds nameless entries for its cache;
and no task carries its artifacts or an error. So a task is found by its key in the compiled spec, and shown by the
spec's display name. A finished run publishes its own lineage.json (cong.stages.lineage), which `cong lineage RUN_ID`
prints; before that, or without access to the store, `lineage` here gives the DAG the run executed, read from its
compiled spec (which task's output fed which task), with each task's state.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cong.errors import CongError

PLACEHOLDER_STAGE = "not_selected"
ROOT_STAGE = "evaluate"
# The KFP SDK's names for the groups of a pipeline (dsl.Condition, If/Elif/Else, ParallelFor, ExitHandler): the
# Argo nodes of these are structure, not tasks a user started.
GROUP_KEY = re.compile(r"^(condition|condition-branches|for-loop|exit-handler)-\d+$")


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


def format_run(run: dict[str, Any], spec: dict[str, Any], url: str, now: datetime) -> str:
    """A run's status, its error if it failed, and the state of each of its tasks that ran (by the display name of
    the spec's task whose key the Argo node bears)."""
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
    details = (run.get("run_details") or {}).get("task_details") or []
    shown = {key: task["display"] for key, task in SpecDag(spec).tasks.items() if not GROUP_KEY.match(task["name"])}
    tasks = sorted((d for d in details if d.get("display_name") in shown), key=lambda d: d.get("start_time") or "")
    if not tasks:
        lines += ["", "no task details reported yet."]
        return "\n".join(lines)
    rows = [
        (
            shown[task["display_name"]],
            task.get("state", "-"),
            _when(task.get("start_time")),
            duration(task.get("start_time"), task.get("end_time"), now),
        )
        for task in tasks
    ]
    lines += ["", _table(("task", "state", "started", "duration"), rows)]
    skipped = sum(1 for d in details if GROUP_KEY.match(d.get("display_name", "")) and d.get("state") == "SKIPPED")
    # A cache hit is a task whose executor pod Argo skipped; the API does not say which task's executor it was.
    cached = sum(1 for d in details if d.get("display_name") == "executor" and d.get("state") == "SKIPPED")
    lines += ["", f"branches not taken: {skipped}; tasks answered by the cache: {cached}"]
    failed = [shown[t["display_name"]] for t in tasks if t.get("state") == "FAILED"]
    if failed:
        lines.append(f"failed: {', '.join(failed)} (its log: the task's page in the UI, or kubectl logs of its pod)")
    return "\n".join(lines)


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
    states = reported_states(run)
    evaluate = next((key for key, task in dag.tasks.items() if task["stage"] == ROOT_STAGE), None)
    if evaluate is None:
        raise CongError(f"run {run.get('run_id')}: its pipeline has no {ROOT_STAGE} task to start the lineage from.")
    artifacts: dict[str, dict[str, Any]] = {}

    def visit(task_key: str, output: str) -> str:
        key = f"{task_key}/{output}"
        if key in artifacts:
            return key
        task = dag.tasks[task_key]
        metadata = {"stage": task["stage"], **task["constants"], "config": config["name"]}
        if state := dag.state(task_key, states):
            metadata["state"] = state
        node = {"uri": None, "inputs": {}, "metadata": metadata}
        artifacts[key] = node
        for name in task["artifact_inputs"]:
            source = dag.source(task_key, name, states)
            if source is not None:
                node["inputs"][name] = visit(*source)
        return key

    methods = {}
    for method in config.get("methods", []):
        if method in dag.tasks[evaluate]["artifact_inputs"]:
            source = dag.source(evaluate, method, states)
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


def reported_states(run: dict[str, Any]) -> dict[str, str]:
    """The state of each named Argo node the run's task details report; a name that several nodes share (`executor`,
    an `importer` of each input) says nothing about one task and is left out."""
    named = [d for d in (run.get("run_details") or {}).get("task_details") or [] if d.get("display_name")]
    counts = collections.Counter(d["display_name"] for d in named)
    return {d["display_name"]: d.get("state", "") for d in named if counts[d["display_name"]] == 1}


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

    def state(self, task_key: str, states: dict[str, str]) -> str | None:
        """A task's state by its Argo node, named by its key; a task whose name other DAGs share (the importer of each
        input's sub-pipeline) by its enclosing task's node."""
        task = self.tasks[task_key]
        if task_key == task["name"]:
            return states.get(task_key)
        return states.get(task["parent"].rpartition("/")[2]) if task["parent"] else None

    def source(self, task_key: str, name: str, states: dict[str, str]) -> tuple[str, str] | None:
        """The executor task and output that fed input `name` of `task_key`. Of the branches a dsl.OneOf joins,
        the placeholder of an unselected method is not a source; where several remain, the one that succeeded."""
        candidates = [c for c in self.sources(task_key, name) if self.tasks[c[0]]["stage"] != PLACEHOLDER_STAGE]
        ran = [c for c in candidates if self.state(c[0], states) == "SUCCEEDED"]
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
