"""The optimizer as the module builds it: cnnfleet-only keys applied, frozen parameters left out,
and per-layer learning rates when `optimizer.layer_decay` is set."""

from typing import Any

from torch import nn

from cnnfleet.errors import ConfigError

CNNFLEET_KEYS = ("scale_lr_with_batch", "base_batch_size", "layer_decay")
CONTAINERS = (nn.Sequential, nn.ModuleList)


def resolve_optimizer(optimizer_cfg: dict, global_batch: int) -> dict:
    """Apply the linear LR scaling rule when asked; return constructor keys only, plus `layer_decay`
    when it is on (the module applies it when it builds the optimizer, see build_optimizer).

    effective lr = lr * global_batch / base_batch_size (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD"), so a recipe tuned at one global batch keeps working at another.
    """
    resolved = {k: v for k, v in optimizer_cfg.items() if k not in CNNFLEET_KEYS}
    if optimizer_cfg.get("scale_lr_with_batch", False):
        base = optimizer_cfg.get("base_batch_size", 256)
        if base < 1:
            raise ConfigError(f"optimizer.base_batch_size must be >= 1, got {base}")
        resolved["lr"] = optimizer_cfg["lr"] * global_batch / base
    if optimizer_cfg.get("layer_decay") is not None:  # off: the recorded hyperparameters stay as they were
        resolved["layer_decay"] = optimizer_cfg["layer_decay"]
    return resolved


def layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's layers for layer-wise decay, in order from the input: its top-level children in the
    order the network registers them (the forward order of cnnfleet's models and of torchvision/timm
    CNNs), with a top-level nn.Sequential/nn.ModuleList counted as its children (features.0, features.1,
    ..., stages.3) so that stacks of blocks get one depth each. A wrapper whose parameters all sit in one
    child (cnnfleet's torchvision/timm nets: `net`) is looked through. Layers without parameters are left out."""
    prefix = ""
    while True:
        holding = [(name, child) for name, child in net.named_children() if _has_params(child)]
        if len(holding) != 1 or any(True for _ in net.parameters(recurse=False)):
            break
        name, net = holding[0]
        prefix += name + "."
    found: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        parts = child.named_children() if isinstance(child, CONTAINERS) else [("", child)]
        found += [(f"{prefix}{name}.{sub}" if sub else f"{prefix}{name}", m) for sub, m in parts if _has_params(m)]
    return found


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def layer_of(net: nn.Module) -> dict[str, int]:
    """Each parameter name of `net` -> its layer index (0 = nearest the input). Parameters held directly
    by the network (outside every child) are layer 0, as BEiT's embeddings."""
    depth = {}
    for index, (name, layer) in enumerate(layers(net)):
        for sub, _ in layer.named_parameters():
            depth[f"{name}.{sub}"] = index
    return {name: depth.get(name, 0) for name, _ in net.named_parameters()}


def layer_decay_groups(
    named: list[tuple[str, nn.Parameter]], depth: dict[str, int], lr: float, decay: float
) -> list[dict[str, Any]]:
    """Parameter groups of lr x decay^(last - layer) (the last layer, the head, trains at lr), as BEiT /
    timm's param_groups_layer_decay. Names missing from `depth` (not the network's) get the full lr.
    Weight decay is untouched: every group takes the optimizer's own."""
    last = max(depth.values(), default=0)
    groups: dict[int, dict[str, Any]] = {}
    for name, param in named:
        layer = depth.get(name, last)
        group = groups.setdefault(
            layer,
            {"params": [], "lr": lr * decay ** (last - layer), "lr_scale": decay ** (last - layer), "layer": layer},
        )
        group["params"].append(param)
    return [groups[layer] for layer in sorted(groups)]


def build_optimizer(module: nn.Module, net: nn.Module, optimizer_cfg: dict, net_prefix: str = "net.") -> Any:
    """The optimizer over `module`'s parameters, except the frozen ones of `net` (model.freeze); with
    `layer_decay`, one group per layer of `net` (see layer_of)."""
    from hydra.utils import instantiate

    cfg = dict(optimizer_cfg)
    decay = cfg.pop("layer_decay", None)
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad or not n.startswith(net_prefix)]
    if decay is None:
        return instantiate(cfg)(params=[p for _, p in named])
    depth = {net_prefix + name: layer for name, layer in layer_of(net).items()}
    return instantiate(cfg)(params=layer_decay_groups(named, depth, cfg["lr"], decay))
