"""The local cache folder that every derived artifact (testbed, converted models, fetched folders) lives under."""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CONG_CACHE_DIR", Path.home() / ".cache" / "cong"))
