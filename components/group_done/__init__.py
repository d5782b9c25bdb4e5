"""The group_done component."""
