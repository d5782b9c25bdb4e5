"""The testbed build: deterministic, cached by its settings, with a card that measures both models."""

import json

from cong.testbed import TESTBED_REFS
from cong.testbed import build as testbed_build


def test_card_and_files(micro_testbed, micro_config):
    assert micro_testbed == testbed_build.testbed_dir(micro_config.testbed)
    for name in TESTBED_REFS.values():
        assert (micro_testbed / name).exists(), name
    card = json.loads((micro_testbed / "card.json").read_text())
    weak, strong = card["models"]["weak"], card["models"]["strong"]
    assert strong["parameters"] > 2 * weak["parameters"]
    for model in (weak, strong):
        assert 0.0 <= model["held_out_accuracy"] <= 1.0 and 0.0 <= model["held_out_reward"] <= 1.0
    assert "held-out accuracy" in (micro_testbed / "README.md").read_text()


def test_eval_prompts_never_seen_in_training(micro_config):
    eval_set, train_set, pretrain_set = testbed_build._prompt_sets(micro_config.testbed)
    held_out = {e.prompt for e in eval_set}
    assert not held_out & {e.prompt for e in train_set + pretrain_set}


def test_settings_change_the_cache_key(micro_config):
    other = micro_config.testbed.model_copy(update={"seed": 1})
    assert testbed_build.testbed_dir(other) != testbed_build.testbed_dir(micro_config.testbed)
    assert testbed_build._prompt_sets(other)[0] != testbed_build._prompt_sets(micro_config.testbed)[0]
    assert testbed_build._prompt_sets(micro_config.testbed) == testbed_build._prompt_sets(micro_config.testbed)
