"""Reward backends behind one interface: score (prompt, response) pairs, higher is better."""

from __future__ import annotations

from typing import Protocol

from cong.errors import CongError


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


def reward_backend(name: str) -> RewardBackend:
    backends = {"testbed": TestbedReward}
    if name not in backends:
        raise CongError(f"unknown reward backend {name!r}; available: {', '.join(backends)}.")
    return backends[name]()


class ImplicitReward:
    """Length-normalised implicit reward under the weak pair (method.md section 1):
    (log pi_r(y|x) - log pi_ref(y|x)) / |y|, with the eos token counted as part of y."""

    def __init__(self, tokenizer, expert, amateur, batch_size: int = 8):
        self.tokenizer, self.expert, self.amateur, self.batch_size = tokenizer, expert, amateur, batch_size

    @classmethod
    def load(cls, weak_base: str, weak_aligned: str, batch_size: int = 8) -> ImplicitReward:
        from cong.models import load_model, load_tokenizer

        return cls(load_tokenizer(weak_aligned), load_model(weak_aligned), load_model(weak_base), batch_size)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        from cong.models import prompt_ids

        contexts = prompt_ids(self.tokenizer, prompts)
        eos = self.tokenizer.eos_token_id
        answers = [self.tokenizer(r, add_special_tokens=False)["input_ids"] + [eos] for r in responses]
        scores: list[float] = []
        for start in range(0, len(answers), self.batch_size):
            batch = list(
                zip(contexts[start : start + self.batch_size], answers[start : start + self.batch_size], strict=True)
            )
            width = max(len(c) + len(a) for c, a in batch)
            # Right padding: positions count from 0 in every row, and padding sits after each answer.
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            scored = torch.zeros((len(batch), width - 1), dtype=torch.bool)  # position t predicts token t+1
            for i, (context, answer) in enumerate(batch):
                ids[i, : len(context) + len(answer)] = torch.tensor(context + answer)
                mask[i, : len(context) + len(answer)] = 1
                scored[i, len(context) - 1 : len(context) + len(answer) - 1] = True
            total = torch.zeros(len(batch))
            with torch.inference_mode():
                for model, sign in ((self.expert, 1.0), (self.amateur, -1.0)):
                    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
                    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()
                    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                    total += sign * (token_logp * scored).sum(dim=-1)
            scores += (total / torch.tensor([len(a) for _, a in batch])).tolist()
        return scores
