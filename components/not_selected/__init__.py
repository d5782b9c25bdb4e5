"""The not_selected component."""
