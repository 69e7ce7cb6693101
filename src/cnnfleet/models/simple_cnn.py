"""A small VGG-style CNN: conv-BN-ReLU blocks, global average pool, linear head."""

from torch import Tensor, nn

from cnnfleet.errors import ConfigError

NORMS = ("batch", "none")


def conv_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    if norm == "none":
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))
    # bias is redundant before BatchNorm
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SimpleCNN(nn.Module):
    """Blocks of `widths`; a 2x2 max-pool after every block but the first and the last.

    `norm="none"` drops BatchNorm: a net whose result does not depend on how the batch is split
    across ranks (the DDP equivalence tests use it, since SyncBatchNorm needs GPUs).

    On 8x8 digits with three blocks: 8x8 -> 8x8 -> pool 4x4 -> 4x4 -> global pool -> head.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int] | tuple[int, ...],
        dropout: float,
        norm: str,
    ) -> None:
        super().__init__()
        if not widths:
            raise ConfigError("model.widths must list at least one channel count")
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is not supported; valid: {', '.join(NORMS)}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            layers.append(conv_block(c_in, width, norm))
            if 0 < i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))
