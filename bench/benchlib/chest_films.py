"""The chest_xray-small films and a search bench's chest retrains, for the scripts that score
trained checkpoints again on the test films (chest_bn_shift.py, chest_sharpness.py), and the
command line and report of the scripts that train best_chest themselves (chest_views.py,
chest_data_curve.py, chest_target_val.py, chest_ensemble.py)."""

from __future__ import annotations

import argparse
import functools
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_recall,
    binary_specificity,
)

from benchlib.common import BENCH
from fruitnet.data.io import load_image

CLASSES = ("NORMAL", "PNEUMONIA")
RUN = re.compile(r"^chest_train_(?P<net>.+)_seed(?P<seed>\d+)$")


@functools.lru_cache(maxsize=4)
def films(split: Path, spec: tuple[tuple[str, Any], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``split/{NORMAL,PNEUMONIA}/*`` decoded as ``spec`` (`image_spec` items) -> uint8 images and
    labels (PNEUMONIA = 1); kept for the next checkpoint with the same preprocessing."""
    pairs = [(p, y) for y, c in enumerate(CLASSES) for p in sorted((split / c).iterdir())]
    images = torch.stack([load_image(p, **dict(spec)) for p, _ in pairs])
    return images, torch.tensor([y for _, y in pairs])


def retrains(work: Path) -> list[tuple[str, Path]]:
    """Each ``work/chest_train_<net>_seed<k>`` run's net name and best-validation checkpoint."""
    runs = sorted(d for d in Path(work).iterdir() if RUN.match(d.name))
    if not runs:
        raise SystemExit(f"no chest_train_<net>_seed<k> folders in {work}")
    out = []
    for run in runs:
        best = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
        if len(best) != 1:
            raise SystemExit(f"{run}: want one best-validation checkpoint, found {len(best)}")
        out.append((RUN.match(run.name)["net"], best[0]))
    return out


def p_pneumonia(net: torch.nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """P(PNEUMONIA) of every image of ``batches`` (inputs as ``net`` takes them), in order."""
    with torch.inference_mode():
        return torch.cat([net(x).float().softmax(-1)[:, 1] for x in batches])


def score(p1: torch.Tensor, y: torch.Tensor, cut: float) -> dict[str, float]:
    """Accuracy, specificity, sensitivity (%), AUROC and the mean P(PNEUMONIA) of NORMAL films;
    PNEUMONIA when P(PNEUMONIA) > cut, as `fruitnet.checkpoints.decide` calls it."""
    return {
        "acc": 100 * binary_accuracy(p1, y, threshold=cut).item(),
        "spec": 100 * binary_specificity(p1, y, threshold=cut).item(),
        "sens": 100 * binary_recall(p1, y, threshold=cut).item(),
        "auroc": binary_auroc(p1, y).item(),
        "p_normal": p1[y == 0].mean().item(),
    }


def mean_std(values: list[float], digits: int = 1) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def run_cells(runs: list[dict[str, Any]]) -> str:
    """Training runs' results.json -> the table cells "test acc % | specificity % | sensitivity %
    | AUROC | epochs", mean ± std (sample) over the runs and the range of their epochs."""
    rates = [
        mean_std([100 * r[key] for r in runs])
        for key in ("test_acc", "test_specificity", "test_recall")
    ]
    epochs = [r["epochs"] for r in runs]
    auroc = mean_std([r["test_auroc"] for r in runs], 3)
    return f"{' | '.join(rates)} | {auroc} | {min(epochs)}-{max(epochs)}"


def bench_parser(script: str, doc: str | None, report: str, work: str) -> argparse.ArgumentParser:
    """``python bench/<script>``'s parser with the arguments every such script takes: --work (what
    it holds: ``work``), --data and --out (bench/<report> by default)."""
    p = argparse.ArgumentParser(prog=f"python bench/{script}", description=doc)
    p.add_argument("--work", required=True, help=f"work folder: {work}")
    p.add_argument("--data", metavar="DIR", help="folder holding chest_xray-small")
    p.add_argument("--out", default=str(BENCH / report))
    return p


def write_report(args: argparse.Namespace, script: str, render: Callable[[str], str]) -> int:
    """Writes ``render(command)`` to ``args.out``, the command that rewrites it with relative
    paths only; 0, the script's exit status."""
    command = f"python bench/{script} --work {Path(args.work).as_posix()}"
    Path(args.out).write_text(render(command))
    print(f"wrote {args.out}")
    return 0
