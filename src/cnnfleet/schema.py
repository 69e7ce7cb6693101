"""Typed schema of every config group, registered in Hydra's ConfigStore.

Each YAML option starts its defaults list with the matching `*_schema` node, so Hydra checks
keys and types while composing: a misspelled key or a wrong type fails before torch is
imported. Polymorphic groups (data, model, optimizer, scheduler) have one schema per option;
the rest have one schema for the group. Field comments are the reference for each key.
"""

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# ---------------------------------------------------------------- data


@dataclass
class InMemoryDataConfig:
    """Fields shared by data sets that fit in memory as one tensor per split."""

    _target_: str = MISSING
    batch_size: int = 64  # GLOBAL batch (all ranks together); per-device = batch_size / world size
    num_classes: int = 10  # classes in the data set; the model's head follows it
    channels: int = 1  # image channels; the model's stem follows it
    image_size: int = 8  # side of the square image, pixels
    mean: list[float] = field(default_factory=lambda: [0.5])  # per-channel normalisation mean (0..1 scale)
    std: list[float] = field(default_factory=lambda: [0.5])  # per-channel normalisation std (0..1 scale)
    val_fraction: float = 0.1  # share of all samples held out for validation
    test_fraction: float = 0.2  # share of all samples held out for the final test
    split_seed: int = 0  # seed of the fixed, stratified train/val/test split (independent of `seed`)
    num_workers: int = 0  # DataLoader workers (on_device=false only); 0 = the main process
    on_device: Any = "auto"  # auto | true | false: splits live on the training device, batches are slices
    crop_padding: int = 0  # training augmentation: reflect-pad by N pixels, random crop back (0 = off)
    horizontal_flip: bool = False  # training augmentation: mirror half the images (not for digits!)
    auto_augment: str = "none"  # none | randaugment | trivialaugment (torchvision, per image)
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) mixing of image pairs (0 = off)
    cutmix_alpha: float = 0.0  # CutMix (0 = off); with both on, each batch uses one of them


@dataclass
class DigitsDataConfig(InMemoryDataConfig):
    """scikit-learn's 1,797 handwritten 8x8 digits: real data that ships with the package."""

    _target_: str = "cnnfleet.data.digits.DigitsDataModule"


@dataclass
class SyntheticDataConfig(InMemoryDataConfig):
    """Class-conditional random images of any shape: prototypes plus noise, learnable on purpose."""

    _target_: str = "cnnfleet.data.synthetic.SyntheticDataModule"
    num_samples: int = 2048  # images in all splits together
    noise: float = 0.5  # std of the per-pixel noise added to each class prototype
    seed: int = 0  # seed of the generated images (independent of `seed`)


@dataclass
class TorchvisionDataConfig(InMemoryDataConfig):
    """MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100 read by torchvision's own dataset classes."""

    _target_: str = "cnnfleet.data.torchvision_sets.TorchvisionDataModule"
    name: str = MISSING  # mnist | fashion_mnist | cifar10 | cifar100
    root: str = MISSING  # folder holding the data set's files (torchvision's layout)
    download: bool = True  # fetch missing files from the official mirrors
    verify_checksums: bool = True  # CIFAR: check files against the official MD5s (false: presence only)


@dataclass
class ImageFolderDataConfig:
    """Image files in the ImageNet layout (<root>/train/<class>/..., <root>/val/<class>/...)."""

    _target_: str = "cnnfleet.data.image_folder.ImageFolderDataModule"
    root: str = MISSING  # folder holding train/ and val/ (and optionally test/)
    batch_size: int = 256  # GLOBAL batch (all ranks together)
    num_classes: int = 1000  # class folders under train/ (checked)
    channels: int = 3  # 3 = RGB, 1 = grayscale
    image_size: int = 224  # training crop and evaluation center crop, pixels
    resize_size: int = 256  # evaluation: resize the short side to this, then center-crop image_size
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # ImageNet statistics
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int | None = None  # decode workers per rank; null = cores per rank - 1, at most 8
    pin_memory: bool | None = None  # null = on when CUDA is available
    crop_scale_min: float = 0.08  # RandomResizedCrop's smallest area share
    horizontal_flip: bool = True
    auto_augment: str = "none"  # none | randaugment | trivialaugment
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


# ---------------------------------------------------------------- model


@dataclass
class SimpleCNNConfig:
    """A small VGG-style CNN (conv-BN-ReLU blocks) sized for 8x8 to 32x32 images."""

    _target_: str = "cnnfleet.models.simple_cnn.SimpleCNN"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels per conv block
    dropout: float = 0.0  # dropout before the classifier head
    norm: str = "batch"  # batch | none (BatchNorm after each conv, or nothing)


@dataclass
class ResNetCifarConfig:
    """ResNet-18/34 adapted to small images: 3x3 stem, no max-pool."""

    _target_: str = "cnnfleet.models.resnet_cifar.ResNetCifar"
    depth: int = 18  # 18 or 34
    width: int = 64  # channels of the first stage; stages use width x (1, 2, 4, 8)


@dataclass
class AirbenchConfig:
    """airbench-style fast CIFAR net: 2x2 patch stem, three conv groups, scaled linear head."""

    _target_: str = "cnnfleet.models.airbench.AirbenchNet"
    stem_width: int = 24  # channels of the 2x2 patch stem
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # conv group widths
    bn_momentum: float = 0.4  # BatchNorm running-stat momentum (torch convention)
    logit_scale: float = 0.1111111111111111  # head output x 1/9, as in airbench


@dataclass
class TorchvisionModelConfig:
    """Any torchvision classification model by name; head and input channels follow the data set."""

    _target_: str = "cnnfleet.models.torchvision_models.TorchvisionNet"
    name: str = "resnet18"  # torchvision.models.list_models(): resnet50, convnext_tiny, efficientnet_b0, ...
    weights: str | None = None  # null = random init; DEFAULT or a weights name, only if already in the hub cache


@dataclass
class TimmModelConfig:
    """Any timm model by name (pip install 'cnnfleet[timm]')."""

    _target_: str = "cnnfleet.models.timm_models.TimmNet"
    name: str = "resnet18"  # timm.list_models()
    pretrained: bool = False  # only when the weights are already in the Hugging Face cache


# ---------------------------------------------------------------- optimizer (completed in the module)


@dataclass
class OptimizerConfig:
    """Keys every optimizer takes besides its constructor's (removed before it is built)."""

    # linear scaling rule (Goyal et al. 2017): effective lr = lr * data.batch_size / base_batch_size;
    # pair it with a warm-up (scheduler=onecycle or cosine)
    scale_lr_with_batch: bool = False
    base_batch_size: int = 256  # global batch that `lr` was tuned for when scaling


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True  # parameters are passed by the module
    lr: float = 0.05  # peak learning rate for the GLOBAL batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4


@dataclass
class AdamWConfig(OptimizerConfig):
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 3e-3  # peak learning rate for the GLOBAL batch
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05


# ---------------------------------------------------------------- scheduler (stepped every optimizer step)


@dataclass
class OneCycleConfig:
    _target_: str = "cnnfleet.training.schedulers.one_cycle"
    _partial_: bool = True  # optimizer and total_steps are filled in by the module; peak = optimizer.lr
    pct_start: float = 0.25  # share of steps spent warming up
    div_factor: float = 25.0  # initial lr = max_lr / div_factor
    final_div_factor: float = 1e4  # final lr = initial lr / final_div_factor
    anneal_strategy: str = "cos"


@dataclass
class CosineConfig:
    _target_: str = "cnnfleet.training.schedulers.warmup_cosine"
    _partial_: bool = True  # total_steps is filled in by the module
    warmup_fraction: float = 0.05  # share of steps with a linear warm-up from 0
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak


# ---------------------------------------------------------------- single-schema groups


@dataclass
class DeviceConfig:
    """Where and how the run computes: Lightning's accelerator/devices/strategy/precision."""

    accelerator: str = "auto"  # auto | cpu | gpu
    devices: Any = 1  # devices per node: an int, or "auto" for all visible
    num_nodes: int = 1  # nodes (machines) in the run
    strategy: str = "auto"  # auto (ddp when more than one process) | ddp | ddp_spawn ...
    # auto = bf16-mixed on GPUs with bf16, 16-mixed on older GPUs, 32-true on CPU; or any Lightning precision
    precision: str = "auto"
    timeout_s: int = 600  # wait this long for other ranks (rendezvous, collectives) before failing


@dataclass
class TrainerConfig:
    """Keys passed one to one to lightning.Trainer, except those marked cnnfleet."""

    max_epochs: int = 20  # epochs to train (one epoch = every training sample once)
    accumulate_grad_batches: int = 1  # optimizer step every N batches
    gradient_clip_val: float | None = None  # clip gradient norm to this value; null = off
    log_every_n_steps: int = 10  # logging interval, optimizer steps
    check_val_every_n_epoch: int = 1  # validate every N epochs
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    benchmark: bool | None = None  # cudnn.benchmark; null = Lightning's default
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (GPUs only)
    fast_dev_run: Any = False  # true or N: run N batches of train/val/test as a smoke test
    # The next four take an int (a count of batches) or a float (a share), as in Lightning.
    overfit_batches: Any = 0.0  # train (and validate) on these batches only
    limit_train_batches: Any = None  # cap training batches per epoch; null = all
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int = 0  # validation batches run before training (0 = skip)
    enable_progress_bar: bool | None = None  # null = on only when stdout is a terminal
    # cnnfleet: stop at the first NaN/inf loss; checked every N steps (each check is one host sync)
    # and always before validation and before any checkpoint is written
    check_finite_every_n_steps: int = 1
    # cnnfleet speed options (see README "Speed")
    channels_last: bool = False  # NHWC tensors: faster convolutions on tensor-core GPUs with mixed precision
    compile: bool = False  # torch.compile the network (first steps slower: compilation)
    compile_mode: str | None = None  # null (default) | reduce-overhead | max-autotune
    ema_decay: float | None = None  # exponential moving average of the weights for val/test; e.g. 0.999


@dataclass
class PathsConfig:
    root_dir: str = MISSING  # where logs/ and data/ live (default: the working directory)
    data_dir: str = MISSING  # downloaded data sets
    log_dir: str = MISSING  # run folders: <log_dir>/<task_name>/runs/<time>
    output_dir: str = MISSING  # this run's folder (Hydra's run dir)


@dataclass
class ClusterConfig:
    """SLURM resources for cnnfleet-submit (and, later, launcher=slurm). One task per device."""

    partition: str | None = None  # sbatch --partition; null = the cluster's default
    account: str | None = None  # sbatch --account
    qos: str | None = None  # sbatch --qos
    time: str = "01:00:00"  # wall-clock limit, HH:MM:SS or D-HH:MM:SS
    nodes: int = 1  # sbatch --nodes = device.num_nodes
    tasks_per_node: int = 1  # processes per node = device.devices (= gpus_per_node on GPU nodes)
    gpus_per_node: int = 0  # sbatch --gpus-per-node; 0 = a CPU job
    cpus_per_task: int = 4  # CPU cores per process (data loading, threads)
    mem: str | None = None  # sbatch --mem per node, e.g. 64G; null = the cluster's default
    constraint: str | None = None  # sbatch --constraint, e.g. a100
    job_name: str = "cnnfleet"
    signal_seconds: int = 90  # SIGUSR1 this long before the time limit: save an hpc checkpoint, requeue
    requeue: bool = True  # let SLURM (and Lightning on SIGUSR1) requeue the job
    extra_sbatch: list[str] = field(default_factory=list)  # more "#SBATCH ..." options, e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)  # shell lines before srun, e.g. ["module load cuda"]


# ---------------------------------------------------------------- primary configs


@dataclass
class TrainConfig:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None  # null = constant learning rate
    device: DeviceConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = None  # dict of named Lightning loggers; null = none
    callbacks: Any = None  # dict of named Lightning callbacks; null = none
    paths: PathsConfig = MISSING
    cluster: ClusterConfig = MISSING
    task_name: str = "train"  # first level of the run folder under paths.log_dir
    tags: list[str] = field(default_factory=list)  # free-form labels recorded with the run
    seed: int = 42  # seeds torch, numpy and python in every rank
    ckpt_path: str | None = None  # resume: `last` (latest run of this task) or a checkpoint path
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    optimized_metric: str = "val/acc"  # metric a sweeper optimizes (any val/* or test/* metric)
    optimized_direction: str = "maximize"  # maximize | minimize: how sweeps rank trials
    train: bool = True  # run fit()
    test: bool = True  # run test() on the best checkpoint after fit


@dataclass
class EvalConfig:
    device: DeviceConfig = MISSING
    paths: PathsConfig = MISSING
    task_name: str = "eval"
    ckpt_path: str = MISSING  # checkpoint to evaluate (a run's checkpoints/best.ckpt)
    split: str = "test"  # train | val | test
    batch_size: int | None = None  # null = the batch size the checkpoint was trained with
    seed: int = 42


@dataclass
class PredictConfig:
    paths: PathsConfig = MISSING
    task_name: str = "predict"
    ckpt_path: str = MISSING  # a checkpoint written by cnnfleet-train
    inputs: str = MISSING  # image file, folder (recursive) or glob pattern
    top_k: int = 3  # classes listed per image
    batch_size: int = 64  # images per forward pass


@dataclass
class ExportConfig:
    paths: PathsConfig = MISSING
    task_name: str = "export"
    ckpt_path: str = MISSING  # a checkpoint written by cnnfleet-train
    check_batch: int = 8  # random images used to compare exported and original logits
    tolerance: float = 1e-4  # largest allowed absolute logit difference


@dataclass
class BenchConfig:
    paths: PathsConfig = MISSING
    task_name: str = "bench"
    mode: str = "overhead"  # overhead | devices | scaling
    workload: list[str] = field(default_factory=list)  # cnnfleet-train overrides of the measured job
    epochs: int = 3  # per measurement; the first is warm-up
    repeats: int = 3  # interleaved runs; medians are reported
    accelerator: str = "auto"  # overhead/scaling: auto | cpu | gpu
    target_accuracy: float = 0.9  # devices: time to this val/acc
    precisions: list[str] = field(default_factory=lambda: ["32-true", "bf16-mixed"])  # devices, on GPUs
    channels_last: list[bool] = field(default_factory=lambda: [False, True])  # devices, on GPUs
    gpu_counts: list[int] | None = None  # devices: null = 1, 2, 4, ... every GPU
    processes: list[int] = field(default_factory=lambda: [1, 2])  # scaling: world sizes
    threads_per_process: int = 1  # scaling on CPU


def register_configs() -> None:
    """Register every schema; idempotent (the ConfigStore is a process-wide singleton)."""
    cs = ConfigStore.instance()
    groups: dict[str, dict[str, type]] = {
        "data": {
            "digits_schema": DigitsDataConfig,
            "synthetic_schema": SyntheticDataConfig,
            "torchvision_schema": TorchvisionDataConfig,
            "imagefolder_schema": ImageFolderDataConfig,
        },
        "model": {
            "simple_cnn_schema": SimpleCNNConfig,
            "resnet_cifar_schema": ResNetCifarConfig,
            "airbench_schema": AirbenchConfig,
            "torchvision_schema": TorchvisionModelConfig,
            "timm_schema": TimmModelConfig,
        },
        "optimizer": {"sgd_schema": SGDConfig, "adamw_schema": AdamWConfig},
        "scheduler": {"onecycle_schema": OneCycleConfig, "cosine_schema": CosineConfig},
        "device": {"device_schema": DeviceConfig},
        "trainer": {"trainer_schema": TrainerConfig},
        "paths": {"paths_schema": PathsConfig},
        "cluster": {"cluster_schema": ClusterConfig},
    }
    for group, nodes in groups.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="bench_schema", node=BenchConfig)


def register_resolvers() -> None:
    """Resolvers the YAML files use; registered at import so every process that unpickles a
    config (DDP children, SLURM jobs of launcher=slurm) can resolve it."""
    from cnnfleet.conf_dir import conf_dir
    from cnnfleet.config_errors import describe_groups

    # the --help template lists groups through this (Hydra's own list shows the schemas too)
    OmegaConf.register_new_resolver("cnnfleet_groups", lambda: describe_groups(conf_dir()), replace=True)
    # the launch directory; unlike ${hydra:runtime.cwd} it resolves before Hydra's job starts
    # (hydra-submitit-launcher resolves the sweep folder while HydraConfig is still unset)
    OmegaConf.register_new_resolver("cnnfleet_cwd", os.getcwd, replace=True)
    # launcher=slurm maps the cluster group onto hydra-submitit-launcher's keys
    OmegaConf.register_new_resolver("cnnfleet_minutes", slurm_time_minutes, replace=True)
    OmegaConf.register_new_resolver("cnnfleet_null_if_zero", lambda value: value or None, replace=True)


def slurm_time_minutes(value: str) -> int:
    """SLURM's [D-]HH:MM:SS (or MM) as whole minutes, rounded up."""
    days, _, clock = str(value).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


register_resolvers()
