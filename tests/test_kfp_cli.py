"""`cong submit`, `cong schedule`, `cong runs` and `cong lineage RUN_ID` against the Kubeflow Pipelines API.

There is no KFP backend here, so these tests run the commands against a stand-in server on 127.0.0.1
(tests/kfp_server.py: the `kfp` fixture) that answers the v2beta1 endpoints they call as the backend does and records
every request, so the tests assert what the backend would receive.
"""

import hashlib
import re
import socket
import uuid
from datetime import timedelta

import pytest

from cong.cluster.cron import to_kfp_cron
from cong.cluster.kfp_runs import SpecDag
from cong.config import config_from_dict, load_config
from cong.errors import CongError
from pipelines.cli import main
from pipelines.compile import COMMITTED
from tests.kfp_server import API, SESSION, TOKEN, execute


def cong(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_uploads_the_compiled_pipeline_once_per_content_and_starts_runs(kfp, capsys):
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url, "--namespace", "team-a")
    assert code == 0, err
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in kfp.requests)

    (pipeline,) = kfp.pipelines.values()
    assert (pipeline["name"], pipeline["display_name"], pipeline["namespace"]) == ("cong", "cong", "team-a")
    (version,) = kfp.versions.values()
    expected = COMMITTED.read_bytes()  # the tiny preset's compiled pipeline (test_compile checks it is current)
    assert version["package"] == expected, "the uploaded package is the compiled pipeline for the config"
    assert version["name"] == f"tiny-{hashlib.sha256(expected).hexdigest()[:16]}"
    (experiment,) = kfp.experiments.values()
    assert (experiment["display_name"], experiment["namespace"]) == ("cong", "team-a")

    (body,) = [r["json"] for r in kfp.calls("POST", "/runs")]
    assert body["experiment_id"] == experiment["experiment_id"]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert body["runtime_config"] == {"parameters": {"config": load_config(preset="tiny").as_parameter()}}
    assert body["display_name"].startswith("tiny-")
    (run_id,) = kfp.runs
    assert f"{kfp.url}/#/runs/details/{run_id}" in out.splitlines()

    # The same code and config again: no new pipeline, version or experiment, one more run of the same version.
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url, "--namespace", "team-a")
    assert code == 0, err
    assert "already uploaded" in out
    assert (len(kfp.pipelines), len(kfp.versions), len(kfp.experiments), len(kfp.runs)) == (1, 1, 1, 2)
    assert len(kfp.calls("POST", "/pipelines/upload_version")) == 1
    assert {r["pipeline_version_reference"]["pipeline_version_id"] for r in kfp.runs.values()} == {
        version["pipeline_version_id"]
    }

    # Other methods compile to other content: a second version of the same pipeline.
    code, out, err = cong(
        capsys, "submit", "--preset", "tiny", "--methods", "base,cong", "--host", kfp.url, "--namespace", "team-a"
    )
    assert code == 0, err
    assert (len(kfp.pipelines), len(kfp.versions), len(kfp.runs)) == (1, 2, 3)
    newest = max(kfp.runs.values(), key=lambda r: r["created_at"])
    assert newest["runtime_config"]["parameters"]["config"]["methods"] == ["base", "cong"]


def test_submit_passes_a_store_pipeline_root_and_the_service_account(kfp, capsys, tmp_path):
    config = tmp_path / "root.yaml"
    config.write_text("extends: tiny\nname: rooted\npipeline_root: s3://cong/pipeline-root\n")
    code, out, err = cong(
        capsys, "submit", "--config", str(config), "--host", kfp.url, "--service-account", "cong-pipeline-runner"
    )
    assert code == 0, err
    (body,) = [r["json"] for r in kfp.calls("POST", "/runs")]
    assert body["runtime_config"]["pipeline_root"] == "s3://cong/pipeline-root"
    assert body["service_account"] == "cong-pipeline-runner"
    assert "namespace" not in kfp.calls("GET", "/experiments")[0]["query"], "no namespace unless one is set"


def test_schedule_sends_the_six_field_cron_one_at_a_time_without_catchup_and_replace_recreates(kfp, capsys):
    args = ["schedule", "--preset", "tiny", "--host", kfp.url, "--name", "nightly"]
    code, out, err = cong(capsys, *args, "--cron", "*/15 9-17 * * MON-FRI")
    assert code == 0, err
    (body,) = [r["json"] for r in kfp.calls("POST", "/recurringruns")]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 */15 9-17 * * MON-FRI"}}, "seconds first, never 5 fields"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "nightly"
    (version,) = kfp.versions.values()
    assert body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert body["runtime_config"]["parameters"]["config"] == load_config(preset="tiny").as_parameter()
    (first,) = kfp.schedules
    assert f"{kfp.url}/#/recurringrun/details/{first}" in out

    code, out, err = cong(capsys, *args, "--cron", "0 4 * * *")
    assert code == 2
    assert "--replace" in err and "nightly" in err and "Traceback" not in err
    assert list(kfp.schedules) == [first] and not kfp.calls("DELETE", f"/recurringruns/{first}")

    code, out, err = cong(capsys, *args, "--cron", "0 4 * * *", "--replace", "--catchup")
    assert code == 0, err
    assert len(kfp.calls("DELETE", f"/recurringruns/{first}")) == 1
    (second,) = kfp.schedules.values()
    assert second["recurring_run_id"] != first
    assert second["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
    assert second["no_catchup"] is False


@pytest.mark.parametrize(
    "cron, expected",
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("5 4 * * SUN", "0 5 4 * * SUN"),
        ("0 22 * * 1-5", "0 0 22 * * 1-5"),
        ("23 0-20/2 * * *", "0 23 0-20/2 * * *"),
        ("0 0,12 1 */2 *", "0 0 0,12 1 */2 *"),
        ("0 9 1-7 JAN-MAR mon", "0 0 9 1-7 JAN-MAR mon"),
        ("  0   3 * *  * ", "0 0 3 * * *"),
        ("@daily", "0 0 0 * * *"),
        ("@midnight", "0 0 0 * * *"),
        ("@hourly", "0 0 * * * *"),
        ("@monthly", "0 0 0 1 * *"),
        ("@YEARLY", "0 0 0 1 1 *"),
        ("0 30 2 * * ?", "0 30 2 * * ?"),
        ("*/10 * * * * *", "*/10 * * * * *"),
    ],
)
def test_cron_conversion(cron, expected):
    converted = to_kfp_cron(cron)
    assert converted == expected
    assert len(converted.split()) == 6
    if len(cron.split()) == 5:
        assert converted.split()[1:] == cron.split(), "the five Unix fields move one place right, unchanged"


@pytest.mark.parametrize(
    "cron, says",
    [
        ("0 3 * *", "has 4 fields"),
        ("0 0 3 * * * *", "has 7 fields"),
        ("", "has 0 fields"),
        ("60 * * * *", "minute 60 is out of range"),
        ("0 24 * * *", "hour 24 is out of range"),
        ("0 3 0 * *", "day of month 0 is out of range"),
        ("0 3 * 13 *", "month 13 is out of range"),
        ("0 3 * * 7", "write 0 (or SUN)"),
        ("0 3 * * FUN", "not a valid day of week"),
        ("0 3 * * 5-1", "runs backwards"),
        ("5/15 * * * *", "`5-59/15`"),
        ("*/0 * * * *", "step /0"),
        ("0 3 L * *", "not a valid day of month"),
        ("? 3 * * *", "only in the day fields"),
        ("@reboot", "unknown macro"),
        ("@every 1h", "unknown macro"),
        ("0 0 3 * MON *", "not a valid month"),
    ],
)
def test_cron_rejected_with_what_is_expected(cron, says):
    with pytest.raises(CongError, match=re.escape(says)):
        to_kfp_cron(cron)


def test_a_bad_cron_fails_before_any_request(kfp, capsys):
    code, out, err = cong(capsys, "schedule", "--cron", "0 3 * *", "--preset", "tiny", "--host", kfp.url)
    assert code == 2
    assert "expected a 5-field Unix cron" in err and "Traceback" not in err
    assert kfp.requests == []


def seed_run(kfp, experiment_id: str, name: str, state: str, minutes: int, finished: bool) -> str:
    run_id = str(uuid.uuid4())
    created = kfp.clock + timedelta(minutes=len(kfp.runs) * 100)
    kfp.runs[run_id] = {
        "run_id": run_id,
        "display_name": name,
        "experiment_id": experiment_id,
        "state": state,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": (created + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
        if finished
        else "1970-01-01T00:00:00Z",
    }
    return run_id


def test_runs_lists_the_newest_runs_and_shows_one_with_its_tasks(kfp, capsys):
    experiment = str(uuid.uuid4())
    kfp.experiments[experiment] = {"experiment_id": experiment, "display_name": "cong", "storage_state": "AVAILABLE"}
    ids = [
        seed_run(kfp, experiment, f"tiny-{i}", state, minutes, finished)
        for i, (state, minutes, finished) in enumerate(
            [("SUCCEEDED", 62, True), ("FAILED", 3, True), ("SUCCEEDED", 7, True), ("RUNNING", 0, False)]
        )
    ]
    code, out, err = cong(capsys, "runs", "--host", kfp.url, "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "id", "state", "created", "duration"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["tiny-3", ids[3], "RUNNING"],
        ["tiny-2", ids[2], "SUCCEEDED"],
        ["tiny-1", ids[1], "FAILED"],
    ], "newest first, paged through the server's pages, three of four"
    assert lines[2].endswith("7m 00s") and lines[3].endswith("3m 00s")
    assert "2026-11-23 13:00 UTC" in lines[1]


def submitted_run(kfp, capsys, methods: str) -> tuple[str, dict]:
    """A run of the tiny preset with `methods`, submitted through `cong submit`, and the plan task's outputs for it."""
    from cong.stages.plan import method_plan
    from cong.stages.shards import shard_items

    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--methods", methods, "--host", kfp.url)
    assert code == 0, err
    ((run_id, run),) = kfp.runs.items()
    cfg = config_from_dict(run["runtime_config"]["parameters"]["config"])
    return run_id, {**method_plan(cfg), **shard_items(cfg)}


def test_runs_shows_a_runs_tasks_by_their_display_names(kfp, capsys):
    """The server names each task by its Argo node (`<key>-driver`, `<key>`, `executor`, ...; tests/kfp_server.py
    `execute`): `cong runs RUN_ID` shows the tasks that ran by the spec's display names, in the order they started,
    leaves out the drivers, groups and cache entries, and counts the branches not taken and the cache's answers."""
    run_id, plan = submitted_run(kfp, capsys, "base,cong_s")
    execute(kfp, run_id, plan, cached=frozenset({"weak-align"}))
    assert any(t.get("display_name") == "sft-5-driver" for t in kfp.runs[run_id]["run_details"]["task_details"])
    code, out, err = cong(capsys, "runs", run_id, "--host", kfp.url)
    assert code == 0, err
    assert f"run {kfp.runs[run_id]['display_name']}  {run_id}" in out and "SUCCEEDED" in out
    assert "config    tiny (methods: base, cong_s)" in out
    table = out.split("\n\n")[1].splitlines()
    shown = [line.split("  ")[0] for line in table[1:]]
    (version,) = kfp.versions.values()
    display = {key: task["display"] for key, task in SpecDag(version["pipeline_spec"]["pipeline_spec"]).tasks.items()}
    assert (shown[0], shown[-1]) == (display["plan"], display["lineage"]), "in the order they started"
    names = set(shown)
    assert {display["sft-5"], display["cd-sample-2"], display["weak-align"], display["not-selected-8"]} <= names
    assert {display[key] for key in ("import-weak-base", "import-eval-prompts")} <= names, "each input's import"
    assert not names & {"root", "executor", "importer", "iteration-item"}, "Argo's structure is not a task"
    assert not any(name.endswith("-driver") or name.startswith(("condition", "for-loop")) for name in names)
    assert not names & {display["dpo"], display["wspo"], display["group-done-11"]}, "nothing from a branch not taken"
    assert "branches not taken: 11; tasks answered by the cache: 1" in out

    execute(kfp, run_id, plan, failed="sft-5")
    code, out, err = cong(capsys, "runs", run_id, "--host", kfp.url)
    assert "FAILED" in out.splitlines()[1]
    assert f"failed: {display['sft-5']}" in out
    assert display["evaluate"] not in out, "nothing after the failed task ran"


def test_runs_without_the_experiment_says_so(kfp, capsys):
    code, out, err = cong(capsys, "runs", "--host", kfp.url, "--experiment", "nothing-here")
    assert code == 2
    assert "no experiment 'nothing-here'" in err
    assert kfp.calls("POST", "/experiments") == [], "listing runs creates nothing"


@pytest.mark.parametrize(
    "command, failing, answer, says",
    [
        (
            "submit",
            ("POST", "/runs"),
            (400, {"error": "x", "code": 3, "message": "Invalid input error: runtime config\n is bad."}),
            "KFP API POST /apis/v2beta1/runs: HTTP 400 Bad Request: Invalid input error: runtime config is bad.",
        ),
        (
            "runs",
            ("GET", "/experiments"),
            (500, b"upstream connect error", "text/plain"),
            "KFP API GET /apis/v2beta1/experiments: HTTP 500 Internal Server Error: upstream connect error.",
        ),
        ("runs", ("GET", "/experiments"), (200, b"<html>Sign in</html>", "text/html"), "is not JSON (text/html)"),
        (
            "runs",
            ("GET", "/experiments"),
            (302, b"", "text/html", {"Location": "/dex/auth?client_id=kubeflow"}),
            "redirected to /dex/auth?client_id=kubeflow (HTTP 302): the endpoint wants a login. Set KFP_TOKEN",
        ),
    ],
)
def test_server_errors_are_one_clear_line(kfp, capsys, command, failing, answer, says):
    kfp.fail[(failing[0], f"{API}{failing[1]}")] = answer
    config = ["--preset", "tiny"] if command == "submit" else []
    code, out, err = cong(capsys, command, *config, "--host", kfp.url)
    assert code == 2
    assert err.startswith("cong: error: ") and says in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_token_and_unreachable_host(kfp, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("KFP_TOKEN")
    code, out, err = cong(capsys, "runs", "--host", kfp.url)
    assert code == 2
    assert "HTTP 401 Unauthorized: Unauthenticated" in err and "Set KFP_TOKEN" in err and "KFP_COOKIES" in err
    assert "Authorization" not in kfp.requests[-1]["headers"]

    # A multi-user Kubeflow behind its login proxy: the browser session's cookie, as kfp.Client(cookies=...) sends it.
    monkeypatch.setenv("KFP_COOKIES", SESSION)
    code, out, err = cong(capsys, "runs", "--host", kfp.url)
    assert "no experiment 'cong'" in err, "the session cookie authenticates"
    assert kfp.requests[-1]["headers"]["Cookie"] == SESSION and "Authorization" not in kfp.requests[-1]["headers"]
    assert SESSION not in out + err
    monkeypatch.delenv("KFP_COOKIES")

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    code, out, err = cong(capsys, "runs", "--host", kfp.url)
    assert "no experiment 'cong'" in err, "the mounted token file authenticates"
    assert kfp.requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = cong(capsys, "runs", "--host", closed)
    assert code == 2
    assert f"cannot reach the Kubeflow Pipelines API at {closed} ([Errno 111] Connection refused)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    monkeypatch.delenv("KFP_HOST", raising=False)
    code, out, err = cong(capsys, "runs")
    assert code == 2 and "pass --host URL or set KFP_HOST" in err


def spec_tasks(spec: dict) -> dict[str, tuple[str, str]]:
    """Every task of a compiled spec (nested DAGs included): its key -> (component, display name)."""
    found = {}
    for dag in [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]:
        found.update(
            {key: (task["componentRef"]["name"], task["taskInfo"]["name"]) for key, task in dag["tasks"].items()}
        )
    return found


def test_lineage_of_a_cluster_run_follows_the_dag_it_ran(kfp, capsys):
    """Without the run's lineage.json, the lineage comes from the spec (which the server returns wrapped with the
    platform document) and the task details (Argo node names): a ConG-S-only run, whose ConG branch was not taken."""
    run_id, plan = submitted_run(kfp, capsys, "base,cong_s")
    (version,) = kfp.versions.values()
    assert set(version["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}, "as the 2.17 server answers"
    run = execute(kfp, run_id, plan)
    code, out, err = cong(capsys, "lineage", run_id, "--host", kfp.url, "--ui-url", "https://kf.example.com/pipeline")
    assert code == 0, err
    assert out.startswith(f"run {run['display_name']} (config tiny, kfp run id {run_id})")
    assert f"https://kf.example.com/pipeline/#/runs/details/{run_id}" in out.splitlines()[0]
    assert "cong_s: sft-5/model" in out and "stage=sft, method=cong_s, config=tiny, state=SUCCEEDED" in out
    assert "stage=cd_sample, config=tiny, state=SUCCEEDED" in out
    assert "weak_aligned: weak-align/weak_aligned" in out and "stage=weak_align, config=tiny, state=SUCCEEDED" in out
    assert "stage=importer, config=tiny, state=SUCCEEDED" in out, "an importer by its input's sub-pipeline"
    assert "stage=not_selected" not in out, "placeholders of unselected branches are not lineage"
    assert "stage=dpo" not in out and "weak_sft" not in out and "wsd" not in out, "only the config's methods"
    assert "weak_base: testbed:weak  <- config models.weak_base" in out

    code, out, err = cong(capsys, "lineage", str(uuid.uuid4()), "--host", kfp.url)
    assert code == 2 and "HTTP 404 Not Found" in err and "not found" in err


def test_lineage_of_a_local_folder_is_unchanged(tmp_path, capsys):
    code, out, err = cong(capsys, "lineage", str(tmp_path))
    assert code == 2 and "has no lineage.json" in err
