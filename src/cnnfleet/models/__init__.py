"""Model registry: every network by name, so tests and tools can loop over all of them."""

from torch import nn

from cnnfleet.errors import ConfigError
from cnnfleet.models.resnet_cifar import ResNetCifar
from cnnfleet.models.simple_cnn import SimpleCNN

MODELS: dict[str, type[nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "resnet_cifar": ResNetCifar,
}


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ConfigError lists the valid names for an unknown one."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
