"""Progress lines for long work: stage, step and ETA, printed as plain lines (they end up in pod logs)."""

from __future__ import annotations

import sys
import time


def log(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


class Eta:
    """Counts steps of one piece of work and prints `done/total` with an estimate of the time left."""

    def __init__(self, stage: str, what: str, total: int, every_s: float = 5.0):
        self.stage, self.what, self.total, self.every_s = stage, what, total, every_s
        self.start = self.last = time.monotonic()

    def update(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / max(done, 1) * (total - done)
        log(self.stage, f"{self.what} {done}/{total}, {elapsed:.0f}s elapsed, ETA {eta:.0f}s")
