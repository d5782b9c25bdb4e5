"""References to the Hugging Face Hub fail fast and say what to do (cong.inputs.hub, through `cong validate`).

There is no hub here: the tests point HF_ENDPOINT at a closed port (no hub reachable), at a server that never
answers, and at a local server that answers as the hub's API does for an unknown or gated repository (status and
`X-Error-Code` header, the protocol huggingface_hub reads), with an empty Hugging Face cache.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cong.inputs.hub import PROBE_TIMEOUT_S, hub_problems, hub_reference


class FakeHub(http.server.BaseHTTPRequestHandler):
    """`gated/*` models are gated, every other repository unknown."""

    def _answer(self):
        if self.path.startswith("/gated/"):
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        else:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Yields a function that starts a server on 127.0.0.1 with a handler and returns its URL."""
    servers = []

    def start(handler) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def validate(tmp_path: Path, raw: dict, endpoint: str, offline: str = "0") -> tuple[subprocess.CompletedProcess, float]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": offline, "HF_HOME": str(tmp_path / "hf")}
    env["CONG_CACHE_DIR"] = str(tmp_path / "cache")
    started = time.monotonic()
    command = [sys.executable, "-m", "pipelines.cli", "validate", str(config)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    return proc, time.monotonic() - started


def test_a_paper_preset_without_hub_access_ends_in_seconds_with_the_fixes(tmp_path):
    proc, seconds = validate(tmp_path, {"extends": "qwen2.5-3b-to-7b"}, closed_port())
    assert proc.returncode == 2, proc.stderr
    assert seconds < 30, seconds
    assert "Traceback" not in proc.stderr and "Save the model again" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "cannot be reached from here" in line]
    fields = ("models.weak_base", "models.strong_base", "data.train_prompts", "data.eval_prompts")
    assert [line.split()[0] for line in lines] == list(fields), proc.stderr
    for line in lines[:2]:  # the models: a local copy, a mirror, or the cache
        assert "local model folder or an s3:// URI" in line and "HF_ENDPOINT" in line and "hf download" in line
    for line in lines[2:]:
        assert "local prompt file (JSONL)" in line and "HF_ENDPOINT" in line


def test_unknown_and_gated_references_are_named_as_such(tmp_path, server):
    raw = {
        "extends": "qwen2.5-3b-to-7b",
        "models": {"weak_base": "gated/llama-3b", "strong_base": "nobody/no-such-model"},
        "data": {"train_prompts": "hf:nobody/no-such-prompts:train", "eval_prompts": "hf:nobody/no-such-prompts:test"},
    }
    proc, seconds = validate(tmp_path, raw, server(FakeHub))
    assert proc.returncode == 2 and seconds < 30, proc.stderr
    assert "models.weak_base 'gated/llama-3b': gated/llama-3b is gated on the hub" in proc.stderr
    assert "HF_TOKEN" in proc.stderr
    assert "no folder nobody/no-such-model here, and the hub" in proc.stderr
    assert "has no dataset nobody/no-such-prompts" in proc.stderr


def test_a_hub_that_never_answers_is_given_up_on(server, monkeypatch):
    class Silent(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            time.sleep(PROBE_TIMEOUT_S * 4)

        def log_message(self, *args):
            pass

    from huggingface_hub import constants

    url = server(Silent)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    started = time.monotonic()
    found = hub_problems(["org/model"], [])
    assert time.monotonic() - started < PROBE_TIMEOUT_S + 3
    assert "cannot be reached from here" in found["org/model"], found


def test_offline_the_cache_decides(tmp_path, monkeypatch):
    """With HF_HUB_OFFLINE, a model in the cache needs nothing more; one that is not there is named."""
    from huggingface_hub import constants

    snapshot = tmp_path / "models--org--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--cached" / "refs").mkdir()
    (tmp_path / "models--org--cached" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    found = hub_problems(["org/cached", "org/absent"], [])
    assert list(found) == ["org/absent"]
    assert "HF_HUB_OFFLINE is set" in found["org/absent"] and "hf download org/absent" in found["org/absent"]


def test_only_hub_references_are_probed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert hub_reference("org/local", True) is None, "a folder here"
    assert hub_reference("org/name", True) == ("model", "org/name")
    assert hub_reference("data/train.jsonl", False) is None, "a prompt file is never a hub model"
    for ref in ("testbed:weak", "s3://b/m", "gguf:pkg/m.gguf", "./m", "/abs/m"):
        assert hub_reference(ref, True) is None, ref
    assert hub_reference("hf:org/ds:train", False) == ("dataset", "org/ds")


def fake_cache(root: Path, repo: str, commits: dict[str, Path], refs: dict[str, str]) -> None:
    """A Hugging Face cache as huggingface_hub lays it out: a snapshot folder per commit, a file per ref."""
    import shutil

    repo_dir = root / f"models--{repo.replace('/', '--')}"
    for commit, model in commits.items():
        shutil.copytree(model, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    for name, commit in refs.items():
        (repo_dir / "refs" / name).write_text(commit)


def test_a_pinned_revision_is_the_one_loaded(tmp_path, micro_testbed):
    """`org/name@revision` loads that revision's snapshot, not `main`'s: offline, from a cache holding two commits of
    one model (the micro testbed's weak and strong models). The reference stands for the pinned commit, `cong
    validate` passes the pinned model, and a revision the cache lacks is named with its download command."""
    old, new = "a" * 40, "b" * 40
    cache = tmp_path / "hf" / "hub"
    fake_cache(
        cache, "org/tiny", {old: micro_testbed / "weak", new: micro_testbed / "strong"}, {"main": new, "v1": old}
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache)}
    probe = (
        "import sys; from cong.config import load_config; from cong.inputs.refs import resolve; "
        "from cong.inputs.hub import hub_revision; cfg = load_config(sys.argv[1]); "
        "print(resolve('org/tiny@v1', cfg)); print(hub_revision('org/tiny@v1')); print(hub_revision('org/tiny'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(Path(__file__).parent / "configs" / "micro.yaml")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    assert out == [str(cache / "models--org--tiny" / "snapshots" / old), old, new]

    raw = yaml.safe_load((Path(__file__).parent / "configs" / "micro.yaml").read_text())
    raw["models"] = {**raw.get("models", {}), "weak_base": f"org/tiny@{old}", "strong_base": "org/tiny@v2"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "validate", str(config)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert "models.weak_base" not in proc.stderr, "the pinned commit is in the cache"
    assert "models.strong_base 'org/tiny@v2': HF_HUB_OFFLINE is set" in proc.stderr
    assert "hf download org/tiny --revision v2" in proc.stderr
    assert hub_reference(f"org/tiny@{old}", True) == ("model", f"org/tiny@{old}")


def test_without_a_hub_a_cached_copy_is_offered_with_the_commit_to_pin(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "c" * 40
    snapshot = tmp_path / "models--org--cached" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--cached" / "refs").mkdir()
    (tmp_path / "models--org--cached" / "refs" / "main").write_text(commit)
    url = closed_port()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    found = hub_problems(["org/cached", "org/absent@v3"], [])
    assert "cannot be reached from here" in found["org/cached"]
    assert "(`hf download org/absent --revision v3`)" in found["org/absent@v3"], (
        "the download names the pinned revision"
    )
    assert (
        f"HF_HUB_OFFLINE=1: this machine's cache ({tmp_path}) has a copy (pin the copy it has: org/cached@{commit})"
        in found["org/cached"]
    )


def test_a_hub_model_is_copied_into_the_store_once_per_commit(tmp_path, micro_testbed, store):
    """The fetch task's copy of a hub model (cong.inputs.fetch): the commit the reference stands for (a pinned tag,
    or `main`), its files under `inputs/hub/<org>--<name>/<commit>/` in the store with the sha256 of their content,
    offline here from a cache holding two commits; a second fetch of the same commit copies nothing."""
    from cong.storage.folders import folder_digest
    from cong.storage.s3 import ensure_bucket

    old, new = "c" * 40, "d" * 40
    cache = tmp_path / "hf" / "hub"
    fake_cache(
        cache, "org/tiny", {old: micro_testbed / "weak", new: micro_testbed / "strong"}, {"main": new, "v1": old}
    )
    ensure_bucket("mlpipeline", store.settings())
    env = {
        **os.environ,
        **store.env(),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(cache),
    }
    probe = (
        "import sys; from cong.config import load_config; from cong.inputs.fetch import fetch_input; "
        "from cong.storage import folders; cfg = load_config(sys.argv[1]); "
        "cfg = cfg.model_copy(update={'storage': cfg.storage.located('s3://mlpipeline/v2/artifacts')}); "
        "got = [fetch_input(r, 'weak_base', cfg) for r in ('org/tiny@v1', 'org/tiny')]; "
        "folders.publish_dir = None; again = fetch_input('org/tiny@v1', 'weak_base', cfg); "
        "[print(g.uri, g.revision, g.digest) for g in (*got, again)]"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(Path(__file__).parent / "configs" / "micro.yaml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split() for line in out.stdout.splitlines()]
    base = "s3://mlpipeline/v2/artifacts/inputs/hub/org--tiny"
    assert lines[0] == [f"{base}/{old}", old, f"sha256:{folder_digest(micro_testbed / 'weak')}"]
    assert lines[1] == [f"{base}/{new}", new, f"sha256:{folder_digest(micro_testbed / 'strong')}"]
    assert lines[2] == lines[0], "found in the store: nothing downloaded or copied again"
