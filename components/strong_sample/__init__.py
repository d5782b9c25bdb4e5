"""The strong_sample component."""
