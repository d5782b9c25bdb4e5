"""Config validation: presets load, bad values name the field and its range, the CLI exits with 2."""

import json
import subprocess
import sys

import pytest

from cong.config import Config, load_config, preset_names
from cong.errors import CongError
from tests.conftest import MICRO


@pytest.mark.parametrize("name", preset_names())
def test_presets_validate(name):
    cfg = load_config(preset=name)
    assert cfg.name == name
    assert name in preset_names()


def test_paper_defaults():
    cfg = load_config(preset="qwen2.5-3b-to-7b")
    s = cfg.stages
    assert (s.cd_sample.alpha, s.cd_sample.relative_top) == (0.4, 0.1)
    assert (s.cd_sample.sampling.repetition_penalty, s.cd_sample.sampling.temperature) == (1.2, 0.8)
    assert s.weak_align.sample_seeds == [13, 21, 42, 79, 100]
    assert (s.weak_align.train.beta, s.weak_align.train.learning_rate) == (0.1, 8e-7)
    assert (s.sft.train.learning_rate, s.sft.train.epochs) == (1e-5, 2)
    assert (s.dpo.train.beta, s.dpo.train.learning_rate) == (0.5, 6e-7)
    assert s.strong_sample.sampling.seed == 50
    assert cfg.resources["dpo"].gpus == 4


@pytest.mark.parametrize("name", preset_names())
def test_paper_presets_score_cd_as_the_released_code(name):
    """The paper-scale presets reproduce the authors' CD scores; the testbed's use method.md's F."""
    form = load_config(preset=name).stages.cd_sample.score_form
    assert form == ("spec" if name.startswith("tiny") else "authors")


def test_extends_and_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: tiny\nname: mine\nstages:\n  cd_sample:\n    alpha: 0.3\n")
    cfg = load_config(path)
    assert cfg.stages.cd_sample.alpha == 0.3
    assert cfg.stages.cd_sample.relative_top == 0.1
    assert cfg.models.weak_base == "testbed:weak"


def test_out_of_range_names_field_and_range(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nstages:\n  cd_sample:\n    alpha: 1.5\n")
    with pytest.raises(CongError) as info:
        load_config(path)
    message = str(info.value)
    assert "stages.cd_sample.alpha = 1.5" in message
    assert "allowed: >= 0 and <= 1" in message
    assert str(path) in message


def test_unknown_key_and_wrong_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nstages:\n  sft:\n    train:\n      learning_rat: 0.1\n      epochs: many\n")
    message = str(pytest.raises(CongError, load_config, path).value)
    assert "stages.sft.train.learning_rat" in message and "Extra inputs are not permitted" in message
    assert "stages.sft.train.epochs = 'many'" in message


def test_not_a_mapping_and_bad_yaml(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "YAML mapping" in str(pytest.raises(CongError, load_config, tmp_path / "list.yaml").value)
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    assert "not valid YAML" in str(pytest.raises(CongError, load_config, tmp_path / "broken.yaml").value)
    assert "unknown preset" in str(pytest.raises(CongError, load_config, None, "nope").value)


def test_as_parameter_round_trips():
    cfg = load_config(preset="tiny")
    assert Config.model_validate(cfg.as_parameter()) == cfg


def test_cli_validate_exit_status(tmp_path, micro_testbed):
    """A good config validates with its models loaded: the micro one, whose testbed the session has built (the
    tiny preset's would take minutes to build here)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: tiny\nstages:\n  dpo:\n    train:\n      beta: -1\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "stages.dpo.train.beta = -1" in proc.stderr and "allowed: > 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "validate", str(MICRO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "valid (config 'micro'" in proc.stdout and "the models and their tokenizers" in proc.stdout


def test_methods_all_expands_in_table_order_and_names_are_checked(tmp_path):
    from cong.vocabulary import METHODS

    assert load_config(preset="tiny").methods == list(METHODS)
    cfg = load_config(preset="tiny", overrides={"methods": ["cong", "base", "wsd", "base"]})
    assert cfg.methods == ["base", "wsd", "cong"]
    assert load_config(preset="tiny", overrides={"methods": ["wspo", "all"]}).methods == list(METHODS)
    message = str(pytest.raises(CongError, load_config, None, "tiny", {"methods": ["cong", "wsp"]}).value)
    assert "methods.1 = 'wsp'" in message and "'wspo'" in message


def test_method_plan_switches_shared_stages_once():
    from cong.stages.plan import method_plan

    every = method_plan(load_config(preset="tiny"))
    assert every == {
        "weak_sft": True,
        "auxconf": True,
        "wspo": True,
        "icl_refine": True,
        "wsd_sft": True,
        "strong_ceiling": True,
        "wsd": True,
        "weak_samples": True,
        "cong_mode": "cong",
        "alpha_sweep": True,
    }
    only = method_plan(load_config(preset="tiny", overrides={"methods": ["base", "cong_s", "wspo"]}))
    assert only["cong_mode"] == "cong_s" and only["wspo"] and not only["weak_samples"]
    assert not any(only[m] for m in ("weak_sft", "auxconf", "icl_refine", "wsd", "wsd_sft", "strong_ceiling"))
    supplied = load_config(preset="tiny", overrides={"methods": ["wspo"], "models": {"weak_aligned": "testbed:weak"}})
    assert method_plan(supplied)["weak_samples"]  # no weak preference pairs: WSPO trains on weak samples


def test_parse_alphas():
    from pipelines.cli.common import parse_alphas

    assert parse_alphas("0, 0.5,1") == [0.0, 0.5, 1.0]
    assert parse_alphas("0,0.1,...,1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_alphas("0.2,0.4,...,0.8") == [0.2, 0.4, 0.6, 0.8]
    for bad in ("a,b", "0,...,1", "0.5,0.4,...,1"):
        assert "--alpha-sweep" in str(pytest.raises(CongError, parse_alphas, bad).value)


def test_cross_family_wspo_is_refused_before_any_stage(tmp_path, micro_testbed):
    """The check needs no model: the testbed's tokenizer is shared with no outside model."""
    from cong.stages.validate import check_methods

    cross = load_config(preset="tiny-cross-smol")
    assert "wspo" not in cross.methods
    check_methods(cross)
    wspo = load_config(preset="tiny-cross-smol", overrides={"methods": ["base", "wspo", "cong"]})
    message = str(pytest.raises(CongError, check_methods, wspo).value)
    assert "wspo needs the weak and strong models to share a tokenizer" in message
    assert "cross-family" in message and "Remove wspo from `methods`" in message

    # The preset with the micro testbed, which the session has built (the preflight loads the models first).
    config = tmp_path / "cross.yaml"
    config.write_text(f"extends: tiny-cross-smol\ntestbed: {json.dumps(load_config(MICRO).testbed.model_dump())}\n")
    out = tmp_path / "run"
    command = ["run", "--local", "--config", str(config), "--methods", "base,wspo", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *command], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert "wspo needs the weak and strong models to share a tokenizer" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
