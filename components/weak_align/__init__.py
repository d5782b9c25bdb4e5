"""The weak_align component."""
