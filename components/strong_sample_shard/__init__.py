"""The strong_sample_shard component."""
