"""A retried training pod resumes from the checkpoint the killed one left in storage (real SeaweedFS, real trl)."""

import json

import pytest

from cong.config import StorageSettings, TrainSettings
from cong.data import read_jsonl, write_jsonl
from cong.models import TRAINING_LOG
from cong.stages.sft import sft
from cong.storage.folders import find_manifest
from cong.storage.s3 import S3Settings, ensure_bucket
from cong.training.checkpoints import _published_steps, checkpoint_uri
from cong.training.checkpoints import mirror_callback as real_mirror_callback

TRAIN = TrainSettings(
    learning_rate=1e-3,
    epochs=3,
    per_device_batch_size=4,
    gradient_accumulation_steps=1,
    max_length=64,
    warmup_ratio=0.0,
    precision="fp32",
)


class Killed(Exception):
    """Stands in for the pod's end: raised in the middle of the second epoch, after the first epoch's checkpoint
    reached storage and one more step was trained."""


def _dying_mirror(uri, settings=None):
    """The real mirror callback; the pod dies one step after the first checkpoint was stored."""
    mirror = real_mirror_callback(uri, settings)

    class MirrorThenDie(type(mirror)):
        saved_at = None

        def on_save(self, args, state, control, **kwargs):
            super().on_save(args, state, control, **kwargs)
            self.saved_at = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if self.saved_at is not None and state.global_step == self.saved_at + 1:
                raise Killed(self.saved_at)

    return MirrorThenDie()


def test_a_retried_pod_resumes_from_the_stored_checkpoint(micro_testbed, store, tmp_path, monkeypatch):
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    storage = StorageSettings(bucket="ckpt")
    ensure_bucket(storage.bucket)
    uri = checkpoint_uri(storage, "run-1", "sft-cong_s")
    assert checkpoint_uri(storage, "", "sft-cong_s") is None, "no run id (a plain library call): nothing stored"

    data = tmp_path / "rows.jsonl"
    prompts = read_jsonl(micro_testbed / "train.jsonl", ("id", "prompt"), limit=8)
    write_jsonl(data, [{**p, "response": f"The answer is {i}."} for i, p in enumerate(prompts)])
    strong = str(micro_testbed / "strong")

    # The first attempt dies mid-epoch 2, its epoch-1 checkpoint in storage: the pod's disk is gone.
    monkeypatch.setattr("cong.training.checkpoints.mirror_callback", _dying_mirror)
    with pytest.raises(Killed) as killed:
        sft(strong, str(data), tmp_path / "attempt-1", TRAIN, checkpoints=uri)
    first_step = killed.value.args[0]
    assert _published_steps(uri, S3Settings.from_env()) == [first_step]
    assert find_manifest(f"{uri}/checkpoint-{first_step}") is not None
    monkeypatch.setattr("cong.training.checkpoints.mirror_callback", real_mirror_callback)

    # The retry is a new pod: a fresh model folder, the same run id.
    logs = []
    monkeypatch.setattr("cong.training.trainers.log", lambda stage, message: logs.append(message))
    metrics = sft(strong, str(data), tmp_path / "attempt-2", TRAIN, checkpoints=uri)
    assert any("resuming from" in m and f"checkpoint-{first_step}" in m for m in logs), logs
    assert metrics["global_step"] == 3 * first_step, "three epochs of 2 steps"
    assert (tmp_path / "attempt-2" / "model.safetensors").is_file()
    final = int(metrics["global_step"])
    for step in (first_step, 2 * first_step, final):
        kept = find_manifest(f"{uri}/checkpoint-{step}") is not None
        assert kept == (step == final), f"checkpoint-{step}: only the newest is kept"

    # The resumed model ends where an uninterrupted run of the same seed ends: the same last step, the same loss.
    straight = sft(strong, str(data), tmp_path / "straight", TRAIN)
    assert straight["global_step"] == metrics["global_step"]
    last_loss = [json.loads((tmp_path / f / TRAINING_LOG).read_text())[-1] for f in ("attempt-2", "straight")]
    assert last_loss[0]["step"] == last_loss[1]["step"] == final
    assert last_loss[0]["loss"] == pytest.approx(last_loss[1]["loss"], rel=1e-3), last_loss
