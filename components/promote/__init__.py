"""The promote component."""
