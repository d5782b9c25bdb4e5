"""The weak_sample component."""
