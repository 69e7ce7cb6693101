"""The commands: one module per console script, and the start-up and failure policy they share (app.py)."""
