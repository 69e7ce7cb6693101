"""The local run catalogue (`cnnfleet-runs`): list, compare and sync run folders without a server.

records.py reads a run folder (state.json, summary.json, config.yaml) into one row and never raises
for a damaged folder; table.py filters, sorts and prints rows; config_diff.py compares two runs'
configs; wandb_offline.py finds offline W&B runs not yet uploaded and uploads them on request.
Nothing here imports torch, Lightning or wandb: the catalogue answers in well under a second.
"""
