"""hydra-submitit-launcher's SLURM launcher with cnnfleet's failure policy (see launcher.py)."""
