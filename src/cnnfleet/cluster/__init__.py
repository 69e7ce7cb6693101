"""SLURM: render an sbatch script from the run's config and submit it."""
