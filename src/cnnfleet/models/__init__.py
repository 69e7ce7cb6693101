"""Model registry: every network by name, so tests and tools can loop over all of them."""

from torch import nn

from cnnfleet.config.schema import GROUP_SCHEMAS, ModelConfig, defaults
from cnnfleet.errors import ConfigError
from cnnfleet.models.airbench import AirbenchNet
from cnnfleet.models.resnet_cifar import ResNetCifar
from cnnfleet.models.simple_cnn import SimpleCNN
from cnnfleet.models.timm_models import TimmNet
from cnnfleet.models.torchvision_models import TorchvisionNet

RUN_KEYS = set(defaults(ModelConfig))  # init_from, freeze: applied to a built network (training/builders.py)

MODELS: dict[str, type[nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "resnet_cifar": ResNetCifar,
    "airbench": AirbenchNet,
    "torchvision": TorchvisionNet,  # any torchvision classification model: model.name
    "timm": TimmNet,  # any timm model (optional extra): model.name
}


def create_model(name: str, /, **kwargs) -> nn.Module:
    """Build a registered model with the schema's defaults for what `kwargs` leaves out (the
    constructors have none: defaults live in schema.py only); ConfigError for an unknown name."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid: {', '.join(sorted(MODELS))}")
    settings = {k: v for k, v in defaults(GROUP_SCHEMAS["model"][f"{name}_schema"]).items() if k not in RUN_KEYS}
    return MODELS[name](**{**settings, **kwargs})
