"""The study's networks, plain ``nn.Module``s, each registered by name next to its own code
(`fruitnet.models.registry`), and the torchvision and timm families (``model.arch`` names the
network); importing this package imports every model module, so every name is registered before
`create_model` or `list_models` is called. timm itself is imported only when a timm model is
built."""

from fruitnet.models import (  # noqa: F401  (each registers its model)
    cnn,
    proxyless,
    resnet,
    timm_zoo,
    torchvision_zoo,
)
from fruitnet.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    UnknownModelError,
    create_model,
    get_model_spec,
    list_families,
    list_models,
    model_kwargs,
    preprocess_for,
    register_model,
    resolve_spec,
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
    "list_families",
    "list_models",
    "model_kwargs",
    "preprocess_for",
    "register_model",
    "resolve_spec",
]
