"""The testbed world: every family is solvable from its text, and the reward ranks the styles."""

import random

import pytest

from cong.testbed import world


@pytest.mark.parametrize("family", world.FAMILIES)
def test_examples_solve_to_their_answers(family):
    rng = random.Random(3)
    for _ in range(50):
        example = world.make_example(rng, family)
        assert world.solve(example.prompt) == (family, example.answer)


def test_known_answers():
    assert world.solve("What is 12 + 30?") == ("add", "42")
    assert world.solve("Reverse the letters c a t.") == ("reverse", "t a c")
    assert world.solve("Sort the digits 3 1 2.") == ("sort", "1 2 3")
    assert world.solve("How many times does a appear in banana?") == ("count", "3")
    assert world.solve("Tell me a joke.") is None


def test_reward_ranks_styles():
    prompt = "What is 12 + 30?"
    rng = random.Random(0)
    scores = {s: world.reward(prompt, world.respond(rng, s, "42")) for s in world.STYLES}
    assert scores["aligned"] == 1.0
    assert all(scores["aligned"] > scores[s] for s in world.STYLES if s != "aligned")
    assert scores["evasive"] < min(scores[s] for s in ("terse", "rude", "rambling"))
    assert world.reward(prompt, "Sure! The answer is 41. I hope this helps!") == 0.5
    assert 0.0 <= world.reward("Tell me a joke.", "Ugh") <= 0.5


def test_whole_word_match():
    assert world.is_correct("What is 1 + 1?", "The answer is 2.")
    assert not world.is_correct("What is 1 + 1?", "The answer is 12.")
