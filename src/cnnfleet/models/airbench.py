"""An airbench-style fast CIFAR network (after Keller Jordan's airbench94, which reaches 94% on
CIFAR-10 in a few seconds on one A100).

Kept from airbench: a 2x2 patch stem (24 channels) + GELU, three conv groups (conv, max-pool,
BN, GELU, conv, BN, GELU) of widths 64/256/256, a max-pooled head with a bias-free linear layer
scaled by 1/9. Not kept: the whitening initialisation of the stem from data patches, the
lookahead/EMA and test-time augmentation of its training script (see trainer options).
Pools use ceil_mode so images from 8x8 upward work; the head pools whatever is left to 1x1.
"""

from torch import Tensor, nn

from cnnfleet.errors import ConfigError


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.BatchNorm2d(c_out, momentum=bn_momentum, eps=1e-12),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=bn_momentum, eps=1e-12),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class AirbenchNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stem_width: int,
        widths: list[int] | tuple[int, ...],
        bn_momentum: float,  # torch's convention (airbench's 0.6 is 1 - this)
        logit_scale: float,
    ) -> None:
        super().__init__()
        if len(widths) < 1:
            raise ConfigError("model.widths must list at least one group width")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 2, bias=True), nn.GELU())
        groups, c_in = [], stem_width
        for width in widths:
            groups.append(ConvGroup(c_in, width, bn_momentum))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.groups(self.stem(x)))) * self.logit_scale
