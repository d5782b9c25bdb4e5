"""WSPO and AuxConf training on the micro testbed's models, with real trl trainers."""

import shutil

import pytest
import torch

from cong.config import AuxConfSettings, TrainSettings, WspoSettings
from cong.data import read_jsonl, write_jsonl
from cong.errors import CongError
from tests.conftest import changed

TRAIN = TrainSettings(
    learning_rate=1e-3,
    epochs=1,
    per_device_batch_size=2,
    gradient_accumulation_steps=1,
    max_length=64,
    warmup_ratio=0.0,  # with 4 steps, warmup would spend the first one at learning rate 0
    precision="fp32",
)


@pytest.fixture(scope="module")
def refs(micro_testbed, tmp_path_factory):
    """The testbed's models, a weak 'aligned' model (the weak base with its weights moved) and 8 rows."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("trainers")
    aligned = out / "weak_aligned"
    shutil.copytree(micro_testbed / "weak", aligned)
    model = AutoModelForCausalLM.from_pretrained(aligned)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(aligned)

    prompts = read_jsonl(micro_testbed / "train.jsonl", ("id", "prompt"), limit=8)
    write_jsonl(out / "responses.jsonl", [{**p, "response": f"The answer is {i}."} for i, p in enumerate(prompts)])
    pairs = [{**p, "chosen": f"Sure: {i}.", "rejected": "No."} for i, p in enumerate(prompts)]
    write_jsonl(out / "pairs.jsonl", pairs)
    return {
        "strong": str(micro_testbed / "strong"),
        "weak": str(micro_testbed / "weak"),
        "aligned": str(aligned),
        "out": out,
    }


def test_wspo_trains_on_the_chosen_responses(refs, tmp_path):
    from cong.stages.wspo import wspo

    settings = WspoSettings(beta=0.1, train=TRAIN)
    metrics = wspo(refs["strong"], refs["weak"], refs["aligned"], str(refs["out"] / "pairs.jsonl"), tmp_path, settings)
    assert metrics["train_rows"] == 8 and metrics["global_step"] == 4
    assert (tmp_path / "config.json").is_file() and not (tmp_path / "checkpoints").exists()
    assert changed(refs["strong"], tmp_path)


def test_wspo_loss_at_the_start_is_the_weak_log_ratio_squared(refs, tmp_path):
    """Before any step the policy is pi_S_ref, so the loss is mean_rows (1/|y|) sum_t (log pi_r - log pi_ref)^2."""
    from cong.stages.wspo import wspo_trainer
    from cong.training.losses import token_logps

    settings = WspoSettings(beta=0.1, train=TRAIN)
    trainer = wspo_trainer(
        refs["strong"], refs["weak"], refs["aligned"], str(refs["out"] / "responses.jsonl"), tmp_path, settings
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert {"input_ids", "attention_mask", "labels"} <= set(batch)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        ids, attention, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        aligned, base = (
            token_logps(m(input_ids=ids, attention_mask=attention).logits, labels)
            for m in (trainer.weak_aligned, trainer.weak_base)
        )
    mask = labels[:, 1:] != -100
    rows = [((aligned[i] - base[i])[mask[i]] ** 2).mean() for i in range(len(ids))]
    assert loss.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)
    assert loss.item() > 0


def test_wspo_refuses_a_weak_model_with_another_tokenizer(refs, tmp_path):
    from cong.models import load_tokenizer
    from cong.stages.wspo import wspo

    other = tmp_path / "other"
    shutil.copytree(refs["weak"], other)
    tokenizer = load_tokenizer(str(other))
    tokenizer.add_tokens(["<|extra|>"])
    tokenizer.save_pretrained(other)
    settings = WspoSettings(train=TRAIN)
    with pytest.raises(CongError, match="does not share the tokenizer"):
        wspo(refs["strong"], str(other), refs["aligned"], str(refs["out"] / "pairs.jsonl"), tmp_path / "m", settings)


def test_auxconf_trains_on_weak_responses(refs, tmp_path):
    from cong.stages.auxconf import auxconf

    settings = AuxConfSettings(aux_coef=0.5, ramp_fraction=0.5, train=TRAIN)
    metrics = auxconf(refs["strong"], str(refs["out"] / "responses.jsonl"), tmp_path, settings)
    assert metrics["train_rows"] == 8 and metrics["global_step"] == 4
    assert (tmp_path / "config.json").is_file() and not (tmp_path / "checkpoints").exists()
    assert changed(refs["strong"], tmp_path)
