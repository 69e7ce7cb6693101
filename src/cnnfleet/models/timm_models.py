"""Any timm model by name (`model=timm model.name=convnext_nano`), with the optional timm extra.

timm builds the stem for `in_chans` and the head for `num_classes` itself. Pretrained weights
come from the Hugging Face cache only when present (no download at run time).
"""

from torch import Tensor, nn

from cnnfleet.errors import ConfigError
from cnnfleet.models.adapt import unknown_name


def import_timm() -> object:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "model=timm needs the optional timm package: pip install 'cnnfleet[timm]' (or pip install timm)"
        ) from None
    return timm


class TimmNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, name: str, pretrained: bool) -> None:
        super().__init__()
        timm = import_timm()
        valid = timm.list_models()
        if name not in valid:
            raise unknown_name("timm", name, valid)
        try:
            self.net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels)
        except Exception as exc:  # pretrained weights missing offline (huggingface_hub errors), bad arguments
            raise ConfigError(f"cannot build timm model '{name}' (pretrained={pretrained}): {exc}") from None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
