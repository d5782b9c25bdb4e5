"""Shared fixtures: the micro testbed (built once per cache, like the embedded default) and its config."""

import os
from pathlib import Path

import pytest
import yaml

from pipelines.compile import compile_pipeline

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "tests" / "configs" / "micro.yaml"

os.environ.setdefault("CONG_CACHE_DIR", str(ROOT / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compiled_documents(cfg, out: Path) -> list[dict]:
    """The compiled pipeline's YAML documents (the pipeline spec, then kfp-kubernetes' platform one), read with
    libyaml: PyYAML's own reader takes seconds for one."""
    return list(yaml.load_all(compile_pipeline(cfg, out).read_text(), Loader=yaml.CSafeLoader))


@pytest.fixture(scope="session")
def micro_config():
    from cong.config import load_config

    return load_config(MICRO)


@pytest.fixture(scope="session")
def micro_testbed(micro_config) -> Path:
    from cong.testbed import build_testbed

    return build_testbed(micro_config.testbed, progress=lambda m: None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SeaweedFS server on 127.0.0.1 for the module; stop() sends SIGTERM to its PID and waits (SIGKILL
    after a timeout)."""
    from cong.storage.embedded import EmbeddedObjectStore

    server = EmbeddedObjectStore(tmp_path_factory.mktemp("objectstore")).start()
    yield server
    pid = server.pid
    server.stop()
    assert not Path(f"/proc/{pid}").exists(), "the server process is gone (and reaped)"


def changed(before_dir, after_dir) -> bool:
    """Whether training moved any weight: a stage that trained nothing would still write a model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(before_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(after_dir).state_dict()
    assert before.keys() == after.keys()
    return any(not torch.equal(before[k], after[k]) for k in before)


def role_rules(role: dict) -> set[tuple[str, str, str]]:
    """An RBAC Role's grants as (API group, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture
def kfp(monkeypatch):
    """A stand-in KFP API server (tests/kfp_server.py) on a free port of 127.0.0.1, and the connection settings
    pointing at it (a bearer token; no namespace, UI or experiment from the environment)."""
    from tests.kfp_server import TOKEN, FakeKfp, serve

    state = FakeKfp()
    server = serve(state)
    for name in ("KFP_HOST", "KFP_NAMESPACE", "KFP_UI_URL", "KFP_EXPERIMENT", "KFP_COOKIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "/nonexistent/token")
    yield state
    server.shutdown()
    server.server_close()
    for request in state.calls("POST", "/recurringruns"):
        assert len(request["json"]["trigger"]["cron_schedule"]["cron"].split()) == 6, "a 5-field cron reached KFP"
