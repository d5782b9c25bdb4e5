"""The plan component."""
