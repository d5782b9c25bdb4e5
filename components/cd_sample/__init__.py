"""The cd_sample component."""
