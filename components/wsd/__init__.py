"""The wsd component."""
