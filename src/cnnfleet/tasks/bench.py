"""bench(cfg): the four measurements of cnnfleet-bench; each writes bench.csv/.md/.png.

- overhead: cnnfleet's training loop against the hand-written loop (bench/raw_loop.py) on the
  same network, data tensors, optimizer, schedule, batch, precision and device; A/B runs
  interleaved, median steady-state images/s (first epoch excluded) of each, and the ratio.
- devices: real `cnnfleet-train` runs on the CPU and on every GPU count x precision x memory
  format present: steady-state images/s, time to a target validation accuracy, speedup over CPU.
- scaling: DDP efficiency for 1..N processes (CPU gloo, 1 thread each; GPUs when present).
- data: the input paths alone, no model (bench/data_paths.py): images/s of the PIL image folder, shards
  decoded in the workers and shards decoded on the GPU, at each DataLoader worker count.
"""

import statistics
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnfleet.bench.data_paths import bench_data
from cnnfleet.bench.harness import (
    IN_PROCESS,
    cnnfleet_in_process,
    compose_train,
    lightning_in_process,
    raw_in_process,
    run_train,
    steady,
)
from cnnfleet.bench.report import write_report
from cnnfleet.errors import ConfigError
from cnnfleet.run.logs import route_lightning_logs
from cnnfleet.run.record import environment_record, write_run_record


def bench(cfg: DictConfig) -> dict:
    # mode and epochs (>= 2: the first is warm-up) are checked by their domains in schema.BenchConfig
    folder = Path(cfg.paths.output_dir)
    route_lightning_logs()  # Lightning's lines once, through our handlers (not also its own), no tips
    write_run_record(cfg, folder, environment_record())  # hardware, versions, settings
    return {"overhead": overhead, "devices": devices, "scaling": scaling, "data": bench_data}[cfg.mode](cfg, folder)


def _gpus() -> int:
    return torch.cuda.device_count()


def _device_overrides(accelerator: str) -> list[str]:
    if accelerator not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"accelerator={accelerator!r}; valid: auto, cpu, gpu")
    use_gpu = accelerator == "gpu" or (accelerator == "auto" and _gpus() > 0)
    if accelerator == "gpu" and _gpus() == 0:
        raise ConfigError("accelerator=gpu but no CUDA GPU is present; use accelerator=cpu or auto")
    return ["device=gpu", "device.devices=1"] if use_gpu else ["device=cpu"]


def overhead(cfg: DictConfig, folder: Path) -> dict:
    ours, bare, raw = [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        train_cfg = compose_train(
            [*cfg.workload, *_device_overrides(cfg.accelerator), *IN_PROCESS, f"trainer.max_epochs={cfg.epochs}"],
            output_dir=workdir,
        )
        for _ in range(cfg.repeats):  # interleaved: a slow moment of the machine hits every side
            ours.append(steady(cnnfleet_in_process(train_cfg, workdir)))
            bare.append(steady(lightning_in_process(train_cfg, workdir)))
            raw.append(steady(raw_in_process(train_cfg)))
    mine, lightning, theirs = statistics.median(ours), statistics.median(bare), statistics.median(raw)
    batch = train_cfg.data.batch_size
    setting = f"{train_cfg.device.accelerator}, {batch} images/batch"
    rows = [
        {"loop": "cnnfleet (Lightning, callbacks, metrics)", "images_per_s": mine, "runs": _list(ours)},
        {
            "loop": "bare Lightning (same network, no callbacks or metrics)",
            "images_per_s": lightning,
            "runs": _list(bare),
        },
        {"loop": "hand-written PyTorch (bench/raw_loop.py)", "images_per_s": theirs, "runs": _list(raw)},
    ]
    ratio = mine / theirs
    step_ms = {
        name: 1000 * batch / speed for name, speed in (("cnnfleet", mine), ("lightning", lightning), ("raw", theirs))
    }
    notes = [
        f"ratio cnnfleet / hand-written = {ratio:.3f} (goal >= 0.98); median of {cfg.repeats} interleaved runs of "
        f"{cfg.epochs} epochs, first epoch excluded; {setting}; workload: {' '.join(cfg.workload)}",
        f"per step: hand-written {step_ms['raw']:.2f} ms, + Lightning's loop "
        f"{step_ms['lightning'] - step_ms['raw']:+.2f} ms, + cnnfleet's metrics and callbacks "
        f"{step_ms['cnnfleet'] - step_ms['lightning']:+.2f} ms",
    ]
    write_report(folder, "cnnfleet-bench overhead", rows, notes, chart=("loop", "images_per_s"))
    return {"ratio": ratio, "cnnfleet": mine, "lightning": lightning, "raw": theirs}


def _list(values: list[float]) -> str:
    """Each repeat's value beside the median; empty for one repeat (it would only repeat the median)."""
    return " ".join(f"{v:.0f}" for v in values) if len(values) > 1 else ""


def _time_to(summary: dict, target: float) -> float | None:
    for epoch in summary["fit"].get("epoch_log") or []:
        if epoch["val_acc"] is not None and epoch["val_acc"] >= target:
            return epoch["train_seconds_total"]
    return None


def _measure(cfg: DictConfig, overrides: list[str], env: dict | None = None) -> dict:
    summary = run_train(
        [*cfg.workload, *overrides, f"trainer.max_epochs={cfg.epochs}", "logger=none", "test=false"], env=env
    )
    fit = summary["fit"]
    return {
        "images_per_s": fit.get("steady_images_per_second") or fit["images_per_second"],
        "time_to_target_s": _time_to(summary, cfg.target_accuracy),
        "final_val_acc": fit["final_val"].get("val/acc"),
    }


def devices(cfg: DictConfig, folder: Path) -> dict:
    rows = [
        {
            "configuration": f"CPU ({torch.get_num_threads()} threads), 32-true",
            "gpus": 0,
            "precision": "32-true",
            "channels_last": False,
            **_measure(cfg, ["device=cpu"]),
        }
    ]
    notes = []
    gpus = _gpus()
    counts = [n for n in (cfg.gpu_counts or _powers_of_two(gpus)) if n <= gpus]
    for n in counts:
        for precision in cfg.precisions:
            for channels_last in cfg.channels_last:
                layout = ["device=gpu"] if n == 1 else ["device=ddp", "device.accelerator=gpu"]
                overrides = [
                    *layout,
                    f"device.devices={n}",
                    f"device.precision={precision}",
                    f"trainer.channels_last={channels_last}",
                ]
                name = f"{n} x {torch.cuda.get_device_name(0)}, {precision}"
                name += ", channels_last" if channels_last else ""
                rows.append(
                    {
                        "configuration": name,
                        "gpus": n,
                        "precision": precision,
                        "channels_last": channels_last,
                        **_measure(cfg, overrides),
                    }
                )
    if not gpus:
        notes.append("No GPU present: CPU rows only. Run `cnnfleet-bench mode=devices` on a GPU node to compare.")
    cpu = rows[0]["images_per_s"]
    for row in rows:
        row["speedup_over_cpu"] = row["images_per_s"] / cpu
    notes.append(
        f"steady-state images/s over epochs 2..{cfg.epochs}; time to val/acc >= {cfg.target_accuracy} counts "
        f"training time only (blank: not reached); workload: {' '.join(cfg.workload)}"
    )
    write_report(
        folder, "cnnfleet-bench devices: speedup over CPU", rows, notes, chart=("configuration", "speedup_over_cpu")
    )
    return {"rows": rows}


def _powers_of_two(limit: int) -> list[int]:
    counts, n = [], 1
    while n <= limit:
        counts.append(n)
        n *= 2
    if limit and counts[-1] != limit:
        counts.append(limit)
    return counts


def scaling(cfg: DictConfig, folder: Path) -> dict:
    _device_overrides(cfg.accelerator)  # validates the value
    gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and _gpus() > 1)
    accelerator = "gpu" if gpu else "cpu"
    env = None if gpu else {"OMP_NUM_THREADS": str(cfg.threads_per_process)}  # N processes x T threads
    results: dict[int, list[float]] = {n: [] for n in cfg.processes}
    for _ in range(cfg.repeats):  # interleaved
        for n in cfg.processes:
            layout = [f"device={accelerator}"] if n == 1 else ["device=ddp", f"device.accelerator={accelerator}"]
            results[n].append(_measure(cfg, [*layout, f"device.devices={n}"], env=env)["images_per_s"])
    base = statistics.median(results[min(cfg.processes)]) / min(cfg.processes)
    rows = []
    for n in cfg.processes:
        median = statistics.median(results[n])
        rows.append(
            {"processes": n, "images_per_s": median, "efficiency": median / (n * base), "runs": _list(results[n])}
        )
    threads = f"{cfg.threads_per_process} thread(s) each" if not gpu else "one GPU each"
    notes = [
        f"DDP ({'nccl' if gpu else 'gloo'}) on {accelerator}, {threads}; efficiency = images/s / (N x one "
        f"process's); goal >= 0.85 at 2; median of {cfg.repeats}; workload: {' '.join(cfg.workload)}"
    ]
    write_report(folder, "cnnfleet-bench scaling", rows, notes, chart=("processes", "efficiency"))
    return {"rows": rows}
