"""The alpha_sweep component."""
