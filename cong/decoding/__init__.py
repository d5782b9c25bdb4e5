"""Decoding: contrastive scores (contrastive.py) and the batched, KV-cached generation loop (generate.py)."""

from cong.decoding.contrastive import cd_scores
from cong.decoding.generate import DecodeParams, decode

__all__ = ["DecodeParams", "cd_scores", "decode"]
