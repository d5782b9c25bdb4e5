"""The wspo component."""
