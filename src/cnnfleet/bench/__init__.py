"""cnnfleet-bench: overhead against a hand-written loop, devices (CPU vs GPUs), DDP scaling, input pipelines (data)."""
