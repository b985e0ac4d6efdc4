"""`predict explain=true`: one Grad-CAM overlay PNG per predicted image."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fruitnet.explain.figures import overlay_figure
from fruitnet.explain.geometry import DISPLAY_SIDE, display_image, input_region, to_image_geometry
from fruitnet.explain.gradcam import CamExplainer, normalize_maps
from fruitnet.plots import save_figure, shorten

log = logging.getLogger(__name__)


def overlay_names(paths: Sequence[Path], root: Path | None) -> list[Path]:
    """Relative PNG names, one per image: ``<image stem>.png`` (under its subfolder when ``root``
    is a folder); ``<stem>_<ext>.png`` where two images would share a name."""
    rel = [Path(p).relative_to(root) if root is not None else Path(Path(p).name) for p in paths]
    plain = [r.with_suffix(".png") for r in rel]
    seen: dict[Path, int] = {}
    for name in plain:
        seen[name] = seen.get(name, 0) + 1
    return [
        r.with_name(f"{r.stem}_{r.suffix.lstrip('.')}.png") if seen[p] > 1 else p
        for r, p in zip(rel, plain, strict=True)
    ]


def write_overlays(
    predictor: Any,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    batch_size: int = 32,
    max_side: int = DISPLAY_SIDE,
    dpi: int = 100,
) -> list[Path]:
    """One overlay PNG per predicted row (a `fruitnet.predict.Predictor`'s output) into
    ``out_dir``: the map of the top-1 class, drawn on the original image. Returns the files."""
    out_dir = Path(out_dir)
    explainer = CamExplainer(predictor.module, device=predictor.device)
    log.info("Grad-CAM on %s (%s)", explainer.layer_name, explainer.model_name)
    index = {name: i for i, name in enumerate(predictor.class_names)}
    root_path = Path(root).expanduser() if root is not None else None
    names = overlay_names([Path(r["path"]) for r in rows], root_path)
    preprocess = predictor.preprocess
    written: list[Path] = []
    step = max(1, int(batch_size))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        images = torch.stack([predictor.decode(Path(r["path"])) for r in chunk])
        targets = [index[r["topk"][0][0]] for r in chunk]
        maps = normalize_maps(explainer.maps(images, targets, batch_size=step))
        for r, cam, name in zip(chunk, maps, names[start : start + step], strict=True):
            shown = display_image(r["path"], max_side)
            h, w = shown.shape[:2]
            cls, prob = r["topk"][0]
            fig = overlay_figure(
                shown,
                to_image_geometry(cam, h, w, preprocess),
                f"predicted: {cls} ({prob:.2f})",
                subtitle=shorten(Path(r["path"]).name, 60),
                region=input_region(h, w, preprocess),
            )
            written.append(save_figure(fig, out_dir / name, dpi=dpi))
    return written
