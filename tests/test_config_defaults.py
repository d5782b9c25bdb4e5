"""Overrides merge, never reset: a mapping in a preset, a config or the command line changes only the keys it
names, at every depth, on top of each stage's own defaults (cd_sample's repetition penalty 1.2, each sampling
stage's seed), not the settings classes' generic ones."""

import subprocess
import sys
import typing

import pytest
import yaml
from pydantic import BaseModel

from cong.config import Config, default_resources, load_config, preset_names
from cong.config.load import _preset_dict
from cong.errors import CongError
from cong.vocabulary import MULTI_NODE_STAGES

MINIMAL = {
    "name": "minimal",
    "models": {"weak_base": "weak", "strong_base": "strong"},
    "data": {"train_prompts": "train.jsonl", "eval_prompts": "eval.jsonl"},
}


def leaves(tree: dict, path: tuple = ()):
    """(path, value) of every scalar of a nested mapping; lists, None and empty mappings count as scalars."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key), value


def at(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def nested(path: tuple, value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def declared_default(path: tuple):
    """The default the settings classes declare for `path`: a field's default object, then its attributes (so the
    stage's own default, e.g. CdSampleSettings' sampling with repetition penalty 1.2)."""
    field = Config.model_fields[path[0]]
    value = field.get_default(call_default_factory=True)
    for key in path[1:]:
        value = getattr(value, key)
    return value.model_dump() if isinstance(value, BaseModel) else value


# Keys that are not a stage's setting: the run's own (name, models, data), the methods (`all` expands to the
# list), and entries the user names (GPU pools) or that have per-stage defaults (resources, checked apart).
NOT_STAGE_DEFAULTS = ("name", "models", "data", "methods")


def field_at(path: tuple):
    """The pydantic field at `path` (None below a mapping of user-named entries)."""
    model, field = Config, None
    for key in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
            return None
        field = model.model_fields[key]
        args = typing.get_args(field.annotation) or (field.annotation,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return field


def candidates(path: tuple, value) -> list:
    """Other values for a leaf, to try in turn until one validates."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, float):
        return [value / 2, value * 0.9, value + 0.05, value * 2]
    if isinstance(value, str):
        field = field_at(path)
        args = typing.get_args(field.annotation) if field else ()
        literals = [a for arg in args for a in (typing.get_args(arg) or (arg,)) if isinstance(a, str)]
        return [a for a in literals if a != value]
    return []


def base_dump(preset: str | None, tmp_path) -> tuple[dict, typing.Callable[[dict], Config]]:
    if preset is not None:
        return load_config(preset=preset).model_dump(), lambda over: load_config(preset=preset, overrides=over)
    path = tmp_path / "minimal.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    return load_config(path).model_dump(), lambda over: load_config(path, overrides=over)


@pytest.mark.parametrize("preset", [None, *preset_names()])
def test_overriding_one_key_leaves_every_other_key(preset, tmp_path):
    before, load = base_dump(preset, tmp_path)
    tested, untestable = 0, []
    for path, value in leaves(before):
        if path[0] in ("name", "models", "data"):
            continue
        for candidate in candidates(path, value):
            try:
                after = load(nested(path, candidate)).model_dump()
            except CongError:
                continue
            expected = nested(path, candidate)
            changed = [p for p, v in leaves(after) if v != at(before, p) and p != path]
            assert not changed, f"overriding {'.'.join(path)} also changed {['.'.join(p) for p in changed]}"
            assert at(after, path) == at(expected, path)
            tested += 1
            break
        else:
            if candidates(path, value):
                untestable.append(".".join(path))
    assert tested > 150, (tested, untestable)
    # Values the validators pin: weak_align ranks samples by an explicit reward, drawn (never greedy); only sft and
    # dpo train on more than one node.
    pinned = {"stages.weak_align.reward_backend", "stages.weak_align.sampling.greedy"}
    pinned |= {f"resources.{stage}.nodes" for stage in before["resources"] if stage not in MULTI_NODE_STAGES}
    assert set(untestable) <= pinned, set(untestable) - pinned


@pytest.mark.parametrize("preset", [None, *preset_names()])
def test_keys_a_preset_leaves_out_keep_the_stages_own_defaults(preset, tmp_path):
    resolved, _ = base_dump(preset, tmp_path)
    named = dict(leaves(_preset_dict(preset) if preset else MINIMAL))
    for path, value in leaves(resolved):
        if (
            path[0] in NOT_STAGE_DEFAULTS
            or path[:2] == ("scheduling", "pools")
            or any(path[: len(p)] == p for p in named)
        ):
            continue
        if path[0] == "resources" and len(path) > 1:
            stage = path[1]
            default = at(default_resources(stage if stage != "promote" else "evaluate"), path[2:])
            assert value == default, f"{'.'.join(path)} = {value!r}, its stage's default is {default!r}"
            continue
        assert value == declared_default(path), f"{'.'.join(path)} = {value!r}, not its stage's default"


def test_tiny_keeps_the_paper_decoding_and_distinct_seeds():
    """The defects the merge fixes, named: tiny gives `sampling: {max_new_tokens, batch_size}` to several stages."""
    s = load_config(preset="tiny").stages
    assert s.cd_sample.sampling.repetition_penalty == 1.2
    assert (s.cd_sample.sampling.max_new_tokens, s.cd_sample.sampling.batch_size) == (48, 64)
    seeds = [s.weak_sample.sampling.seed, s.cd_sample.sampling.seed, s.strong_sample.sampling.seed]
    assert len({*seeds, s.evaluate.sampling.seed}) == 4


def test_a_stage_pod_entry_keeps_its_stage_defaults():
    """`resources.plan: {cpu: "2"}` keeps plan a light pod (no GPU), and promote starts from evaluate's pod."""
    cfg = load_config(
        preset="qwen2.5-3b-to-7b",
        overrides={"resources": {"plan": {"cpu": "2"}, "promote": {"memory": "99Gi"}}},
    )
    assert (cfg.resources["plan"].cpu, cfg.resources["plan"].gpus, cfg.resources["plan"].memory) == ("2", 0, "2Gi")
    evaluate = cfg.resources["evaluate"]
    assert cfg.resources["promote"].memory == "99Gi"
    assert (cfg.resources["promote"].gpus, cfg.resources["promote"].cpu) == (evaluate.gpus, evaluate.cpu)
    assert cfg.resources_for("merge_shards").gpus == 0 and cfg.resources_for("promote") != evaluate
    assert load_config(preset="qwen2.5-3b-to-7b").resources_for("promote") == evaluate


def test_validate_show_prints_the_resolved_config(tmp_path):
    """The resolved config comes out first, whatever the checks that follow find (here: models that are not there)."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "stages": {"cd_sample": {"sampling": {"max_new_tokens": 12}}}}))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "validate", str(path), "--show"], capture_output=True, text=True
    )
    shown = yaml.safe_load(proc.stdout)
    assert shown["stages"]["cd_sample"]["sampling"]["max_new_tokens"] == 12
    assert shown["stages"]["cd_sample"]["sampling"]["repetition_penalty"] == 1.2
    assert shown["stages"]["strong_sample"]["sampling"]["seed"] == 50
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_config_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("extends: tiny\n# caf\xe9\nname: x\n".encode("latin-1"))
    message = str(pytest.raises(CongError, load_config, path).value)
    assert f"{path}, line 2, column 6: not UTF-8" in message and "Save the file as UTF-8" in message
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "validate", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "line 2" in proc.stderr and "Traceback" not in proc.stderr
