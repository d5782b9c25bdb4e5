"""Decoding: contrastive scores (contrastive.py), the batched, KV-cached generation loop (generate.py, kv_cache.py),
sampling prompt rows with a model or a contrastive pair (sampler.py), shared-weight pairs (shared_lora.py),
Weak-to-Strong Decoding (wsd.py), the released code's way as a yardstick (reference.py) and the benchmark (bench.py)."""

from cong.decoding.contrastive import cd_scores
from cong.decoding.generate import DecodeParams, decode

__all__ = ["DecodeParams", "cd_scores", "decode"]
