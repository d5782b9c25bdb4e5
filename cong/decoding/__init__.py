"""Decoding: contrastive scores (contrastive.py) and the batched, KV-cached generation loop (generate.py)."""
