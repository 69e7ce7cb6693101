"""The run folder: where a run lives, what it records, how a resumed run finds it."""
