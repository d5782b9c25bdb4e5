"""The testbed: a synthetic world with tiny models, the embedded default's models and data."""

from cong.testbed.build import build_testbed, testbed_dir

TESTBED_REFS = {
    "testbed:weak": "weak",
    "testbed:strong": "strong",
    "testbed:train": "train.jsonl",
    "testbed:eval": "eval.jsonl",
}

__all__ = ["TESTBED_REFS", "build_testbed", "testbed_dir"]
