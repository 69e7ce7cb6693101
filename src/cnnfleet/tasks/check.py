"""`--check`: build every part of a command from its config and run it once, without the work.

Each function gets the composed, domain-checked config and the command line's overrides, and
returns the report's lines; a problem raises a CnnfleetError (one line, exit 2). Nothing is
written: the run folder is decided (read-only, run/plan.py) but not created, loggers are built
but not started, one batch is read and one optimizer step taken on a throw-away model.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from cnnfleet.config.guard import building
from cnnfleet.errors import ConfigError
from cnnfleet.launch.world import per_device_batch


def _first_batch(datamodule, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    target = type(datamodule).__module__ + "." + type(datamodule).__name__
    with building("data", target):
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.loader(split, train=split == "train")
        batch = datamodule.on_before_batch_transfer(next(iter(loader)), 0)  # as the trainer sees it
        images, labels = datamodule.on_after_batch_transfer(batch, 0)
    return images, labels


def _run_once(module, images: torch.Tensor, labels: torch.Tensor, cfg: DictConfig, steps: int) -> str:
    """Forward, backward and one optimizer (and scheduler) step on the batch; the loss as text."""
    with building("model", module.hparams.model.get("_target_")):
        module.train()
        logits = module(images)
        loss = F.cross_entropy(logits.float(), labels.long())
        loss.backward()
    optimizer = module.build_optimizer()
    scheduler = module.build_scheduler(optimizer, steps) if module.hparams.scheduler is not None else None
    with building("optimizer", module.hparams.optimizer.get("_target_")):
        optimizer.step()
    if scheduler is not None:
        with building("scheduler", module.hparams.scheduler.get("_target_")):
            scheduler.step()
    return f"{loss.item():.3f}"


def train(cfg: DictConfig, overrides: list[str], probe_devices: bool = True) -> list[str]:
    """Run plan, devices, data (one batch), model (one step), optimizer, scheduler, resume
    checkpoint, loggers, callbacks and the Lightning Trainer."""
    from cnnfleet.run.plan import check_schedule, decide
    from cnnfleet.run.record import plain_config
    from cnnfleet.tasks.train import resume_position
    from cnnfleet.training.builders import (
        build_callbacks,
        build_classifier,
        build_datamodule,
        build_loggers,
        build_trainer,
    )
    from cnnfleet.training.device import plan_devices

    check_schedule(cfg)
    plan = decide(cfg, overrides, os.environ, plain_config(cfg))  # read-only: nothing is created
    lines = [f"run folder: {plan.run_dir} ({plan.reason})"]
    devices = plan_devices(cfg.device) if probe_devices else None
    world = devices.world_size if devices is not None else cfg.cluster.nodes * cfg.cluster.tasks_per_node
    batch = per_device_batch(cfg.data.batch_size, world)
    if devices is not None:
        lines.append(f"devices: {devices.describe()}")
    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    images, labels = _first_batch(datamodule)
    sizes = datamodule.split_sizes()
    lines.append(
        f"data: {', '.join(f'{k} {v}' for k, v in sizes.items())} images; first batch "
        f"{tuple(images.shape)}, batch {cfg.data.batch_size} global = {batch} "
        "per device"
    )
    batches = max(1, -(-sizes.get("train", 1) // batch) // world)
    share = cfg.trainer.limit_train_batches
    if isinstance(share, float) and int(share * batches) < 1:
        raise ConfigError(
            f"trainer.limit_train_batches={share} of {batches} training batches per epoch is less "
            f"than one batch; use at least {1 / batches:.3g} or a batch count"
        )
    module = build_classifier(cfg.model, cfg.data, cfg)
    steps_per_epoch = max(1, sizes.get("train", 1) // cfg.data.batch_size) // cfg.trainer.accumulate_grad_batches
    loss = _run_once(module, images, labels, cfg, max(1, steps_per_epoch * cfg.trainer.max_epochs))
    params = sum(p.numel() for p in module.net.parameters())
    lines.append(f"model: {cfg.model._target_} {params:,} parameters; one training step, loss {loss}")
    lines.append(
        f"optimizer: {cfg.optimizer._target_} lr {module.hparams.optimizer.get('lr')}; scheduler: "
        f"{cfg.scheduler._target_ if cfg.scheduler is not None else 'none'}"
    )
    if plan.resume_from:
        with building("ckpt_path", plan.resume_from, label=f"cannot read checkpoint {plan.resume_from}"):
            position = resume_position(plan.resume_from, module.hparams.model, module)
        lines.append(f"resume: {plan.resume_from} at step {position['global_step']}")
    loggers = build_loggers(cfg.logger)  # built, not started: W&B writes nothing before a run starts
    callbacks = build_callbacks(cfg.callbacks)
    lines.append(
        f"loggers: {', '.join(type(x).__name__ for x in loggers) or 'none'}; callbacks: "
        f"{', '.join(type(x).__name__ for x in callbacks) or 'none'}"
    )
    if devices is not None:
        build_trainer(cfg.trainer, devices, callbacks, loggers, str(plan.run_dir))
        lines.append(f"trainer: max_epochs {cfg.trainer.max_epochs}, precision {devices.precision}")
    return lines


def submit(cfg: DictConfig, overrides: list[str], dry_run: bool, given_run_dir: str | None) -> list[str]:
    """The job's training config, built on this (login) host without its devices, and the sbatch script."""
    from cnnfleet.cluster.resources import check_request
    from cnnfleet.cluster.sbatch import job_layout

    layout = job_layout(cfg.cluster, overrides)
    from cnnfleet.tasks.submit import continuation

    # the partition can hold it (where SLURM can be asked; a dry run prints the script for any cluster)
    cpus = cfg.cluster.cpus_per_task if dry_run else check_request(cfg.cluster)
    continued, reason, run_dir = continuation(cfg, given_run_dir)
    lines = train(cfg, [o for o in overrides if not o.startswith("hydra.")], probe_devices=False)
    run = f"run: continues {run_dir} ({reason})" if continued else "run: a new run"
    return [
        *lines[1:],
        run,
        f"job: {cfg.cluster.nodes} node(s) x {layout.tasks_per_node} task(s) x "
        f"{cpus or 'default'} CPU(s), time {cfg.cluster.time}",
    ]


def _trained(ckpt_path: str):
    from cnnfleet.serving.inference import load_trained

    return load_trained(ckpt_path)


def evaluate(cfg: DictConfig, overrides: list[str]) -> list[str]:
    from cnnfleet.training.builders import build_datamodule
    from cnnfleet.training.device import plan_devices

    trained = _trained(str(cfg.ckpt_path))
    devices = plan_devices(cfg.device)
    data_cfg = OmegaConf.create(trained.data)
    if cfg.batch_size is not None:
        data_cfg.batch_size = cfg.batch_size
    datamodule = build_datamodule(data_cfg, seed=cfg.seed)
    images, _ = _first_batch(datamodule, cfg.split)
    with building("model", trained.module.hparams.model.get("_target_")), torch.no_grad():
        trained.module(images)
    return [
        f"checkpoint: {cfg.ckpt_path} (step {trained.checkpoint['global_step']})",
        f"devices: {devices.describe()}",
        f"data: split {cfg.split}, first batch {tuple(images.shape)}",
    ]


def predict(cfg: DictConfig, overrides: list[str]) -> list[str]:
    from cnnfleet.data.image_folder import load_image
    from cnnfleet.serving.deploy import image_mode, pixel_transform
    from cnnfleet.serving.inference import find_inputs
    from cnnfleet.tasks.predict import load_predictor

    model = load_predictor(cfg)  # a checkpoint or an exported program
    files = find_inputs(str(cfg.inputs))
    image = pixel_transform(model.contract)(load_image(str(files[0]), image_mode(model.contract["channels"])))
    with building("model", cfg.ckpt_path if cfg.ckpt_path is not None else cfg.artifact):
        model.run(image.unsqueeze(0))
    source = f"checkpoint: {cfg.ckpt_path}" if cfg.ckpt_path is not None else f"artifact: {cfg.artifact}"
    return [source, f"inputs: {len(files)} image(s); {files[0]} decoded and classified"]


def export(cfg: DictConfig, overrides: list[str]) -> list[str]:
    trained = _trained(str(cfg.ckpt_path))
    example = torch.randn(cfg.check_batch, *trained.input_shape())
    with building("model", trained.module.hparams.model.get("_target_")), torch.no_grad():
        trained.module.eval_net.eval()(example)
    return [f"checkpoint: {cfg.ckpt_path}", f"input {tuple(example.shape[1:])}: forward ok"]


def bench(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The bench's settings, then the measured job's training config (composed, checked and built)."""
    from cnnfleet.config.compose import compose_config
    from cnnfleet.config.domains import check_config
    from cnnfleet.config.errors import COMPOSE_ERRORS, explain
    from cnnfleet.config.search_path import conf_dir
    from cnnfleet.tasks.bench import _device_overrides

    _device_overrides(cfg.accelerator)  # accelerator=gpu without a GPU
    workload = [*cfg.workload, f"hydra.run.dir={Path(str(cfg.paths.output_dir)) / 'check'}"]
    try:
        train_cfg = compose_config("train", workload)
        check_config(train_cfg)
    except COMPOSE_ERRORS as exc:
        raise ConfigError(f"workload: {explain(exc, conf_dir())}") from None
    lines = train(train_cfg, workload)
    return [f"mode {cfg.mode}, {cfg.repeats} repeats of {cfg.epochs} epochs", *(f"workload {x}" for x in lines)]
