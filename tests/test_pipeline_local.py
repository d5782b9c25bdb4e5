"""The whole pipeline through kfp.local (SubprocessRunner, use_venv=False) on the micro testbed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cong.config import load_config
from cong.storage.embedded import EmbeddedObjectStore
from cong.storage.folders import fetch_dir, read_manifest
from cong.vocabulary import METHODS, MODEL_METHODS, SFT_METHODS
from tests.conftest import MICRO, ROOT
from tests.test_report import assert_report_renders


def cong_run_local(config, out, timeout=1200, extra=(), env=None):
    """`cong run --local` in a subprocess, as a user runs it."""
    command = [sys.executable, "-m", "pipelines.cli", "run", "--local", "--config", str(config), "--out", str(out)]
    command += list(extra)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def run_config(raw: dict, tmp_path: Path) -> tuple[Path, str]:
    """`cong run --local` of the config `raw` (written to tmp_path/c.yaml) into tmp_path/run; the test fails
    unless it succeeds. Returns the run folder and what the command printed."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    proc = cong_run_local(config, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_cong_run_local_all_methods(tmp_path, micro_testbed, store, kfp):  # noqa: F811 (the fixture imported above)
    """`--methods all` with an alpha sweep: every method's branch runs and gets its row.

    The run uses a server of the user's (`--s3-endpoint`, credentials in AWS_* variables): nothing is started,
    the run's inputs and outputs go to that server, and no credential value appears in any file of the run, its
    log, its output or the compiled pipeline. (The other local runs start the embedded store.)

    The same run as a cluster would report it: a fake KFP API (tests/test_kfp_cli.py) that knows the run by its KFP
    id, and the real store, where the run's lineage task published lineage.json: `cong lineage RUN_ID` prints the
    same tree as `cong lineage <run folder>`, but for where the artifacts are.
    """
    out = tmp_path / "run"
    secrets = [store.access_key_id, store.secret_access_key]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": secrets[0], "AWS_SECRET_ACCESS_KEY": secrets[1]}
    extra = ["--methods", "all", "--alpha-sweep", "0,0.5,1", "--s3-endpoint", store.endpoint_url]
    proc = cong_run_local(MICRO, out, extra=extra, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "win_rate_vs_base" in proc.stdout and "alpha sweep" in proc.stdout
    assert not (out / "objectstore").exists(), "no embedded store was started"

    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == list(METHODS)
    figures = {"reward_mean", "win_rate_vs_base", "accuracy", "style", "implicit_reward", "length_words"}
    for method, row in results["methods"].items():
        # Every row, WSD's included, under the primary (sampled) decoding and greedily.
        assert figures | {f"greedy_{f}" for f in figures} <= set(row), method
        for metric in ("reward_mean", "win_rate_vs_base", "greedy_reward_mean", "greedy_win_rate_vs_base"):
            assert row[f"{metric}_ci95_low"] <= row[metric] <= row[f"{metric}_ci95_high"], (method, metric)
        # The alignment tax: every model answers the testbed's held-out rows, and WSD by decoding them.
        assert row["downstream_testbed_n"] == results["methods"]["base"]["downstream_testbed_n"], method
    # The gap each row recovers between the aligned weak model (0) and the strong ceiling (1), on the reward and on
    # accuracy, under both decodings: wherever the two ends differ (the micro world's models may tie on accuracy).
    for prefix in ("", "greedy_"):
        weak, ceiling = (results["methods"][end] for end in ("weak_aligned", "strong_ceiling"))
        for metric in ("reward_mean", "accuracy"):
            pgr = f"{prefix}pgr_{metric.removesuffix('_mean')}"
            if weak[f"{prefix}{metric}"] == ceiling[f"{prefix}{metric}"]:
                assert not any(pgr in row for row in results["methods"].values()), "no gap, no PGR"
                continue
            assert (weak[pgr], ceiling[pgr]) == (0.0, pytest.approx(1.0))
            for method, row in results["methods"].items():
                assert row[f"{pgr}_ci95_low"] <= row[pgr] <= row[f"{pgr}_ci95_high"], (method, pgr)
    assert set(results["paired_tests"]["against"]) == set(METHODS) - {"cong"}
    assert [p["alpha"] for p in results["alpha_sweep"]] == [0.0, 0.5, 1.0]
    curves = json.loads((out / "training_curves.json").read_text())
    assert {"weak_aligned", "strong_ceiling", *MODEL_METHODS} <= set(curves)
    report = (out / "report.html").read_text()
    assert report.count("<img") == 4 and 'id="alpha-sweep"' in report and 'id="paired-tests"' in report
    assert_report_renders(out / "report.html", tmp_path)
    # The alignment tax per prompt, which a study's paired tests read: the rows' means are the table's.
    downstream = [json.loads(line) for line in (out / "downstream.jsonl").read_text().splitlines()]
    for method, row in results["methods"].items():
        mean = sum(d["correct"][method] for d in downstream) / len(downstream)
        assert mean == pytest.approx(row["downstream_accuracy"]) and row["downstream_accuracy_n"] == len(downstream)
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert set(METHODS) <= set(responses[0])

    (run,) = (out / "kfp").glob("cong-*")
    # The sampling stages' shards run inside ParallelFor iteration folders; each stage's merge is a task here.
    executed = {d.name for d in run.iterdir() if (d / "executor_output.json").is_file()}
    shards = {d.name for d in run.glob("for-loop-*/*") if not d.name.startswith("group-done")}
    assert shards == {"weak-sample-shard", "cd-sample-shard", "strong-sample-shard"}
    # Each shard, and each method's branch, ends with the task that tells KFP's backend the group is complete.
    assert len(list(run.glob("for-loop-*/group-done*"))) == 3
    assert sum(name.startswith("group-done") for name in executed) == 10
    assert not any(name.startswith("not-selected") for name in executed), "every branch was selected"
    # One CD pass and one weak alignment for the whole run; sft ran for cong_s, weak_sft, icl_refine, wsd_sft and the
    # strong ceiling.
    assert {"plan", "weak-align", "weak-sample", "cd-sample", "strong-sample", "pair", "dpo"} <= executed
    assert {"auxconf", "wspo", "icl-refine", "alpha-sweep", "evaluate"} <= executed
    assert sum(name.startswith("cd-sample") for name in executed) == 1
    assert sum(name.startswith("wsd") for name in executed) == 2
    sft_methods, run_ids = set(), set()
    cfg = load_config(MICRO, overrides={"stages": {"alpha_sweep": {"alphas": [0.0, 0.5, 1.0]}}})
    for task in executed:
        executor = json.loads((run / task / "executor_output.json").read_text()).get("artifacts", {})
        for name, output in executor.items():
            metadata = output["artifacts"][0]["metadata"]
            if name == "metrics":
                assert metadata, f"{task} logged no metrics"
            else:
                assert metadata["stage"] == re.sub(r"-\d+$", "", task).replace("-", "_"), task
                assert_metadata_schema(metadata, cfg, f"{task}/{name}")
                run_ids.add(metadata["run_id"])
                if metadata["stage"] == "sft":
                    sft_methods.add(metadata["method"])
    assert sft_methods == set(SFT_METHODS)
    # evaluate's Metrics, what the Kubeflow UI compares across runs: each row's reward and win rate, with intervals.
    shown = json.loads((run / "evaluate" / "executor_output.json").read_text())["artifacts"]["metrics"]
    figures = [f"{f}{s}" for f in ("reward_mean", "win_rate_vs_base") for s in ("", "_ci95_low", "_ci95_high")]
    assert shown["artifacts"][0]["metadata"] == {
        f"{m}.{f}": results["methods"][m][f] for m in results["methods"] for f in figures
    }
    assert len(run_ids) == 1 and "{{" not in run_ids.pop(), "every output names the run, resolved by KFP"
    assert results["settings"] == cfg.training_stages().model_dump(mode="json")
    assert results["settings"]["dpo"]["train"]["learning_rate"] == pytest.approx(100 * 6e-7)  # paper rate x 100
    assert results["settings"]["cd_sample"]["sampling"]["repetition_penalty"] == 1.2
    assert results["decodings"]["primary"]["greedy"] is False and results["decodings"]["greedy"]["greedy"] is True
    assert results["testbed"]["sha256"] == json.loads((micro_testbed / "card.json").read_text())["world_sha256"]
    assert f"testbed world sha256 {results['testbed']['sha256']}" in proc.stdout
    # The gates: the world's from its card, the weak pair's as weak_align measured them; the micro world fails
    # some, and the run (allowed past them) says so in results.json, on the terminal and in the report.
    gate_names = [g["name"] for g in results["testbed"]["gates"]]
    assert gate_names == [
        "capability",
        "latent_capability",
        "no_shortcut",
        "weak_signal",
        "implicit_reward",
        "mild_shift",
    ]
    assert results["failed_gates"] == [g["name"] for g in results["testbed"]["gates"] if not g["passed"]] != []
    assert "WARNING: this run went on past failed gates" in proc.stdout
    assert 'id="gates"' in report and "went on past failed gates" in report
    # Per-prompt rewards, for analyses across runs (cong study): they average to each row's reward.
    for method, row in results["methods"].items():
        mean = sum(r["reward"][method] for r in responses) / len(responses)
        assert mean == pytest.approx(row["reward_mean"]), method
    assert set(results["alpha_sweep_rewards"]["by_alpha"]) == {"0", "0.5", "1"}
    diagnostics = results["diagnostics"]
    assert 0 <= diagnostics["dpo_pairs_chosen_below_rejected"] <= 1
    assert -1 <= diagnostics["cd_implicit_explicit_spearman"] <= 1
    lineage = json.loads((out / "lineage.json").read_text())
    assert set(lineage["run"]["methods"]) == set(results["methods"]) - {"base"}
    assert_wiring(lineage)
    # The imported inputs: each with its reference, URI and digest (a model's also its vocabulary size), as the
    # fetch task described it, its importer registered it; every stage that read one recorded that digest.
    imported = {key: node for key, node in lineage["artifacts"].items() if node["metadata"]["stage"] == "import"}
    assert set(imported) == {f"inputs/{f}" for f in ("weak_base", "strong_base", "train_prompts", "eval_prompts")}
    for key, node in imported.items():
        metadata = node["metadata"]
        assert metadata["uri"] == node["uri"] == results["artifacts"]["inputs"][key.split("/")[1]]["uri"], key
        assert metadata["reference"].startswith("testbed:") and re.fullmatch(r"sha256:[0-9a-f]{64}", metadata["digest"])
        assert ("vocab_size" in metadata) == key.endswith("_base"), key
    readers = [
        node for node in lineage["artifacts"].values() if any(k.startswith("inputs/") for k in node["inputs"].values())
    ]
    assert len(readers) > 10
    tree = cong_lineage(str(out), env)
    for key, node in imported.items():
        assert f"{key.split('/')[1]}: {key}  {node['uri']}" in tree, key
        assert f"digest={node['metadata']['digest'][:23]}..." in tree, key
    assert "cong: dpo/aligned" in tree and "pairs: pair/pairs" in tree and "(testbed:strong)" in tree
    assert "wsd: wsd" in tree and "stage=wsd" in tree
    assert "weak_aligned: weak-align/weak_aligned" in tree and "(testbed:weak)" in tree
    submitted = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "submit", "--config", str(MICRO), "--host", kfp.url],
        capture_output=True,
        text=True,
        env=env,
    )
    assert submitted.returncode == 0, submitted.stderr
    ((_, submitted_run),) = kfp.runs.items()
    kfp_id = lineage["run"]["kfp_run_id"]
    kfp.runs[kfp_id] = {**submitted_run, "run_id": kfp_id, "state": "SUCCEEDED"}
    # The run took its namespace's default pipeline root, which the KFP API does not report: the user names it.
    root = ["--pipeline-root", "s3://cong"]
    cluster = cong_lineage(kfp_id, env, "--host", kfp.url, "--s3-endpoint", store.endpoint_url, *root)
    assert f"The run's lineage.json: s3://cong/runs/{kfp_id}/results/lineage.json" in cluster
    assert f"kfp run id {kfp_id}" in cluster.splitlines()[0]
    assert without_locations(cluster) == without_locations(tree)
    published = cong_lineage(results["artifacts"]["methods"]["wsd"], env, "--s3-endpoint", store.endpoint_url)
    assert published.splitlines()[2].endswith(results["artifacts"]["methods"]["wsd"])
    assert "(testbed:train)" in published
    dpo = json.loads((run / "dpo" / "executor_output.json").read_text())["artifacts"]["aligned"]["artifacts"][0]
    assert dpo["metadata"]["beta"] == load_config(MICRO).stages.dpo.train.beta
    assert (run / "dpo" / "aligned" / "model.safetensors").is_file()
    assert_published(results, store.settings())

    compiled = tmp_path / "pipeline.yaml"
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "compile", "--config", str(MICRO), "--out", str(compiled)],
        check=True,
        env=env,
        capture_output=True,
    )
    written = [p for p in out.rglob("*") if p.is_file()] + [compiled]
    assert len(written) > 20 and out / "pipeline.log" in written
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr
        leaks = [p for p in written if secret.encode() in p.read_bytes()]
        assert not leaks, f"a credential in {leaks}"


def metadata_schema() -> dict[str, str]:
    """The README's table of what every output artifact records: key -> when (`always`, or a condition)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Artifact metadata", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    return {key: when.strip() for key, when in rows}


def assert_metadata_schema(metadata: dict, cfg, where: str) -> None:
    """One output's metadata against the README's schema: every `always` key, the stage's resolved settings, each
    input by URI (an imported one, and any output of the run, also by digest), and no input replaced by the marker
    of one the stage was not given."""
    from cong.inputs.refs import NOT_IMPORTED

    schema = metadata_schema()
    assert {k for k, when in schema.items() if when == "always"} <= set(metadata), where
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", metadata["digest"]), where
    assert metadata.get("settings", {}) == cfg.stage_settings(metadata["stage"], metadata.get("method")), where
    for name, source in metadata.get("inputs", {}).items():
        assert set(source) <= {"uri", "digest", "run_id"} and source["uri"], (where, name)
        assert source.get("run_id", metadata["run_id"]) == metadata["run_id"], (where, name)
        if name in ("weak_base", "strong_base", "train_prompts", "eval_prompts"):
            assert source["digest"].startswith("sha256:"), (where, name)
    assert NOT_IMPORTED not in json.dumps(metadata), where


def assert_wiring(lineage: dict) -> None:
    """Each method's row comes from the model its method makes, made from the inputs the method prescribes: read
    from the lineage, i.e. from what each stage recorded it read. ConG: DPO of the ConG-S model (its own frozen copy
    the reference) on pairs with the CD response chosen and ConG-S's own sample rejected."""
    artifacts, rows = lineage["artifacts"], lineage["run"]["methods"]

    def made(key: str, stage: str, method: str | None = None) -> dict:
        node = artifacts[key]
        assert node["metadata"]["stage"] == stage, (key, stage)
        assert method is None or node["metadata"]["method"] == method, (key, method)
        return node["inputs"]

    weak_aligned = rows["weak_aligned"]
    train_prompts = made(weak_aligned, "weak_align")["train_prompts"]
    ceiling = made(rows["strong_ceiling"], "sft", "strong_ceiling")
    assert ceiling["data"] == train_prompts and ceiling["strong_base"] == made(rows["cong_s"], "sft")["strong_base"]
    cong = made(rows["cong"], "dpo")
    assert cong["model"] == rows["cong_s"] and artifacts[rows["cong"]]["metadata"]["reference"] == "input model, frozen"
    pairs = made(cong["pairs"], "pair")
    cd = pairs["chosen"]
    assert made(cd, "cd_sample")["weak_aligned"] == weak_aligned
    assert made(pairs["rejected"], "strong_sample")["model"] == rows["cong_s"]
    assert made(rows["cong_s"], "sft", "cong_s")["data"] == cd
    weak_labels = made(rows["weak_sft"], "sft", "weak_sft")["data"]
    assert made(weak_labels, "weak_sample")["weak_aligned"] == weak_aligned
    assert made(rows["auxconf"], "auxconf")["data"] == weak_labels
    wspo = made(rows["wspo"], "wspo")
    assert wspo["weak_aligned"] == weak_aligned and set(made(wspo["data"], "weak_align")) == {
        "weak_base",
        "train_prompts",
    }
    assert made(made(rows["icl_refine"], "sft", "icl_refine")["data"], "icl_refine")["data"] == weak_labels
    wsd_labels = made(rows["wsd_sft"], "sft", "wsd_sft")["data"]
    assert made(wsd_labels, "wsd")["weak_aligned"] == weak_aligned
    assert artifacts[wsd_labels]["metadata"]["split"] == "train"
    assert made(rows["wsd"], "wsd")["weak_aligned"] == weak_aligned
    assert artifacts[rows["wsd"]]["metadata"]["split"] == "eval"


def assert_published(results, settings):
    """Every method's model or responses and the results are in the store, and their manifests verify."""
    from cong.storage.folders import fetch_dir, localize

    artifacts = results["artifacts"]
    assert artifacts["run"] == f"s3://cong/runs/{results['run']['id']}"
    assert set(artifacts["methods"]) == set(results["methods"])
    assert artifacts["methods"]["base"] == artifacts["inputs"]["strong_base"]["uri"]
    assert {i["from"] for i in artifacts["inputs"].values()} >= {"testbed:train", "testbed:eval", "testbed:weak"}
    for uri in [artifacts["results"], *artifacts["methods"].values()]:
        assert Path(localize(uri, settings)).exists(), uri
    published = json.loads((fetch_dir(artifacts["results"], settings=settings) / "results.json").read_text())
    assert published["artifacts"] == artifacts


def test_malformed_prompt_row_exits_2(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "What is 1 + 1?"}\n{"id": "b"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"extends: tiny\nname: bad\ndata:\n  train_prompts: {prompts}\n  eval_prompts: {prompts}\n"
        f"testbed: {json.dumps(load_config(MICRO).testbed.model_dump())}\n"
    )
    proc = cong_run_local(config, tmp_path / "run", timeout=600)
    assert proc.returncode == 2
    for field in ("train_prompts", "eval_prompts"):
        assert f"data.{field} ({prompts}): 1 problem:\n    line 2: field(s) prompt missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "kfp").exists()


@pytest.mark.extended  # a whole local pipeline run: about two minutes
def test_supplied_aligned_weak_model_skips_weak_align(tmp_path, micro_testbed):
    """`models.weak_aligned` given: no weak_align task; the stages read the supplied model.

    Also the branches left off: ConG-S without ConG (one CD pass, no DPO), and WSPO on weak samples, since
    without weak alignment there are no preference pairs. And `artifacts.store: workspace` through kfp.local:
    ConG-S is trained into the workspace, evaluate and promote read it through its pointer, the workspace is gone
    after the run and the model it held is in the store.
    """
    raw = yaml.safe_load(MICRO.read_text())
    raw.update(name="supplied", methods=["base", "weak_aligned", "wspo", "cong_s"])
    raw["models"] = {
        "weak_base": "testbed:weak",
        "strong_base": "testbed:strong",
        "weak_aligned": str(micro_testbed / "weak"),
    }
    raw["stages"]["alpha_sweep"] = {"alphas": []}
    raw["promotion"] = {"enabled": True, "method": "cong_s"}
    raw["artifacts"] = {"store": "workspace", "workspace_size": "1Gi"}
    out, printed = run_config(raw, tmp_path)
    (run,) = (out / "kfp").glob("cong-*")
    assert_through_the_workspace(out, run)
    executed = {d.name for d in run.iterdir()}
    stages = {re.sub(r"-\d+$", "", d) for d in executed}
    assert not stages & {"weak-align", "dpo", "strong-sample", "pair", "alpha-sweep"}
    assert {"plan", "weak-sample", "wspo", "cd-sample", "sft", "evaluate", "promote"} <= stages
    assert sum(d.startswith("cd-sample") for d in executed) == 1
    skipped = {
        json.loads((run / d / "executor_output.json").read_text())["artifacts"]["model"]["artifacts"][0]["metadata"][
            "not_selected"
        ]
        for d in executed
        if d.startswith("not-selected")
    }
    assert skipped == {"weak_sft", "auxconf", "icl_refine", "wsd", "wsd_sft", "strong_ceiling", "cong", "alpha_sweep"}
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["base", "weak_aligned", "wspo", "cong_s"]
    # The supplied model reached the stages through the store, and its row names the store's copy.
    supplied = results["artifacts"]["inputs"]["weak_aligned"]
    assert supplied["from"] == str(micro_testbed / "weak")
    assert results["artifacts"]["methods"]["weak_aligned"] == supplied["uri"]
    loaded = Path(results["weak_pair"]["aligned"]) / "model.safetensors"
    assert loaded.read_bytes() == (micro_testbed / "weak" / "model.safetensors").read_bytes()
    # The run's store starts empty, so ConG-S becomes the champion without a comparison.
    promotion = results["promotion"]
    assert promotion["promoted"] and "no champion" in promotion["reason"] and "promotion of cong_s" in printed
    assert promotion["challenger"]["source"] == str(next(run.glob("sft*")) / "model")
    # The embedded store stopped with the run; a new server on its data serves what the run published.
    with EmbeddedObjectStore(out / "objectstore") as server:
        assert_published(results, server.settings())
        champion = read_manifest(promotion["champion_uri"], server.settings())
    assert champion.digest == promotion["published"]["digest"] and promotion["champion_uri"].endswith("/supplied")


def assert_through_the_workspace(out: Path, run: Path) -> None:
    """The sft task wrote a pointer into its artifact and the weights into the workspace, which kfp.local deleted
    with the run; evaluate sampled the weights the pointer named; the model was published to the store."""
    from cong.storage import handoff

    assert not (out / "workspace").exists(), "kfp.local deletes the workspace with the run"
    (sft,) = run.glob("sft*")
    assert [p.name for p in (sft / "model").iterdir()] == [handoff.POINTER_FILE]
    executor = json.loads((sft / "executor_output.json").read_text())
    metadata = executor["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert metadata["model_store"] == "workspace" and metadata["method"] == "cong_s"
    assert Path(metadata["location"]).is_relative_to(out / "workspace")
    assert metadata["published"] == f"s3://cong/runs/{metadata['run_id']}/models/cong_s"
    results = json.loads((out / "results.json").read_text())
    assert results["sources"]["cong_s"] == metadata["location"], "evaluate sampled the weights the pointer names"
    assert results["artifacts"]["methods"]["cong_s"] == metadata["published"]
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["run"]["methods"]["cong_s"] == f"{sft.name}/model"
    with EmbeddedObjectStore(out / "objectstore") as server:
        copy = fetch_dir(metadata["published"], settings=server.settings())
        assert {"config.json", "model.safetensors"} <= {p.name for p in copy.iterdir()}


@pytest.mark.extended
def test_cross_family_strong_model_through_the_pipeline(tmp_path, micro_testbed):
    """A real model of another family as the strong model: SmolLM2-135M-Instruct (49,152-token vocabulary)
    aligned by the testbed's weak pair (600 tokens). CD, WSD and the weak labels cross as text."""
    raw = yaml.safe_load(MICRO.read_text())
    cross = yaml.safe_load((ROOT / "cong" / "presets" / "tiny-cross-smol.yaml").read_text())
    raw.update(name="cross", methods=["base", "weak_sft", "wsd", "cong_s"])
    raw["models"] = {**cross["models"], "weak_base": "testbed:weak"}
    raw["data"] = {"max_train_prompts": 8, "max_eval_prompts": 4}
    short = {"sampling": {"max_new_tokens": 12}}
    raw["stages"].update(
        weak_sample=short,
        cd_sample=short,
        evaluate=short,
        sft={"train": {"learning_rate": 2.0e-5, "per_device_batch_size": 4, "max_length": 64}},
        weak_sft={"train": {"learning_rate": 2.0e-5, "per_device_batch_size": 4, "max_length": 64}},
        wsd={"draft_max_new_tokens": 12, "max_total_tokens": 16},
        alpha_sweep={"alphas": []},
    )
    out, _ = run_config(raw, tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["base", "weak_sft", "wsd", "cong_s"]
    (run,) = (out / "kfp").glob("cong-*")
    sft = next(d for d in run.iterdir() if d.name.startswith("sft"))
    with (sft / "model" / "config.json").open() as f:
        assert json.load(f)["vocab_size"] == 49152


def without_locations(tree: str) -> list[str]:
    """A printed lineage tree without its header, its closing note and the artifacts' locations (a local run's
    published copies, a cluster run's pipeline root)."""
    lines = tree.split("\n\nThe run's lineage.json")[0].splitlines()[1:]
    return [re.sub(r"  (s3://|/)\S*$", "", line) for line in lines]


def cong_lineage(target, env, *extra):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "lineage", target, *extra], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def small_config(tmp_path, methods):
    raw = yaml.safe_load(MICRO.read_text())
    raw.update(name="small", methods=methods)
    raw["stages"]["alpha_sweep"] = {"alphas": []}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def test_rejected_credentials_exit_2_before_any_stage(tmp_path, micro_testbed, store):
    config = small_config(tmp_path, ["base"])
    env = {**os.environ, "AWS_ACCESS_KEY_ID": store.access_key_id, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    out = tmp_path / "run"
    proc = cong_run_local(config, out, timeout=600, extra=["--s3-endpoint", store.endpoint_url], env=env)
    assert proc.returncode == 2
    assert "credentials rejected by" in proc.stderr and "Traceback" not in proc.stderr
    assert "not-the-secret" not in proc.stderr
    assert not (out / "kfp").exists()
