"""A run's inputs and outputs through a real SeaweedFS server on 127.0.0.1 (cong.inputs.publish,
cong.storage.publish, cong.storage.folders)."""

import shutil

import pytest

from cong.config import load_config
from cong.errors import CongError
from cong.inputs import fetch, publish
from cong.inputs.refs import resolve
from cong.storage import folders as storage
from cong.storage.folders import sha256_file
from cong.storage.s3 import ensure_bucket


def test_inputs_are_imported_once_and_load_back_from_the_store(store, micro_config, micro_testbed, monkeypatch):
    """The testbed's models and prompt files go to s3://<bucket>/inputs/; the config names them by URI and the
    stages' resolve() fetches the same bytes back. A second import of the same content uploads nothing."""
    for name, value in store.env().items():  # the stages find the store through the environment
        monkeypatch.setenv(name, value)
    run_cfg, imported = publish.import_inputs(micro_config)

    assert set(imported) == {"weak_base", "strong_base", "train_prompts", "eval_prompts"}
    assert imported["weak_base"]["from"] == "testbed:weak"
    assert run_cfg.models.weak_base == imported["weak_base"]["uri"]
    assert run_cfg.data.train_prompts.startswith("s3://cong/inputs/train_prompts-")
    assert run_cfg.data.train_prompts.endswith("/train.jsonl")

    prompts = resolve(run_cfg.data.train_prompts, run_cfg)
    assert sha256_file(prompts) == sha256_file(resolve("testbed:train", micro_config))
    weak = resolve(run_cfg.models.weak_base, run_cfg)
    original = resolve("testbed:weak", micro_config)
    assert weak != original
    assert sha256_file(f"{weak}/model.safetensors") == sha256_file(f"{original}/model.safetensors")

    def no_upload(*args, **kwargs):
        raise AssertionError("an input already in the store was uploaded again")

    monkeypatch.setattr(storage, "publish_path", no_upload)
    again, _ = publish.import_inputs(micro_config)
    assert again.models == run_cfg.models and again.data == run_cfg.data


def test_content_digest_follows_content_not_location(tmp_path):
    folder = tmp_path / "a"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(b"12345")
    (folder / "y.txt").write_text("y")
    copy = shutil.copytree(folder, tmp_path / "b")
    store = load_config(preset="tiny").storage.located()
    assert fetch.content_uri(store, "f", folder) == fetch.content_uri(store, "f", copy)
    (copy / "y.txt").write_text("z")
    assert fetch.content_uri(store, "f", folder) != fetch.content_uri(store, "f", copy)


def test_a_file_of_a_published_folder_is_a_reference(store, tmp_path, monkeypatch):
    """publish_path of a single file names `<folder>/<file>`; localize fetches it, and refuses a name that the
    folder's manifest does not list, or a URI with nothing published."""
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))
    settings = store.settings()
    ensure_bucket("files", settings)
    data = tmp_path / "train.jsonl"
    data.write_text('{"id": "a", "prompt": "hi"}\n')
    ref = storage.publish_path(data, "s3://files/sets/one", settings=settings)
    assert ref == "s3://files/sets/one/train.jsonl"
    assert open(storage.localize(ref, settings)).read() == data.read_text()

    with pytest.raises(CongError, match="is not published"):
        storage.localize("s3://files/sets/one/other.jsonl", settings)
    with pytest.raises(CongError, match="is not published"):
        storage.localize("s3://files/sets/none", settings)
