"""DDP efficiency on this machine: N processes x 1 thread against N x (1 process x 1 thread).

    .venv/bin/python scripts/bench_ddp_scaling.py [--processes 2] [--repeats 3] [extra overrides ...]

Each measurement is a real `cnnfleet-train` run; images/s comes from its summary.json (training
batches only, validation excluded). Efficiency = ddp images/s / (N x single-process images/s);
1.0 means perfect scaling. Runs alternate (single, ddp, single, ddp, ...) and the medians are
compared, so a slow moment of the machine hits both sides. Not a test: numbers, not asserts.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
# compute-bound enough that communication is not the whole story, small enough for 2 CPU cores
WORKLOAD = [
    "data=synthetic", "data.num_samples=4096", "data.batch_size=128", "model=resnet_cifar", "model.width=16",
    "trainer.max_epochs=2", "trainer.limit_val_batches=1", "test=false", "logger=none", "callbacks=none",
]  # fmt: skip


def images_per_second(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "CNNFLEET_ROOT": root, "OMP_NUM_THREADS": "1"}  # 1 thread per process
        proc = subprocess.run([str(BIN / "cnnfleet-train"), *overrides], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"benchmark run failed: {proc.stderr.strip().splitlines()[-1]}")
        (summary,) = Path(root).glob("logs/train/runs/*/summary.json")
        return json.loads(summary.read_text())["fit"]["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra cnnfleet-train overrides")
    args = parser.parse_args()
    single_cfg = [*WORKLOAD, "device=cpu", *args.overrides]
    ddp_cfg = [*WORKLOAD, "device=ddp", "device.accelerator=cpu", f"device.devices={args.processes}", *args.overrides]
    single, ddp = [], []
    for _ in range(args.repeats):
        single.append(images_per_second(single_cfg))
        ddp.append(images_per_second(ddp_cfg))
    s, d = statistics.median(single), statistics.median(ddp)
    print(f"| layout | images/s (median of {args.repeats}) |\n|---|---|")
    print(f"| 1 process x 1 thread | {s:,.0f} |\n| {args.processes} processes x 1 thread (ddp, gloo) | {d:,.0f} |")
    print(f"\nDDP efficiency: {d / (args.processes * s):.3f} (runs: single {single}, ddp {ddp})")


if __name__ == "__main__":
    main()
