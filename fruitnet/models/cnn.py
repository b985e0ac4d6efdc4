"""The study's basic CNN: four conv/ReLU/max-pool stages and a two-layer classifier."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fruitnet.models.registry import register_model

CHANNELS = (3, 16, 32, 64, 128)
HIDDEN = 625
MIN_INPUT_SIZE = 16  # four 2x2 pools need at least 16 px to leave a 1x1 map
# flatten: the study's head, one weight per position (it can learn "a marker in that corner");
# avg: global average pooling first, position-free and 128 wide whatever the input size
HEADS = ("flatten", "avg")
# none: the study's input; image: each image standardised to zero mean, unit variance over its
# pixels, inside the net, so eval, predict, export and Grad-CAM get it from the checkpoint. X-rays
# from another site differ in exposure and contrast; the net then sees the same range from both.
# equalize: each image's histogram equalised (any monotonic change of its grey levels undone),
# the classic X-ray normalisation, also inside the net.
INPUT_NORMS = ("none", "image", "equalize")
# instance_norm=k: an InstanceNorm2d (affine) in each of the first k stages, after IBN-Net's idea
# for appearance that changes between sites (Pan et al., ECCV 2018): each image's early filter
# responses are scaled by their own statistics, at test time too, so a sharper or higher-contrast
# film no longer means larger edge responses. It is per image, so nothing is fitted to test data.
MAX_INSTANCE_NORM = len(CHANNELS) - 1
LEVELS = 256


def feature_side(input_size: int) -> int:
    """Spatial side after the four floor-halving pools (100 -> 50 -> 25 -> 12 -> 6)."""
    side = input_size
    for _ in CHANNELS[1:]:
        side //= 2
    return side


@register_model(
    name="cnn",
    input_size=100,
    description="basic CNN: 4 x [conv3x3-ReLU-maxpool] (16/32/64/128), FC 625, dropout 0.5",
    head="classifier.fc2",
    # the output of conv4-pool4-relu4 (128 x 6 x 6 at 100 px)
    cam_layer="features",
)
class BasicCNN(nn.Module):
    """4 x [Conv3x3 s1 p1, ReLU, MaxPool2x2] (3->16->32->64->128; computed as conv, pool, ReLU,
    which is the same function), then
    Flatten, Linear(flat, 625), ReLU, Dropout, Linear(625, num_classes).

    The flattened width depends on ``input_size``, so the parameter count does too
    (3,060,071 at 100x100 with 131 classes). ``head="avg"`` puts a global average pool before
    the flatten (module ``classifier.pool``): fc1 then reads 128 features at any input size
    (260,071 parameters with 131 classes), and no weight is tied to a place in the image.
    ``input_norm="image"`` standardises each image over all its pixels first (module
    ``features.standardize``, no weights), so brightness and contrast no longer carry a signal.
    ``input_norm="equalize"`` maps each pixel to its grey level's mid-rank in its image (module
    ``features.equalize``, `Equalize`), so no monotonic change of the levels does.
    ``instance_norm=k`` adds ``features.norm1..k`` (InstanceNorm2d, affine) after pool1..k: the
    net then ignores a positive scaling of the input, and the strength of each early filter's
    response (how sharp or contrasted a film is) is measured against the image's own.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int = 100,
        dropout: float = 0.5,
        head: str = "flatten",
        input_norm: str = "none",
        instance_norm: int = 0,
    ) -> None:
        super().__init__()
        if input_size < MIN_INPUT_SIZE:
            raise ValueError(f"cnn needs input_size >= {MIN_INPUT_SIZE}, got {input_size}")
        if head not in HEADS:
            raise ValueError(f"cnn head must be one of {HEADS}, got {head!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"cnn input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if not 0 <= instance_norm <= MAX_INSTANCE_NORM:
            raise ValueError(
                f"cnn instance_norm must be 0..{MAX_INSTANCE_NORM} (conv stages), got {instance_norm!r}"
            )
        self.input_size = input_size
        layers = _conv_stages(instance_norm)
        if input_norm == "image":
            # One group, no affine: per-sample standardisation over (C, H, W), weight-free, so
            # the state_dict keys stay the study's
            layers.insert(0, ("standardize", nn.GroupNorm(1, CHANNELS[0], affine=False)))
        elif input_norm == "equalize":
            layers.insert(0, ("equalize", Equalize()))
        self.features = nn.Sequential(OrderedDict(layers))
        pool = {"pool": nn.AdaptiveAvgPool2d(1)} if head == "avg" else {}
        flat = CHANNELS[-1] * (1 if pool else feature_side(input_size) ** 2)
        self.classifier = nn.Sequential(
            OrderedDict(
                **pool,
                flatten=nn.Flatten(),
                fc1=nn.Linear(flat, HIDDEN),
                relu=nn.ReLU(inplace=True),
                dropout=nn.Dropout(dropout),
                fc2=nn.Linear(HIDDEN, num_classes),
            )
        )
        for layer in (self.classifier.fc1, self.classifier.fc2):
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Equalize(nn.Module):
    """Histogram equalisation of each image over all its pixels: a pixel becomes the share of
    the image's pixels below its grey level plus half of those at it (its mid-rank), in (0, 1).

    The image is first stretched to its own min..max and cut into `LEVELS` levels, so the input's
    scaling (/255, mean/std) does not matter, and equal pixels stay equal (a flat border is one
    level, not a ramp). Not torchvision's ``equalize``, which also runs on float batches and
    exports: it reads floats as 0..1, so a norm=true (ImageNet mean/std) input comes out wrong
    (every pixel moved by up to 1.0 against the same image unnormalised). In the net, eval,
    predict, export (ONNX ScatterElements, opset 16+) and Grad-CAM get it from the checkpoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.float().flatten(1)
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        level = ((flat - lo) / (hi - lo).clamp_min(1e-6) * (LEVELS - 1)).round().long()
        ones = torch.ones_like(flat)
        hist = torch.zeros(flat.shape[0], LEVELS, device=x.device).scatter_add_(1, level, ones)
        mid_rank = (hist.cumsum(1) - hist / 2) / flat.shape[1]
        return mid_rank.gather(1, level).view_as(x)


def _conv_stages(instance_norm: int = 0) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = []
    for i, (c_in, c_out) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:], strict=True), start=1):
        # Pooling before the ReLU gives the same output (max and ReLU commute: both are
        # monotonic) with the ReLU on a 4x smaller map, ~10 % faster per step. The instance norm
        # sits on the pooled map too: on conv1's full map it halved the chest recipe's training
        # images/s (bench/RECIPES.md, chest history).
        layers += [
            (f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1)),
            (f"pool{i}", nn.MaxPool2d(kernel_size=2, stride=2)),
        ]
        if i <= instance_norm:
            layers.append((f"norm{i}", nn.InstanceNorm2d(c_out, affine=True)))
        layers.append((f"relu{i}", nn.ReLU(inplace=True)))
    return layers
