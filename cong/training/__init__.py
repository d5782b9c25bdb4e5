"""Training: trl trainer settings and saving (trainers.py), the baselines' losses (losses.py), training on several
processes with DeepSpeed (distributed.py, launch.py: the entry every rank runs) and checkpoints that outlive a pod
(checkpoints.py). What each stage trains is its own file under cong/stages/."""
