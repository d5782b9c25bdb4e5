"""Evaluation: reward backends (rewards.py), the pairwise judge and its local server (judge.py, serve.py), held-out
task accuracy (downstream.py), statistics (stats.py), the run report (report.py), the gates that decide whether a
world can test a method (gates.py), and the study over worlds and seeds (study.py, diagnostics.py)."""
