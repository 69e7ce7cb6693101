"""Hyperparameter sweeps: trials, the Optuna search loop and the results table."""
