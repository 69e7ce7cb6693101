"""Any timm model by name (`model=timm model.name=convnext_nano`), with the optional timm extra.

timm builds the stem for `in_chans` and the head for `num_classes` itself. Pretrained weights
come from the Hugging Face cache only when present (no download at run time).
"""

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Pretrained weights come from the local cache only (compute nodes have no internet):
    without this, huggingface_hub retries the network for ~30 s with a warning per try.
    huggingface_hub reads HF_HUB_OFFLINE into `constants` at import, so both are set."""
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved


class TimmNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, name: str, pretrained: bool) -> None:
        super().__init__()
        timm = import_timm()
        valid = timm.list_models()
        if name not in valid:
            raise unknown_name("timm", name, valid)
        try:
            with offline_hub():
                self.net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels)
        except Exception as exc:  # pretrained weights missing offline (huggingface_hub errors), bad arguments
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(
                f"cannot build timm model '{name}' (pretrained={pretrained}): {first}; "
                "pretrained weights are read from the Hugging Face cache only"
            ) from None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
