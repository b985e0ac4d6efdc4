"""The study's networks, plain ``nn.Module``s, each registered by name next to its own code
(`fruitnet.models.registry`); importing this package imports every model module, so every name is
registered before `create_model` or `list_models` is called."""

from fruitnet.models import cnn, proxyless, resnet  # noqa: F401  (each registers its model)
from fruitnet.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    UnknownModelError,
    create_model,
    get_model_spec,
    list_models,
    model_kwargs,
    register_model,
)
from fruitnet.models.weights import WeightsFileError, WeightsUnavailableError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "UnknownModelError",
    "WeightsFileError",
    "WeightsUnavailableError",
    "create_model",
    "get_model_spec",
    "list_models",
    "model_kwargs",
    "register_model",
]
