"""Fit a library network to the data set: input channels and number of classes."""

import difflib

from torch import Tensor, nn

from cnnfleet.errors import ConfigError


class RepeatChannels(nn.Module):
    """Grayscale into a 3-channel network: repeat the channel (pretrained stems keep working)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, self.channels, -1, -1)


def channel_adapter(in_channels: int, expected: int) -> nn.Module:
    if in_channels == expected:
        return nn.Identity()
    if in_channels == 1:
        return RepeatChannels(expected)
    return nn.Conv2d(in_channels, expected, 1)  # any other count: a learned 1x1 projection


def replace_head(net: nn.Module, num_classes: int) -> None:
    """Swap the last nn.Linear (the classifier of torchvision's classification models) for a new one."""
    linears = [(name, module) for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot find a linear classification head in {type(net).__name__} to resize")
    name, old = linears[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def unknown_name(kind: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(valid[:8])}"
    return ConfigError(f"unknown {kind} model '{name}'; {hint} ({len(valid)} available)")
