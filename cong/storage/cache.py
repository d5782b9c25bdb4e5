"""The local cache folder that every derived artifact (testbed, converted models, fetched folders) lives under.

Runs on one machine share it (four local runs at once, or the sampling shards of one): whoever fills an entry
does so under the entry's lock, so the others wait and reuse it instead of building it again or over it.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CONG_CACHE_DIR", Path.home() / ".cache" / "cong"))


@contextlib.contextmanager
def entry_lock(entry: Path) -> Iterator[None]:
    """Hold the lock of the cache entry `entry` (a file beside it: `.<name>.lock`), across processes and threads.

    flock locks belong to an open file description, so two threads that each open the file exclude each other too.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(f".{entry.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
