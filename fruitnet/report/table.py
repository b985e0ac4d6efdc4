"""The comparison tables: one per kind of run (training, evaluation, search), one markdown row
per run, missing values as "–"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fruitnet.report.runs import KIND_TITLES, REPORT_KINDS, model_words, run_kind, to_number

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


def _trained(name: str) -> Callable[[dict[str, Any]], Any]:
    """A value of an evaluation's training run (its record's `trained`)."""
    return lambda run: (run.get("trained") or {}).get(name)


def _model(run: dict[str, Any]) -> str:
    return model_words(run)


RUN = Column("run", _key("label"), _text, "left")
MODEL = [
    Column("model", _model, _text, "left"),
    Column("data", _key("data"), _text, "left"),
    Column("norm", _key("norm"), _norm, "left"),
]
SIZE = [
    Column("params (M)", _key("params"), _fmt(".2f", 1e-6)),
    # The study's size measure: the network's state_dict as saved to a weights file
    Column("weights MiB", _key("weights_mb"), _fmt(".2f")),
    # The Lightning checkpoint of the best epoch (weights + optimizer state + hparams)
    Column("ckpt MiB", _key("checkpoint_mb"), _fmt(".2f")),
    Column("GFLOPs", _key("flops"), _fmt(".2f", 1e-9)),
]
BASE_COLUMNS = [
    RUN,
    *MODEL,
    Column("optimizer", _key("optimizer"), _text, "left"),
    Column("lr", _key("lr"), _fmt("g")),
    Column("batch", _key("batch_size"), _fmt(".0f")),
    *SIZE,
    Column("latency ms (b=1)", _key("latency_ms_b1"), _fmt(".2f")),
    Column("val acc", _key("val_acc"), _pct),
    Column("test acc", _key("test_acc"), _pct),
]
TAIL_COLUMNS = [
    Column("epochs", _key("epochs"), _fmt(".0f")),
    Column("train time", _key("wall_s"), _duration),
    Column("images/s", _key("train_images_per_s"), _fmt(".0f")),
]
# An evaluation: its own measures, then the checkpoint's training run (never as its own)
EVAL_COLUMNS = [RUN, *MODEL, *SIZE, Column("test acc", _key("test_acc"), _pct)]
EVAL_TAIL = [
    Column("test images", _key("num_test"), _fmt(".0f")),
    Column("mistakes", _key("num_mistakes"), _fmt(".0f")),
    Column("eval time", _key("wall_s"), _duration),
    Column("trained in", _key("trained_label"), _text, "left"),
    Column("ckpt epoch", _trained("ckpt_epochs"), _fmt(".0f")),
    Column("val acc (training)", _trained("val_acc"), _pct),
    Column("test acc (training)", _trained("test_acc"), _pct),
]
SEARCH_COLUMNS = [
    RUN,
    Column("data", _key("data"), _text, "left"),
    Column("device", _key("device"), _text, "left"),
    Column("target ms", _key("target_latency_ms"), _fmt(".3f")),
    Column("predicted ms", _key("predicted_latency_ms"), _fmt(".3f")),
    Column("measured ms", _key("measured_latency_ms"), _fmt(".3f")),
    Column("vs target", _key("within_target_pct"), _fmt("+.1f")),
    Column("params (M)", _key("params"), _fmt(".2f", 1e-6)),
    Column("weights MiB", _key("weights_mb"), _fmt(".2f")),
    Column("GFLOPs", _key("flops"), _fmt(".2f", 1e-9)),
    Column("val acc (supernet)", _key("val_acc"), _pct),
    Column("epochs", _key("epochs"), _fmt(".0f")),
    Column("search time", _key("search_s"), _duration),
    Column("latency table time", _key("lut_s"), _duration),
]
# What each kind's table means, for report.md
NOTES = {
    "train": "weights MiB: the network's state_dict file (the study's size measure); ckpt MiB: "
    "the Lightning checkpoint of the best epoch; latency: ms per image at batch 1 on the "
    "training device; train time: the whole run (fit and test); images/s: training "
    "throughput.",
    "eval": "A checkpoint tested by `python -m fruitnet.eval`: sizes measured on its network, "
    "test acc on the data named; eval time: this evaluation (loading, test, figures). "
    "trained in / ckpt epoch / val and test acc (training): the training run the checkpoint "
    "comes from, as its record tells.",
    "search": "`python -m fruitnet.search`: latency of the chosen net (batch of the latency "
    "table) as the table predicts it and as measured; vs target: measured against the target, "
    "in %; val acc: the argmax net with the supernet's weights, before any retraining; search "
    "time: the search's fit, without the latency table.",
}


def _binary_columns(runs: Sequence[dict[str, Any]]) -> list[Column]:
    extra = [
        Column(header, _key(key), _pct)
        for key, header in BINARY_METRICS
        if any(to_number(r.get(key)) is not None for r in runs)
    ]
    if any(to_number(r.get("test_auroc")) is not None for r in runs):
        extra.append(Column("AUROC", _key("test_auroc"), _fmt(".3f")))
    return extra


def columns_for(runs: Sequence[dict[str, Any]], kind: str = "train") -> list[Column]:
    """The columns of a ``kind``'s table; the binary metrics only when some run has them."""
    if kind == "search":
        return SEARCH_COLUMNS
    if kind == "eval":
        return EVAL_COLUMNS + _binary_columns(runs) + EVAL_TAIL
    return BASE_COLUMNS + _binary_columns(runs) + TAIL_COLUMNS


def markdown_table(runs: Sequence[dict[str, Any]], kind: str | None = None) -> str:
    """One row per run, GitHub-flavoured markdown, missing values as "–", in the columns of
    the runs' kind. ``kind`` keeps only the runs of that kind; without it the runs must be of
    one kind (`markdown_tables` puts each kind in its own table)."""
    kinds = sorted({run_kind(r) for r in runs})
    if kind is None:
        if len(kinds) > 1:
            raise ValueError(
                f"runs of several kinds ({', '.join(kinds)}): one table each, see markdown_tables"
            )
        kind = kinds[0] if kinds else "train"
    runs = [r for r in runs if run_kind(r) == kind]
    columns = columns_for(runs, kind)
    header = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join(":---" if c.align == "left" else "---:" for c in columns) + "|"
    rows = ["| " + " | ".join(c.format(c.get(r)) for c in columns) + " |" for r in runs]
    return "\n".join([header, rule, *rows])


def markdown_tables(runs: Sequence[dict[str, Any]], *, notes: bool = False) -> str:
    """One section per kind of run present (training runs, evaluations, searches), each with
    its heading and table; ``notes`` adds what the table's columns mean."""
    sections = []
    for kind in REPORT_KINDS:
        of_kind = [r for r in runs if run_kind(r) == kind]
        if of_kind:
            section = [f"## {KIND_TITLES[kind]} ({len(of_kind)})", "", markdown_table(of_kind)]
            if notes:
                section += ["", NOTES[kind]]
            sections.append("\n".join(section))
    return "\n\n".join(sections)
