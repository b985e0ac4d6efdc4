"""Model registry: name -> builder, default input size, normalisation, pretrained source.

Each model module registers its builder next to its own code with ``@register_model(...)`` (as
timm does); `create_model` builds any registered name. Pretrained or file weights are loaded into
the network with the file's head first (1000 classes for ImageNet), and only then is the head
swapped for ``num_classes``, so every backbone key and shape is checked strictly.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from torch import nn

from fruitnet.models.weights import (
    WeightsSource,
    WeightsUnavailableError,
    fetch,
    keep_metadata,
    load_checked,
    load_state_dict_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000

log = logging.getLogger(__name__)

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]  # builder(*, num_classes, input_size, **kwargs)
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_url: str | None = None
    description: str = ""
    # Dotted path of the final nn.Linear: tells a weights file's class count.
    head: str = "fc"
    # Model kwargs -> downloadable weights; None when there are no pretrained weights (for
    # any kwargs), or when the callable returns None (none for these kwargs, e.g. a searched arch).
    weights_source: Callable[..., WeightsSource | None] | None = None
    # Dotted path of the module whose 4-D output Grad-CAM explains (`fruitnet.explain`): the last
    # conv stage. None (or a path that does not resolve in a built net): the last module holding
    # an nn.Conv2d whose output is 4-D, found by one probe forward.
    cam_layer: str | None = None
    # The shorter side of the model's own eval pipeline (its library's metadata), used with
    # norm=true instead of the ProxylessNAS 256/224 one; None: the data's pipeline (study models).
    resize: int | None = None
    # The network takes ``input_size`` only (a torchvision ViT's patch grid): the data is resized
    # to it, also with norm=false.
    fixed_size: bool = False
    # Key prefixes of a weights file that the built network leaves out (torchvision's auxiliary
    # heads): dropped before the strict load.
    ignore_keys: tuple[str, ...] = ()
    # Builds the network with its library's own pretrained weights and cache (timm, the Hugging
    # Face cache): ``load_pretrained(*, num_classes, input_size, **kwargs) -> (net, file)``;
    # raises WeightsUnavailableError when the file is neither cached nor downloadable.
    load_pretrained: Callable[..., tuple[nn.Module, str]] | None = None
    # A family of architectures (torchvision, timm): ``resolve(**kwargs)`` is the ModelSpec of
    # the one ``kwargs["arch"]`` names, read from its library's metadata.
    resolve: Callable[..., ModelSpec] | None = None


class UnknownModelError(KeyError, ValueError):
    """Unknown model name; a KeyError for mapping-style callers, a ValueError for config errors."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


_REGISTRY: dict[str, ModelSpec] = {}


@overload
def register_model(spec: ModelSpec, /, *, overwrite: bool = False) -> ModelSpec: ...
@overload
def register_model(
    spec: None = None, /, *, overwrite: bool = False, **fields: Any
) -> Callable[[Builder], Builder]: ...
def register_model(spec=None, /, *, overwrite=False, **fields):
    """``register_model(ModelSpec(...))`` registers a spec and returns it;
    ``@register_model(name=..., input_size=..., ...)`` (the other `ModelSpec` fields as keywords)
    registers the decorated builder, a function or an nn.Module class, and returns it unchanged."""
    if spec is not None:
        if fields:
            raise TypeError("register_model takes a ModelSpec or ModelSpec fields, not both")
        return _add(spec, overwrite)

    def decorate(builder: Builder) -> Builder:
        _add(ModelSpec(builder=builder, **fields), overwrite)
        return builder

    return decorate


def _add(spec: ModelSpec, overwrite: bool) -> ModelSpec:
    key = spec.name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[key] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}, or "
            f"{' / '.join(list_families())} with model.arch=<name>"
        ) from None


def list_models() -> list[str]:
    """The models that build by name alone (the study's); families are `list_families`."""
    return sorted(k for k, spec in _REGISTRY.items() if spec.resolve is None)


def list_families() -> list[str]:
    """The families whose ``arch`` keyword names the network (torchvision, timm)."""
    return sorted(k for k, spec in _REGISTRY.items() if spec.resolve is not None)


def resolve_spec(name: str, kwargs: Mapping[str, object] | None = None) -> ModelSpec:
    """The spec of ``name``; for a family (``model=torchvision model.arch=...``), the spec of the
    architecture ``kwargs["arch"]`` names."""
    spec = get_model_spec(name)
    return spec.resolve(**dict(kwargs or {})) if spec.resolve is not None else spec


def preprocess_for(name: str, kwargs: Mapping[str, object] | None, *, norm: bool) -> dict | None:
    """The preprocess dict (docs/ARCHITECTURE.md) the model's own metadata asks for, or None when
    the data's pipeline applies: with norm=true a torchvision/timm model's eval resize, crop and
    mean/std; with norm=false only a network that takes one input size (then squashed to it)."""
    spec = resolve_spec(name, kwargs)
    size = spec.input_size
    if norm and spec.resize is not None:
        return {"resize": spec.resize, "crop": size, "size": size,
                "mean": list(spec.mean), "std": list(spec.std)}  # fmt: skip
    if spec.fixed_size:
        log.info("%s takes %d px inputs only: the images are resized to %d px", name, size, size)
        return {"resize": size, "crop": None, "size": size, "mean": [0.0] * 3, "std": [1.0] * 3}
    return None


def model_kwargs(spec: ModelSpec) -> dict[str, object]:
    """Extra keyword arguments the builder accepts, with their defaults."""
    params = inspect.signature(spec.builder).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is p.KEYWORD_ONLY and p.name not in ("num_classes", "input_size")
    }


def create_model(
    name: str,
    *,
    num_classes: int,
    input_size: int | None = None,
    pretrained: bool | str = False,
    weights: str | Path | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs.

    ``weights=PATH`` (a state_dict or a checkpoint with ``"state_dict"``) takes precedence over
    ``pretrained``, so ``model.weights=PATH`` works as the offline alternative without also
    having to switch ``pretrained`` off. ``pretrained="auto"`` uses the ImageNet weights when they
    are cached or downloadable and otherwise warns and starts from random init; ``True`` insists.
    The file the weights came from (or None) is kept as ``model.weights_source``.
    """
    if pretrained not in (True, False, "auto"):
        raise ValueError(f"pretrained must be true, false or auto, got {pretrained!r}")
    _check_kwargs(get_model_spec(name), kwargs)
    spec = resolve_spec(name, kwargs)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    size = spec.input_size if input_size is None else int(input_size)
    build = partial(spec.builder, input_size=size, **kwargs)
    if weights:  # "" from a config override means "no file", like None
        path = Path(weights).expanduser()
        return _from_state(build, spec, load_state_dict_file(path), num_classes, str(path))
    source = spec.weights_source(**kwargs) if spec.weights_source is not None else None
    if pretrained and spec.load_pretrained is not None:
        try:
            model, path = spec.load_pretrained(num_classes=num_classes, input_size=size, **kwargs)
        except WeightsUnavailableError as err:
            if pretrained is True:
                raise
            log.warning("pretrained=auto: training %s from random init. %s", spec.name, err)
            return _tag(build(num_classes=num_classes), None)
        return _tag(model, path)
    if pretrained == "auto" and source is None:
        pretrained = False
    if pretrained:
        if source is None:
            which = " for this architecture (model.arch)" if kwargs.get("arch") else ""
            raise ValueError(
                f"no pretrained weights for {spec.name}{which}: use model.pretrained=false, "
                "or model.weights=PATH for a file of your own"
            )
        try:
            path = fetch(source, model=spec.name)
        except WeightsUnavailableError as err:
            if pretrained is True:
                raise
            log.warning("pretrained=auto: training %s from random init. %s", spec.name, err)
        else:
            return _from_state(build, spec, load_state_dict_file(path), num_classes, str(path))
    return _tag(build(num_classes=num_classes), None)


def _tag(model: nn.Module, source: str | None) -> nn.Module:
    model.weights_source = source
    return model


def _check_kwargs(spec: ModelSpec, kwargs: Mapping[str, object]) -> None:
    params = inspect.signature(spec.builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # a family passes the rest to its library's builder, which names what it rejects
    accepted = model_kwargs(spec)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {spec.name!r} got unknown keyword argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )


def _head_classes(state: Mapping[str, torch.Tensor], head: str) -> int | None:
    weight = state.get(f"{head}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def _from_state(
    build: Callable[..., nn.Module],
    spec: ModelSpec,
    state: Mapping[str, torch.Tensor],
    num_classes: int,
    source: str,
) -> nn.Module:
    if spec.ignore_keys:
        state = {k: v for k, v in state.items() if not k.startswith(spec.ignore_keys)}
    file_classes = _head_classes(state, spec.head)
    if file_classes == num_classes:
        model = build(num_classes=num_classes)
        load_checked(model, state, source=source)
        return _tag(model, source)
    donor = build(num_classes=file_classes or IMAGENET_CLASSES)
    load_checked(donor, state, source=source)
    # The fresh head keeps the architecture's own init (e.g. Xavier for the cnn).
    model = build(num_classes=num_classes)
    head_prefix = f"{spec.head}."
    donor_state = donor.state_dict()
    backbone = keep_metadata(
        {k: v for k, v in donor_state.items() if not k.startswith(head_prefix)}, donor_state
    )
    result = model.load_state_dict(backbone, strict=False)
    if result.unexpected_keys or any(not k.startswith(head_prefix) for k in result.missing_keys):
        raise RuntimeError(f"head swap for {spec.name} left backbone keys unloaded: {result}")
    return _tag(model, source)
