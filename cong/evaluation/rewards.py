"""Reward backends behind one interface: score (prompt, response) pairs, higher is better."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cong.errors import CongError

if TYPE_CHECKING:
    from cong.config import RewardChoice


class RewardBackend(Protocol):
    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...

    def parts(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Named components of the reward per response (may be empty)."""
        ...


class TestbedReward:
    """The testbed's programmatic reward in [0, 1] (cong.testbed.world.reward): correctness and style."""

    name = "testbed"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        from cong.testbed.world import reward

        return [reward(p, r) for p, r in zip(prompts, responses, strict=True)]

    def parts(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """`accuracy` (testbed prompts only, else NaN) and `style`, the two halves of the reward."""
        from cong.testbed.world import is_correct, solve, style_checks

        accuracy = [
            float(is_correct(p, r)) if solve(p) else float("nan") for p, r in zip(prompts, responses, strict=True)
        ]
        style = [sum(checks.values()) / len(checks) for checks in map(style_checks, responses)]
        return {"accuracy": accuracy, "style": style}


class RewardModel:
    """A Hugging Face sequence-classification reward model (e.g. Skywork-Reward, ArmoRM): the score of the chat
    [user: prompt, assistant: response] rendered with the reward model's own chat template, in batches.

    The score is the model's first output (`logits[:, 0]`), which is the reward for single-head reward models;
    a model with remote code (ArmoRM) needs `trust_remote_code`, which this does not turn on.
    """

    name = "reward_model"

    def __init__(self, ref: str, batch_size: int = 8, max_length: int = 4096):
        import torch
        from transformers import AutoModelForSequenceClassification

        from cong.models import device, load_plain_tokenizer

        self.tokenizer = load_plain_tokenizer(ref)
        if self.tokenizer.chat_template is None:
            raise CongError(f"the reward model {ref!r} has no chat template; it cannot tell prompt from response.")
        self.tokenizer.padding_side = "right"
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(ref, dtype=torch.float32).to(device())
        except (OSError, ValueError) as e:
            raise CongError(f"cannot load {ref!r} as a sequence-classification reward model: {e}") from e
        # The model scores each row at its last non-pad token, which it finds by the pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size, self.max_length = batch_size, max_length

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        chats = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        scores: list[float] = []
        for start in range(0, len(chats), self.batch_size):
            batch = self.tokenizer(
                chats[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,  # the chat template already has them
                return_tensors="pt",
            ).to(self.model.device)
            with torch.inference_mode():
                scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores

    def parts(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        return {}


def reward_backend(settings: RewardChoice, weak_pair: tuple[str, str] | None = None) -> RewardBackend:
    """The backend `settings.reward_backend` names; `settings.reward_model` is a resolved local path or hub id,
    and `weak_pair` (base, aligned) the weak models the implicit rewards need."""
    name = settings.reward_backend
    if name == "testbed":
        return TestbedReward()
    if name == "reward_model":
        return RewardModel(settings.reward_model, settings.reward_batch_size)
    if weak_pair is None:
        raise CongError(f"the {name} reward needs the aligned weak model, which this stage does not have.")
    return ImplicitReward.load(*weak_pair, settings.reward_batch_size, summed=name == "implicit_sum")


class ImplicitReward:
    """Implicit reward under the weak pair (method.md section 1): log pi_r(y|x) - log pi_ref(y|x), with the eos
    token counted as part of y, divided by |y| (length-normalised, the default) or not (`summed`)."""

    def __init__(self, tokenizer, expert, amateur, batch_size: int = 8, summed: bool = False):
        self.tokenizer, self.expert, self.amateur, self.batch_size = tokenizer, expert, amateur, batch_size
        self.summed = summed
        self.name = "implicit_sum" if summed else "implicit"

    @classmethod
    def load(cls, weak_base: str, weak_aligned: str, batch_size: int = 8, summed: bool = False) -> ImplicitReward:
        from cong.models import load_model, load_tokenizer

        return cls(load_tokenizer(weak_aligned), load_model(weak_aligned), load_model(weak_base), batch_size, summed)

    def parts(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        return {}

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        scores: list[float] = []
        for ids, mask, scored in self._batches(prompts, responses):
            total = torch.zeros(len(ids))
            with torch.inference_mode():
                for logp, sign in zip(self._log_probs(ids, mask), (1.0, -1.0), strict=True):
                    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                    total += sign * (token_logp * scored).sum(dim=-1)
            if not self.summed:
                total /= scored.sum(dim=-1)
            scores += total.tolist()
        return scores

    def mean_token_kl(self, prompts: list[str], responses: list[str]) -> float:
        """KL(pi_r || pi_ref) of the next-token distributions, in nats, averaged over every token of the responses
        (eos included): how far alignment moved the weak model, measured where it goes."""
        import torch

        total, tokens = 0.0, 0
        for ids, mask, scored in self._batches(prompts, responses):
            with torch.inference_mode():
                aligned, reference = self._log_probs(ids, mask)
                kl = (aligned.exp() * (aligned - reference)).sum(dim=-1)
            total += float((kl * scored).sum())
            tokens += int(scored.sum())
        return total / tokens

    def _batches(self, prompts: list[str], responses: list[str]):
        """Batches of (ids, attention mask, response positions) of prompt + response + eos, right-padded so that
        positions count from 0 in every row; position t of the mask marks the prediction of token t + 1."""
        import torch

        from cong.models import prompt_ids

        contexts = prompt_ids(self.tokenizer, prompts)
        eos = self.tokenizer.eos_token_id
        answers = [self.tokenizer(r, add_special_tokens=False)["input_ids"] + [eos] for r in responses]
        for start in range(0, len(answers), self.batch_size):
            batch = list(
                zip(contexts[start : start + self.batch_size], answers[start : start + self.batch_size], strict=True)
            )
            width = max(len(c) + len(a) for c, a in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            scored = torch.zeros((len(batch), width - 1), dtype=torch.bool)
            for i, (context, answer) in enumerate(batch):
                ids[i, : len(context) + len(answer)] = torch.tensor(context + answer)
                mask[i, : len(context) + len(answer)] = 1
                scored[i, len(context) - 1 : len(context) + len(answer) - 1] = True
            yield ids, mask, scored

    def _log_probs(self, ids, mask) -> tuple:
        """Next-token log-probabilities of the aligned model and of the base, on the CPU."""
        import torch

        return tuple(
            torch.log_softmax(
                model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1].float(), -1
            ).cpu()
            for model in (self.expert, self.amateur)
        )
