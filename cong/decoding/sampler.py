"""Sampling responses for prompt rows: one model, or a contrastive pair, loaded once (`Sampler`).

Every stage that samples a chat model goes through here, so all of them render prompts, seed rows and stop alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cong.config import DecodingSettings, SamplingSettings
from cong.decoding.contrastive import CdParams
from cong.errors import CongError
from cong.models import adapter_of, load_model, load_tokenizer, prompt_ids
from cong.progress import Eta


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
