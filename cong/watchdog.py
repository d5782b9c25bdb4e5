"""Nothing outlives a run: a watchdog process that ends what a process started once that process has ended, however
it ended (SIGKILL from the OOM killer or a CI timeout included).

The watchdog runs in a session of its own (a signal to the run's process group does not reach it). Twice a second
it notes every descendant of the process it guards (pid and start time, from /proc); when that process is gone (or
a zombie), it sends SIGTERM to every noted process still alive, then SIGKILL to those left after `GRACE_S`, and
exits. A process that ends normally stops the watchdog first (`guard` does), so only an abrupt end leaves the work
to it. Start times make a reused pid safe: a process that merely got an old pid is not touched.

What is not a descendant, a container that a container engine's monitor keeps running once the client that started
it is gone, is ended by a cleanup command that the watchdog runs last (and `guard` runs on a normal end too).

    python -m cong.watchdog PID [CLEANUP...]     guard PID, then run CLEANUP (what `guard` starts)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.5
GRACE_S = 5.0
PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None when there is none."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Whether `pid` runs (a zombie does not), and is the process that started at `started` when given."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and (started is None or stat[2] == started)


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`, by pid, with its start time."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(int(entry.name))
            started[int(entry.name)] = stat[2]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started[child]
                todo.append(child)
    return found


def end(processes: dict[int, int], grace_s: float = GRACE_S) -> None:
    """SIGTERM to each process still alive, then SIGKILL to those left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        left = {pid: start for pid, start in processes.items() if alive(pid, start)}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = {pid: start for pid, start in left.items() if alive(pid, start)}
        if not left:
            return


def watch(pid: int, cleanup: list[str] | None = None, poll_s: float = POLL_S) -> None:
    """Note `pid`'s descendants until it is gone, then end them and run `cleanup`."""
    own = os.getpid()
    noted: dict[int, int] = {}
    while alive(pid):
        noted.update(descendants(pid))
        noted.pop(own, None)
        time.sleep(poll_s)
    end(noted)
    if cleanup:
        subprocess.run(cleanup, stdin=subprocess.DEVNULL, capture_output=True)


@contextlib.contextmanager
def guard(cleanup: list[str] | None = None) -> Iterator[None]:
    """While the block runs, a watchdog ends this process's descendants, then runs `cleanup`, if this process is
    killed. `cleanup` also runs when the block ends, however it ends."""
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "cong.watchdog", str(os.getpid()), *(cleanup or [])],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        watchdog.kill()  # a normal end: what the block started, it stopped itself
        watchdog.wait()
        if cleanup:
            subprocess.run(cleanup, stdin=subprocess.DEVNULL, capture_output=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl+C is for the run; the watchdog outlives it
    watch(int(sys.argv[1]), sys.argv[2:])
