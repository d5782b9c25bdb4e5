"""A disk that fills up during a stage: a clear message, no corrupt output, and a rerun that finishes.

The full disk is real: the stage runs in a private mount namespace (`unshare`) on a small tmpfs, so writes fail
with ENOSPC from the kernel, as they would on a pod's full ephemeral storage.
"""

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from cong.data import read_jsonl, write_jsonl
from cong.training.trainers import last_checkpoint
from tests.conftest import MICRO

STAGE = """
import json, sys
from pathlib import Path
from cong.stages import sft
from cong.config import load_config
from cong.errors import CongError

model = Path(sys.argv[2])
try:
    sft.step(load_config(sys.argv[1]).as_parameter(), data=sys.argv[3], model=str(model), method="weak_sft")
    outcome = {"ok": True}
except CongError as exc:
    outcome = {"ok": False, "message": str(exc)}
files = sorted(str(p.relative_to(model.parent)) for p in model.parent.rglob("*") if p.is_file())
print("RESULT", json.dumps({**outcome, "files": files}))
"""


def _can_mount() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.parametrize(
    "size, resumes",
    [("1500k", False), ("1900k", True)],
    ids=["full while saving a checkpoint", "full while saving the model"],
)
def test_training_on_a_full_disk_says_so_and_keeps_no_partial_model(size, resumes, micro_testbed, tmp_path):
    """The SFT stage's output volume is too small: at 1.5 MB for its checkpoint (weights and optimizer state), at
    1.9 MB for the model saved beside a finished checkpoint. The stage fails with a message naming the folder, and
    the folder holds no model file. Grown to 64 MB, the same folder trains to a whole model, resuming from the
    checkpoint when its save had finished and passing over the one cut short."""
    if not _can_mount():
        pytest.fail("this test needs `unshare -rm` and tmpfs mounts (util-linux; user namespaces or root)")
    rows = read_jsonl(micro_testbed / "train.jsonl", ("id", "prompt"))
    write_jsonl(tmp_path / "data.jsonl", [{**r, "response": f"The answer is {i}."} for i, r in enumerate(rows)])
    volume = tmp_path / "volume"
    volume.mkdir()
    run = shlex.join([sys.executable, "-c", STAGE, str(MICRO), str(volume / "model"), str(tmp_path / "data.jsonl")])
    script = f"mount -t tmpfs -o size={size} tmpfs {volume} && {run} && mount -o remount,size=64m {volume} && {run}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full, grown = (json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT "))

    assert not full["ok"]
    assert full["message"].startswith("sft: the disk filled up"), full["message"]
    assert f"writing {volume / 'model'}" in full["message"] and "then rerun" in full["message"]
    model_files = [f for f in full["files"] if "/checkpoints/" not in f]
    assert model_files == [], f"a partial model was left: {model_files}"

    assert grown["ok"]
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= set(grown["files"])
    assert not any("partial" in f or "/checkpoints/" in f for f in grown["files"]), grown["files"]
    assert ("resuming from" in proc.stderr) == resumes


def test_a_jsonl_output_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"id": "a"}])

    def rows():
        yield {"id": "b"}
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_jsonl(path, rows())
    assert read_jsonl(path, ("id",)) == [{"id": "a"}], "the earlier file is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"], "no partial file is left"


def test_resume_passes_over_a_checkpoint_whose_save_was_cut_short(tmp_path):
    """The trainer writes trainer_state.json last: a checkpoint without it was cut short."""
    for step, finished in ((4, True), (8, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if finished:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_checkpoint(tmp_path / "none") is None


def test_a_denied_or_read_only_write_is_not_taken_for_a_full_disk(tmp_path):
    """Only a full disk becomes the disk-full message: an error that merely names a file (a write denied, or refused by
    a read-only root filesystem as in a pod) reaches the user as itself."""
    from cong.errors import CongError, stage_step

    def step(out: str):
        raise PermissionError(13, "Permission denied", out)

    step.__module__ = "cong.stages.plan"
    with pytest.raises(PermissionError):
        stage_step(step)(str(tmp_path / "out"))

    def full(out: str):
        raise OSError(28, "No space left on device", out)

    full.__module__ = "cong.stages.plan"
    with pytest.raises(CongError, match="plan: the disk filled up writing"):
        stage_step(full)(str(tmp_path / "out"))
