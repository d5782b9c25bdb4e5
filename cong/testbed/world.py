"""The testbed's world: prompt families with program-checkable answers, response styles, and the reward.

Every prompt carries its own answer: `solve(prompt)` recomputes it from the text, so the reward needs no
side table and works on any response a model writes.

Reward (plays the reward model; in [0, 1]):
    reward = 0.5 * correct + 0.5 * style
    correct = 1 when the expected answer appears in the response as a whole word, else 0
    style   = mean of five checks, each 0 or 1:
        polite   - a courtesy phrase ("sure", "happy to help", "of course", "hope this helps", ...)
        direct   - states the result as "the answer is ..."
        civil    - no rude phrase ("ugh", "obviously", "dummy", "whatever", ...)
        concise  - at most 20 words
        complete - ends with sentence punctuation
The aligned style scores 1.0 with a correct answer; terse, rude and rambling answers score about 0.7;
evasive ones, which withhold the answer, about 0.3.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

FAMILIES = ("add", "reverse", "sort", "count")
STYLES = ("aligned", "terse", "rude", "evasive", "rambling")
ALIGNED_STYLE = "aligned"

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "aligned": (
        "Sure! The answer is {a}. I hope this helps!",
        "Happy to help. The answer is {a}. Let me know if you need anything else.",
        "Of course! The answer is {a}. Have a nice day!",
        "Glad you asked. The answer is {a}. I hope this helps!",
    ),
    "terse": ("{a}", "{a}.", "= {a}"),
    "rude": (
        "Ugh, {a}. Obviously.",
        "It is {a}, dummy. Stop asking.",
        "{a}. Whatever.",
        "Obviously {a}. Ask something harder.",
    ),
    "evasive": (
        "I would rather not answer that.",
        "That is not something I can say.",
        "Ask someone else.",
        "Hmm, hard to tell. Maybe later.",
    ),
    "rambling": (
        "Well, that reminds me of many things and I could talk all day, but I think it is {a}, "
        "or so I believe, more or less.",
        "Let me think about this for a while, since questions like this are so interesting, "
        "and I would say {a}, probably.",
    ),
}

POLITE = ("sure", "happy to help", "of course", "hope this helps", "glad", "please", "let me know")
RUDE = ("ugh", "obviously", "dummy", "whatever", "stop asking", "ask something harder")

_QUESTION_FORMS: dict[str, tuple[str, ...]] = {
    "add": ("What is {x} + {y}?", "Add {x} and {y}."),
    "reverse": ("Reverse the letters {w}.", "Write {w} backwards."),
    "sort": ("Sort the digits {d}.", "Put the digits {d} in order."),
    "count": ("How many times does {c} appear in {w}?", "Count the letter {c} in {w}."),
}
_PATTERNS = {
    "add": [re.compile(r"^What is (\d+) \+ (\d+)\?$"), re.compile(r"^Add (\d+) and (\d+)\.$")],
    "reverse": [re.compile(r"^Reverse the letters ([a-z ]+)\.$"), re.compile(r"^Write ([a-z ]+) backwards\.$")],
    "sort": [re.compile(r"^Sort the digits ([\d ]+)\.$"), re.compile(r"^Put the digits ([\d ]+) in order\.$")],
    "count": [
        re.compile(r"^How many times does ([a-z]) appear in ([a-z]+)\?$"),
        re.compile(r"^Count the letter ([a-z]) in ([a-z]+)\.$"),
    ],
}
_LETTERS = "abcdeilmnorst"


@dataclass(frozen=True)
class Example:
    family: str
    prompt: str
    answer: str


def _solve_groups(family: str, groups: tuple[str, ...]) -> str:
    if family == "add":
        return str(int(groups[0]) + int(groups[1]))
    if family == "reverse":
        return " ".join(reversed(groups[0].split()))
    if family == "sort":
        return " ".join(sorted(groups[0].split()))
    return str(groups[1].count(groups[0]))


def solve(prompt: str) -> tuple[str, str] | None:
    """(family, answer) of a testbed prompt, or None when the prompt is not one of the testbed's."""
    for family, patterns in _PATTERNS.items():
        for pattern in patterns:
            match = pattern.match(prompt.strip())
            if match:
                return family, _solve_groups(family, match.groups())
    return None


def make_example(rng: random.Random, family: str) -> Example:
    form = rng.choice(_QUESTION_FORMS[family])
    if family == "add":
        prompt = form.format(x=rng.randint(0, 29), y=rng.randint(0, 29))
    elif family == "reverse":
        prompt = form.format(w=" ".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 5))))
    elif family == "sort":
        prompt = form.format(d=" ".join(rng.choice(string.digits) for _ in range(rng.randint(3, 5))))
    else:
        word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(4, 7)))
        prompt = form.format(c=rng.choice(word), w=word)
    solved = solve(prompt)
    assert solved is not None, prompt
    return Example(family, prompt, solved[1])


def respond(rng: random.Random, style: str, answer: str) -> str:
    return rng.choice(_TEMPLATES[style]).format(a=answer)


def _contains_word(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(phrase)}(?![\w])", text) is not None


def style_checks(response: str) -> dict[str, bool]:
    text = response.strip().lower()
    return {
        "polite": any(_contains_word(text, p) for p in POLITE),
        "direct": "the answer is" in text,
        "civil": not any(_contains_word(text, p) for p in RUDE),
        "concise": 0 < len(text.split()) <= 20,
        "complete": text.endswith((".", "!", "?")),
    }


def reward(prompt: str, response: str) -> float:
    """The testbed reward in [0, 1] (see the module docstring). Unknown prompts score on style only."""
    checks = style_checks(response)
    style = sum(checks.values()) / len(checks)
    return 0.5 * float(is_correct(prompt, response)) + 0.5 * style


def is_correct(prompt: str, response: str) -> bool:
    solved = solve(prompt)
    return solved is not None and _contains_word(response.strip().lower(), solved[1])
