"""The pair component."""
