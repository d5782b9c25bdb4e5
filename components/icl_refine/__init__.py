"""The icl_refine component."""
