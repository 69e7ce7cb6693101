"""What each command does once its config is valid (heavy imports live here, not in the CLI)."""
