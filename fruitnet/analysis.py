"""What the test predictions say per class and per image: the per-class table and the list of
mistakes that `fruitnet.eval` writes as CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def per_class_rows(
    probs: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    per_class_acc: list[float],
    preds: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """``preds``: the predicted classes (a two-class checkpoint's threshold); None = argmax."""
    k = len(names)
    preds = probs.argmax(-1) if preds is None else preds
    kw = {"num_classes": k, "average": None}
    precision = multiclass_precision(preds, labels, **kw).tolist()
    recall = multiclass_recall(preds, labels, **kw).tolist()
    f1 = multiclass_f1_score(preds, labels, **kw).tolist()
    support = torch.bincount(labels, minlength=k).tolist()
    predicted = torch.bincount(preds, minlength=k).tolist()
    correct = torch.bincount(labels[preds == labels], minlength=k).tolist()
    return [
        {
            "class": names[i],
            "support": support[i],
            "predicted": predicted[i],
            "correct": correct[i],
            "precision": precision[i],
            "recall": recall[i],
            "f1": f1[i],
            # torchmetrics' per-class accuracy, as in results.json's per_class_acc (= recall)
            "accuracy": per_class_acc[i],
        }
        for i in range(k)
    ]


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def mistakes(
    probs: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor | None = None
) -> list[tuple[int, int, float]]:
    """``(test index, predicted class, its probability)`` of every mistake, most confident
    first. ``preds``: the predicted classes (a two-class checkpoint's threshold); None = argmax."""
    preds = probs.argmax(-1) if preds is None else preds
    conf = probs.gather(-1, preds[:, None])[:, 0]
    wrong = (preds != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True, stable=True)]
    return [(int(i), int(preds[i]), float(conf[i])) for i in order]
