"""The testbed build: the same bytes on any machine, cached by its settings, no train or eval prompt in its
pretraining corpus, with a card that measures both models and records the world's hash."""

import json
import os
import subprocess
import sys

import pytest

from cong.config import load_config
from cong.testbed import TESTBED_REFS
from cong.testbed import build as testbed_build
from tests.conftest import MICRO


def test_card_and_files(micro_testbed, micro_config):
    assert micro_testbed == testbed_build.testbed_dir(micro_config.testbed)
    for name in TESTBED_REFS.values():
        assert (micro_testbed / name).exists(), name
    card = json.loads((micro_testbed / "card.json").read_text())
    weak, strong = card["models"]["weak"], card["models"]["strong"]
    assert strong["parameters"] > 2 * weak["parameters"]
    for model in (weak, strong):
        assert 0.0 <= model["held_out_accuracy"] <= 1.0 and 0.0 <= model["held_out_reward"] <= 1.0
    assert "held-out accuracy" in (micro_testbed / "README.md").read_text()


def test_eval_prompts_never_seen_in_training(micro_config):
    eval_set, train_set, pretrain_set = testbed_build._prompt_sets(micro_config.testbed)
    held_out = {e.prompt for e in eval_set}
    assert not held_out & {e.prompt for e in train_set + pretrain_set}


def test_settings_change_the_cache_key(micro_config):
    other = micro_config.testbed.model_copy(update={"seed": 1})
    assert testbed_build.testbed_dir(other) != testbed_build.testbed_dir(micro_config.testbed)
    assert testbed_build._prompt_sets(other)[0] != testbed_build._prompt_sets(micro_config.testbed)[0]
    assert testbed_build._prompt_sets(micro_config.testbed) == testbed_build._prompt_sets(micro_config.testbed)


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_no_train_or_eval_prompt_is_in_the_pretraining_corpus(preset, micro_config):
    """Nowhere in the corpus, in any turn: so no chat answers one of them either."""
    settings = micro_config.testbed if preset == "micro" else load_config(preset="tiny").testbed
    eval_set, train_set, pretrain_set = testbed_build._prompt_sets(settings)
    chats = testbed_build.pretraining_chats(settings)
    corpus = "\n".join(m["content"] for chat in chats for m in chat)
    leaked = [e.prompt for e in eval_set + train_set if e.prompt in corpus]
    assert not leaked, f"{len(leaked)} train or eval prompts in the corpus, e.g. {leaked[:3]}"
    assert len(chats) == len(pretrain_set) and all(e.prompt in corpus for e in pretrain_set[:50])


def test_the_card_records_the_worlds_hash(micro_testbed):
    card = json.loads((micro_testbed / "card.json").read_text())
    assert card["files"] == testbed_build.world_files(micro_testbed)
    assert {"weak/model.safetensors", "strong/model.safetensors", "train.jsonl", "eval.jsonl"} <= set(card["files"])
    assert card["world_sha256"] == testbed_build.world_sha256(card["files"])
    assert card["numerics"]["ATEN_CPU_CAPABILITY"] == "default" and card["numerics"]["MKL_CBWR"] == "COMPATIBLE"


def test_the_build_is_the_same_bytes_whatever_the_callers_cpu_settings(micro_testbed, tmp_path):
    """Two more builds of the micro testbed, each in a fresh cache, by callers that ask for other ATen CPU
    capabilities, MKL code paths and thread counts than the session's build had: every file of the world has the
    same sha256. Without the build's own pinned numerics these differ (measured: ATen default, avx2 and avx512 give
    three hashes, MKL's dispatch another)."""
    callers = {
        "default-1": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_CBWR": "AUTO"},
        "avx2-2": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2", "MKL_CBWR": "AVX2"},
    }
    code = (
        "from cong.config import load_config; from cong.testbed import build_testbed; "
        f"build_testbed(load_config({str(MICRO)!r}).testbed)"
    )
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **env, "CONG_CACHE_DIR": str(tmp_path / name)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, env in callers.items()
    }
    want = testbed_build.world_files(micro_testbed)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out
        built = tmp_path / name / "testbed" / micro_testbed.name
        assert testbed_build.world_files(built) == want, name
