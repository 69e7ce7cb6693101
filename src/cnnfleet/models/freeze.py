"""`model.freeze`: module-name prefixes whose parameters are not trained (fine-tuning a head or top layers).

Frozen parameters get requires_grad=False, so no gradient is computed for them and the optimizer
never sees them (training/optim.py). Frozen BatchNorm layers are also put in eval mode and kept
there (Classifier.train): their running statistics stay those of the trained network and every batch
is normalised with them. Left in train mode, a frozen BatchNorm would still re-estimate its statistics
from the new data and normalise with batch statistics, so the "frozen" features would drift under the
trained layers that follow (the choice of timm's freeze_batch_norm_2d and detectron2's FrozenBatchNorm,
without swapping modules: checkpoints keep the plain network's keys).
"""

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnfleet.errors import ConfigError

FROZEN_NORM = "cnnfleet_frozen_norm"  # attribute marking a frozen BatchNorm (kept in eval mode)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze(net: nn.Module, prefixes: list[str]) -> int:
    """Freeze every parameter under each prefix; the count frozen. ConfigError for a prefix that
    matches no module, or when nothing would be left to train."""
    names = [name for name, _ in net.named_modules() if name]
    for prefix in prefixes:
        if not any(_under(name, prefix) for name in names):
            top = ", ".join(name for name, _ in net.named_children())
            raise ConfigError(
                f"model.freeze: {prefix!r} matches no module of {type(net).__name__}; its top-level "
                f"modules are {top} (name nested ones with dots, e.g. a child's index)"
            )
    frozen = 0
    for name, param in net.named_parameters():
        if any(_under(name, prefix) for prefix in prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    if prefixes and not any(p.requires_grad for p in net.parameters()):
        raise ConfigError(
            f"model.freeze={list(prefixes)} freezes every parameter: nothing is left to train; "
            "leave the head (and any layers to fine-tune) out of the list"
        )
    for name, module in net.named_modules():
        if isinstance(module, _BatchNorm) and any(_under(name, prefix) for prefix in prefixes):
            setattr(module, FROZEN_NORM, True)
    keep_frozen_norms_in_eval(net)
    return frozen


def keep_frozen_norms_in_eval(net: nn.Module) -> None:
    """Put frozen BatchNorm layers back in eval mode (after a .train() of their parent)."""
    for module in net.modules():
        if getattr(module, FROZEN_NORM, False):
            module.eval()
