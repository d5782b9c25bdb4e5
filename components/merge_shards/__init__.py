"""The merge_shards component: a sampling stage's shards merged into its dataset."""
