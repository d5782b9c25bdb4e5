"""The testbed build: the same bytes on any machine, cached by its settings, no train or eval prompt in its
pretraining corpus, with a card that measures both models and records the world's hash."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cong.config import load_config
from cong.errors import CongError
from cong.testbed import TESTBED_REFS
from cong.testbed import build as testbed_build
from tests.conftest import MICRO

MICRO_WORLD = MICRO.with_name("micro-world.json")


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


def test_the_micro_world_is_the_same_bytes_on_every_machine(micro_testbed):
    """The session's micro world, built on whatever machine runs the tests, is the one recorded in
    tests/configs/micro-world.json (built on an AMD EPYC with AVX-512; the same bytes came out under QEMU's Intel
    Haswell and Nehalem). A new BUILD_VERSION or world records a new file."""
    reference = json.loads(MICRO_WORLD.read_text())
    assert testbed_build.world_files(micro_testbed) == reference["files"]
    assert json.loads((micro_testbed / "card.json").read_text())["world_sha256"] == reference["world_sha256"]


def test_the_build_is_the_same_bytes_whatever_the_callers_cpu_settings(micro_testbed, tmp_path):
    """A second build of the micro testbed, in a fresh cache, by a caller that asks for ATen's portable kernels,
    one thread and MKL's native code path, where the session's caller took this CPU's widest vector unit and all
    its cores: every file has the same sha256. Without the build's own pinned numerics these differ (measured on the
    micro testbed: ATen default, avx2 and avx512 give three worlds, MKL's own dispatch another)."""
    caller = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_CBWR": "AUTO"}
    code = (
        "from cong.config import load_config; from cong.testbed import build_testbed; "
        f"build_testbed(load_config({str(MICRO)!r}).testbed)"
    )
    env = {**os.environ, **caller, "CONG_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = tmp_path / "testbed" / micro_testbed.name
    assert testbed_build.world_files(built) == testbed_build.world_files(micro_testbed)


def test_the_tiny_world_ships_and_is_checked_on_copy(tmp_path, monkeypatch):
    """A fresh cache gets the tiny preset's reference world by copy, not by a build of minutes; the copy is checked
    file by file against the shipped card, and a shipped file that differs stops with a message."""
    settings = load_config(preset="tiny").testbed
    shipped = testbed_build.SHIPPED_WORLDS / testbed_build.testbed_dir(settings).name
    card = json.loads((shipped / "card.json").read_text())
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))
    lines = []
    folder = testbed_build.build_testbed(settings, progress=lines.append)
    assert testbed_build.world_files(folder) == card["files"] and "shipped with cong" in lines[0]
    summary = testbed_build.world_summary(settings)
    assert summary["sha256"] == summary["reference_sha256"] == card["world_sha256"] and summary["is_reference"]

    tampered = tmp_path / "worlds" / shipped.name
    shutil.copytree(shipped, tampered)
    (tampered / "eval.jsonl").write_text("{}\n")
    monkeypatch.setattr(testbed_build, "SHIPPED_WORLDS", tmp_path / "worlds")
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "other"))
    with pytest.raises(CongError, match="does not match its card"):
        testbed_build.build_testbed(settings, progress=lines.append)


@pytest.mark.extended
def test_the_tiny_recipe_rebuilds_the_shipped_world(tmp_path, monkeypatch):
    """The tiny preset's world built from its recipe (minutes) is the shipped one, file for file."""
    settings = load_config(preset="tiny").testbed
    shipped = testbed_build.SHIPPED_WORLDS / testbed_build.testbed_dir(settings).name
    monkeypatch.setattr(testbed_build, "SHIPPED_WORLDS", tmp_path / "none")
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path))
    built = testbed_build.build_testbed(settings, progress=lambda line: None)
    assert testbed_build.world_files(built) == json.loads((shipped / "card.json").read_text())["files"]


@pytest.mark.extended
def test_another_cpu_builds_the_same_bytes(micro_config, tmp_path, monkeypatch):
    """A small world (the micro settings, 10 pretraining steps) built here and under QEMU's user-mode emulation of
    an Intel Haswell (AVX2, no AVX-512; this machine may be an AMD EPYC with AVX-512): every file has the same sha256.
    Before the build's AdamW took its square root exactly, the two parted at the first optimizer step (torch.sqrt's
    last bit depends on the processor). `make test-extended` installs qemu-user."""
    if shutil.which("qemu-x86_64") is None:
        pytest.skip("qemu-x86_64 is not installed (make test-extended installs it)")
    settings = micro_config.testbed.model_copy(update={"pretrain_steps": 10})
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "here"))
    here = testbed_build.build_testbed(settings, progress=lambda line: None)
    emulated = tmp_path / "haswell"
    command = [
        "qemu-x86_64",
        "-cpu",
        "Haswell",
        sys.executable,
        "-m",
        "cong.testbed",
        settings.model_dump_json(),
        str(emulated),
    ]
    proc = subprocess.run(
        command, env={**os.environ, **testbed_build.REPRODUCIBLE_ENV}, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert testbed_build.world_files(emulated) == testbed_build.world_files(here)
