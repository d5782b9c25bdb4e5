"""The bad-input suite: malformed configs, prompt files, models, storage settings and command lines.

Each case runs the `cong` command in this process and checks the contract of architecture.md: exit status 2, a
message that names what is wrong, no traceback, and nothing made or published (a refused `cong run --local` leaves
no run folder, so no store was started and no object written; the storage cases check the user's store itself).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main
from tests.conftest import MICRO

MICRO_RAW = yaml.safe_load(MICRO.read_text())
GOOD_ROW = '{"id": "a", "prompt": "Tell me about the sea."}\n'


@dataclass(frozen=True)
class Case:
    """`config`: changes merged into the micro config ({tmp} and {models} stand for the test's folders);
    `files`: files written under {tmp} first; `argv`: the command, `{config}` and `{out}` filled in."""

    name: str
    says: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    argv: tuple[str, ...] = ("run", "--local", "--config", "{config}", "--out", "{out}")
    raw_config: bytes | None = None


def _merge(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and key in merged else value
    return merged


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def prompts(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


CONFIG_CASES = [
    Case("config file missing", ("config file not found",), argv=("validate", "{tmp}/absent.yaml")),
    Case("config not YAML", ("is not valid YAML",), raw_config=b"name: [unclosed\n"),
    Case("config a YAML list", ("must be a YAML mapping",), raw_config=b"- name\n- micro\n"),
    Case(
        "config not UTF-8",
        ("line 2, column 10: not UTF-8", "Save the file as UTF-8"),
        raw_config=b"extends: tiny\nname: caf\xe9\n",
    ),
    Case("unknown top-level key", ("colour", "Extra inputs are not permitted"), config={"colour": "red"}),
    Case("unknown preset", ("unknown preset 'huge'",), raw_config=b"extends: huge\nname: x\n"),
    Case("name with capitals", ("name = 'Micro'", "should match pattern"), config={"name": "Micro"}),
    Case(
        "negative learning rate",
        ("stages.sft.train.learning_rate = -0.1", "(allowed: > 0 and <= 1)"),
        config={"stages": {"sft": {"train": {"learning_rate": -0.1}}}},
    ),
    Case("unknown method", ("methods.0 = 'best'",), config={"methods": ["best"]}),
    Case(
        "promoted method not run",
        ("promotion.method 'cong' is not among the run's methods",),
        config={"methods": ["base"], "promotion": {"enabled": True, "method": "cong"}},
    ),
    Case(
        "several nodes for a sampling stage",
        ("resources.cd_sample.nodes", "set nodes: 1 here"),
        config={"resources": {"cd_sample": {"nodes": 2}}},
    ),
    Case(
        "undefined GPU pool",
        ("names GPU pool 'h100'", "scheduling.pools does not define"),
        config={"scheduling": {"default_pool": "h100"}},
    ),
    Case("bucket name", ("storage.bucket = 'My_Bucket'",), config={"storage": {"bucket": "My_Bucket"}}),
    Case(
        "top_p above 1",
        ("stages.cd_sample.sampling.top_p = 1.5", "(allowed: > 0 and <= 1)"),
        config={"stages": {"cd_sample": {"sampling": {"top_p": 1.5}}}},
    ),
    Case(
        "LoRA rank 0",
        ("stages.sft.train.lora.r = 0",),
        config={"stages": {"sft": {"train": {"lora": {"r": 0}}}}},
    ),
    Case(
        "reward model backend without a model",
        ("reward_model names the reward model",),
        config={"stages": {"evaluate": {"reward_backend": "reward_model"}}},
    ),
    Case(
        "every bad field at once",
        ("stages.dpo.train.beta = 0", "stages.cd_sample.sampling.temperature = -1"),
        config={"stages": {"dpo": {"train": {"beta": 0}}, "cd_sample": {"sampling": {"temperature": -1}}}},
    ),
    Case(
        "a cluster-only artifact store",
        ("artifacts.store 'pvc'", "only a cluster has"),
        config={"artifacts": {"store": "pvc", "pvc_name": "shared"}},
    ),
]

DATA_CASES = [
    Case(
        "train prompts missing",
        ("data.train_prompts", "data file not found"),
        config={"data": {"train_prompts": "{tmp}/none.jsonl"}},
    ),
    Case(
        "a line not JSON",
        ("data.train_prompts", "line 2: not valid JSON"),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), "{oops")},
    ),
    Case(
        "a row not an object",
        ("line 2: expected a JSON object, got list",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), '["b", "prompt"]')},
    ),
    Case(
        "a row without its prompt",
        ("line 1: field(s) prompt missing",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts('{"id": "a", "text": "hi"}')},
    ),
    Case(
        "an empty prompt",
        ("line 1: field(s) prompt missing or not a non-empty string",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts('{"id": "a", "prompt": "   "}')},
    ),
    Case(
        "a number as id",
        ("line 1: field(s) id missing or not a non-empty string",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts('{"id": 7, "prompt": "hi"}')},
    ),
    Case(
        "duplicate ids",
        ("line 2: duplicate id 'a'",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), GOOD_ROW.strip())},
    ),
    Case(
        "not UTF-8",
        ("line 2: not UTF-8 (byte 26",),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": GOOD_ROW.encode() + b'{"id": "b", "prompt": "caf\xe9"}\n'},
    ),
    Case(
        "a prompt no tokenizer can encode",
        (
            "data.eval_prompts",
            "line 2: id 'b': field prompt holds a lone surrogate (U+D800) at character 3",
        ),
        config={"data": {"eval_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), '{"id": "b", "prompt": "sea\\ud800 shore"}')},
    ),
    Case(
        "a downstream answer no tokenizer can encode",
        (
            "stages.evaluate.downstream[0].data",
            "id 'q': field answer holds a lone surrogate",
        ),
        config={"stages": {"evaluate": {"downstream": [{"name": "qa", "data": "{tmp}/qa.jsonl"}]}}},
        files={"qa.jsonl": prompts('{"id": "q", "prompt": "Name a sea.", "answer": "\\udc00"}')},
    ),
    Case(
        "an empty file",
        ("data.train_prompts", "has no rows"),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": b"\n\n"},
    ),
    Case(
        "a prompt longer than the context",
        ("id 'long': the prompt has", "tokens, over the", "shorten those prompts"),
        config={"data": {"eval_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), json.dumps({"id": "long", "prompt": "the sea " * 600}))},
    ),
    Case(
        "every bad row of a file at once",
        ("4 problems", "line 2: not valid JSON", "line 3: duplicate id", "line 4: not UTF-8", "line 5: field(s)"),
        config={"data": {"train_prompts": "{tmp}/p.jsonl"}},
        files={"p.jsonl": prompts(GOOD_ROW.strip(), "{", GOOD_ROW.strip()) + b"\xff\n" + prompts('{"id": "e"}')},
    ),
    Case(
        "problems in two files at once",
        ("2 problems", "data.train_prompts", "data.eval_prompts"),
        config={"data": {"train_prompts": "{tmp}/p.jsonl", "eval_prompts": "{tmp}/e.jsonl"}},
        files={"p.jsonl": prompts("{"), "e.jsonl": prompts('{"id": "x"}')},
    ),
    Case(
        "a downstream task without answers",
        ("stages.evaluate.downstream[0].data", "field(s) answer missing"),
        config={"stages": {"evaluate": {"downstream": [{"name": "qa", "data": "{tmp}/qa.jsonl"}]}}},
        files={"qa.jsonl": prompts(GOOD_ROW.strip())},
    ),
    Case(
        "an unknown testbed set",
        ("unknown testbed reference 'testbed:test'",),
        config={"data": {"eval_prompts": "testbed:test"}},
    ),
]

MODEL_CASES = [
    Case(
        "an unknown testbed model",
        ("unknown testbed reference 'testbed:medium'",),
        config={"models": {"strong_base": "testbed:medium"}},
    ),
    Case(
        "a folder that is not a model",
        ("models.weak_base", "is not a Hugging Face model folder (no config.json)"),
        config={"models": {"weak_base": "{tmp}"}},
    ),
    Case(
        "a config.json that does not load",
        ("models.strong_base", "its config.json does not load"),
        config={"models": {"strong_base": "{models}/broken_config"}},
    ),
    Case(
        "a model without tokenizer files",
        ("models.weak_aligned", "Save the tokenizer with the model"),
        config={"models": {"weak_aligned": "{models}/no_tokenizer"}},
    ),
    Case(
        "a tokenizer without a chat template",
        ("models.weak_aligned", "has no chat template", "add a chat_template"),
        config={"models": {"weak_aligned": "{models}/no_template"}},
    ),
    Case(
        "a contrastive pair with two vocabularies",
        ("models.weak_aligned", "tokenize differently", "contrastive decoding"),
        config={"models": {"weak_aligned": "{models}/other_vocab"}},
    ),
    Case(
        "WSPO across vocabularies",
        ("methods: method wspo needs the weak and strong models to share a tokenizer",),
        config={"models": {"weak_base": "{models}/other_vocab", "strong_base": "{models}/strong"}, "methods": ["wspo"]},
    ),
]

COMMAND_CASES = [
    Case("run without --local", ("only local runs are available", "add --local"), argv=("run", "--config", "{config}")),
    Case(
        "a bad alpha sweep",
        ("--alpha-sweep '0,a'",),
        argv=("run", "--local", "--config", "{config}", "--alpha-sweep", "0,a"),
    ),
    Case(
        "an alpha progression backwards",
        ("--alpha-sweep '1,0.5,...,0'",),
        argv=("run", "--local", "--alpha-sweep", "1,0.5,...,0", "--out", "{out}"),
    ),
    Case(
        "an unknown preset flag",
        ("unknown preset 'galactic'",),
        argv=("run", "--local", "--preset", "galactic", "--out", "{out}"),
    ),
    Case(
        "an unknown method flag",
        ("methods.0 = 'magic'",),
        argv=("run", "--local", "--config", "{config}", "--methods", "magic", "--out", "{out}"),
    ),
    Case(
        "compile with a bad config",
        ("stages.sft.train.epochs = 0",),
        config={"stages": {"sft": {"train": {"epochs": 0}}}},
        argv=("compile", "--config", "{config}", "--out", "{out}/p.yaml"),
    ),
    Case("a report of a folder without results", ("results.json",), argv=("report", "{tmp}/nothing")),
]


@pytest.fixture(scope="module")
def models(micro_testbed, tmp_path_factory) -> Path:
    """Damaged copies of the micro testbed's weak model, and its strong model."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("models")
    weak = micro_testbed / "weak"
    for name in ("broken_config", "no_tokenizer", "no_template", "other_vocab"):
        shutil.copytree(weak, root / name)
    shutil.copytree(micro_testbed / "strong", root / "strong")
    (root / "broken_config" / "config.json").write_text("{ not json")
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (root / "no_tokenizer" / tokenizer_file).unlink(missing_ok=True)
    (root / "no_template" / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((root / "no_template" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (root / "no_template" / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(root / "other_vocab")
    tokenizer.add_tokens(["<only-here>"])
    tokenizer.save_pretrained(root / "other_vocab")
    return root


def run_case(case: Case, tmp_path: Path, models: Path, capsys) -> tuple[int, str, Path]:
    names = {"tmp": str(tmp_path), "models": str(models)}
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content)
    config = tmp_path / "c.yaml"
    if case.raw_config is not None:
        config.write_bytes(case.raw_config)
    else:
        config.write_text(yaml.safe_dump(_merge(MICRO_RAW, _fill(case.config, names))))
    out = tmp_path / "out"
    argv = [a.format(config=config, out=out, **names) for a in case.argv]
    code = main(argv)
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("case", CONFIG_CASES + DATA_CASES + MODEL_CASES + COMMAND_CASES, ids=lambda c: c.name)
def test_bad_input_is_refused_with_a_message(case, tmp_path, models, micro_testbed, capsys):
    code, err, out = run_case(case, tmp_path, models, capsys)
    assert code == 2, err
    assert err.startswith("cong: error: ") and "Traceback" not in err
    for expected in case.says:
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert not out.exists(), "a refused run made its folder"


def test_argparse_errors_exit_2_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--local", "--frobnicate"])
    assert info.value.code == 2 and "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    """`--debug` re-raises, so the traceback is there for a bug report."""
    from cong.errors import CongError

    with pytest.raises(CongError, match="config file not found"):
        main(["--debug", "validate", str(tmp_path / "absent.yaml")])


def test_a_valid_config_passes(tmp_path, micro_testbed, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(MICRO_RAW))
    assert main(["validate", str(config)]) == 0
    assert "valid (config 'micro'" in capsys.readouterr().out


STORAGE_CASES = [
    ("an unreachable endpoint", {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}, {}, "cannot reach"),
    ("a wrong secret", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, {}, "credentials rejected by"),
    ("an unknown access key", {"AWS_ACCESS_KEY_ID": "nobody"}, {}, "credentials rejected by"),
    ("a missing bucket", {}, {"storage": {"bucket": "no-such-bucket"}}, "the bucket 'no-such-bucket' does not exist"),
    ("a bad addressing style", {"CONG_S3_ADDRESSING": "sideways"}, {}, "CONG_S3_ADDRESSING='sideways'"),
    ("a bad attempt count", {"AWS_MAX_ATTEMPTS": "zero"}, {}, "AWS_MAX_ATTEMPTS='zero'"),
]


@pytest.mark.parametrize("env, change, says", [c[1:] for c in STORAGE_CASES], ids=[c[0] for c in STORAGE_CASES])
def test_bad_storage_is_refused_before_any_stage(
    env, change, says, store, tmp_path, micro_testbed, capsys, monkeypatch
):
    """`cong validate` checks the store a run will use; a refused run writes no object to it."""
    from cong.storage.s3 import ensure_bucket

    ensure_bucket("cong", store.settings())
    before = _objects(store)
    for name, value in {**store.env(), **env}.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_merge(MICRO_RAW, change)))
    code = main(["validate", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err, err
    assert store.secret_access_key not in err and "not-the-secret" not in err
    assert _objects(store) == before


def _objects(store) -> list[str]:
    client = store.settings().client()
    keys = []
    for bucket in client.list_buckets()["Buckets"]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
        keys += [f"{bucket['Name']}/{o['Key']}" for page in pages for o in page.get("Contents", [])]
    return sorted(keys)


def test_the_pipelines_first_task_checks_the_same(store, tmp_path, micro_testbed, monkeypatch):
    """The plan task (the DAG's prerequisites step) reports bad prompt rows and refused credentials together,
    before any other task starts."""
    from cong.config import load_config
    from cong.errors import CongError
    from cong.stages import plan
    from cong.storage.s3 import ensure_bucket

    ensure_bucket("cong", store.settings())
    (tmp_path / "p.jsonl").write_bytes(prompts(GOOD_ROW.strip(), GOOD_ROW.strip()))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_merge(MICRO_RAW, {"data": {"train_prompts": str(tmp_path / "p.jsonl")}})))
    parameter = load_config(config).as_parameter()
    for name, value in {**store.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}.items():
        monkeypatch.setenv(name, value)
    # The plan's output as kfp.local writes it: the task reads its run from the path (cong.storage.runs).
    decided = tmp_path / "kfp" / "cong-2026-12-07-08-00-00-000000" / "plan" / "decided"
    decided.parent.mkdir(parents=True)
    with pytest.raises(CongError) as info:
        plan.step(parameter, str(decided), str(decided))
    message = str(info.value)
    assert "2 problems" in message and "credentials rejected by" in message and "line 2: duplicate id 'a'" in message
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_access_key)
    (tmp_path / "p.jsonl").write_bytes(prompts(GOOD_ROW.strip()))
    assert plan.step(parameter, str(decided), str(decided))["switches"]["cong_mode"] == "cong"
