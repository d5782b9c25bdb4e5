"""Load: many transfers against the embedded object store at once, and local runs sharing one cache.

Both run against the real parts: SeaweedFS on 127.0.0.1, and `cong run --local` processes.
"""

import concurrent.futures
import hashlib
import json
import os

import pytest

from cong.storage.folders import MANIFEST_NAME, MiB, TransferOptions, fetch_dir, publish_dir, sha256_file
from cong.storage.s3 import ensure_bucket
from tests.test_pipeline_local import cong_run_local, small_config

# Small parts, so that the larger files go up and down in several concurrent parts.
PARTS = TransferOptions(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)


def _folder(root, index: int):
    """A model-like folder: a config, a 6 MB weights file (multipart) and a small tokenizer, distinct per index."""
    folder = root / f"src-{index:02d}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"index": index}))
    (folder / "model.safetensors").write_bytes(os.urandom(6 * MiB + index))
    (folder / "tokenizer.json").write_bytes(os.urandom(64 * 1024))
    return folder


def _digests(folder) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST_NAME}


def test_twenty_uploads_and_twenty_downloads_at_once_keep_every_checksum(store, tmp_path, monkeypatch):
    """20 publishes and 20 fetches run at the same time: the fetches take 10 folders published before, each twice
    at once into the one shared cache (the same entry, from two threads). Every fetched file matches its source."""
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))
    settings = store.settings()
    ensure_bucket("load", settings)
    sources = [_folder(tmp_path, i) for i in range(30)]
    for i in range(10):
        publish_dir(sources[i], f"s3://load/before/{i}", settings=settings, options=PARTS)

    def upload(i: int):
        return publish_dir(sources[i], f"s3://load/during/{i}", settings=settings, options=PARTS)

    def download(i: int):
        return fetch_dir(f"s3://load/before/{i}", settings=settings, options=PARTS)

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        uploads = [pool.submit(upload, i) for i in range(10, 30)]
        downloads = {i: [pool.submit(download, i) for _ in range(2)] for i in range(10)}
        for future in uploads:
            future.result()
        fetched = {i: [f.result() for f in pair] for i, pair in downloads.items()}

    for i, (first, second) in fetched.items():
        assert first == second, "both fetches of a folder share one cache entry"
        assert _digests(first) == _digests(sources[i])
    for i in range(10, 30):
        again = fetch_dir(f"s3://load/during/{i}", tmp_path / f"check-{i}", settings=settings, options=PARTS)
        assert _digests(again) == _digests(sources[i])
    leftovers = [p.name for p in (tmp_path / "cache" / "objects").iterdir() if "partial" in p.name or "stale" in p.name]
    assert leftovers == []


@pytest.mark.extended
def test_four_local_runs_at_once_share_one_cache(tmp_path):
    """Four `cong run --local` processes at once, on one fresh cache: one builds the testbed while the others wait
    for it, each starts its own object store, and all four finish with the same table; every folder in the shared
    cache matches its manifest."""
    config = small_config(tmp_path, ["base", "weak_aligned", "wsd"])
    env = {**os.environ, "CONG_CACHE_DIR": str(tmp_path / "cache")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(cong_run_local, config, tmp_path / f"run-{i}", 1800, env=env) for i in range(4)]
        procs = [r.result() for r in runs]
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    tables = [json.loads((tmp_path / f"run-{i}" / "results.json").read_text())["methods"] for i in range(4)]
    assert all(table == tables[0] for table in tables[1:])
    builds = sum("[testbed] built in" in proc.stderr for proc in procs)
    assert builds == 1, f"the testbed was built {builds} times"
    cached = [p for p in (tmp_path / "cache" / "objects").iterdir() if p.is_dir()]
    assert cached
    for folder in cached:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        for entry in manifest["files"]:
            assert hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], folder
