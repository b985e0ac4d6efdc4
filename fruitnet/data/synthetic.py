"""The embedded default dataset: drawn fruit-like JPEGs in a Fruits-360-shaped folder tree.

Generated once (seeded, deterministic: the same bytes on every run with the same Pillow) into a
version-tagged folder, then loaded through exactly the same code path as Fruits-360
(``Training/<class>/*.jpg``, ``Test/<class>/*.jpg``, 100 x 100 px, white background).

Classes differ in colour, outline and surface texture; every image gets a random pose (position,
scale, rotation) and a little colour noise, so a small CNN has to learn something, and does so
within an epoch or two.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from fruitnet.data.datamodule import ImageFolderDataModule
from fruitnet.files import write_json
from fruitnet.settings import ROOT_ENV

log = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_VERSION",
    "SyntheticDataModule",
    "generate_synthetic_fruits",
    "synthetic_classes",
]

# Bump whenever the drawing code changes: the folder name carries it, so old trees are not reused.
GENERATOR_VERSION = 1
MARKER = ".complete.json"
_SUPERSAMPLE = 2  # draw at 2x and downscale: smooth edges without ImageDraw antialiasing
_STALE_TEMP_S = 3600.0

Point = tuple[float, float]


@dataclass(frozen=True)
class FruitClass:
    name: str
    shape: str
    color: tuple[int, int, int]
    texture: str = "plain"
    color2: tuple[int, int, int] = (0, 0, 0)
    stem: bool = False
    leaf: bool = False


_NAMED = [
    # The first ten (the default) differ most in colour, which a CNN picks up first; the rest
    # add pairs that only shape or texture tell apart (Apple vs Strawberry, Lime vs Pear).
    FruitClass("Synthetic Apple Red", "round", (196, 30, 42), "spots", (238, 200, 90), True, True),
    FruitClass("Synthetic Banana Yellow", "crescent", (236, 206, 52), "plain"),
    FruitClass("Synthetic Orange", "round", (246, 138, 22), "dots", (214, 104, 10), leaf=True),
    FruitClass("Synthetic Grape Purple", "cluster", (104, 40, 122), stem=True),
    FruitClass("Synthetic Lime Green", "oval", (112, 190, 48)),
    FruitClass("Synthetic Blueberry", "small", (52, 62, 144), "plain"),
    FruitClass("Synthetic Kiwi Brown", "oval", (140, 100, 58), "dots", (96, 66, 36)),
    FruitClass("Synthetic Watermelon Striped", "oval", (40, 110, 40), "stripes", (16, 56, 18)),
    FruitClass("Synthetic Peach", "round", (250, 186, 160), "stripes", (236, 130, 110)),
    FruitClass("Synthetic Star Fruit", "star", (232, 212, 88), "plain"),
    FruitClass("Synthetic Strawberry", "heart", (212, 22, 48), "dots", (250, 226, 120), leaf=True),
    FruitClass("Synthetic Pear Green", "pear", (172, 200, 72), "plain", stem=True, leaf=True),
    FruitClass("Synthetic Plum", "round", (118, 30, 72), "plain", stem=True),
    FruitClass("Synthetic Eggplant", "long", (64, 22, 74), "plain", stem=True, leaf=True),
    FruitClass("Synthetic Lemon", "oval", (250, 236, 70), "dots", (226, 210, 40)),
    FruitClass("Synthetic Cucumber", "long", (40, 110, 40), "spots", (140, 190, 90)),
]
_SHAPES = ["round", "oval", "pear", "heart", "star", "long", "crescent", "small"]
_COLORS = {
    "Red": (200, 30, 40),
    "Orange": (245, 140, 25),
    "Yellow": (238, 214, 50),
    "Green": (90, 170, 50),
    "Blue": (50, 70, 170),
    "Purple": (110, 40, 130),
    "Brown": (130, 90, 50),
    "Pink": (240, 130, 170),
}
_TEXTURES = {"Plain": "plain", "Striped": "stripes", "Spotted": "spots"}


def synthetic_classes(num_classes: int) -> list[FruitClass]:
    """The first ``num_classes`` classes: the named fruits, then shape x colour x texture mixes."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    classes = list(_NAMED[:num_classes])
    combos = itertools.product(_TEXTURES.items(), _COLORS.items(), _SHAPES)
    for (tex_name, tex), (col_name, col), shape in combos:
        if len(classes) >= num_classes:
            break
        second = tuple(max(0, int(c * 0.55)) for c in col)
        name = f"Synthetic {shape.title()} {col_name} {tex_name}"
        classes.append(FruitClass(name, shape, col, tex, second, stem=shape in ("round", "pear")))
    if len(classes) < num_classes:
        raise ValueError(f"at most {len(classes)} synthetic classes are available")
    return classes


# --------------------------------------------------------------------------- drawing


def _outline(shape: str, n: int = 48) -> list[Point]:
    """The fruit outline in unit coordinates (radius ~1, y pointing down, top at y=-1)."""
    ts = [2 * math.pi * k / n for k in range(n)]
    if shape in ("round", "small"):
        return [(math.cos(t), math.sin(t)) for t in ts]
    if shape == "oval":
        return [(math.cos(t), 0.68 * math.sin(t)) for t in ts]
    if shape == "long":
        return [(math.cos(t), 0.36 * math.sin(t)) for t in ts]
    if shape == "pear":
        # Narrow neck on top, wide bulb below.
        return [(math.cos(t) * (0.5 + 0.32 * (1 + math.sin(t))), math.sin(t)) for t in ts]
    if shape == "heart":
        # Wide shoulders on top narrowing to a point at the bottom: a strawberry.
        return [(math.cos(t) * (1 - 0.75 * max(0.0, math.sin(t))), math.sin(t)) for t in ts]
    if shape == "star":
        return [
            (r * math.cos(t - math.pi / 2), r * math.sin(t - math.pi / 2))
            for k in range(10)
            for t, r in [(math.pi * k / 5, 1.0 if k % 2 == 0 else 0.48)]
        ]
    if shape == "crescent":
        arc = [math.radians(a) for a in range(200, 341, 10)]
        outer = [(math.cos(a), 0.95 * math.sin(a) + 0.5) for a in arc]
        inner = [(0.86 * math.cos(a), 0.62 * math.sin(a) + 0.5) for a in reversed(arc)]
        return outer + inner
    raise ValueError(f"unknown shape {shape!r}")


_CLUSTER = [(-0.45, -0.5), (0.0, -0.55), (0.45, -0.5), (-0.25, -0.05), (0.25, -0.05), (0.0, 0.4)]
_BERRY = 0.3  # grape radius in fruit units
# Where the stem/leaf attach: the outline's top (y of its highest point in unit coordinates).
_TOP = {"oval": -0.68, "long": -0.36, "crescent": 0.0, "cluster": -0.85}


class _Pose:
    """Maps unit fruit coordinates to canvas pixels (rotation, scale, position)."""

    def __init__(self, rng: random.Random, canvas: int, small: bool) -> None:
        lo, hi = (0.26, 0.34) if small else (0.36, 0.46)
        self.radius = canvas * rng.uniform(lo, hi)
        slack = canvas / 2 - self.radius * 1.25
        self.cx = canvas / 2 + rng.uniform(-1, 1) * max(0.0, slack) * 0.5
        self.cy = canvas / 2 + rng.uniform(-1, 1) * max(0.0, slack) * 0.5
        # Fruits-360 turns the fruit about a vertical axis, so in-plane tilt stays moderate.
        angle = math.radians(rng.uniform(-40, 40))
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def __call__(self, x: float, y: float) -> Point:
        r = self.radius
        return (
            self.cx + r * (x * self.cos - y * self.sin),
            self.cy + r * (x * self.sin + y * self.cos),
        )

    def many(self, pts: list[Point]) -> list[Point]:
        return [self(x, y) for x, y in pts]


def _jitter(color: tuple[int, int, int], rng: random.Random, amount: int = 10) -> tuple:
    shade = rng.uniform(0.92, 1.06)
    return tuple(max(0, min(255, int(c * shade) + rng.randint(-amount, amount))) for c in color)


def _circle(cx: float, cy: float, r: float) -> list[float]:
    return [cx - r, cy - r, cx + r, cy + r]


def _texture(draw: ImageDraw.ImageDraw, fc: FruitClass, pose: _Pose, rng: random.Random) -> None:
    color2 = _jitter(fc.color2, rng)
    r = pose.radius
    if fc.texture == "stripes":
        for y in [k * 0.3 - 1.2 for k in range(9)]:
            draw.line([pose(-1.3, y), pose(1.3, y)], fill=color2, width=max(1, int(0.11 * r)))
    elif fc.texture in ("spots", "dots"):
        count, size = (14, 0.08) if fc.texture == "spots" else (40, 0.035)
        for _ in range(count):
            a, d = rng.uniform(0, 2 * math.pi), math.sqrt(rng.random()) * 0.95
            x, y = pose(d * math.cos(a), d * math.sin(a))
            draw.ellipse(_circle(x, y, r * size * rng.uniform(0.7, 1.3)), fill=color2)


def _stem_and_leaf(draw: ImageDraw.ImageDraw, fc: FruitClass, pose: _Pose, top: float) -> None:
    r = pose.radius
    if fc.stem:
        draw.line(
            [pose(0, top + 0.1), pose(0.08, top - 0.3)],
            fill=(96, 62, 30),
            width=max(2, int(0.1 * r)),
        )
    if fc.leaf:
        leaf = [
            (0.1 + 0.35 * math.cos(t), top - 0.12 + 0.13 * math.sin(t))
            for t in [2 * math.pi * k / 16 for k in range(16)]
        ]
        draw.polygon(pose.many(leaf), fill=(60, 150, 50))


def draw_fruit(fc: FruitClass, size: int, rng: random.Random) -> Image.Image:
    """One ``size x size`` RGB image of class ``fc`` in a random pose on white."""
    canvas_px = size * _SUPERSAMPLE
    pose = _Pose(rng, canvas_px, small=fc.shape == "small")
    body = _jitter(fc.color, rng)
    mask = Image.new("L", (canvas_px, canvas_px), 0)
    mdraw = ImageDraw.Draw(mask)
    if fc.shape == "cluster":
        for x, y in _CLUSTER:
            cx, cy = pose(x, y)
            mdraw.ellipse(_circle(cx, cy, _BERRY * pose.radius), fill=255)
    else:
        mdraw.polygon(pose.many(_outline(fc.shape)), fill=255)

    paint = Image.new("RGB", (canvas_px, canvas_px), body)
    pdraw = ImageDraw.Draw(paint)
    _texture(pdraw, fc, pose, rng)
    if fc.shape == "cluster":  # outline each berry so the cluster reads as grapes
        for x, y in _CLUSTER:
            cx, cy = pose(x, y)
            pdraw.ellipse(_circle(cx, cy, _BERRY * pose.radius), outline=(60, 20, 70), width=2)
    # A soft highlight gives the flat shape some volume, as studio lighting does on real fruit.
    hx, hy = pose(-0.35, -0.35)
    ImageDraw.Draw(paint, "RGBA").ellipse(
        _circle(hx, hy, 0.22 * pose.radius), fill=(255, 255, 255, 70)
    )

    image = Image.new("RGB", (canvas_px, canvas_px), (255, 255, 255))
    image.paste(paint, mask=mask)
    _stem_and_leaf(ImageDraw.Draw(image), fc, pose, _TOP.get(fc.shape, -1.0))
    return image.reduce(_SUPERSAMPLE)  # box-filter 2x2 average: the antialiasing step


# --------------------------------------------------------------------------- the folder tree


def synthetic_dir_name(num_classes: int, train: int, test: int, size: int, seed: int) -> str:
    return f"fruits-synthetic-v{GENERATOR_VERSION}-c{num_classes}-n{train}x{test}-s{size}-r{seed}"


def _is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def _remove_stale_temps(parent: Path, name: str) -> None:
    # A generation killed half-way leaves its temp tree; one still running is younger than this.
    now = time.time()
    for p in parent.glob(f".{name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(p, ignore_errors=True)


def _write_split(
    out: Path, classes: list[FruitClass], split: str, per_class: int, size: int, seed: int
) -> None:
    for fc in classes:
        d = out / split / fc.name
        d.mkdir(parents=True)
        for i in range(per_class):
            # String seeds hash deterministically (sha512), unlike hash() of a tuple.
            rng = random.Random(f"fruitnet-synth-v{GENERATOR_VERSION}/{seed}/{fc.name}/{split}/{i}")
            draw_fruit(fc, size, rng).save(d / f"{i}_{size}.jpg", format="JPEG", quality=92)


def generate_synthetic_fruits(
    parent: str | os.PathLike,
    *,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 20,
    image_size: int = 100,
    seed: int = 0,
) -> Path:
    """Generate the tree under ``parent`` unless already complete; return its folder.

    The tree is written to a temp folder and renamed into place with its completion marker, so a
    killed generation never leaves a half tree that looks finished.
    """
    classes = synthetic_classes(num_classes)
    parent = Path(parent).expanduser()
    name = synthetic_dir_name(num_classes, train_per_class, test_per_class, image_size, seed)
    final = parent / name
    if _is_complete(final):
        return final
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(parent, name)
    if final.exists():
        log.warning("removing incomplete synthetic data folder %s", final)
        shutil.rmtree(final)
    t0 = time.monotonic()
    tmp = parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_split(tmp, classes, "Training", train_per_class, image_size, seed)
        _write_split(tmp, classes, "Test", test_per_class, image_size, seed)
        meta = {
            "generator_version": GENERATOR_VERSION,
            "classes": [c.name for c in classes],
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "image_size": image_size,
            "seed": seed,
        }
        write_json(tmp / MARKER, meta)
        # The tree is renamed as a whole (`fruitnet.files.atomic_path` takes files only).
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # not a concurrent generator finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = num_classes * (train_per_class + test_per_class)
    log.info("generated %d synthetic images in %.1f s -> %s", n, time.monotonic() - t0, final)
    return final


def _default_root() -> Path:
    base = os.environ.get(ROOT_ENV)
    return (Path(base) / "data" if base else Path.home() / ".cache" / "fruitnet") / "synthetic"


class SyntheticDataModule(ImageFolderDataModule):
    """`ImageFolderDataModule` over the generated tree (``layout="fruits"``), made on first use.

    ``root`` is the parent folder; the data sits in a version- and size-tagged folder below it.
    ``image_size`` is both the generated JPEG size and (with ``norm=false``) the input size.
    ``data_seed`` fixes the images; the run's ``seed`` only drives splitting and shuffling.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        num_classes: int = 10,
        train_per_class: int = 60,
        test_per_class: int = 20,
        image_size: int = 100,
        layout: str = "fruits",
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        self.synthetic_parent = Path(root).expanduser() if root else _default_root()
        self.generate_kwargs = {
            "num_classes": int(num_classes),
            "train_per_class": int(train_per_class),
            "test_per_class": int(test_per_class),
            "image_size": int(image_size),
            "seed": int(data_seed),
        }
        synthetic_classes(int(num_classes))  # fail fast on an impossible class count
        name = synthetic_dir_name(
            int(num_classes),
            int(train_per_class),
            int(test_per_class),
            int(image_size),
            int(data_seed),
        )
        super().__init__(
            root=self.synthetic_parent / name, layout=layout, image_size=image_size, **kwargs
        )
        self.num_classes = int(num_classes)

    def prepare_data(self) -> None:
        generate_synthetic_fruits(self.synthetic_parent, **self.generate_kwargs)

    def setup(self, stage: str | None = None) -> None:
        if not _is_complete(self.root):
            # setup() without prepare_data() (a notebook, a test): generate here instead.
            self.prepare_data()
        super().setup(stage)
