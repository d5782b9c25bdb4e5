"""The cd_sample_shard component."""
