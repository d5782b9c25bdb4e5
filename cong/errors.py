"""User-facing errors: a message that names the file/field/row and the fix, exit status 2."""

from __future__ import annotations

import errno
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Step = TypeVar("Step", bound=Callable)


class CongError(Exception):
    """Bad input from the user (config, data, models). The CLI prints the message and exits with 2."""

    exit_code = 2


# A filesystem with less free than this after a failed write is taken to be the reason: torch's checkpoint writer
# reports a short write as "unexpected pos", without the OS error.
NEARLY_FULL = 1024 * 1024


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) says a filesystem ran out of space or quota."""
    while exc is not None:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def full_filesystem(paths: list[str]) -> str | None:
    """The first of `paths` (absolute paths a step writes under) whose filesystem is all but full."""
    for path in paths:
        folder = Path(path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if shutil.disk_usage(folder).free < NEARLY_FULL:
            return path
    return None


def stage_step(step: Step) -> Step:
    """A stage's step (cong/stages/<stage>.py) whose running out of disk reaches the user as a message, named by its
    stage, instead of a traceback.

    Outputs are written whole or not at all (cong.data.write_jsonl, cong.training.trainers.train_and_save, the sampling
    stages' batches), so the failed step leaves no output a later stage could take for a finished one.
    """

    stage = step.__module__.rpartition(".")[2]

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except CongError:
            raise
        except Exception as exc:
            paths = [a for a in (*args, *kwargs.values()) if isinstance(a, str) and a.startswith("/")]
            full = full_filesystem(paths)
            if not (disk_full(exc) or full):
                raise  # any other error, a denied or read-only write among them, as it is
            where = getattr(exc, "filename", None) or full
            raise CongError(
                f"{stage}: the disk filled up{f' writing {where}' if where else ''} ({exc}). No partial "
                "output was kept. Free space or give the stage more (its pod's ephemeral storage, or the volume "
                "its outputs go to), then rerun: training resumes from its last complete checkpoint, sampling from "
                "its last finished batch."
            ) from None

    return run  # type: ignore[return-value]
