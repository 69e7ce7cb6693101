"""evaluate(cfg): rebuild model and data from a checkpoint alone and report metrics on one split."""

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from cnnfleet.errors import ConfigError
from cnnfleet.run.files import write_json_atomic
from cnnfleet.run.logs import route_lightning_logs
from cnnfleet.run.summary import print_table
from cnnfleet.serving.inference import load_trained
from cnnfleet.training.builders import build_datamodule
from cnnfleet.training.device import apply_threads, plan_devices


def evaluate(cfg: DictConfig) -> dict:
    route_lightning_logs()
    L.seed_everything(cfg.seed, verbose=False)
    trained = load_trained(cfg.ckpt_path)
    module, checkpoint = trained.module, trained.checkpoint
    data_cfg = OmegaConf.create(trained.data)
    if cfg.batch_size is not None:
        data_cfg.batch_size = cfg.batch_size
    if cfg.data_root is not None:
        if "root" not in data_cfg:
            raise ConfigError(
                f"data_root={cfg.data_root}: this checkpoint's data set ({data_cfg._target_}) has "
                "no folder to move; leave data_root unset"
            )
        data_cfg.root = cfg.data_root
    datamodule = build_datamodule(data_cfg, seed=cfg.seed)
    datamodule.setup()

    plan = plan_devices(cfg.device)
    apply_threads(plan)
    trainer = L.Trainer(
        accelerator=plan.accelerator,
        devices=1,
        precision=plan.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule.test_split = cfg.split
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics = {key.replace("test/", f"{cfg.split}/"): float(value) for key, value in results.items()}
    report = {
        "ckpt_path": str(cfg.ckpt_path),
        "split": cfg.split,
        "samples": datamodule.split_sizes()[cfg.split],
        "metrics": metrics,
        "trained_step": checkpoint["global_step"],
    }
    output_dir = Path(cfg.paths.output_dir)
    write_json_atomic(output_dir / "metrics.json", report)
    print_table(
        f"cnnfleet eval: {cfg.split} split",
        {
            **metrics,
            "samples": report["samples"],
            "checkpoint": report["ckpt_path"],
            "run folder": str(output_dir),
        },
    )
    return metrics
