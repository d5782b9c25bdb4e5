"""The fetch component."""
