"""Throughput of publish_dir/fetch_dir against the embedded object store, beside plain boto3 defaults.

    python -m cong.storage.bench [--files 4] [--file-mb 256] [--chunk-mb 16] [--concurrency 8]

Writes `files` files of random bytes into a temporary folder (deleted afterwards), starts a SeaweedFS server on
127.0.0.1, and times: our publish (upload + sha256 + manifest) and fetch (download + verify), then boto3's
`upload_file`/`download_file` with the default TransferConfig, file after file, on the same server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cong.storage.embedded import EmbeddedObjectStore
from cong.storage.folders import MiB, TransferOptions, fetch_dir, publish_dir
from cong.storage.s3 import ensure_bucket


def _write_random(folder: Path, files: int, file_mb: int) -> int:
    folder.mkdir(parents=True)
    for i in range(files):
        with open(folder / f"shard-{i:02d}.bin", "wb") as out:
            for _ in range(file_mb):
                out.write(os.urandom(MiB))
    return files * file_mb * MiB


def _quiet(done: int, total: int) -> None:
    """No progress lines while timing."""


def _seconds(step: Callable[[], object]) -> float:
    start = time.monotonic()
    step()
    return time.monotonic() - start


def bench(files: int = 4, file_mb: int = 256, options: TransferOptions = TransferOptions()) -> dict[str, float]:
    """MB/s of each of the four transfers, in the order run (MB = 2**20 bytes)."""
    from boto3.s3.transfer import TransferConfig

    work = Path(tempfile.mkdtemp(prefix="cong-bench-"))
    try:
        total = _write_random(work / "src", files, file_mb)
        names = sorted(p.name for p in (work / "src").iterdir())
        (work / "plain").mkdir()
        with EmbeddedObjectStore(work / "store") as store:
            settings = store.settings()
            ensure_bucket("bench", settings)
            client, config = settings.client(), TransferConfig()
            # The first write to a bucket makes its volumes; no timed transfer should pay for that.
            client.put_object(Bucket="bench", Key="warm-up", Body=b"x")
            ours = {"settings": settings, "options": options, "progress": _quiet}
            steps = {
                "publish_dir": lambda: publish_dir(work / "src", "s3://bench/ours", **ours),
                "fetch_dir": lambda: fetch_dir("s3://bench/ours", work / "ours", **ours),
                "boto3 upload_file": lambda: [
                    client.upload_file(str(work / "src" / n), "bench", f"plain/{n}", Config=config) for n in names
                ],
                "boto3 download_file": lambda: [
                    client.download_file("bench", f"plain/{n}", str(work / "plain" / n), Config=config) for n in names
                ],
            }
            return {name: total / MiB / _seconds(step) for name, step in steps.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mb", type=int, default=256)
    parser.add_argument("--chunk-mb", type=int, default=TransferOptions.multipart_chunksize // MiB)
    parser.add_argument("--concurrency", type=int, default=TransferOptions.max_concurrency)
    args = parser.parse_args(argv)
    chunk = args.chunk_mb * MiB
    options = TransferOptions(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=args.concurrency)
    print(
        f"{args.files} files x {args.file_mb} MB; ours: {args.chunk_mb} MB parts, {args.concurrency} threads; "
        "boto3: default TransferConfig (8 MB parts, 10 threads), one file after another"
    )
    for name, rate in bench(args.files, args.file_mb, options).items():
        print(f"{name:>20}: {rate:7.1f} MB/s")


if __name__ == "__main__":
    main()
