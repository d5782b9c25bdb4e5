"""Reward backends behind one interface: score (prompt, response) pairs, higher is better."""

from __future__ import annotations

from typing import Protocol

from cong.errors import CongError


class RewardBackend(Protocol):
    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


class TestbedReward:
    """The testbed's programmatic reward in [0, 1] (cong.testbed.world.reward): correctness and style."""

    name = "testbed"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        from cong.testbed.world import reward

        return [reward(p, r) for p, r in zip(prompts, responses, strict=True)]


def reward_backend(name: str) -> RewardBackend:
    backends = {"testbed": TestbedReward}
    if name not in backends:
        raise CongError(f"unknown reward backend {name!r}; available: {', '.join(backends)}.")
    return backends[name]()
