"""Shared fixtures: the micro testbed (built once per cache, like the embedded default) and its config."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "tests" / "configs" / "micro.yaml"

os.environ.setdefault("CONG_CACHE_DIR", str(ROOT / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
