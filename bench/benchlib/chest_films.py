"""The chest_xray-small films and a search bench's chest retrains, for the scripts that score
trained checkpoints again on the test films (chest_bn_shift.py, chest_sharpness.py); and for the
scripts that train best_chest themselves (chest_heldout.py, chest_views.py, chest_data_curve.py,
chest_target_val.py, chest_ensemble.py): linked copies of the films, a run's checkpoint and
datamodule loaded back, their command line and report."""

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


def link_films(split_dir: Path, samples: list[tuple[Path, int]]) -> int:
    """``split_dir/{NORMAL,PNEUMONIA}/<name>``: a symbolic link to each ``(file, label)`` of
    ``samples`` (nothing copied; links already there are kept), both class folders made even when
    one stays empty. Returns how many films the split has."""
    for name in CLASSES:
        (split_dir / name).mkdir(parents=True, exist_ok=True)
    for path, y in samples:
        link = split_dir / CLASSES[y] / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return len(samples)


def load_module(run: Path, pattern: str = "epoch_*.ckpt") -> Any:
    """A training run folder's checkpoint matching ``pattern`` (the best-validation one by
    default) as an eval-mode `ClassifierModule`."""
    from fruitnet.module import ClassifierModule

    found = sorted((run / "checkpoints").glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{run}: want one checkpoint matching {pattern}, found {len(found)}")
    module = ClassifierModule.load_from_checkpoint(found[0], map_location="cpu", weights_only=True)
    return module.eval()


def run_datamodule(run: Path, **data: Any) -> Any:
    """A training run folder's own data node (``data`` overriding keys, e.g. ``crop_fraction``)
    as a datamodule set up for fit and test: the same seed carves the same validation films."""
    import hydra
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml").data, resolve=True)
    dm = hydra.utils.instantiate({**node, **data})
    dm.setup("fit")
    dm.setup("test")
    return dm


def decoded(dm: Any, loader: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every batch of ``loader`` as the net takes it at test time (``dm.batch_transform``), in
    order, and all the labels."""
    pairs = [(dm.batch_transform(x, train=False), y) for x, y in loader]
    batches, labels = zip(*pairs, strict=True)
    return list(batches), torch.cat(labels)


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
