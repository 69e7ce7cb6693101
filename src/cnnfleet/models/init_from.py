"""`model.init_from`: start a new run from trained weights (fine-tuning), as timm's --pretrained-path.

The network is built from the config as usual, then the weights are copied in before training:
step 0, a new optimizer and schedule (a resume is `ckpt_path`, which restores all of that).
Sources, by what they hold:
- a cnnfleet-train checkpoint (.ckpt): its EMA weights when the run kept them, else the live ones;
- a state dict in a .safetensors file (cnnfleet-export's model.safetensors, a timm or Hugging Face
  file) or a torch file (.pth/.pt: torchvision's downloads, a bare state_dict, a Lightning checkpoint);
- a cached library weight name: torchvision:resnet18.IMAGENET1K_V1 (or torchvision:resnet18 for
  DEFAULT), timm:resnet18.a1_in1k; read from the local caches only, never downloaded.

The file's key names are aligned to the network's by the one prefix change that matches most keys
(strip Lightning's `net.`, DDP's `module.`; add the `net.` of cnnfleet's torchvision/timm wrappers).
After that every tensor must fit, except the classification head (the last nn.Linear) when its class
count differs: it keeps its fresh initialisation, said in one log line. Anything else is one
ConfigError line naming a few keys and, for cnnfleet files, the model settings they were trained with.

A head of the same class count is loaded, then matched by class NAME once the data are set up (the
module's setup; cnnfleet files record their classes): the same classes in another order get their
rows reordered, other classes get the fresh head back. Without names on both sides it is kept as is.
"""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnfleet.config.schema import WEIGHT_NAME
from cnnfleet.errors import ConfigError

log = logging.getLogger(__name__)

STRIPPED = ("", "net.", "module.", "model.")  # prefixes a file's keys may carry that the network's lack
OPTIONAL = ("num_batches_tracked",)  # BatchNorm's step counter: absent from some files, harmless to keep
SHOWN = 3  # keys named in an error line


class Source:
    """A state dict read from a file or cache, with what it says about its origin."""

    def __init__(
        self, tensors: dict[str, Tensor], where: str, model: dict | None = None, class_names: list[str] | None = None
    ) -> None:
        self.tensors = tensors
        self.where = where  # `what` it is, for the log line
        self.model = model  # the cnnfleet model config it was trained with, when known
        self.class_names = class_names  # the classes its head's rows stand for, when known (cnnfleet files)


@dataclass
class LoadedHead:
    """A head loaded from a file whose classes are known: matched to the data's classes by name later
    (match_head_classes), with the network's fresh head kept to fall back to."""

    name: str
    class_names: list[str]
    fresh: dict[str, Tensor]


def read_source(spec: str, in_channels: int) -> Source:
    """The weights named by `model.init_from`; ConfigError when they cannot be read."""
    name = re.fullmatch(WEIGHT_NAME, spec)
    if name is not None:
        library, model, tag = name.groups()
        return _torchvision_weights(model, tag) if library == "torchvision" else _timm_weights(model, tag, in_channels)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.init_from={spec}: no such file; pass a checkpoint, a .safetensors file or a cached "
            "weight name such as torchvision:resnet18.IMAGENET1K_V1"
        )
    if path.suffix == ".safetensors":
        return _safetensors(path)
    return _torch_file(path)


def _safetensors(path: Path) -> Source:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"model.init_from={path}: not a readable safetensors file ({exc})") from None
    ours = json.loads(meta["cnnfleet"]) if "cnnfleet" in meta else {}  # cnnfleet-export's metadata
    return Source(tensors, f"safetensors file {path}", ours.get("model"), ours.get("class_names"))


def _torch_file(path: Path) -> Source:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, pickled classes, not a torch file at all
        raise ConfigError(
            f"model.init_from={path}: not a checkpoint or state dict that loads with weights_only=True "
            f"({type(exc).__name__}); pass a .ckpt, .safetensors or .pth file"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        return _lightning(loaded, path)
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ConfigError(f"model.init_from={path}: holds no state dict (a mapping of names to tensors)")
    return Source(loaded, f"state dict {path}")


def _lightning(checkpoint: dict, path: Path) -> Source:
    """A Lightning checkpoint's network: the EMA weights when present (what the run evaluated), else `net.`."""
    state = checkpoint["state_dict"]
    hparams = checkpoint.get("hyper_parameters")
    model = hparams.get("model") if isinstance(hparams, dict) else None
    ours = checkpoint.get("cnnfleet")  # training/module.py RUN_CONFIG_KEY
    names = ours.get("class_names") if isinstance(ours, dict) else None
    ema = {k.removeprefix("ema_net."): v for k, v in state.items() if k.startswith("ema_net.")}
    if ema:
        return Source(ema, f"checkpoint {path} (EMA weights)", model, names)
    return Source(dict(state), f"checkpoint {path}", model, names)


def _torchvision_weights(model: str, tag: str | None) -> Source:
    from cnnfleet.models.adapt import unknown_name
    from cnnfleet.models.torchvision_models import classification_models, local_weights

    valid = classification_models()
    if model not in valid:
        raise unknown_name("torchvision", model, valid)
    entry = local_weights(model, tag or "DEFAULT")  # ConfigError when not in the hub cache
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    return Source(torch.load(path, map_location="cpu", weights_only=True), f"torchvision weights {model}.{entry.name}")


def _timm_weights(model: str, tag: str | None, in_channels: int) -> Source:
    """timm builds the pretrained network itself (its own key remapping, and a stem summed or repeated to
    `in_channels`), from the Hugging Face cache only."""
    from cnnfleet.models.timm_models import TimmNet

    name = f"{model}.{tag}" if tag else model
    net = TimmNet(in_channels=in_channels, num_classes=None, name=name, pretrained=True)  # ConfigError offline
    return Source(net.net.state_dict(), f"timm weights {name}")


# ---------------------------------------------------------------- matching keys


def align_keys(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """`source` renamed by the one prefix change (strip one of STRIPPED, add the target's common first
    component) that matches the most target keys; on a tie, the smallest change."""
    firsts = {key.split(".", 1)[0] for key in target}
    added = ["", f"{firsts.pop()}."] if len(firsts) == 1 else [""]
    best: dict[str, Tensor] = {}
    for strip in STRIPPED:
        for add in added:
            renamed = {add + k.removeprefix(strip): v for k, v in source.items() if k.startswith(strip)}
            if len(renamed.keys() & target.keys()) > len(best.keys() & target.keys()):
                best = renamed
    return best if best else dict(source)


def head_name(net: nn.Module) -> str | None:
    """The classification head: the last nn.Linear (None when the network has none)."""
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def plan_load(source: dict[str, Tensor], target: dict[str, Tensor], head: str | None) -> tuple[dict, list, str]:
    """(tensors to load, head keys left at their fresh init, problem text or ""), after align_keys."""
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    missing = [k for k in target if k not in source and not k.endswith(OPTIONAL)]
    unexpected = [k for k in source if k not in target]
    reshaped = [k for k in source.keys() & target.keys() if source[k].shape != target[k].shape]
    skipped = [
        k for k in head_keys & target.keys() if k in missing or (k in reshaped and _other_classes(source[k], target[k]))
    ]
    missing = [k for k in missing if k not in skipped]
    unexpected = [k for k in unexpected if not _same_layer(k, skipped)]  # a head of another kind: still the head
    reshaped = sorted(k for k in reshaped if k not in skipped)
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors not in the file ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} not in this network ({_few(unexpected)})")
    if reshaped:
        k = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape ({k}: {list(source[k].shape)} in the file, {list(target[k].shape)} here)"
        )
    load = {k: v for k, v in source.items() if k in target and k not in skipped}
    return load, sorted(skipped), "; ".join(problems)


def _other_classes(saved: Tensor, new: Tensor) -> bool:
    return saved.ndim == new.ndim and saved.shape[1:] == new.shape[1:] and saved.shape[0] != new.shape[0]


def _same_layer(key: str, skipped: list[str]) -> bool:
    return any(key.rsplit(".", 1)[0] == k.rsplit(".", 1)[0] for k in skipped)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")


def _settings_hint(saved: dict | None, model: dict) -> str:
    """`model.widths=[32, 64, 128]`: the saved model's settings that differ from this run's."""
    if not saved:
        return "build the network the weights were trained with (model=..., model.name=...)"
    diff = [k for k in sorted(saved) if k not in ("in_channels", "num_classes") and saved.get(k) != model.get(k)]
    if not diff and saved.get("in_channels") not in (None, model.get("in_channels")):
        return (
            f"they were trained on {saved['in_channels']}-channel images and these data have "
            f"{model.get('in_channels')} (data.channels)"
        )
    if not diff:
        return "the file was written by another version of this network"
    return "they were trained with " + " ".join(f"model.{k}={saved[k]!r}".replace("'", "") for k in diff)


# ---------------------------------------------------------------- applying


def init_from(net: nn.Module, spec: str, model: dict, in_channels: int) -> LoadedHead | None:
    """Copy the weights of `spec` into `net` (model: this run's model config, for the error hint).
    Returns the loaded head when the file names its classes, for match_head_classes."""
    source = read_source(spec, in_channels)
    target = net.state_dict()
    head = head_name(net)
    aligned = align_keys(source.tensors, target)
    load, skipped, problem = plan_load(aligned, target, head)
    if problem:
        raise ConfigError(
            f"model.init_from={spec} does not fit this {type(net).__name__}: {problem}; "
            f"{_settings_hint(source.model, model)}"
        )
    fresh = {key: target[key].clone() for key in (f"{head}.weight", f"{head}.bias") if key in target}
    net.load_state_dict(load, strict=False)
    log.info("model.init_from: loaded %d of %d tensors from %s", len(load), len(target), source.where)
    if skipped:
        saved = aligned.get(f"{head}.weight")
        was = f"{saved.shape[0]}" if saved is not None else "none in the file"
        classes = target[f"{head}.weight"].shape[0]
        log.info("model.init_from: head %s re-initialised: %s -> %d classes", head, was, classes)
        return None
    if head is None or not source.class_names or len(source.class_names) != len(target[f"{head}.weight"]):
        return None
    return LoadedHead(head, [str(name) for name in source.class_names], fresh)


def match_head_classes(net: nn.Module, loaded: LoadedHead, class_names: list[str]) -> None:
    """Make the loaded head's rows stand for this data's classes: reordered when the classes are the
    same in another order, the fresh head back when they are other classes."""
    names = [str(name) for name in class_names]
    if names == loaded.class_names:
        return
    layer = net.get_submodule(loaded.name)
    with torch.no_grad():
        if sorted(names) == sorted(loaded.class_names):
            rows = torch.tensor([loaded.class_names.index(name) for name in names])
            for tensor in (layer.weight, getattr(layer, "bias", None)):
                if tensor is not None:
                    tensor.copy_(tensor[rows.to(tensor.device)])
            log.info(
                "model.init_from: head %s rows reordered to this data's class order (%s)", loaded.name, _few(names)
            )
            return
        for key, value in loaded.fresh.items():
            getattr(layer, key.rsplit(".", 1)[1]).copy_(value)
    other = [name for name in names if name not in loaded.class_names]
    log.info(
        "model.init_from: head %s re-initialised: the file's head was trained on other classes (here: %s; "
        "not in the file: %s)",
        loaded.name,
        _few(names),
        _few(other) or "none",
    )
