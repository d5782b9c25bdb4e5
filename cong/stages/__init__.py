"""The pipeline's stages, one file each (its name in cong.vocabulary): `step`, what its component calls (config
parameter and artifact paths in, metrics and lineage metadata out), the stage function it runs, and for a training
stage `train`, its entry on every rank (launch.py). step.py holds what every step shares."""
