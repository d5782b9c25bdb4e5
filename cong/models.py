"""Loading models and tokenizers, and rendering chat prompts as the models see them."""

from __future__ import annotations

from pathlib import Path

from cong.errors import CongError

# A model trained with LoRA keeps its adapter here, beside the merged weights (cong.training.trainers.train_and_save).
ADAPTER_DIR = "adapter"
# Beside a trained model: its training loss per logged step, `[{"step", "loss"}, ...]` (for the report).
TRAINING_LOG = "training_log.json"


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_libraries() -> None:
    """Our own progress lines replace the libraries' per-call progress bars, which flood pod logs."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def load_plain_tokenizer(ref: str):
    """The model's tokenizer as it tokenises any text (no chat template needed); pad = eos when unset."""
    from transformers import AutoTokenizer

    quiet_libraries()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except OSError as exc:
        raise CongError(f"cannot load a tokenizer from {ref!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(ref: str):
    """The tokenizer of a chat model, left-padding for generation."""
    tokenizer = load_plain_tokenizer(ref)
    if tokenizer.chat_template is None:
        raise CongError(f"the tokenizer of {ref!r} has no chat template; the pipeline renders prompts as chats.")
    tokenizer.padding_side = "left"
    return tokenizer


def eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos and the model's generation eos ids (base models often list more than one)."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [tokenizer.eos_token_id, *configured] if i is not None]
    if not ids:
        raise CongError(f"the tokenizer and generation config of {tokenizer.name_or_path!r} name no eos token.")
    return sorted(set(ids))


def load_model(ref: str):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device() == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)
    except OSError as exc:
        raise CongError(f"cannot load a model from {ref!r}: {exc}") from None
    return model.to(device()).eval()


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def adapter_of(model_ref: str) -> str | None:
    """The LoRA adapter that `model_ref` was trained as, when it keeps one (see ADAPTER_DIR)."""
    path = Path(model_ref) / ADAPTER_DIR
    return str(path) if (path / "adapter_config.json").is_file() else None


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()
