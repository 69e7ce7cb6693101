"""Experiment tracking: W&B (online with a key, else offline) and secret redaction."""
