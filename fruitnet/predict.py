"""`python -m fruitnet.predict`: top-k classes for image files, from a checkpoint alone.

    python -m fruitnet.predict ckpt_path=best.ckpt input=photo.jpg
    python -m fruitnet.predict ckpt_path=best.ckpt input=photos/ topk=3 output=preds.json

The checkpoint carries the class names and the preprocessing (`hparams.preprocess`), so no dataset
or data config is needed: images are decoded with `fruitnet.data.io.load_image` and normalised by
`fruitnet.data.transforms.BatchTransform`, exactly as the datamodule feeds the network. The network
is rebuilt from the checkpoint alone (`fruitnet.checkpoints.load_network`), without Lightning, so
a one-image prediction starts in the time torch, torchvision and Pillow take to load.
Prints a table and writes `preds.csv` into the run directory, or `output=` (.csv or .json).
Rank 1 is the prediction: the most probable class, or for a two-class checkpoint the class its
threshold picks (`decision_threshold`, chosen on validation by model.threshold=auto).
`explain=true` also writes one Grad-CAM overlay PNG per image (`fruitnet.explain`) into
`<output stem>_explain/` beside it (needs `pip install 'fruitnet[explain]'`).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from fruitnet.batchnorm import adapt_batchnorm
from fruitnet.checkpoints import class_names_of, decide, load_network
from fruitnet.config import CONFIG_PATH, check_keys, run_entry
from fruitnet.data.io import CorruptImageError, check_image, is_image_file, load_image
from fruitnet.data.transforms import BatchTransform, image_spec

log = logging.getLogger("fruitnet.predict")

OUTPUT_SUFFIXES = (".csv", ".json")


class PredictInputError(ValueError):
    """An input path that is missing or not a readable image; the message names it."""


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    images: list[Path]
    skipped: list[Path]  # files in a directory that are not images (.DS_Store, notes.txt, ...)


def collect_inputs(path: str | Path) -> Inputs:
    """One image file, or every image file under a directory (sorted, hidden entries skipped)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PredictInputError(f"input not found: {path}")
    if path.is_file():
        return Inputs([path], [])
    images, skipped = [], []
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        hidden = any(part.startswith(".") for part in p.relative_to(path).parts)
        (images if is_image_file(p) and not hidden else skipped).append(p)
    if not images:
        raise PredictInputError(f"no image files under {path} ({len(skipped)} other file(s))")
    return Inputs(images, skipped)


# --------------------------------------------------------------------------- prediction


class Predictor:
    """Image files -> class probabilities with the checkpoint's own preprocessing.

    ``module``: a `fruitnet.checkpoints.Classifier` (`load_network`) or a `ClassifierModule`.
    """

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.class_names = class_names_of(module)
        self.preprocess = dict(module.hparams["preprocess"])
        self.decode = functools.partial(load_image, **image_spec(self.preprocess))
        self.transform = BatchTransform(self.preprocess["mean"], self.preprocess["std"])
        # Two classes: the checkpoint's cut on P(class 1) (None: argmax), see `ranked`
        self.threshold = getattr(module, "threshold", None) if len(self.class_names) == 2 else None

    @torch.inference_mode()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``N x 3 x S x S`` (as `load_image` gives) -> float32 ``N x classes`` on the CPU."""
        x = self.transform(images.to(self.device))
        return self.module(x).float().softmax(-1).cpu()

    def adapt(self, paths: Sequence[Path], *, batch_size: int = 32) -> int:
        """adapt_bn=true: the network's BatchNorm statistics become those of the readable images
        in ``paths`` (`fruitnet.batchnorm`); returns how many were read."""

        # Decoded here and again by `predict`: a folder of thousands of films is never held in
        # memory whole, for the price of a second decode.
        def batches() -> Iterator[torch.Tensor]:
            for chunk in _chunks(paths, batch_size):
                images = [img for p in chunk if (img := self.read(p, strict=False)) is not None]
                if images:
                    yield self.transform(torch.stack(images).to(self.device))

        seen = adapt_batchnorm(self.module, batches())
        log.info("adapt_bn: BatchNorm statistics of the %d input images", seen)
        return seen

    def read(self, path: Path, *, strict: bool) -> torch.Tensor | None:
        """Decode one file; a broken one raises (strict) or is skipped with a warning."""
        try:
            return self.decode(path)
        except Exception as err:
            # Decode first, check only on failure: check_image explains what the file is instead.
            try:
                check_image(path)
                reason = f"{type(err).__name__}: {err}"
            except CorruptImageError as bad:
                reason = bad.reason
            if strict:
                raise PredictInputError(f"{path} is not a readable image: {reason}") from err
            log.warning("skipping %s: %s", path, reason)
            return None

    def predict(
        self, paths: Sequence[Path], *, topk: int = 5, batch_size: int = 32, strict: bool = False
    ) -> list[dict[str, Any]]:
        """One row per readable image: ``{"path", "topk": [(class name, prob), ...]}``."""
        k = self.check_topk(topk)
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(paths, batch_size):
            decoded = [(p, img) for p in chunk if (img := self.read(p, strict=strict)) is not None]
            if not decoded:
                continue
            probs = self.probs(torch.stack([img for _, img in decoded]))
            top_values, top_indices = self.ranked(probs, k)
            for (p, _), values, indices in zip(decoded, top_values, top_indices, strict=True):
                pairs = [
                    (self.class_names[i], float(v))
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                ]
                rows.append({"path": str(p), "topk": pairs})
        return rows

    def ranked(self, probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's top ``k`` probabilities and classes, the predicted class first: the
        highest probability, or for a two-class checkpoint with a threshold the class the
        threshold picks (which may be the less probable one: that is what the cut is for)."""
        top = probs.topk(k, dim=-1)
        if self.threshold is None:
            return top.values, top.indices
        first = decide(probs, self.threshold)
        indices = torch.stack([first, 1 - first], -1)[:, :k]
        return probs.gather(-1, indices), indices

    def check_topk(self, topk: int) -> int:
        """``topk``, capped at the class count, which a warning line then names."""
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a whole number >= 1, got {topk!r} (e.g. topk=5)")
        classes = len(self.class_names)
        if topk > classes:
            log.warning(
                "topk=%d is more than the model's %d classes: showing all %d",
                topk,
                classes,
                classes,
            )
        return min(topk, classes)


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    size = max(1, int(size))
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- output


def check_output_path(output: str | Path) -> Path:
    path = Path(output).expanduser()
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"output must end in .csv or .json, got {output}")
    return path


def write_predictions(rows: list[dict[str, Any]], path: Path) -> Path:
    """CSV: one row per image, ``path, class_1, prob_1, ..., class_k, prob_k``. JSON: a list of
    ``{"path", "topk": [{"class", "prob"}, ...]}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        records = [
            {"path": r["path"], "topk": [{"class": c, "prob": p} for c, p in r["topk"]]}
            for r in rows
        ]
        path.write_text(json.dumps(records, indent=2) + "\n")
        return path
    k = max((len(r["topk"]) for r in rows), default=0)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *[f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "prob")]])
        for r in rows:
            writer.writerow([r["path"], *[v for c, p in r["topk"] for v in (c, f"{p:.6f}")]])
    return path


def format_table(rows: list[dict[str, Any]], limit: int) -> str:
    """Aligned text: path, then "class (prob)" per rank; at most ``limit`` rows (0 = all)."""
    shown = rows[:limit] if limit > 0 else rows
    k = max((len(r["topk"]) for r in shown), default=0)
    table = [["path", *[f"top-{i}" for i in range(1, k + 1)]]]
    table += [[r["path"], *[f"{c} ({p:.3f})" for c, p in r["topk"]]] for r in shown]
    widths = [max(len(row[i]) for row in table) for i in range(k + 1)]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    if len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more row(s) in the output file")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Predict as configured; returns the rows written to the output file."""
    output = check_output_path(cfg.output or Path(cfg.paths.output_dir) / "preds.csv")
    explain = bool(cfg.get("explain", False))
    if explain:
        from fruitnet import explain as cam

        cam.require()  # before any work: the error says how to install the extra
    inputs = collect_inputs(cfg.input)
    if inputs.skipped:
        names = ", ".join(p.name for p in inputs.skipped[:5])
        more = f" and {len(inputs.skipped) - 5} more" if len(inputs.skipped) > 5 else ""
        log.info("skipped %d non-image file(s): %s%s", len(inputs.skipped), names, more)
    predictor = Predictor(load_network(cfg.ckpt_path), resolve_device(cfg.device))
    if cfg.get("adapt_bn"):
        predictor.adapt(inputs.images, batch_size=cfg.batch_size)
    if predictor.threshold is not None:
        log.info(
            "%s when P(%s) > %.3f (the checkpoint's threshold), else %s",
            predictor.class_names[1], predictor.class_names[1], predictor.threshold,
            predictor.class_names[0],
        )  # fmt: skip
    rows = predictor.predict(
        inputs.images,
        topk=cfg.topk,
        batch_size=cfg.batch_size,
        strict=Path(cfg.input).expanduser().is_file(),  # a named file must be an image
    )
    print(format_table(rows, int(cfg.show)))
    write_predictions(rows, output)
    log.info("%d prediction(s) -> %s", len(rows), output)
    if explain:
        source = Path(cfg.input).expanduser()
        explain_dir = output.parent / f"{output.stem}_explain"
        overlays = cam.write_overlays(
            predictor,
            rows,
            explain_dir,
            root=source if source.is_dir() else None,
            batch_size=cfg.batch_size,
        )
        log.info("%d Grad-CAM overlay(s) -> %s", len(overlays), explain_dir)
    return rows


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def _main(cfg: DictConfig) -> None:
    run_entry(run, cfg)


def main() -> None:
    check_keys(sys.argv[1:], "predict")
    _main()


if __name__ == "__main__":
    main()
