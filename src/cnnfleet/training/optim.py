"""The optimizer config as the module receives it: cnnfleet-only keys applied and removed."""

from cnnfleet.errors import ConfigError

CNNFLEET_KEYS = ("scale_lr_with_batch", "base_batch_size")


def resolve_optimizer(optimizer_cfg: dict, global_batch: int) -> dict:
    """Apply the linear LR scaling rule when asked; return constructor keys only.

    effective lr = lr * global_batch / base_batch_size (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD"), so a recipe tuned at one global batch keeps working at another.
    """
    resolved = {k: v for k, v in optimizer_cfg.items() if k not in CNNFLEET_KEYS}
    if optimizer_cfg.get("scale_lr_with_batch", False):
        base = optimizer_cfg.get("base_batch_size", 256)
        if base < 1:
            raise ConfigError(f"optimizer.base_batch_size must be >= 1, got {base}")
        resolved["lr"] = optimizer_cfg["lr"] * global_batch / base
    return resolved
