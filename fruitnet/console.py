"""What a run prints: the model summary, the progress bar, and the third-party noise kept out.

A run shows fruitnet's lines, Lightning's progress bar and summary, and warnings about the
user's own run only. The filters here are narrow: each names the exact message and the module
it comes from, so any other warning of the same libraries still shows.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)
from rich.progress import BarColumn

# Lightning 2.6 builds a torch LeafSpec on every batch; torch >= 2.10 deprecates that. Not the
# user's code nor fruitnet's, and nothing the user can act on (pyproject filters it for pytest).
_THIRD_PARTY_WARNINGS = [
    dict(
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    ),
]
# Info lines of Lightning that are adverts or restate fruitnet's own configuration.
_LIGHTNING_INFO_DROPPED = (
    "💡 Tip:",  # litlogger / litmodels adverts
    "Trainer already configured with model summary callbacks",  # fruitnet configures its own
)
# Lightning's summary sizes the weights at the precision's bits; mixed precision keeps fp32
# weights, so its fallback to 32 bits is the right figure and the warning says nothing.
_SUMMARY_PRECISION = r"Precision .* is not supported by the model summary"


class _DropLightningInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(_LIGHTNING_INFO_DROPPED)


_info_filter = _DropLightningInfo()


def quiet_third_party() -> None:
    """Filter the third-party warnings and info lines that are not about the user's run.

    Called by `fruitnet.config.run_entry` (every entry point); idempotent.
    """
    for spec in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", **spec)
    # Lightning's rank_zero_info logs through this logger (records are filtered where made).
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _info_filter not in rank_zero.filters:
        rank_zero.addFilter(_info_filter)


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without its FLOPs figures and without the metric modules.

    Lightning counts FLOPs only with an ``example_input_array`` and otherwise prints 0 for every
    layer and "Total FLOPs: 0"; fruitnet's `ModelSizeCallback` prints the real figure (at the
    run's input size) on the next line. Metric modules (accuracy, confusion matrix ...) hold no
    weights and fill the table, so only the network's rows are listed.
    """

    def on_fit_start(self, trainer, pl_module) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SUMMARY_PRECISION, category=UserWarning)
            self._pl_module = pl_module
            try:
                super().on_fit_start(trainer, pl_module)
            finally:
                self._pl_module = None

    def summarize(  # type: ignore[override]
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table
        from torchmetrics import Metric, MetricCollection

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        rows = list(zip(*(values for _, values in columns), strict=True))
        names = dict(columns).get("Name", [])
        module = getattr(self, "_pl_module", None)
        if module is not None:
            keep = []
            for row, name in zip(rows, names, strict=True):
                try:
                    sub = module.get_submodule(name)
                except AttributeError:
                    sub = None
                if not isinstance(sub, (Metric, MetricCollection)):
                    keep.append(row)
            rows = keep

        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            right = name in ("Params", "Params per Device", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if right else "left", no_wrap=name == "Name")
        for row in rows:
            table.add_row(*row)
        console = get_console()
        console.print(table)
        grid = Table.grid(expand=False)
        grid.add_column()
        frozen = total_parameters - trainable_parameters
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(frozen))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console.print(grid)


class CompactRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar on one line, even on an 80-column terminal.

    Lightning shows every metric logged with ``prog_bar=True`` under its full name, and rich
    wraps what does not fit into a column below the bar. This shows the running training loss
    and the last validation accuracy (``loss: 0.606 val_acc: 0.950``; every metric still reaches
    the loggers and results.json), and no column wraps: the bar shrinks first, and a terminal
    too narrow even for that cuts the texts short with an ellipsis.
    """

    SHOWN = (("train/loss_step", "loss"), ("train/loss", "loss"), ("val/acc", "val_acc"))

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        logged = super().get_metrics(trainer, pl_module)
        shown: dict[str, Any] = {}
        for key, label in self.SHOWN:
            if key in logged and label not in shown:
                shown[label] = logged[key]
        return shown

    def configure_columns(self, trainer) -> list:
        columns = super().configure_columns(trainer)
        for column in columns:
            if not isinstance(column, BarColumn):
                _no_wrap(column)
        return columns

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        metrics = getattr(self, "_metric_component", None)
        if metrics is not None:
            _no_wrap(metrics)


def _no_wrap(column: Any) -> Any:
    from rich.table import Column

    column._table_column = Column(no_wrap=True, overflow="ellipsis")
    return column
