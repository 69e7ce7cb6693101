"""Sharded streaming data sets: WebDataset-format tar shards written by cnnfleet-prepare (prepare.py),
read per rank by a plan of sample positions (plan.py, reader.py), decoded on CPU or GPU (decode.py)."""
