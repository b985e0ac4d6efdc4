"""study.md and study.png: one row per run of the study's protocol, the published number beside
ours (from each run's results.json), the difference, and what the run cost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fruitnet.files import write_text
from fruitnet.study_plan import KERMANY_REF, KERMANY_SOURCE, STUDY_CLASSES, StudyRun, duration


def read_result(folder: Path, name: str = "results.json") -> dict[str, Any] | None:
    try:
        record = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _pct(value: Any) -> float | None:
    return None if value is None else 100.0 * float(value)


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _diff(ours: float | None, ref: float | None) -> str:
    return "–" if ours is None or ref is None else f"{ours - ref:+.2f}"


def row_values(
    run: StudyRun, record: dict[str, Any] | None, timing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The numbers of one row: ours (accuracy %, MB, chest metrics %), the study's, and the
    run's time: its last launch by the study (process start to exit) beside the plan's
    estimate, else the training run's own wall time."""
    rec = record or {}
    timing = timing or {}
    ref = run.reference or {}
    return {
        "run": run.name,
        "status": "done" if record else "not run",
        "acc": _pct(rec.get("test_acc")),
        "mb": rec.get("weights_mb"),
        "sensitivity": _pct(rec.get("test_recall")),
        "specificity": _pct(rec.get("test_specificity")),
        "auroc": rec.get("test_auroc"),
        "ref_acc": ref.get("acc"),
        "ref_mb": ref.get("mb"),
        "ref_sensitivity": ref.get("sensitivity"),
        "ref_specificity": ref.get("specificity"),
        "epochs": rec.get("epochs"),
        "wall_s": timing.get("measured_s", rec.get("wall_s")),
        "estimate_s": timing.get("estimate_s"),
        "device": rec.get("device"),
        "precision": rec.get("precision"),
        "classes": rec.get("num_classes"),
        "data_root": rec.get("data_root"),
    }


def _fruits_row(v: dict[str, Any]) -> str:
    return (
        f"| `{v['run']}` | {_num(v['ref_acc'])} | {_num(v['acc'])} | {_diff(v['acc'], v['ref_acc'])}"
        f" | {_num(v['ref_mb'])} | {_num(v['mb'])} | {_diff(v['mb'], v['ref_mb'])}"
        f" | {_num(v['epochs'], '{}')} | {duration(v['wall_s'])} | {duration(v['estimate_s'])}"
        f" | {v['device'] or '–'}"
        f" | {v['precision'] or '–'} | {_num(v['classes'], '{}')} | {v['status']} |"
    )


def _chest_row(v: dict[str, Any]) -> str:
    cells = [f"`{v['run']}`"]
    for key in ("acc", "sensitivity", "specificity"):
        cells += [_num(v[key]), _diff(v[key], v[f"ref_{key}"])]
    cells += [_num(v["auroc"], "{:.3f}"), _num(v["mb"]), _num(v["epochs"], "{}")]
    cells += [duration(v["wall_s"]), duration(v["estimate_s"]), v["device"] or "–"]
    cells += [v["precision"] or "–"]
    cells += [_num(v["classes"], "{}"), v["status"]]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _release_line(rows: Sequence[dict[str, Any]], chest: bool) -> str:
    roots = sorted({str(v["data_root"]) for v in rows if v["data_root"]})
    classes = sorted({int(v["classes"]) for v in rows if v["classes"] is not None})
    data = ", ".join(f"`{r}`" for r in roots) or "no finished run yet"
    if chest:
        return f"Data: {data}; classes {classes or '–'}. Anchor: {KERMANY_SOURCE}."
    note = ""
    if classes and classes != [STUDY_CLASSES]:
        note = (
            f" **Not the study's release**: the study used {STUDY_CLASSES} classes, these runs "
            f"{', '.join(map(str, classes))} (the 2019 release has 95), so the numbers compare "
            "the protocol, not the same test set."
        )
    return f"Data: {data}; classes {classes or '–'} (the study: {STUDY_CLASSES}).{note}"


def study_markdown(dataset: str, runs: Sequence[StudyRun], root: Path) -> tuple[str, list]:
    """The markdown of study.md and the row values it shows."""
    rows = [
        row_values(
            run, read_result(root / run.name), read_result(root / run.name, "study_time.json")
        )
        for run in runs
    ]
    chest = dataset == "chest_xray"
    lines = [f"# The study, reproduced: {dataset}", "", _release_line(rows, chest), ""]
    if chest:
        lines += [
            "Accuracy, sensitivity and specificity in %; Δ = ours − Kermany et al. 2018.",
            "",
            "| run | acc % | Δ | sensitivity % | Δ | specificity % | Δ | AUROC | weights MB"
            " | epochs | time | plan est. | device | precision | classes | status |",
            "|---" * 16 + "|",
            f"| Kermany et al. 2018 (InceptionV3) | {KERMANY_REF['acc']} | | "
            f"{KERMANY_REF['sensitivity']} | | {KERMANY_REF['specificity']} | | – | – | – | – | – "
            "| – | – | 2 | published |",
            *(_chest_row(v) for v in rows),
        ]
    else:
        lines += [
            "Test accuracy in %, weights file in MB (the network's state_dict); Δ = ours − study."
            " A stage-1 row has no published number (the study reported stage 2). time: the"
            " run's last launch by the study (process start to exit; a resumed run: the resumed"
            " part only), beside the plan's estimate.",
            "",
            "| run | study acc % | ours acc % | Δ acc | study MB | ours MB | Δ MB | epochs | time"
            " | plan est. | device | precision | classes | status |",
            "|---" * 14 + "|",
            *(_fruits_row(v) for v in rows),
        ]
    return "\n".join(lines) + "\n", rows


def study_figure(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Ours beside the published accuracy, one pair of bars per run."""
    import numpy as np
    from matplotlib.figure import Figure

    from fruitnet.plots import save_figure

    names = [v["run"] for v in rows]
    idx = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 1.1 * len(names)), 4.0))
    ax = fig.add_subplot()
    ref = [v["ref_acc"] if v["ref_acc"] is not None else np.nan for v in rows]
    ours = [v["acc"] if v["acc"] is not None else np.nan for v in rows]
    ax.bar(idx - 0.2, ref, width=0.4, label="published")
    ax.bar(idx + 0.2, ours, width=0.4, label="ours")
    ax.set_xticks(idx, names, rotation=30, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def write_study_report(dataset: str, runs: Sequence[StudyRun], root: Path) -> Path:
    text, rows = study_markdown(dataset, runs, root)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "study.md", text)
    study_figure(rows, root / "study.png", f"The study on {dataset}: published vs ours")
    return root / "study.md"
