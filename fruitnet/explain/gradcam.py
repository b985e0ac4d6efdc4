"""Grad-CAM through Captum: whether the extra is installed, which layer to explain, the maps."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fruitnet.data.transforms import BatchTransform
from fruitnet.models import resolve_spec
from fruitnet.models.zoo import map_layout

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fruitnet[explain]'"


class ExplainUnavailableError(ImportError):
    """Captum (the `explain` extra) is not installed."""


def require() -> Any:
    """``captum.attr``, or an error that says how to install it."""
    try:
        import captum.attr as attr
    except ImportError as err:
        raise ExplainUnavailableError(
            f"class-activation maps need Captum, which is not installed ({err}): {INSTALL_HINT}"
        ) from err
    return attr


def available() -> bool:
    try:
        require()
    except ExplainUnavailableError:
        return False
    return True


def wanted(setting: Any, logger: logging.Logger = log) -> bool:
    """An ``explain`` config value -> whether to make maps: true (the extra must be installed),
    false, or ``auto`` (on when Captum imports; otherwise one line says how to install it)."""
    value = str(setting).strip().lower() if setting is not None else "false"
    if value in ("true", "1", "yes", "on"):
        require()
        return True
    if value in ("false", "0", "no", "off", "none", "null"):
        return False
    if value != "auto":
        raise ValueError(f"explain must be true, false or auto, got {setting!r}")
    if available():
        return True
    logger.info("explain=auto: no Grad-CAM maps (%s adds them)", INSTALL_HINT)
    return False


# --------------------------------------------------------------------------- target layer


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


@torch.no_grad()
def find_cam_layer(net: nn.Module, input_size: int) -> str:
    """The dotted name of the module that holds an nn.Conv2d and is the last to return a 4-D
    output in one forward pass of a ``1 x 3 x input_size x input_size`` zero image: the last conv
    stage as a whole (``features`` of the basic CNN, ``layer4`` of ResNet-50). These probe hooks
    only record shapes; the attribution itself is Captum's."""
    finished: list[str] = []
    handles = []

    def record(name: str):
        def hook(module, args, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                finished.append(name)

        return hook

    for name, module in net.named_modules():
        if name and _contains_conv(module):
            handles.append(module.register_forward_hook(record(name)))
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    try:
        net.eval()
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    if not finished:
        raise ValueError(f"{type(net).__name__} has no conv module with a 4-D output to explain")
    return finished[-1]


def cam_layer_of(
    net: nn.Module, model_name: str | None, input_size: int, model_kwargs: dict | None = None
) -> str:
    """The registry's ``cam_layer`` for ``model_name`` (a torchvision/timm family: for the
    architecture in ``model_kwargs``) when it names a module of ``net``, else the probe's choice
    (`find_cam_layer`): a model registered without one, or a searched net whose config has no
    such layer."""
    name = None
    if model_name:
        try:
            name = resolve_spec(model_name, model_kwargs).cam_layer
        except (KeyError, ValueError):
            name = None
    if name:
        try:
            if isinstance(net.get_submodule(name), nn.Module):
                return name
        except AttributeError:
            pass
        log.info(
            "cam_layer %r is not a module of this %s; using the last conv stage", name, model_name
        )
    return find_cam_layer(net, input_size)


# --------------------------------------------------------------------------- maps


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each ``H x W`` map divided by its largest absolute value: a Grad-CAM map spans 0..1, a
    signed (``contrast``) map -1..1 with its sign kept; an all-zero map stays 0."""
    peak = maps.flatten(-2).abs().amax(-1)[..., None, None]
    return torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


class CamExplainer:
    """Grad-CAM maps for a `ClassifierModule` (or any classifier ``nn.Module``).

    ``module``: a ClassifierModule (its hparams give the model name, input size and preprocess)
    or a plain network, then with ``mean``/``std`` (default: none, as norm=false) and optionally
    ``model_name``. ``layer``: a dotted module name that overrides the registry's choice. The
    module is put in eval mode; parameters are not changed and get no ``.grad``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        layer: str | None = None,
        model_name: str | None = None,
        input_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        attr = require()
        hparams = getattr(module, "hparams", None) or {}
        net = getattr(module, "net", module)
        preprocess = dict(hparams.get("preprocess") or {})
        self.model_name = model_name or hparams.get("model_name")
        self.input_size = int(
            input_size or preprocess.get("size") or hparams.get("input_size") or 224
        )
        mean = mean if mean is not None else preprocess.get("mean", (0.0, 0.0, 0.0))
        std = std if std is not None else preprocess.get("std", (1.0, 1.0, 1.0))
        self.transform = BatchTransform(mean, std)
        if device is None:
            param = next(module.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.layer_name = layer or cam_layer_of(
            net, self.model_name, self.input_size, hparams.get("model_kwargs")
        )
        self.layer = net.get_submodule(self.layer_name)
        # Captum explains the layer's output seen as N x C x H x W (`AsMap`), so a ViT's tokens
        # and a Swin stage's NHWC map get their maps too; a plain conv map passes unchanged.
        self._as_map = AsMap()
        self._cam = attr.LayerGradCam(self.module, self._as_map.grid)
        self._contrast_cam = attr.LayerGradCam(self._contrast_logits, self._as_map.grid)
        self._interpolate = attr.LayerAttribution.interpolate

    def __repr__(self) -> str:
        return (
            f"CamExplainer(model={self.model_name!r}, layer={self.layer_name!r}, "
            f"input_size={self.input_size}, device={self.device})"
        )

    def _contrast_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each class's logit minus the mean of the others' (two classes: z_c - z_other, the
        log-odds of c): its map shows what tells the class apart, for it (+) and against (-)."""
        logits = self.module(x)
        k = logits.shape[-1]
        if k < 2:
            return logits
        return logits - (logits.sum(-1, keepdim=True) - logits) / (k - 1)

    @torch.no_grad()
    def probs(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """uint8 ``N x 3 x S x S`` -> softmax ``N x classes`` (float32, CPU)."""
        out = [
            self.module(self.transform(chunk.to(self.device))).float().softmax(-1).cpu()
            for chunk in _batches(images, batch_size)
        ]
        return torch.cat(out)

    def maps(
        self,
        images: torch.Tensor,
        targets: int | Sequence[int] | torch.Tensor | None = None,
        *,
        batch_size: int = 32,
        contrast: bool = False,
    ) -> torch.Tensor:
        """Grad-CAM for uint8 ``N x 3 x S x S`` images (as `load_image` decodes them), for one
        class per image (``targets``; None = the predicted class): float32 ``N x S x S`` on the
        CPU, in the layer's units (`normalize_maps` scales each to 0..1, or -1..1).

        Plain Grad-CAM keeps the positive part of the class score's map (ReLU): the regions that
        raise it. ``contrast=True`` gives the signed map of the class's logit minus the others'
        mean instead, no ReLU: positive where the image speaks for the class, negative where it
        speaks for the other class(es). For two classes the maps of the two are each other's
        negative, and neither is blank when one class is only the absence of the other's
        evidence (its plain map is zero everywhere)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(
                f"expected uint8 N x 3 x H x W images, got {images.dtype} {list(images.shape)}"
            )
        n = images.shape[0]
        if targets is None:
            target = self.probs(images, batch_size).argmax(-1)
        else:
            target = torch.as_tensor(targets, dtype=torch.long).flatten()
            if target.numel() == 1:
                target = target.expand(n)
            if target.numel() != n:
                raise ValueError(f"{target.numel()} targets for {n} images")
        side = tuple(images.shape[-2:])
        step = max(1, int(batch_size))
        out = []
        # The layer's output goes through `AsMap` only while maps are made.
        hook = self.layer.register_forward_hook(lambda _m, _a, output: self._as_map(output))
        # Captum needs autograd, also when the caller runs under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad(), _removing(hook):
            for start in range(0, n, step):
                chunk = images[start : start + step].to(self.device)
                x = self.transform(chunk).requires_grad_(True)  # frozen weights still get a map
                explain = self._contrast_cam if contrast else self._cam
                cam = explain.attribute(
                    x, target=target[start : start + step].tolist(), relu_attributions=not contrast
                )
                if cam.dim() != 4:
                    raise ValueError(
                        f"layer {self.layer_name!r} gives a {cam.dim()}-D output; Grad-CAM needs "
                        "a conv layer's N x C x H x W"
                    )
                cam = self._interpolate(cam.detach().float(), side, "bilinear")
                out.append(cam[:, 0].cpu())
        return torch.cat(out) if out else torch.zeros(0, *side)


class AsMap(nn.Module):
    """A layer's output, passed through ``grid`` (an identity whose output Captum explains) as an
    N x C x H x W map and back: ViT tokens ``N x (P + S*S) x C`` (the P class/register tokens
    set aside, the patch tokens laid on their S x S grid) and NHWC maps are rearranged; the
    network's result is unchanged. Anything else is refused in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = nn.Identity()

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
        layout = map_layout(shape)
        if layout == "nhwc":
            return self.grid(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if len(shape) == 4:
            return self.grid(out)
        side = math.isqrt(shape[1]) if layout == "tokens" else 0
        prefix = shape[1] - side * side if side else 0
        if not side or prefix > 2 * side:
            raise ValueError(
                f"Grad-CAM does not apply to this layer's output {list(shape)}: it needs a "
                "N x C x H x W map or ViT tokens on a square patch grid "
                "(CamExplainer(layer=...) picks another layer)"
            )
        patches = out[:, prefix:].transpose(1, 2).reshape(shape[0], shape[2], side, side)
        return torch.cat([out[:, :prefix], self.grid(patches).flatten(2).transpose(1, 2)], 1)


@contextmanager
def _removing(handle: Any) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()


def _batches(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    size = max(1, int(size))
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]


# --------------------------------------------------------------------------- per class


def sample_evenly(indices: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` of ``indices`` (0 = all), evenly spaced, in order."""
    indices = list(indices)
    if limit <= 0 or len(indices) <= limit:
        return indices
    return [indices[math.floor(i * len(indices) / limit)] for i in range(limit)]


def class_mean_maps(
    explainer: CamExplainer,
    dataset: Any,
    labels: torch.Tensor,
    num_classes: int,
    *,
    limit: int = 200,
    batch_size: int = 32,
    contrast: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per class: the mean image and the mean 0..1 map for that class (-1..1 signed maps with
    ``contrast``, see `CamExplainer.maps`) over (at most ``limit``, evenly spaced) test images
    of that class. ``dataset[i]`` is ``(uint8 3 x S x S, label)``."""
    images, maps, counts = [], [], []
    for c in range(num_classes):
        chosen = sample_evenly((labels == c).nonzero().flatten().tolist(), limit)
        image_sum: torch.Tensor | None = None
        map_sum: torch.Tensor | None = None
        for start in range(0, len(chosen), max(1, batch_size)):
            batch = torch.stack([dataset[i][0] for i in chosen[start : start + batch_size]])
            maps_c = explainer.maps(batch, c, batch_size=batch_size, contrast=contrast)
            m = normalize_maps(maps_c).sum(0)
            s = batch.double().sum(0)
            image_sum = s if image_sum is None else image_sum + s
            map_sum = m if map_sum is None else map_sum + m
        n = max(len(chosen), 1)
        if image_sum is None or map_sum is None:
            side = explainer.input_size
            image_sum, map_sum = torch.zeros(3, side, side), torch.zeros(side, side)
        images.append((image_sum / n).round().clamp(0, 255).to(torch.uint8))
        maps.append(map_sum / n)
        counts.append(len(chosen))
    return images, maps, counts
