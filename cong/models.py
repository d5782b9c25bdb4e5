"""Loading models and tokenizers, rendering chat prompts, and sampling responses for prompt rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cong.config import DecodingSettings, SamplingSettings
from cong.errors import CongError
from cong.progress import Eta

if TYPE_CHECKING:
    from cong.decoding.contrastive import CdParams

# A model trained with LoRA keeps its adapter here, beside the merged weights (cong.training.train_and_save).
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


def decode_params(decoding: DecodingSettings, max_new_tokens: int):
    """The engine's parameters (cong.decoding.generate.DecodeParams) for a configured decoding and budget."""
    from cong.decoding.generate import DecodeParams

    return DecodeParams(
        max_new_tokens=max_new_tokens,
        temperature=decoding.temperature,
        top_p=decoding.top_p,
        repetition_penalty=decoding.repetition_penalty,
        greedy=decoding.greedy,
    )


def row_seed(seed: int, row_id: str) -> int:
    """A prompt's seed depends only on the run seed and its id, not on its batch or shard."""
    return int(hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()[:8], 16)


def adapter_of(model_ref: str) -> str | None:
    """The LoRA adapter that `model_ref` was trained as, when it keeps one (see ADAPTER_DIR)."""
    path = Path(model_ref) / ADAPTER_DIR
    return str(path) if (path / "adapter_config.json").is_file() else None


class Sampler:
    """A model (or a contrastive pair) loaded once, sampling one response per prompt row per call.

    With `shared_weights`, a pair whose expert keeps its LoRA adapter relative to the amateur is loaded as one
    shared-weight model (cong.decoding.shared_lora); `self.shared` says whether it was.
    """

    def __init__(self, model_ref: str, amateur_ref: str | None = None, shared_weights: bool = False):
        self.tokenizer = load_tokenizer(model_ref)
        if amateur_ref and load_tokenizer(amateur_ref).get_vocab() != self.tokenizer.get_vocab():
            # Contrastive decoding feeds identical ids to both models.
            raise CongError(
                f"the models {model_ref!r} and {amateur_ref!r} do not share a tokenizer; contrastive decoding "
                "needs the weak pair (before / after alignment) to use the same vocabulary."
            )
        adapter = adapter_of(model_ref) if amateur_ref and shared_weights else None
        self.shared = adapter is not None
        if self.shared:
            from cong.decoding.shared_lora import load_shared_pair

            self.expert, self.amateur = load_shared_pair(amateur_ref, adapter), None
        else:
            self.expert = load_model(model_ref)
            self.amateur = load_model(amateur_ref) if amateur_ref else None

    def __call__(
        self,
        rows: list[dict[str, Any]],
        sampling: SamplingSettings,
        stage: str,
        cd: CdParams | None = None,
    ) -> list[str]:
        """Plain sampling, or contrastive decoding (expert = `model_ref`) by `cd` when an amateur was given."""
        eta = Eta(stage, "prompts decoded", len(rows))
        seeds = [row_seed(sampling.seed, r["id"]) for r in rows]
        return self.decode(self.tokenize(rows), seeds, sampling, cd, on_batch=eta.update)

    def tokenize(self, rows: list[dict[str, Any]]) -> list[list[int]]:
        """The rows' prompts rendered as chats and tokenized, as the models see them."""
        return prompt_ids(self.tokenizer, [r["prompt"] for r in rows])

    def decode(
        self,
        ids: list[list[int]],
        seeds: list[int],
        sampling: SamplingSettings,
        cd: CdParams | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Responses to tokenized prompts, prompt i drawn with its own generator seeded `seeds[i]`."""
        from cong.decoding.generate import decode

        out = decode(
            self.expert,
            ids,
            decode_params(sampling, sampling.max_new_tokens),
            eos_token_ids=[self.tokenizer.eos_token_id],
            pad_token_id=self.tokenizer.pad_token_id,
            seeds=seeds,
            amateur=self.amateur,
            shared=self.shared,
            cd=cd,
            batch_size=sampling.batch_size,
            on_batch=on_batch,
        )
        return [self.tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in out]


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()
