"""Any torchvision classification model by name (`model=torchvision model.name=resnet50`).

Random initialisation by default. `model.weights=DEFAULT` (or a weights name such as
IMAGENET1K_V2) loads pretrained weights only when the file is already in torch's hub cache
($TORCH_HOME/hub/checkpoints): cnnfleet never downloads at run time, so a missing file is one
line that says where to put it. The head is resized to the data set's classes.
"""

from pathlib import Path

import torch
from torch import Tensor, nn

from cnnfleet.errors import ConfigError
from cnnfleet.models.adapt import channel_adapter, replace_head, unknown_name


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def local_weights(name: str, weights: str) -> object:
    """The torchvision weights enum entry, checked to be on disk."""
    import torchvision

    try:
        entry = torchvision.models.get_model_weights(name)[weights] if weights != "DEFAULT" else None
        entry = entry or torchvision.models.get_model_weights(name).DEFAULT
    except KeyError:
        valid = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ConfigError(
            f"model.weights={weights!r} is not a weights name of {name}; valid: DEFAULT, {', '.join(valid)}"
        ) from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights {name}.{entry.name} are not on this machine ({path}); cnnfleet does not download "
            f"at run time: fetch {entry.url} elsewhere and copy it there (or set TORCH_HOME), or use model.weights=null"
        )
    return entry


class TorchvisionNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, name: str, weights: str | None) -> None:
        super().__init__()
        import torchvision

        valid = classification_models()
        if name not in valid:
            raise unknown_name("torchvision", name, valid)
        if weights:
            entry = local_weights(name, weights)
            self.net = torchvision.models.get_model(name, weights=entry)
            if len(entry.meta["categories"]) != num_classes:
                replace_head(self.net, num_classes)
        else:
            self.net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        self.adapt = channel_adapter(in_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.adapt(x))
