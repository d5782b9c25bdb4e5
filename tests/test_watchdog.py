"""Nothing outlives a run (cong.watchdog): a process killed with SIGKILL leaves none of what it started running, a
local run's embedded SeaweedFS and tasks included, and a new run in the same folder then succeeds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cong.watchdog import _stat, alive, descendants, end
from tests.conftest import MICRO

KILLED_PARENT = """
import os, signal, subprocess, sys, time
from cong.watchdog import guard
with guard(sys.argv[1:] or None):
    children = [
        subprocess.Popen(["sleep", "300"]),
        subprocess.Popen(["sleep", "300"], start_new_session=True),  # as the embedded store starts
        subprocess.Popen(["bash", "-c", "sleep 300 & wait"]),  # a grandchild
    ]
    time.sleep(1.5)  # the watchdog notes them
    print(" ".join(str(c.pid) for c in children), flush=True)
    input()  # the test has noted them too
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_parent(*cleanup: str) -> tuple[subprocess.Popen, dict[int, int]]:
    """A process that starts children under `guard` (with `cleanup`), and everything it started (pid: start time);
    it kills itself with SIGKILL once `proc.stdin` gets a line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, *cleanup], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdout.readline()
    return proc, descendants(proc.pid)


def kill(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(10) == -signal.SIGKILL


def _gone(processes: dict[int, int], timeout_s: float) -> dict[int, int]:
    """Those of `processes` (pid: start time) still alive after up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: start for pid, start in processes.items() if alive(pid, start)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_a_killed_process_leaves_nothing_it_started():
    proc, tree = killed_parent()
    work = {pid: start for pid, start in tree.items() if "cong.watchdog" not in _cmdline(pid)}
    assert sum("sleep 300" in _cmdline(pid) for pid in work) == 4, work  # two sleeps, a shell and its sleep
    kill(proc)
    assert _gone(work, 15) == {}


def test_the_cleanup_runs_once_what_was_started_has_ended(tmp_path):
    """What no process tree holds (a container kept by its engine's monitor) is left to the cleanup command, which
    the watchdog runs after ending the killed process's descendants."""
    done, pids = tmp_path / "cleaned", tmp_path / "pids"
    check = (
        "from pathlib import Path; from cong.watchdog import alive; "
        f"left = [p for p in Path('{pids}').read_text().split() if alive(int(p))]; "
        f"Path('{done}').write_text(' '.join(left))"
    )
    proc, tree = killed_parent(sys.executable, "-c", check)
    work = {pid: start for pid, start in tree.items() if "cong.watchdog" not in _cmdline(pid)}
    pids.write_text(" ".join(map(str, work)))
    assert not done.exists()
    kill(proc)
    assert _gone(work, 15) == {}
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done.exists() and done.read_text() == "", "the cleanup ran, after the sleeps had ended"


def test_a_reused_pid_is_left_alone():
    """A process is ended only when its start time is the one noted: a pid the system gave to another process
    since is not touched."""
    sleeper = subprocess.Popen(["sleep", "60"])
    started = _stat(sleeper.pid)[2]
    end({sleeper.pid: started + 1}, grace_s=0.5)
    assert alive(sleeper.pid, started)
    end({sleeper.pid: started}, grace_s=0.5)
    sleeper.wait(5)
    assert not alive(sleeper.pid)


@pytest.mark.extended  # a whole local pipeline run: about two minutes
def test_a_killed_local_run_leaves_no_store_and_no_task_and_a_rerun_succeeds(tmp_path, micro_testbed):
    """`cong run --local` killed with SIGKILL while a task runs: its SeaweedFS, its tasks and their children end
    within seconds, and a new run into the same folder finishes."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pipelines.cli", "run", "--local", "--config", str(MICRO), "--out", str(out)]
    run = subprocess.Popen([*command, "--methods", "weak_sft"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: dict[int, int] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        tree |= descendants(run.pid)
        commands = [_cmdline(pid) for pid in tree if alive(pid)]
        if any("weed" in c and " mini" in c for c in commands) and any("executor_main" in c for c in commands):
            break
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before a task started"
    assert any("executor_main" in _cmdline(pid) for pid in tree), "no task was seen running"
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    assert _gone(tree, 20) == {}, {pid: _cmdline(pid) for pid in tree if alive(pid)}
    rerun = subprocess.run([*command, "--methods", "weak_sft"], capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "weak_sft" in json.loads((out / "results.json").read_text())["methods"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_watchdog_spares_the_parent_and_exits():
    """The guarded process's own parent (here: this test) is not its descendant and stays alive; the watchdog
    itself exits once its work is done."""
    proc, tree = killed_parent()
    watchdogs = {pid: start for pid, start in tree.items() if "cong.watchdog" in _cmdline(pid)}
    assert len(watchdogs) == 1
    kill(proc)
    assert alive(os.getpid())
    assert _gone(watchdogs, 20) == {}
