"""cnnfleet-bench mode=data: what each input path delivers with no model, in images/s, over the same images.

- PIL ImageFolder: ImageFolderDataModule's training loader (PIL decode, torchvision transforms in the workers);
- shards, CPU decode: ShardsDataModule with data.decode=cpu (torchvision.io.decode_jpeg + crop in the workers);
- shards, GPU decode (CUDA only): the workers read the JPEG bytes, nvJPEG decodes each batch on the device.

Each path at each worker count: its training loader, built by the DataModule as a run builds it (setup(),
no Trainer: world 1, rank 0), each batch taken through the DataModule's transfer hooks to the training device
(CUDA when present, else the CPU) as the training step receives it: normalised float32. Passes: `epochs`, the
first one warm-up; the paths take turns pass by pass (a busy moment of the machine hits every path). A pass
is timed after its first round of batches, one per worker (worker start and pipeline fill, as a long epoch
would amortise them), to its last batch, with a device sync at both ends. Without `data_root` a synthetic
ImageNet-layout folder of smooth 256 px JPEGs is generated into the run folder (data_images=null: enough
for 4 rounds at the most workers, at least 512); without `shards_root` it is prepared there by
cnnfleet-prepare.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cnnfleet.bench.harness import compose_train
from cnnfleet.bench.report import write_report
from cnnfleet.data.shards.module import ShardsDataModule
from cnnfleet.errors import ConfigError
from cnnfleet.launch.env import cpus_per_process

CLASSES = 10  # of the synthetic folder
VAL_PER_CLASS = 1  # both layouts need a val split; the bench reads only train
SOURCE_SIZE = 256  # synthetic JPEGs: side in pixels (what cnnfleet-prepare's default --size keeps)
MIN_IMAGES = 512  # synthetic training images at least (data_images=null)
PATHS = {  # id: (label, data option, decode)
    "imagefolder": ("PIL ImageFolder", "imagefolder", None),
    "shards-cpu": ("shards, CPU decode", "shards", "cpu"),
    "shards-gpu": ("shards, GPU decode", "shards", "gpu"),
}


class DeviceDecodeShards(ShardsDataModule):
    """ShardsDataModule decoding on the CUDA device without a Trainer (its device is otherwise the CPU)."""

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device())


def bench_data(cfg: DictConfig, folder: Path) -> dict:
    workers = list(cfg.data_workers) if cfg.data_workers is not None else list(range(cpus_per_process(1)[0] + 1))
    first_round = max(1, *workers)  # batches of a pass not timed at the most workers: one per worker
    synthetic = cfg.data_images or max(MIN_IMAGES, 4 * first_round * cfg.data_batch_size)
    if cfg.data_root is None and cfg.shards_root is None:
        _check_batches(synthetic, cfg.data_batch_size, first_round)  # before any image is made
    images, shards, source = data_sets(cfg, folder, synthetic)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    ids = ["imagefolder", "shards-cpu"] + (["shards-gpu"] if device.type == "cuda" else [])
    modules = {i: datamodule(cfg, i, images if PATHS[i][1] == "imagefolder" else shards, folder) for i in ids}
    train_images = modules["imagefolder"].split_sizes()["train"]
    _check_batches(train_images, cfg.data_batch_size, first_round)
    rows = []
    for n in workers:
        measured = measure(modules, n, device, cfg.epochs)
        for i in ids:
            count, seconds = measured[i]
            speed = count / seconds if seconds > 0 else 0.0
            rows.append(
                {
                    "configuration": f"{PATHS[i][0]}, {_workers(n)}",
                    "path": i,
                    "workers": n,
                    "images_per_s": speed,
                    "images_per_s_per_process": speed / max(1, n),
                    "images_per_s_per_gpu": speed if i == "shards-gpu" else None,
                }
            )
    title = "cnnfleet-bench data: input pipeline images/s (no model)"
    write_report(
        folder,
        title,
        rows,
        notes(cfg, rows, ids, device, train_images, source),
        chart=("configuration", "images_per_s"),
    )
    return {"rows": rows}


# ---------------------------------------------------------------- the images


def data_sets(cfg: DictConfig, folder: Path, synthetic: int) -> tuple[Path, Path, str]:
    """(ImageFolder root, prepared shards root, where the images come from)."""
    data_root = Path(cfg.data_root).expanduser() if cfg.data_root else None
    shards_root = Path(cfg.shards_root).expanduser() if cfg.shards_root else None
    if shards_root is not None and not (shards_root / "index.json").is_file():
        raise ConfigError(
            f"shards_root={shards_root} has no index.json: give a folder written by cnnfleet-prepare, "
            "or leave shards_root null to prepare data_root into the run folder"
        )
    if shards_root is not None and data_root is None:
        data_root = _prepared_from(shards_root)
    source = f"data_root={data_root}"
    if data_root is None:
        data_root = folder / "data" / "images"
        synthetic_image_folder(data_root, synthetic, CLASSES, SOURCE_SIZE)
        source = f"synthetic: {synthetic} smooth {SOURCE_SIZE} px JPEGs in {CLASSES} classes, in {data_root}"
    if shards_root is None:
        from cnnfleet.data.shards.prepare import PrepareSettings, prepare

        shards_root = folder / "data" / "shards"
        prepare(PrepareSettings(Path(data_root), shards_root, workers=cpus_per_process(1)[0], quiet=True))
        source += f"; prepared by cnnfleet-prepare (defaults) into {shards_root}"
    else:
        source += f"; shards_root={shards_root}"
    return data_root, shards_root, source


def _prepared_from(shards_root: Path) -> Path:
    """The image folder cnnfleet-prepare read for `shards_root` (index.json records it)."""
    from cnnfleet.data.shards.format import ShardIndex

    settings = ShardIndex.read(shards_root).settings
    origin = Path(str(settings.get("source", "")))
    if settings.get("from") != "imagefolder" or not origin.is_dir():
        raise ConfigError(
            f"shards_root={shards_root} was prepared from {settings.get('from')} "
            f"{settings.get('source')!r}, not an image folder this machine has; set data_root "
            "to the image folder it was prepared from (every path reads the same images)"
        )
    return origin


def synthetic_image_folder(root: Path, images: int, classes: int, size: int, seed: int = 0) -> Path:
    """<root>/train/<class>/*.jpg (`images` in all) and one val image per class: smooth gradients with a few
    blurred shapes and fine grain, so each JPEG decodes and compresses like a photo of that size."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for split, count in (("train", images), ("val", VAL_PER_CLASS * classes)):
        for i in range(count):
            folder = root / split / f"class{i % classes:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = rng.uniform(0, 2 * math.pi)
            ramp = (math.cos(angle) * x + math.sin(angle) * y)[..., None]
            ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
            low, high = rng.uniform(0, 255, (2, 3)).astype(np.float32)
            image = Image.fromarray((low + (high - low) * ramp).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(3, 8))):
                left, top = (int(v) for v in rng.integers(0, size, 2))
                width, height = (int(v) for v in rng.integers(size // 12, size // 2, 2))
                shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
                shape([left, top, left + width, top + height], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 3)))), dtype=np.float32)
            pixels += rng.normal(0, 4, pixels.shape).astype(np.float32)  # grain: photo-like JPEG sizes
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{split}_{i:06d}.jpg", quality=90)
    return root


# ---------------------------------------------------------------- the loaders


def datamodule(cfg: DictConfig, path: str, root: Path, folder: Path) -> object:
    """The path's DataModule as cnnfleet-train builds it (data=<option> composed and validated), set up."""
    from hydra.utils import instantiate

    _, option, decode = PATHS[path]
    size = cfg.data_image_size
    overrides = [
        f"data={option}",
        f"data.root='{root}'",
        f"data.batch_size={cfg.data_batch_size}",
        f"data.image_size={size}",
        f"data.resize_size={max(size, round(size * 8 / 7))}",
    ]
    if decode is not None:
        overrides.append(f"data.decode={decode}")
    data_cfg = compose_train(overrides, output_dir=str(folder)).data
    if path == "shards-gpu":
        data_cfg = OmegaConf.merge(data_cfg, {"_target_": f"{__name__}.DeviceDecodeShards"})
    module = instantiate(data_cfg, shuffle_seed=0)
    module.setup("fit")
    return module


def _check_batches(images: int, batch: int, first_round: int) -> None:
    """A ConfigError when a pass has fewer timed batches than untimed ones (the first round, one per worker)."""
    batches = images // batch
    if batches < 2 * first_round:
        raise ConfigError(
            f"data_batch_size={batch}: the {images} training images make {batches} whole "
            f"batch{'' if batches == 1 else 'es'} a pass, fewer than 2 x {first_round} (the first "
            f"{first_round} of each pass, one per worker, are not timed); lower data_batch_size or the "
            "largest of data_workers, or raise data_images (or use a larger data_root)"
        )


def measure(modules: dict, workers: int, device: torch.device, passes: int) -> dict[str, tuple[int, float]]:
    """(images, seconds) of each path's passes after the first, the paths taking turns pass by pass."""
    loaders = {}
    for path, module in modules.items():
        module.num_workers = workers
        loaders[path] = module.loader("train", train=True)
    totals = {path: (0, 0.0) for path in modules}
    try:
        for number in range(passes):
            for path, loader in loaders.items():
                count, seconds = one_pass(modules[path], loader, device, untimed=max(1, workers))
                if number:  # the first pass warms up (files, caches, workers)
                    totals[path] = (totals[path][0] + count, totals[path][1] + seconds)
    finally:
        for loader in loaders.values():  # persistent workers (the image folder's) end with their iterator
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
    return totals


def one_pass(module: object, loader: object, device: torch.device, untimed: int) -> tuple[int, float]:
    """Images after the first `untimed` batches and the seconds from the last of those to the end, each batch
    taken to `device` through the DataModule's hooks (GPU decode included), a device sync at both ends.

    The first round, one batch per worker, is made while the workers start, all at once: timing from its
    end, the rest arrive at the rate the workers keep up (timing from the first batch would count batches
    made before the clock started: too fast by (batches - 1) / (batches - workers))."""
    count, start = 0, None
    for number, batch in enumerate(loader):
        batch = module.on_before_batch_transfer(batch, 0)  # shards, GPU decode: nvJPEG on the device here
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        images, labels = module.on_after_batch_transfer((images, labels), 0)  # shards: uint8 -> normalised float
        if number + 1 == untimed:
            _sync(device)
            start = time.perf_counter()
        elif start is not None:
            count += len(labels)
    _sync(device)
    return count, (time.perf_counter() - start) if start is not None else 0.0


def _workers(n: int) -> str:
    return f"{n} worker{'' if n == 1 else 's'}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the report


def notes(
    cfg: DictConfig, rows: list[dict], ids: list[str], device: torch.device, images: int, source: str
) -> list[str]:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    out = [
        f"{images} training images ({source}); batch {cfg.data_batch_size}, {cfg.data_image_size} px training crops "
        f"(RandomResizedCrop + flip), delivered to {where} as normalised float32; images/s over passes "
        f"2..{cfg.epochs} of each loader, the first round of batches of a pass (one per worker: worker start and "
        "pipeline fill) not timed, paths taking turns pass by pass",
        "per process = images/s / max(1, workers): the processes decoding (0 workers: the main process)"
        + ("; per GPU: one GPU decodes" if "shards-gpu" in ids else ""),
    ]
    if "shards-gpu" not in ids:
        out.append("No CUDA device: shards with GPU decode not measured. Run `cnnfleet-bench mode=data` on a GPU node.")
    best = {i: max((r for r in rows if r["path"] == i), key=lambda r: r["images_per_s"]) for i in ids}
    out.append(
        "best: "
        + "; ".join(
            f"{PATHS[i][0]} {r['images_per_s']:,.0f} images/s ({_workers(r['workers'])})" for i, r in best.items()
        )
    )
    pil = {r["workers"]: r["images_per_s"] for r in rows if r["path"] == "imagefolder"}
    ratios = [
        f"{_workers(r['workers'])} x{r['images_per_s'] / pil[r['workers']]:.2f}"
        for r in rows
        if r["path"] == "shards-cpu" and pil.get(r["workers"])
    ]
    if ratios:
        out.append("shards (CPU decode) / PIL ImageFolder: " + ", ".join(ratios))
    return out
