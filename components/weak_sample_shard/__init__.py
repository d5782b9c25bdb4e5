"""The weak_sample_shard component."""
