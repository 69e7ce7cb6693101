"""Typed schema of every config group, registered in Hydra's ConfigStore.

Each YAML option starts its defaults list with the matching `*_schema` node, so Hydra checks
keys and types while composing: a misspelled key or a wrong type fails before torch is
imported. Polymorphic groups (data, model, optimizer, scheduler) have one schema per option;
the rest have one schema for the group. Field comments are the reference for each key.
"""

import os
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from annotated_types import Ge, Gt, Le, Len, Lt, MaxLen
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from cnnfleet.config.domains import TARGET_SCHEMAS, Each, OneOf, PathRule, Pattern, Typed, key

# reusable domains
WIDTH = (Ge(1), Le(4096))  # channels of a layer (4096 x 4096 x 3 x 3 weights: 600 MB per convolution)
PIXELS = (Ge(1), Le(4096))  # side of an image
BATCH = (Ge(1), Le(1 << 20))
WORKERS = (Ge(0), Le(256))
FRACTION = (Ge(0), Lt(1))
ALPHA = (Ge(0), Le(100))  # Beta(alpha, alpha) of MixUp/CutMix
NORM_STATS = Len(1, 4)  # one per channel (checked against data.channels)
AUGMENT = OneOf("none", "randaugment", "trivialaugment")
SHARE_OR_COUNT = Typed(
    Union[Annotated[int, Ge(0)], Annotated[float, Ge(0), Le(1)]],  # noqa: UP007
    "a count of batches (int >= 0) or a share (float in [0, 1])",
)
BATCHES_OR_EPOCH_SHARE = Typed(
    Union[Annotated[int, Ge(1)], Annotated[float, Gt(0), Le(1)]],  # noqa: UP007
    "a count of training batches (int >= 1) or a share of an epoch (float in (0, 1])",
)
DURATION = Pattern(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", "a duration DD:HH:MM:SS, e.g. 00:02:00:00")
SLURM_WORD = Pattern(r"[^\s'\"\\]{1,256}", "one word without spaces or quotes (at most 256 characters)")


def _per_channel(node: DictConfig) -> list[str]:
    """mean and std give one value per image channel, std values are positive."""
    out = []
    for name in ("mean", "std"):
        if len(node[name]) != node.channels:
            out.append(
                f"{name}={list(node[name])}: has {len(node[name])} values but data.channels={node.channels} "
                f"(expected one per channel)"
            )
    if not out and any(v <= 0 for v in node.std):
        out.append(f"std={list(node.std)}: every value must be > 0")
    return out


# ---------------------------------------------------------------- data


@dataclass
class InMemoryDataConfig:
    """Fields shared by data sets that fit in memory as one tensor per split."""

    _target_: str = MISSING
    batch_size: int = key(64, *BATCH)  # GLOBAL batch (all ranks together); per-device = batch_size / world size
    num_classes: int = key(10, Ge(2), Le(100000))  # classes in the data set; the model's head follows it
    channels: int = key(1, OneOf(1, 3))  # image channels; the model's stem follows it
    image_size: int = key(8, *PIXELS)  # side of the square image, pixels
    mean: list[float] = key(factory=lambda: [0.5], rules=(NORM_STATS,))  # per-channel normalisation mean (0..1)
    std: list[float] = key(factory=lambda: [0.5], rules=(NORM_STATS,))  # per-channel normalisation std (0..1)
    val_fraction: float = key(0.1, Gt(0), Lt(1))  # share of all samples held out for validation
    test_fraction: float = key(0.2, *FRACTION)  # share of all samples held out for the final test
    split_seed: int = key(0, Ge(0), Lt(2**32))  # seed of the fixed, stratified train/val/test split
    num_workers: int = key(0, *WORKERS)  # DataLoader workers (on_device=false only); 0 = the main process
    # auto | true | false: splits live on the training device, batches are slices
    on_device: Any = key("auto", Typed(Union[Literal["auto"], bool], "auto | true | false"))  # noqa: UP007
    crop_padding: int = key(0, Ge(0), Le(64))  # augmentation: reflect-pad by N pixels, random crop back (0 = off)
    horizontal_flip: bool = False  # training augmentation: mirror half the images (not for digits!)
    auto_augment: str = key("none", AUGMENT)  # torchvision's policies, per image
    mixup_alpha: float = key(0.0, *ALPHA)  # MixUp Beta(alpha, alpha) mixing of image pairs (0 = off)
    cutmix_alpha: float = key(0.0, *ALPHA)  # CutMix (0 = off); with both on, each batch uses one of them
    # train on these classes only (labels of the full set), relabelled 0..k-1 in this order; null = all.
    # data.num_classes must equal their count (e.g. data.classes=[0,1,2] data.num_classes=3)
    classes: list[int] | None = key(None, Len(2, 100000), Each(Ge(0), Lt(100000)))

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        out = _per_channel(node)
        if node.classes is not None and len(set(node.classes)) != len(node.classes):
            out.append(f"classes={list(node.classes)}: lists a class twice (expected distinct labels)")
        elif node.classes is not None and len(node.classes) != node.num_classes:
            out.append(
                f"classes={list(node.classes)}: selects {len(node.classes)} classes but data.num_classes="
                f"{node.num_classes}; set data.num_classes={len(node.classes)}"
            )
        if node.val_fraction + node.test_fraction >= 1:
            out.append(
                f"val_fraction + test_fraction = {node.val_fraction + node.test_fraction:g}: "
                "leaves no training samples (expected a sum < 1)"
            )
        if node.crop_padding and node.crop_padding >= node.image_size:
            out.append(
                f"crop_padding={node.crop_padding}: reflect padding needs crop_padding < "
                f"data.image_size={node.image_size}"
            )
        return out


@dataclass
class DigitsDataConfig(InMemoryDataConfig):
    """scikit-learn's 1,797 handwritten 8x8 digits: real data that ships with the package."""

    _target_: str = "cnnfleet.data.digits.DigitsDataModule"


@dataclass
class SyntheticDataConfig(InMemoryDataConfig):
    """Class-conditional random images of any shape: prototypes plus noise, learnable on purpose."""

    _target_: str = "cnnfleet.data.synthetic.SyntheticDataModule"
    num_samples: int = key(2048, Ge(10), Le(10_000_000))  # images in all splits together
    noise: float = key(0.5, Ge(0), Le(100))  # std of the per-pixel noise added to each class prototype
    seed: int = key(0, Ge(0), Lt(2**32))  # seed of the generated images (independent of `seed`)

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        out = InMemoryDataConfig.cross_check(node)
        size = node.num_samples * node.channels * node.image_size**2 * 4
        limit = _memory_bytes() // 4
        if not out and size > limit:
            out.append(
                f"num_samples={node.num_samples}: {node.num_samples} images of {node.channels}x"
                f"{node.image_size}x{node.image_size} need {size / 2**30:.1f} GiB, more than a quarter of this "
                f"machine's memory ({limit / 2**30:.1f} GiB); use fewer or smaller images"
            )
        if not out and node.num_samples < node.num_classes * 3:
            out.append(
                f"num_samples={node.num_samples}: fewer than 3 per class for "
                f"data.num_classes={node.num_classes} (train, val and test each need one)"
            )
        return out


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 << 30


@dataclass
class TorchvisionDataConfig(InMemoryDataConfig):
    """MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100 read by torchvision's own dataset classes."""

    _target_: str = "cnnfleet.data.torchvision_sets.TorchvisionDataModule"
    name: str = key(MISSING, OneOf("mnist", "fashion_mnist", "cifar10", "cifar100"))
    root: str = key(MISSING, PathRule("dir_or_new"))  # folder holding the data set's files (torchvision's layout)
    download: bool = True  # fetch missing files from the official mirrors
    verify_checksums: bool = True  # CIFAR: check files against the official MD5s (false: presence only)


@dataclass
class ImageFolderDataConfig:
    """Image files in the ImageNet layout (<root>/train/<class>/..., <root>/val/<class>/...)."""

    _target_: str = "cnnfleet.data.image_folder.ImageFolderDataModule"
    root: str = key(MISSING, PathRule("dir", hint="holding train/ and val/"))  # the data set's folder
    batch_size: int = key(256, *BATCH)  # GLOBAL batch (all ranks together)
    # null: the class folders under train/ (counted at launch); a number is checked against them
    num_classes: int | None = key(None, Ge(2), Le(100000))
    channels: int = key(3, OneOf(1, 3))  # 3 = RGB, 1 = grayscale
    image_size: int = key(224, *PIXELS)  # training crop and evaluation center crop, pixels
    resize_size: int = key(256, *PIXELS)  # evaluation: resize the short side to this, then center-crop image_size
    mean: list[float] = key(factory=lambda: [0.485, 0.456, 0.406], rules=(NORM_STATS,))  # ImageNet statistics
    std: list[float] = key(factory=lambda: [0.229, 0.224, 0.225], rules=(NORM_STATS,))
    num_workers: int | None = key(None, *WORKERS)  # decode workers per rank; null = cores per rank - 1, at most 8
    pin_memory: bool | None = None  # null = on when CUDA is available
    crop_scale_min: float = key(0.08, Gt(0), Le(1))  # RandomResizedCrop's smallest area share
    horizontal_flip: bool = True
    auto_augment: str = key("none", AUGMENT)
    mixup_alpha: float = key(0.0, *ALPHA)
    cutmix_alpha: float = key(0.0, *ALPHA)

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        out = _per_channel(node)
        if node.resize_size < node.image_size:
            out.append(
                f"resize_size={node.resize_size}: smaller than data.image_size={node.image_size} "
                "(the evaluation center crop must fit inside the resized image)"
            )
        return out


@dataclass
class ShardsDataConfig(ImageFolderDataConfig):
    """Tar shards written by cnnfleet-prepare, streamed: each rank reads its own shards, decoded on CPU or GPU."""

    _target_: str = "cnnfleet.data.shards.module.ShardsDataModule"
    # the prepared folder, or its copy in object storage: s3://<bucket>/<prefix> (read through cache_dir)
    root: str = key(MISSING, PathRule("dir_or_url", hint="written by cnnfleet-prepare"))
    # null: the classes of index.json (read at launch); a number is checked against them
    num_classes: int | None = key(None, Ge(2), Le(100000))
    decode: str = key("auto", OneOf("auto", "cpu", "gpu"))  # where JPEGs are decoded; auto = gpu on CUDA runs
    # samples shuffled together inside a rank's part of each epoch (shards are shuffled as a whole too)
    shuffle_window: int = key(10000, Ge(1), Le(100_000_000))
    # object storage: where each node keeps the shards it has downloaded (null: <paths.data_dir>/shard-cache)
    cache_dir: str | None = key(None, PathRule("dir_or_new"))


# ---------------------------------------------------------------- model

# init_from names of cached library weights: torchvision:<model>[.<weights>], timm:<model>[.<tag>]
WEIGHT_NAME = r"(torchvision|timm):([A-Za-z0-9_]{1,128})(?:\.([A-Za-z0-9_.]{1,128}))?"


@dataclass
class ModelConfig:
    """Keys every model takes besides its constructor's (applied by cnnfleet after the network is built)."""

    # fine-tune: weights loaded into the new network before training (not a resume: step 0, new optimizer):
    # a cnnfleet .ckpt, a .safetensors/.pth state dict (cnnfleet-export's, torchvision's, timm's) or a cached
    # weight name torchvision:resnet18.IMAGENET1K_V1 / timm:resnet18.a1_in1k; a head of another class count
    # is re-initialised; null = random initialisation
    init_from: str | None = key(None, PathRule("text"))
    # module-name prefixes (features, head.3, net.layer1) whose parameters are not trained
    freeze: list[str] = key(
        factory=list, rules=(Each(Pattern(r"[A-Za-z0-9_.]{1,256}", "a module name such as features or net.layer1")),)
    )

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        import re
        from pathlib import Path

        if OmegaConf.is_missing(node, "init_from"):  # cli.check_missing names it
            return []
        source = node.init_from
        if source is not None and source.startswith("<") and source.endswith(">"):  # a recipe's placeholder
            return [
                f"init_from={source}: this recipe fine-tunes trained weights: pass model.init_from=<a run's "
                "checkpoints/best.ckpt, a .safetensors file or a weight name>"
            ]
        if source is None or re.fullmatch(WEIGHT_NAME, source) or Path(source).expanduser().is_file():
            return []
        return [
            f"init_from={source!r}: no such file; pass a checkpoint (.ckpt), a .safetensors or .pth state "
            "dict, or a cached weight name such as torchvision:resnet18.IMAGENET1K_V1"
        ]


@dataclass
class SimpleCNNConfig(ModelConfig):
    """A small VGG-style CNN (conv-BN-ReLU blocks) sized for 8x8 to 32x32 images."""

    _target_: str = "cnnfleet.models.simple_cnn.SimpleCNN"
    widths: list[int] = key(factory=lambda: [32, 64, 128], rules=(Len(1, 32), Each(*WIDTH)))  # channels per block
    dropout: float = key(0.0, *FRACTION)  # dropout before the classifier head
    norm: str = key("batch", OneOf("batch", "none"))  # BatchNorm after each conv, or nothing


@dataclass
class ResNetCifarConfig(ModelConfig):
    """ResNet-18/34 adapted to small images: 3x3 stem, no max-pool."""

    _target_: str = "cnnfleet.models.resnet_cifar.ResNetCifar"
    depth: int = key(18, OneOf(18, 34))
    width: int = key(64, Ge(1), Le(256))  # channels of the first stage; stages use width x (1, 2, 4, 8)


@dataclass
class AirbenchConfig(ModelConfig):
    """airbench-style fast CIFAR net: 2x2 patch stem, three conv groups, scaled linear head."""

    _target_: str = "cnnfleet.models.airbench.AirbenchNet"
    stem_width: int = key(24, *WIDTH)  # channels of the 2x2 patch stem
    widths: list[int] = key(factory=lambda: [64, 256, 256], rules=(Len(3, 3), Each(*WIDTH)))  # conv group widths
    bn_momentum: float = key(0.4, Gt(0), Le(1))  # BatchNorm running-stat momentum (torch convention)
    logit_scale: float = key(0.1111111111111111, Gt(0), Le(1000))  # head output x 1/9, as in airbench


MODEL_NAME = Pattern(r"[A-Za-z0-9_.]{1,128}", "a model name: letters, digits, _ and . (at most 128 characters)")


@dataclass
class TorchvisionModelConfig(ModelConfig):
    """Any torchvision classification model by name; head and input channels follow the data set."""

    _target_: str = "cnnfleet.models.torchvision_models.TorchvisionNet"
    name: str = key("resnet18", MODEL_NAME)  # torchvision.models.list_models(): resnet50, convnext_tiny, ...
    # null = random init; DEFAULT or a weights name, only if already in the hub cache
    weights: str | None = key(None, Pattern(r"[A-Za-z0-9_.]{1,128}", "DEFAULT or a weights name such as IMAGENET1K_V1"))


@dataclass
class TimmModelConfig(ModelConfig):
    """Any timm model by name (pip install 'cnnfleet[timm]')."""

    _target_: str = "cnnfleet.models.timm_models.TimmNet"
    name: str = key("resnet18", MODEL_NAME)  # timm.list_models()
    pretrained: bool = False  # only when the weights are already in the Hugging Face cache


# ---------------------------------------------------------------- optimizer (completed in the module)

LR = (Gt(0), Le(1e6))


@dataclass
class OptimizerConfig:
    """Keys every optimizer takes besides its constructor's (removed before it is built)."""

    # linear scaling rule (Goyal et al. 2017): effective lr = lr * data.batch_size / base_batch_size;
    # pair it with a warm-up (scheduler=onecycle or cosine)
    scale_lr_with_batch: bool = False
    base_batch_size: int = key(256, *BATCH)  # global batch that `lr` was tuned for when scaling
    # layer-wise lr decay (BEiT, timm --layer-decay): layer d of D gets lr x layer_decay^(D-1-d), the head x1;
    # layers are the network's top-level children in order (see training/optim.py); null = off
    layer_decay: float | None = key(None, Gt(0), Le(1))


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True  # parameters are passed by the module
    lr: float = key(0.05, *LR)  # peak learning rate for the GLOBAL batch
    momentum: float = key(0.9, *FRACTION)
    nesterov: bool = True
    weight_decay: float = key(5e-4, Ge(0), Le(10))

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        if node.nesterov and node.momentum == 0:
            return ["nesterov=true: Nesterov momentum needs optimizer.momentum > 0 (or set optimizer.nesterov=false)"]
        return []


@dataclass
class AdamWConfig(OptimizerConfig):
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = key(3e-3, *LR)  # peak learning rate for the GLOBAL batch
    betas: list[float] = key(factory=lambda: [0.9, 0.999], rules=(Len(2, 2), Each(*FRACTION)))  # (beta1, beta2)
    weight_decay: float = key(0.05, Ge(0), Le(10))


# ---------------------------------------------------------------- scheduler (stepped every optimizer step)


@dataclass
class OneCycleConfig:
    _target_: str = "cnnfleet.training.schedulers.one_cycle"
    _partial_: bool = True  # optimizer and total_steps are filled in by the module; peak = optimizer.lr
    pct_start: float = key(0.25, Gt(0), Lt(1))  # share of steps spent warming up
    div_factor: float = key(25.0, Ge(1), Le(1e8))  # initial lr = max_lr / div_factor
    final_div_factor: float = key(1e4, Ge(1), Le(1e12))  # final lr = initial lr / final_div_factor
    anneal_strategy: str = key("cos", OneOf("cos", "linear"))


@dataclass
class CosineConfig:
    _target_: str = "cnnfleet.training.schedulers.warmup_cosine"
    _partial_: bool = True  # total_steps is filled in by the module
    warmup_fraction: float = key(0.05, *FRACTION)  # share of steps with a linear warm-up from 0
    min_lr_ratio: float = key(0.0, Ge(0), Le(1))  # final lr as a fraction of the peak


# ---------------------------------------------------------------- single-schema groups

STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "single_device",
)
PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "bf16-true",
    "16-true",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)


@dataclass
class DeviceConfig:
    """Where and how the run computes: Lightning's accelerator/devices/strategy/precision."""

    accelerator: str = key("auto", OneOf("auto", "cpu", "gpu", "cuda"))
    # devices per node: a count, or "auto" for all visible
    devices: Any = key(1, Typed(Union[Literal["auto"], Annotated[int, Ge(1), Le(1024)]], "a count >= 1 or auto"))  # noqa: UP007
    num_nodes: int = key(1, Ge(1), Le(4096))  # nodes (machines) in the run
    # auto (ddp when more than one process) | ddp | ddp_spawn ...
    strategy: str = key("auto", OneOf(*STRATEGIES))
    # auto = bf16-mixed on GPUs with bf16, 16-mixed on older GPUs, 32-true on CPU; or any Lightning precision
    precision: str = key("auto", OneOf(*PRECISIONS))
    timeout_s: int = key(600, Ge(1), Le(86400))  # wait this long for other ranks (rendezvous, collectives)
    # no batch trained, validated or tested for this long (and 20 of the recent step times): the rank
    # says where it waits in one line and writes its threads' stacks into the run folder
    stall_after_s: int = key(300, Ge(1), Le(86400))
    # a stop (Ctrl-C, SIGTERM, SIGUSR1) not acted on within this ends the process with the stop's status
    stop_timeout_s: int = key(120, Ge(1), Le(86400))


@dataclass
class TrainerConfig:
    """Keys passed one to one to lightning.Trainer, except those marked cnnfleet."""

    max_epochs: int = key(20, Ge(0), Le(1_000_000))  # epochs to train (one epoch = every training sample once)
    min_epochs: int | None = key(None, Ge(0), Le(1_000_000))  # train at least this long (early stopping waits)
    max_steps: int = key(-1, Ge(-1), Le(10**12))  # stop after this many optimizer steps; -1 = no step limit
    min_steps: int | None = key(None, Ge(0), Le(10**12))
    # stop after this much training time, "DD:HH:MM:SS" (a finished run: resuming it trains no further)
    max_time: str | None = key(None, DURATION)
    accumulate_grad_batches: int = key(1, Ge(1), Le(4096))  # optimizer step every N batches
    gradient_clip_val: float | None = key(None, Gt(0))  # clip gradient norm to this value; null = off
    log_every_n_steps: int = key(10, Ge(1), Le(10_000_000))  # logging interval, optimizer steps
    check_val_every_n_epoch: int | None = key(1, Ge(1), Le(1_000_000))  # validate every N epochs
    # validate inside an epoch too: every N training batches (int) or at this share of an epoch (float)
    val_check_interval: Any = key(None, BATCHES_OR_EPOCH_SHARE)
    gradient_clip_algorithm: str | None = key(None, OneOf("norm", "value"))  # null = norm
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    benchmark: bool | None = None  # cudnn.benchmark; null = Lightning's default
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (GPUs only)
    # true or N: run N batches of train/val/test as a smoke test
    fast_dev_run: Any = key(False, Typed(Union[bool, Annotated[int, Ge(0)]], "true | false | a count of batches"))  # noqa: UP007
    # The next four take an int (a count of batches) or a float (a share), as in Lightning.
    overfit_batches: Any = key(0.0, SHARE_OR_COUNT)  # train (and validate) on these batches only
    limit_train_batches: Any = key(None, SHARE_OR_COUNT)  # cap training batches per epoch; null = all
    limit_val_batches: Any = key(None, SHARE_OR_COUNT)
    limit_test_batches: Any = key(None, SHARE_OR_COUNT)
    limit_predict_batches: Any = key(None, SHARE_OR_COUNT)
    num_sanity_val_steps: int = key(0, Ge(-1), Le(1_000_000))  # validation batches run before training (0 = skip)
    enable_progress_bar: bool | None = None  # null = on only when stdout is a terminal
    enable_model_summary: bool = False  # Lightning's summary table at fit start (or callbacks=[default,model_summary])
    enable_autolog_hparams: bool = True  # loggers record the run's hyperparameters
    # simple | advanced | pytorch: the report (and pytorch's trace) into <run>/profiler/; null = off
    profiler: str | None = key(None, OneOf("simple", "advanced", "pytorch"))
    detect_anomaly: bool = False  # torch.autograd anomaly detection (slow: debugging NaNs)
    inference_mode: bool = True  # torch.inference_mode for val/test (false: torch.no_grad)
    reload_dataloaders_every_n_epochs: int = key(0, Ge(0), Le(1_000_000))
    # cnnfleet: stop at the first NaN/inf loss; checked every N steps (each check is one host sync)
    # and always before validation and before any checkpoint is written
    check_finite_every_n_steps: int = key(1, Ge(1), Le(1_000_000))
    # cnnfleet speed options (see README "Speed")
    channels_last: bool = False  # NHWC tensors: faster convolutions on tensor-core GPUs with mixed precision
    compile: bool = False  # torch.compile the network (first steps slower: compilation)
    compile_mode: str | None = key(
        None, OneOf("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    )
    ema_decay: float | None = key(None, Gt(0), Lt(1))  # moving average of the weights for val/test; e.g. 0.999


ANY_PATH = PathRule("text")


@dataclass
class PathsConfig:
    root_dir: str = key(MISSING, PathRule("dir_or_new"))  # where logs/ and data/ live (default: the working directory)
    data_dir: str = key(MISSING, ANY_PATH)  # downloaded data sets
    log_dir: str = key(MISSING, PathRule("dir_or_new"))  # run folders: <log_dir>/<task_name>/runs/<time>
    output_dir: str = key(MISSING, ANY_PATH)  # this run's folder (Hydra's run dir; checked as the run folder)


SLURM_TIME = Pattern(r"\d+(:[0-5]?\d){0,2}|\d+-\d{1,2}(:[0-5]?\d){0,2}", "a SLURM time: MM, HH:MM:SS or D-HH:MM:SS")


MOUNT = Pattern(r"/[^,:]*(:/[^,:]*)?(:(ro|rw))?", "an absolute host[:container[:ro]] path")


@dataclass
class ClusterConfig:
    """SLURM resources for cnnfleet-submit (and, later, launcher=slurm). One task per device."""

    partition: str | None = key(None, SLURM_WORD)  # sbatch --partition; null = the cluster's default
    account: str | None = key(None, SLURM_WORD)  # sbatch --account
    qos: str | None = key(None, SLURM_WORD)  # sbatch --qos
    time: str = key("01:00:00", SLURM_TIME)  # wall-clock limit, HH:MM:SS or D-HH:MM:SS
    nodes: int = key(1, Ge(1), Le(4096))  # sbatch --nodes = device.num_nodes
    tasks_per_node: int = key(1, Ge(1), Le(1024))  # processes per node = device.devices (= GPUs per node)
    gpus_per_node: int = key(0, Ge(0), Le(64))  # sbatch --gpus-per-node; 0 = a CPU job
    # CPU cores per process (threads, decode workers); null = the smallest fitting node's CPUs / tasks, at most 16
    cpus_per_task: int | None = key(None, Ge(1), Le(1024))
    # sbatch --mem per node, e.g. 64G; null = the cluster's default
    mem: str | None = key(None, Pattern(r"\d+[KMGT]?", "a size such as 64G, 4096M or 0 (all of the node)"))
    constraint: str | None = key(None, SLURM_WORD)  # sbatch --constraint, e.g. a100
    job_name: str = key("cnnfleet", SLURM_WORD)
    signal_seconds: int = key(90, Ge(10), Le(65535))  # SIGUSR1 this long before the time limit: checkpoint, requeue
    requeue: bool = True  # let SLURM (and Lightning on SIGUSR1) requeue the job
    # more "#SBATCH ..." options, e.g. ["--exclusive"]
    extra_sbatch: list[str] = key(
        factory=list, rules=(Each(Pattern(r"--?[A-Za-z].{0,500}", "an sbatch option such as --exclusive")),)
    )
    setup: list[str] = key(factory=list, rules=(Each(MaxLen(4096)),))  # shell lines before srun (module load cuda)
    # a container image for the tasks (pyxis: docker://..., name or .sqsh; apptainer: .sif); null = run on the host
    container: str | None = key(None, MaxLen(4096))
    container_runtime: str = key("pyxis", OneOf("pyxis", "apptainer"))  # srun --container-image, or apptainer exec
    # more host folders in the container, host[:container[:ro]] (the working folder and CNNFLEET_ROOT always are)
    container_mounts: list[str] = key(factory=list, rules=(Each(MOUNT),))

    @staticmethod
    def cross_check(node: DictConfig) -> list[str]:
        # SLURM may send --signal up to 60 s early: a limit within signal_seconds + 60 s signals at start-up,
        # and the job would save and requeue itself over and over (found by trying cluster.time=1)
        limit_s = slurm_time_minutes(node.time) * 60
        if limit_s < node.signal_seconds + 60:
            return [
                f"time={node.time}: {limit_s} s leaves no training time before the stop signal "
                f"(cluster.signal_seconds={node.signal_seconds}, which SLURM may send up to 60 s early); use "
                f"cluster.time >= {(node.signal_seconds + 60 + 59) // 60} minutes or a smaller "
                "cluster.signal_seconds"
            ]
        return []


# ---------------------------------------------------------------- primary configs

TASK_NAME = Pattern(r"[\w][\w.+-]{0,99}", "a folder name: 1 to 100 letters, digits, _ . + -, not starting with . or -")
SEED = (Ge(0), Lt(2**32))  # numpy's seed range
CKPT = PathRule("file", also=("last",))


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
    task_name: str = key("train", TASK_NAME)  # first level of the run folder under paths.log_dir
    # free-form labels recorded with the run (W&B: 1 to 64 characters each)
    tags: list[str] = key(factory=list, rules=(Each(Len(1, 64)),))
    seed: int = key(42, *SEED)  # seeds torch, numpy and python in every rank
    ckpt_path: str | None = key(None, CKPT)  # resume: `last` (latest run of this task) or a checkpoint path
    label_smoothing: float = key(0.0, *FRACTION)  # cross-entropy label smoothing
    # metric a sweeper optimizes (any val/* or test/* metric)
    optimized_metric: str = key("val/acc", Pattern(r"(val|test)/[A-Za-z0-9_./-]{1,100}", "a val/* or test/* metric"))
    optimized_direction: str = key("maximize", OneOf("maximize", "minimize"))  # how sweeps rank trials
    train: bool = True  # run fit()
    test: bool = True  # run test() on the best checkpoint after fit


@dataclass
class EvalConfig:
    device: DeviceConfig = MISSING
    paths: PathsConfig = MISSING
    task_name: str = key("eval", TASK_NAME)
    ckpt_path: str = key(MISSING, PathRule("file"))  # checkpoint to evaluate (a run's checkpoints/best.ckpt)
    split: str = key("test", OneOf("train", "val", "test"))
    batch_size: int | None = key(None, *BATCH)  # null = the batch size the checkpoint was trained with
    # the data set's folder (or s3:// URL) when it moved since training; null = the checkpoint's data.root
    data_root: str | None = key(None, PathRule("dir_or_url"))
    seed: int = key(42, *SEED)


@dataclass
class PredictConfig:
    paths: PathsConfig = MISSING
    task_name: str = key("predict", TASK_NAME)
    ckpt_path: str | None = key(None, PathRule("file"))  # a checkpoint written by cnnfleet-train (or artifact=)
    artifact: str | None = key(None, PathRule("file"))  # or a model.pt2 / model.onnx of cnnfleet-export
    inputs: str = key(MISSING, ANY_PATH)  # image file, folder (recursive) or glob pattern
    top_k: int = key(3, Ge(1), Le(100000))  # classes listed per image
    batch_size: int = key(64, *BATCH)  # images per forward pass


@dataclass
class ExportConfig:
    paths: PathsConfig = MISSING
    task_name: str = key("export", TASK_NAME)
    ckpt_path: str = key(MISSING, PathRule("file"))  # a checkpoint written by cnnfleet-train
    check_batch: int = key(8, Ge(1), Le(4096))  # random images used to compare exported and original logits
    tolerance: float = key(1e-4, Gt(0), Le(1))  # largest allowed absolute logit difference
    # programs written beside model.safetensors; each takes raw pixels and normalises inside
    formats: list[str] = key(factory=lambda: ["pt2", "onnx"], rules=(Len(0, 2), Each(OneOf("pt2", "onnx"))))
    input_dtype: str = key("float32", OneOf("float32", "uint8"))  # the programs' input: float32 0..1 or uint8 0..255


@dataclass
class BenchConfig:
    paths: PathsConfig = MISSING
    task_name: str = key("bench", TASK_NAME)
    mode: str = key("overhead", OneOf("overhead", "devices", "scaling", "data"))
    workload: list[str] = key(factory=list, rules=(Each(Len(1, 4096)),))  # cnnfleet-train overrides of the measured job
    epochs: int = key(3, Ge(2), Le(1000))  # per measurement; the first is warm-up
    repeats: int = key(3, Ge(1), Le(100))  # interleaved runs; medians are reported
    accelerator: str = key("auto", OneOf("auto", "cpu", "gpu"))  # overhead/scaling
    target_accuracy: float = key(0.9, Gt(0), Le(1))  # devices: time to this val/acc
    precisions: list[str] = key(factory=lambda: ["32-true", "bf16-mixed"], rules=(Len(1, 16), Each(OneOf(*PRECISIONS))))
    channels_last: list[bool] = key(factory=lambda: [False, True], rules=(Len(1, 2),))  # devices, on GPUs
    gpu_counts: list[int] | None = key(None, Len(1, 64), Each(Ge(1), Le(1024)))  # devices: null = 1, 2, 4, ...
    processes: list[int] = key(factory=lambda: [1, 2], rules=(Len(1, 16), Each(Ge(1), Le(64))))  # scaling: world sizes
    threads_per_process: int = key(1, Ge(1), Le(256))  # scaling on CPU
    # data: an image folder (train/<class>/..., val/<class>/...); null = a synthetic one made in the run folder
    data_root: str | None = key(None, PathRule("dir", hint="holding train/ and val/"))
    # data: data_root as prepared by cnnfleet-prepare; null = prepared into the run folder (or data_root = its source)
    shards_root: str | None = key(None, PathRule("dir", hint="written by cnnfleet-prepare"))
    # data: training images of the synthetic folder (256 px JPEGs); null = 4 batches per worker, at least 512
    data_images: int | None = key(None, Ge(2), Le(1_000_000))
    # data: DataLoader worker counts measured; null = 0, 1, ... up to this process's cores
    data_workers: list[int] | None = key(None, Len(1, 64), Each(*WORKERS))
    data_batch_size: int = key(64, *BATCH)  # data: images per batch
    data_image_size: int = key(224, *PIXELS)  # data: side of the training crops, pixels


# ---------------------------------------------------------------- callbacks (validated by _target_)

# what the run logs (training/module.py): a callback monitoring anything else would fail after an epoch
MONITORED = OneOf("val/loss", "val/acc", "val/f1", "val/acc_top5", "train/loss_epoch", "train/acc")


@dataclass
class EarlyStoppingConfig:
    """callbacks.early_stopping (callbacks=[default,early_stopping]): Lightning's EarlyStopping."""

    NODE: ClassVar[str] = "callbacks.early_stopping"
    monitor: str = key("val/loss", MONITORED)  # val/acc_top5 exists with more than 5 classes
    mode: str = key("min", OneOf("min", "max"))  # min for losses, max for accuracies
    patience: int = key(3, Ge(0), Le(1_000_000))  # validations without an improvement of min_delta
    min_delta: float = key(0.0, Ge(0))
    check_finite: bool = True  # stop when the monitored value is NaN or inf
    verbose: bool = False


@dataclass
class ModelCheckpointConfig:
    """callbacks.model_checkpoint: the keys of Lightning's ModelCheckpoint a user changes."""

    NODE: ClassVar[str] = "callbacks.model_checkpoint"
    monitor: str | None = key("val/loss", MONITORED)  # what best.ckpt is best at
    mode: str = key("min", OneOf("min", "max"))
    save_top_k: int = key(1, Ge(-1), Le(1_000_000))


@dataclass
class ModelSummaryConfig:
    """callbacks.model_summary (callbacks=[default,model_summary]): Lightning's layer table."""

    NODE: ClassVar[str] = "callbacks.model_summary"
    max_depth: int = key(2, Ge(-1), Le(100))  # module levels shown; -1 = all, 0 = none


TARGET_SCHEMAS["lightning.pytorch.callbacks.EarlyStopping"] = EarlyStoppingConfig
TARGET_SCHEMAS["lightning.pytorch.callbacks.ModelCheckpoint"] = ModelCheckpointConfig
TARGET_SCHEMAS["lightning.pytorch.callbacks.ModelSummary"] = ModelSummaryConfig


# ---------------------------------------------------------------- loggers (validated by _target_)

WANDB_NAME = Pattern(r"[^/\\#?%:]{1,128}", "1 to 128 characters without / \\ # ? % :")


@dataclass
class WandbLoggerConfig:
    """logger.wandb: W&B's own rules for names (wandb_settings.validate_project) and tags."""

    NODE: ClassVar[str] = "logger.wandb"  # where the node lives (docs/config.md's section)
    project: str = key("cnnfleet", WANDB_NAME)
    entity: str | None = key(None, Pattern(r"[A-Za-z0-9_-]{1,128}", "a W&B user or team: letters, digits, - and _"))
    group: str | None = key(None, Len(1, 128))  # null = the sweep folder name in a multirun
    name: str | None = key(None, Len(1, 128))  # null = W&B's generated name
    tags: list[str] = key(factory=list, rules=(Each(Len(1, 64)),))
    log_model: bool = False


TARGET_SCHEMAS["cnnfleet.tracking.wandb_logger.build_wandb_logger"] = WandbLoggerConfig


MLFLOW_URI = Pattern(r"[A-Za-z][A-Za-z0-9+.-]*:.+", "a URI: file:<folder>, sqlite:///<file>, http(s)://<server>")


@dataclass
class MLflowLoggerConfig:
    """logger.mlflow (logger=mlflow): a local MLflow file store, or any tracking URI MLflow accepts."""

    NODE: ClassVar[str] = "logger.mlflow"
    # a local file store shared by every run (file:<folder>), or sqlite:///<file>, or http(s)://<server>
    tracking_uri: str = key("file:${paths.log_dir}/mlruns", MLFLOW_URI)
    experiment_name: str = key("cnnfleet", Len(1, 256))
    run_name: str | None = key(None, Len(1, 250))  # null = the run folder's name
    tags: list[str] = key(factory=list, rules=(Each(Len(1, 250)),))  # each becomes the MLflow tag tag.<name>=true
    log_model: bool = False  # true: checkpoints become run artifacts at the end (copied into the store)


TARGET_SCHEMAS["cnnfleet.tracking.mlflow_logger.build_mlflow_logger"] = MLflowLoggerConfig


def defaults(cls: type) -> dict[str, Any]:
    """A schema's default values (constructor keyword arguments): the one place defaults live."""
    from dataclasses import MISSING as NO_DEFAULT
    from dataclasses import fields

    out = {}
    for f in fields(cls):
        value = f.default_factory() if f.default_factory is not NO_DEFAULT else f.default
        if not f.name.startswith("_") and value is not NO_DEFAULT and value != MISSING:
            out[f.name] = value
    return out


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "digits_schema": DigitsDataConfig,
        "synthetic_schema": SyntheticDataConfig,
        "torchvision_schema": TorchvisionDataConfig,
        "imagefolder_schema": ImageFolderDataConfig,
        "shards_schema": ShardsDataConfig,
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
PRIMARY_SCHEMAS: dict[str, type] = {
    "train_schema": TrainConfig,
    "eval_schema": EvalConfig,
    "predict_schema": PredictConfig,
    "export_schema": ExportConfig,
    "bench_schema": BenchConfig,
}


def register_configs() -> None:
    """Register every schema; idempotent (the ConfigStore is a process-wide singleton)."""
    cs = ConfigStore.instance()
    for group, nodes in GROUP_SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
    for name, node in PRIMARY_SCHEMAS.items():
        cs.store(name=name, node=node)


def register_resolvers() -> None:
    """Resolvers the YAML files use; registered at import so every process that unpickles a
    config (DDP children, SLURM jobs of launcher=slurm) can resolve it."""
    from cnnfleet.config.errors import describe_groups
    from cnnfleet.config.search_path import current_roots

    # the --help template lists groups through this (Hydra's own list shows the schemas too)
    OmegaConf.register_new_resolver("cnnfleet_groups", lambda: describe_groups(current_roots()), replace=True)
    OmegaConf.register_new_resolver("cnnfleet_keys", _key_reference, replace=True)
    # the launch directory; unlike ${hydra:runtime.cwd} it resolves before Hydra's job starts
    # (hydra-submitit-launcher resolves the sweep folder while HydraConfig is still unset)
    OmegaConf.register_new_resolver("cnnfleet_cwd", os.getcwd, replace=True)
    # launcher=slurm maps the cluster group onto hydra-submitit-launcher's keys
    OmegaConf.register_new_resolver("cnnfleet_minutes", slurm_time_minutes, replace=True)
    OmegaConf.register_new_resolver("cnnfleet_null_if_zero", lambda value: value or None, replace=True)


def _key_reference(job: str) -> str:
    from cnnfleet.config.reference import help_text

    return help_text(str(job))


def slurm_time_minutes(value: str) -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes, rounded up."""
    days, _, clock = str(value).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # after a day count the first field is hours
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, minutes, seconds = 0, parts[0], (parts[1] if len(parts) > 1 else 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


register_resolvers()
