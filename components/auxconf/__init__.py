"""The auxconf component."""
