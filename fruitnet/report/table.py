"""The comparison table: one markdown row per run, missing values as "–"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fruitnet.report.runs import to_number

MISSING = "\u2013"  # en dash
# Binary-task metrics (chest X-ray); their columns appear only when some run has them.
BINARY_METRICS = [
    ("test_precision", "precision"),
    ("test_recall", "recall"),
    ("test_specificity", "specificity"),
    ("test_f1", "F1"),
]


def _fmt(fmt: str, scale: float = 1.0) -> Callable[[Any], str]:
    def format_value(value: Any) -> str:
        number = to_number(value)
        return MISSING if number is None else format(number * scale, fmt)

    return format_value


def _pct(value: Any) -> str:
    number = to_number(value)
    return MISSING if number is None else f"{100 * number:.2f} %"


def _duration(value: Any) -> str:
    seconds = to_number(value)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value).replace("|", "\\|")


def _norm(value: Any) -> str:
    return MISSING if value is None else ("yes" if value else "no")


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[dict[str, Any]], Any]
    format: Callable[[Any], str]
    align: str = "right"  # markdown alignment: "left" | "right"


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda run: run.get(name)


BASE_COLUMNS = [
    Column("run", _key("label"), _text, "left"),
    Column("model", _key("model"), _text, "left"),
    Column("data", _key("data"), _text, "left"),
    Column("norm", _key("norm"), _norm, "left"),
    Column("optimizer", _key("optimizer"), _text, "left"),
    Column("lr", _key("lr"), _fmt("g")),
    Column("batch", _key("batch_size"), _fmt(".0f")),
    Column("params (M)", _key("params"), _fmt(".2f", 1e-6)),
    # The study's size measure: the network's state_dict as saved to a weights file
    Column("weights MiB", _key("weights_mb"), _fmt(".2f")),
    # The Lightning checkpoint of the best epoch (weights + optimizer state + hparams)
    Column("ckpt MiB", _key("checkpoint_mb"), _fmt(".2f")),
    Column("GFLOPs", _key("flops"), _fmt(".2f", 1e-9)),
    Column("latency ms (b=1)", _key("latency_ms_b1"), _fmt(".2f")),
    Column("val acc", _key("val_acc"), _pct),
    Column("test acc", _key("test_acc"), _pct),
]
TAIL_COLUMNS = [
    Column("epochs", _key("epochs"), _fmt(".0f")),
    Column("train time", _key("wall_s"), _duration),
    Column("images/s", _key("train_images_per_s"), _fmt(".0f")),
]


def columns_for(runs: Sequence[dict[str, Any]]) -> list[Column]:
    """The table's columns; the binary metrics only when some run has them."""
    extra = [
        Column(header, _key(key), _pct)
        for key, header in BINARY_METRICS
        if any(to_number(r.get(key)) is not None for r in runs)
    ]
    if any(to_number(r.get("test_auroc")) is not None for r in runs):
        extra.append(Column("AUROC", _key("test_auroc"), _fmt(".3f")))
    return BASE_COLUMNS + extra + TAIL_COLUMNS


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run, GitHub-flavoured markdown, missing values as "–"."""
    columns = columns_for(runs)
    header = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join(":---" if c.align == "left" else "---:" for c in columns) + "|"
    rows = ["| " + " | ".join(c.format(c.get(r)) for c in columns) + " |" for r in runs]
    return "\n".join([header, rule, *rows])
