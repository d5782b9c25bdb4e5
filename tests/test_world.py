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
    assert world.solve("Which is the largest of 3 8 1?") == ("largest", "8")
    assert world.solve("Name the smallest digit in 3 8 1.") == ("smallest", "1")
    assert world.solve("Sort the digits 3 1 2.") == ("sort", "1 2 3")
    assert world.solve("Tell me a joke.") is None


def test_reward_ranks_styles():
    prompt = "Which is the largest of 4 2 7?"
    rng = random.Random(0)
    scores = {s: world.reward(prompt, world.respond(rng, s, "7")) for s in world.STYLES}
    assert scores["aligned"] == 1.0
    assert all(scores["aligned"] > scores[s] for s in world.STYLES if s != "aligned")
    assert scores["evasive"] < min(scores[s] for s in ("terse", "rude", "rambling"))
    assert world.reward(prompt, "Sure! The answer is 4. I hope this helps!") == 0.5
    assert 0.0 <= world.reward("Tell me a joke.", "Ugh") <= 0.5


def test_whole_word_match():
    assert world.is_correct("Which is the largest of 1 2?", "The answer is 2.")
    assert not world.is_correct("Which is the largest of 1 2?", "The answer is 12.")
