"""Which stages a run needs for its methods, and whether its methods fit its models.

The pipeline's first task computes the plan from the config at run time, so the method set stays a
pipeline parameter: changing `methods` when submitting a compiled pipeline changes which branches run.
"""

from __future__ import annotations

from typing import Any

from cong.config import SHARED_VOCAB_METHODS, Config
from cong.errors import CongError

TRAINED_BRANCHES = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft")
# Methods trained on one weak sample per train prompt (the weak labels).
WEAK_LABEL_METHODS = ("weak_sft", "auxconf", "icl_refine")


def method_plan(cfg: Config) -> dict[str, Any]:
    """Branch switches: one per trained baseline, `wsd`, `weak_samples`, `alpha_sweep`, and `cong_mode`.

    `cong_mode` is `cong` (CD -> ConG-S -> ConG), `cong_s` (CD -> ConG-S) or `none`: one CD pass and one
    ConG-S model serve both rows. WSPO trains on the weak preference pairs' chosen responses; when the
    run is given an aligned weak model there are no such pairs, and it trains on the weak samples instead.
    """
    chosen = set(cfg.methods)
    supplied = cfg.models.weak_aligned is not None
    plan: dict[str, Any] = {m: m in chosen for m in (*TRAINED_BRANCHES, "wsd")}
    plan["weak_samples"] = bool(chosen & set(WEAK_LABEL_METHODS)) or ("wspo" in chosen and supplied)
    plan["cong_mode"] = "cong" if "cong" in chosen else "cong_s" if "cong_s" in chosen else "none"
    plan["alpha_sweep"] = bool(cfg.stages.alpha_sweep.alphas)
    return plan


def _vocabulary(ref: str, cfg: Config) -> dict[str, int]:
    from transformers import AutoTokenizer

    from cong.refs import resolve

    try:
        return AutoTokenizer.from_pretrained(resolve(ref, cfg)).get_vocab()
    except OSError as exc:
        raise CongError(f"cannot load a tokenizer from {ref!r}: {exc}") from None


def shares_vocabulary(weak_ref: str, strong_ref: str, cfg: Config) -> bool:
    """Whether two models tokenize alike. Testbed models share the testbed's tokenizer and no other."""
    weak_testbed, strong_testbed = weak_ref.startswith("testbed:"), strong_ref.startswith("testbed:")
    if weak_testbed or strong_testbed:
        return weak_testbed and strong_testbed
    return weak_ref == strong_ref or _vocabulary(weak_ref, cfg) == _vocabulary(strong_ref, cfg)


def check_methods(cfg: Config) -> None:
    """Refuse methods the models cannot run, before any stage starts."""
    needs_shared = [m for m in cfg.methods if m in SHARED_VOCAB_METHODS]
    if needs_shared and not shares_vocabulary(cfg.models.weak_base, cfg.models.strong_base, cfg):
        raise CongError(
            f"method {', '.join(needs_shared)} needs the weak and strong models to share a tokenizer (its loss "
            f"compares their log-probabilities token by token), but {cfg.models.weak_base!r} and "
            f"{cfg.models.strong_base!r} use different vocabularies: this is a cross-family setting. Remove "
            f"{', '.join(needs_shared)} from `methods` (every other method works across families), or choose a "
            "strong model from the weak model's family."
        )
