"""Model and data folders in S3-compatible storage, over boto3.

A folder is published to `s3://bucket/prefix/` file by file, and `prefix/cong-manifest.json` (path, size and
sha256 of every file) is written LAST: a folder without its manifest is not published, so a reader never takes a
half-written model. A fetch reads the manifest first, downloads the files it lists, checks size and sha256, and
keeps the result in a local cache keyed by the manifest's own sha256 (a second fetch is a no-op).

Where the store is and who we are comes from the environment (see `cong.storage.s3`), never from pipeline parameters.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cong import __version__
from cong.errors import CongError
from cong.progress import log
from cong.storage.cache import cache_root, entry_lock
from cong.storage.s3 import S3Settings, S3Uri, check_bucket, error_code, parse_s3_uri, storage_error, transient

MANIFEST_NAME = "cong-manifest.json"
MiB = 1024 * 1024
STAGE = "storage"

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer goes on, from the transfer threads, one call at a time."""


class NotPublished(CongError):
    """No manifest at a URI: never published, or its upload never finished."""


@dataclasses.dataclass(frozen=True)
class HubId:
    """A Hugging Face hub repository id (`gpt2`, `HuggingFaceTB/SmolLM2-135M-Instruct`); the hub client loads it."""

    repo_id: str


# `org/name`, optionally pinned to a revision (`org/name@v1.0`, `org/name@<commit>`).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?(@[\w./-]+)?$")


def parse_location(ref: str) -> S3Uri | Path | HubId:
    """What a model/data reference names: an S3 folder, a local path, or a Hugging Face hub id.

    A path that exists, or that starts with `/`, `.`, `~` or `file://`, is local; `org/name` or `name` that is not
    a local path is a hub id.
    """
    if ref.startswith("s3://"):
        return parse_s3_uri(ref)
    if ref.startswith("file://"):
        return Path(ref.removeprefix("file://"))
    if "://" in ref:
        raise CongError(f"{ref!r}: unsupported scheme; use s3://<bucket>/<prefix>, a local path or a hub id.")
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith(("/", ".", "~")) or not _HUB_ID.match(ref):
        return path
    return HubId(ref)


@dataclasses.dataclass(frozen=True)
class TransferOptions:
    """How files move: boto3's multipart settings and our retry of whole files on connection errors."""

    multipart_threshold: int = 16 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8  # threads for parts and files together
    attempts: int = 3  # tries of a whole file; each request inside is also retried by botocore (max_attempts)
    backoff_s: float = 1.0  # wait before the second try; doubles for each further one

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
        )


# --- manifest ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # relative, with '/'
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a published folder holds, and the bytes it is stored as: their sha256 (`digest`) names the cache."""

    files: tuple[FileEntry, ...]
    created: str
    code_version: str
    raw: bytes = dataclasses.field(repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def content_digest(self) -> str:
        """The digest of what the folder holds (`listing_digest`), the same as of the local folder it came from."""
        return listing_digest((entry.path, entry.sha256) for entry in self.files)

    @classmethod
    def create(cls, files: Iterable[FileEntry]) -> Manifest:
        entries = [dataclasses.asdict(entry) for entry in files]
        body = {
            "format": 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": f"cong {__version__}",
            "total_bytes": sum(entry["size"] for entry in entries),
            "files": entries,
        }
        return cls.from_bytes(json.dumps(body, indent=1).encode(), "the new manifest")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        try:
            body = json.loads(data)
            files = tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in body["files"])
            manifest = cls(files, str(body["created"]), str(body["code_version"]), data)
        except (ValueError, KeyError, TypeError) as exc:
            raise CongError(f"{where} is not a valid {MANIFEST_NAME} ({exc}); publish the folder again.") from None
        for entry in files:
            # A manifest names where files land on disk: nothing may point outside the folder.
            parts = entry.path.split("/")
            if entry.path.startswith("/") or ".." in parts or "" in parts or entry.path == MANIFEST_NAME:
                raise CongError(f"{where} lists the unsafe path {entry.path!r}; publish the folder again.")
        return manifest


def listing_digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over a folder's (relative name, sha256) pairs in name order: its content, wherever it is stored."""
    digest = hashlib.sha256()
    for name, sha256 in sorted(files):
        digest.update(f"{name}\0{sha256}\n".encode())
    return digest.hexdigest()


def folder_digest(path: Path) -> str:
    """`listing_digest` of a local folder (or of one file, listed by its name)."""
    if not path.is_dir():
        return listing_digest([(path.name, sha256_file(path))])
    return listing_digest((f.relative_to(path).as_posix(), sha256_file(f)) for f in path.rglob("*") if f.is_file())


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _local_files(folder: Path) -> dict[str, Path]:
    """Every file under `folder` by its relative path with '/', in sorted order."""
    if not folder.is_dir():
        raise CongError(f"cannot publish {folder}: it is not a folder.")
    files = dict(sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()))
    if not files:
        raise CongError(f"cannot publish {folder}: it holds no files.")
    if MANIFEST_NAME in files:
        raise CongError(f"cannot publish {folder}: it holds a file named {MANIFEST_NAME}, which storage reserves.")
    return files


# --- progress ------------------------------------------------------------------------------------------------------


class ProgressLog:
    """The default progress: a line every `every_s` seconds and one at the end, with MB done and MB/s."""

    def __init__(self, what: str, every_s: float = 5.0):
        self.what, self.every_s = what, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / MiB / max(now - self.start, 1e-6)
        log(STAGE, f"{self.what}: {done / MiB:.1f}/{total / MiB:.1f} MB, {rate:.1f} MB/s")


class _Tally:
    """Sums the bytes of many files for one Progress; a retried file starts again from 0."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.progress = total, progress
        self.done = 0
        self.by_file: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, name: str, count: int) -> None:
        with self.lock:
            self.by_file[name] = self.by_file.get(name, 0) + count
            self.done += count
            self.progress(self.done, self.total)

    def reset(self, name: str) -> None:
        with self.lock:
            self.done -= self.by_file.pop(name, 0)

    def subscriber(self, name: str, size: int | None = None):
        from s3transfer.subscribers import BaseSubscriber

        tally = self

        class Subscriber(BaseSubscriber):
            def on_queued(self, future, **kwargs):
                if size is not None:  # known from the manifest: saves a HEAD request per download
                    future.meta.provide_transfer_size(size)

            def on_progress(self, future, bytes_transferred, **kwargs):
                tally.add(name, bytes_transferred)

        return Subscriber()


# --- transfers -----------------------------------------------------------------------------------------------------


def _transfer(
    client,
    options: TransferOptions,
    names: Iterable[str],
    submit: Callable[[Any, str], Any],
    tally: _Tally,
    done: Callable[[str], None] = lambda name: None,
) -> None:
    """Runs submit(manager, name) for every file through one boto3 TransferManager (parts and files share its
    threads) and done(name) as each file finishes; files that fail with a transient error are tried again, as a
    whole, after a growing wait."""
    from boto3.s3.transfer import create_transfer_manager

    pending = list(names)
    for attempt in range(1, options.attempts + 1):
        failed: list[tuple[str, BaseException]] = []
        # Leaving the `with` on an error cancels what is still queued.
        with create_transfer_manager(client, options.transfer_config()) as manager:
            futures = [(name, submit(manager, name)) for name in pending]
            for name, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    if not transient(exc):
                        raise
                    failed.append((name, exc))
                else:
                    done(name)
        if not failed:
            return
        if attempt == options.attempts:
            raise failed[0][1]
        pending = [name for name, _ in failed]
        wait = options.backoff_s * 2 ** (attempt - 1)
        log(STAGE, f"{len(pending)} file(s) failed ({type(failed[0][1]).__name__}); trying again in {wait:.1f}s")
        for name in pending:
            tally.reset(name)
        time.sleep(wait)


def publish_dir(
    local_dir: Path | str,
    uri: str,
    *,
    settings: S3Settings | None = None,
    options: TransferOptions = TransferOptions(),
    progress: Progress | None = None,
) -> Manifest:
    """Upload every file of `local_dir` under `uri` (s3://bucket/prefix), then its manifest, last.

    An earlier manifest at `uri` is deleted first, so while files are replaced readers see "not published"
    rather than a mix. `progress` defaults to a log line every few seconds.
    """
    settings = settings or S3Settings.from_env()
    target = parse_s3_uri(uri)
    folder = Path(local_dir)
    local = _local_files(folder)
    sizes = {rel: path.stat().st_size for rel, path in local.items()}
    client = settings.client(max_pool_connections=options.max_concurrency + 2)
    check_bucket(client, settings, target.bucket)
    started = time.monotonic()
    tally = _Tally(sum(sizes.values()), progress or ProgressLog(f"upload {target}"))
    try:
        client.delete_object(Bucket=target.bucket, Key=target.key(MANIFEST_NAME))
        # Hashing reads the files a second time; it runs beside the upload instead of before it.
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sha256") as hashing:
            digests = {rel: hashing.submit(sha256_file, path) for rel, path in local.items()}
            _transfer(
                client,
                options,
                local,
                lambda manager, rel: manager.upload(
                    str(local[rel]), target.bucket, target.key(rel), subscribers=[tally.subscriber(rel)]
                ),
                tally,
            )
            manifest = Manifest.create(FileEntry(rel, sizes[rel], digests[rel].result()) for rel in local)
        client.put_object(
            Bucket=target.bucket, Key=target.key(MANIFEST_NAME), Body=manifest.raw, ContentType="application/json"
        )
    except Exception as exc:
        raise storage_error(exc, settings, f"uploading {folder} to {target}", target.bucket) from None
    elapsed = time.monotonic() - started
    log(
        STAGE,
        f"published {len(manifest.files)} files ({manifest.total_bytes / MiB:.1f} MB) to {target} in {elapsed:.1f}s "
        f"({manifest.total_bytes / MiB / max(elapsed, 1e-6):.1f} MB/s)",
    )
    return manifest


def read_manifest(uri: str, settings: S3Settings | None = None) -> Manifest:
    """The manifest of a published folder; a clear error when there is none (never published, or unfinished)."""
    settings = settings or S3Settings.from_env()
    source = parse_s3_uri(uri)
    return _read_manifest(settings.client(), settings, source)


def _read_manifest(client, settings: S3Settings, source: S3Uri) -> Manifest:
    key = source.key(MANIFEST_NAME)
    try:
        data = client.get_object(Bucket=source.bucket, Key=key)["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            raise NotPublished(
                f"{source} is not published: it has no {MANIFEST_NAME}, so its upload never finished or the URI is "
                "wrong. Publish the folder (again)."
            ) from None
        raise storage_error(exc, settings, f"reading s3://{source.bucket}/{key}", source.bucket) from None
    return Manifest.from_bytes(data, f"s3://{source.bucket}/{key}")


def _complete(folder: Path, manifest: Manifest) -> bool:
    """Whether `folder` is a finished fetch of exactly this manifest (sizes checked; contents were at fetch)."""
    marker = folder / MANIFEST_NAME
    if not marker.is_file() or hashlib.sha256(marker.read_bytes()).hexdigest() != manifest.digest:
        return False
    return all((folder / e.path).is_file() and (folder / e.path).stat().st_size == e.size for e in manifest.files)


def fetch_dir(
    uri: str,
    dest: Path | str | None = None,
    *,
    settings: S3Settings | None = None,
    options: TransferOptions = TransferOptions(),
    progress: Progress | None = None,
) -> Path:
    """Download the published folder `uri` and return where it is: `dest`, or the cache folder named by the
    manifest's sha256. Every file is checked against the manifest's size and sha256; nothing is left at the
    destination unless all match. A destination that already holds this manifest's files is returned at once.
    """
    settings = settings or S3Settings.from_env()
    source = parse_s3_uri(uri)
    client = settings.client(max_pool_connections=options.max_concurrency + 2)
    manifest = _read_manifest(client, settings, source)
    folder = Path(dest) if dest is not None else cache_root() / "objects" / manifest.digest[:32]
    if _complete(folder, manifest):
        return folder
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST_NAME).is_file():
        raise CongError(f"cannot fetch {source} into {folder}: it holds other files. Choose an empty or new folder.")
    partial = folder.with_name(f".{folder.name}.partial-{_owner()}")
    shutil.rmtree(partial, ignore_errors=True)
    entries = {entry.path: entry for entry in manifest.files}
    partial.mkdir(parents=True)
    for entry in manifest.files:
        (partial / entry.path).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tally = _Tally(manifest.total_bytes, progress or ProgressLog(f"download {source}"))
    try:
        # Each file is checked as soon as it is down, beside the downloads still running.
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sha256") as hashing:
            checks: dict[str, concurrent.futures.Future[str | None]] = {}
            _transfer(
                client,
                options,
                entries,
                lambda manager, rel: manager.download(
                    source.bucket,
                    source.key(rel),
                    str(partial / rel),
                    subscribers=[tally.subscriber(rel, entries[rel].size)],
                ),
                tally,
                done=lambda rel: checks.update({rel: hashing.submit(_check_file, partial, entries[rel], source)}),
            )
            problems = [problem for rel in entries if (problem := checks[rel].result())]
        if problems:
            raise CongError(
                f"{source} is corrupted: {len(problems)} file(s) differ from its manifest: {'; '.join(problems)}. "
                "Publish the folder again."
            )
    except CongError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise storage_error(exc, settings, f"downloading {source} to {folder}", source.bucket) from None
    (partial / MANIFEST_NAME).write_bytes(manifest.raw)
    _replace(partial, folder, manifest)
    elapsed = time.monotonic() - started
    log(
        STAGE,
        f"fetched {len(entries)} files ({manifest.total_bytes / MiB:.1f} MB) from {source} in {elapsed:.1f}s "
        f"({manifest.total_bytes / MiB / max(elapsed, 1e-6):.1f} MB/s)",
    )
    return folder


# Files a model's tokenizer and config never live in: its weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")


def fetch_light(uri: str, dest: Path, *, settings: S3Settings | None = None) -> Path:
    """The files of the published folder `uri` that are not weights (its config and tokenizer), checked against the
    manifest, into `dest`: what a tokenizer needs, without downloading a model."""
    settings = settings or S3Settings.from_env()
    source = parse_s3_uri(uri)
    client = settings.client()
    manifest = _read_manifest(client, settings, source)
    for entry in manifest.files:
        if entry.path.endswith(WEIGHT_SUFFIXES):
            continue
        (dest / entry.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(source.bucket, source.key(entry.path), str(dest / entry.path))
        except Exception as exc:
            raise storage_error(exc, settings, f"downloading {source}/{entry.path}", source.bucket) from None
        problem = _check_file(dest, entry, source)
        if problem:
            raise CongError(f"{source} is corrupted: {problem}. Publish the folder again.")
    return dest


def _check_file(folder: Path, entry: FileEntry, source: S3Uri) -> str | None:
    """What is wrong with a downloaded file (size, then sha256), or None."""
    path = folder / entry.path
    where = f"{entry.path} (s3://{source.bucket}/{source.key(entry.path)})"
    size = path.stat().st_size
    if size != entry.size:
        return f"{where}: {size} bytes, manifest says {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"{where}: sha256 {digest[:16]}..., manifest says {entry.sha256[:16]}..."
    return None


def _replace(partial: Path, folder: Path, manifest: Manifest) -> None:
    """Move a verified download into place, under the folder's lock: an older fetch there is replaced; an equal
    one that a concurrent fetch (another thread or process) finished meanwhile is kept (someone may be reading
    it)."""
    with entry_lock(folder):
        if _complete(folder, manifest):
            shutil.rmtree(partial, ignore_errors=True)
            return
        if folder.exists():
            stale = folder.with_name(f".{folder.name}.stale-{_owner()}")
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        partial.rename(folder)


def _owner() -> str:
    """This process and thread, for names of temporary folders that no concurrent fetch may share."""
    return f"{os.getpid()}-{threading.get_ident()}"


def publish_path(path: Path | str, uri: str, *, settings: S3Settings | None = None) -> str:
    """Publish a folder at `uri`, or a single file as the one file of the folder `uri`; returns the reference
    that names it (`uri`, or `uri/<file name>` for a file), which `localize` turns back into a local path."""
    path = Path(path)
    if path.is_dir():
        publish_dir(path, uri, settings=settings)
        return uri
    with tempfile.TemporaryDirectory(prefix="cong-publish-") as staging:
        (Path(staging) / path.name).symlink_to(path.resolve())
        publish_dir(staging, uri, settings=settings)
    return f"{uri.rstrip('/')}/{path.name}"


def localize(ref: str, settings: S3Settings | None = None) -> str:
    """A reference made loadable: an s3:// folder is fetched (cached) and its local path returned, and so is the
    folder of an s3:// file (`s3://bucket/folder/train.jsonl`); local paths and hub ids come back as they are."""
    location = parse_location(ref)
    if not isinstance(location, S3Uri):
        return ref
    settings = settings or S3Settings.from_env()
    if find_manifest(location, settings) is not None:
        return str(fetch_dir(ref, settings=settings))
    folder, _, name = ref.rstrip("/").rpartition("/")
    manifest = find_manifest(parse_s3_uri(folder), settings) if folder.count("/") >= 3 else None
    if manifest is None or name not in {entry.path for entry in manifest.files}:
        raise NotPublished(
            f"{ref} is not published: there is no {MANIFEST_NAME} under it, nor a published folder holding it. "
            "Publish it (again) or fix the URI."
        )
    return str(fetch_dir(folder, settings=settings) / name)


def find_manifest(source: S3Uri | str, settings: S3Settings | None = None) -> Manifest | None:
    """The manifest of a published folder, or None when nothing is published there."""
    settings = settings or S3Settings.from_env()
    source = parse_s3_uri(source) if isinstance(source, str) else source
    try:
        return _read_manifest(settings.client(), settings, source)
    except NotPublished:
        return None
