"""What a run shows while it trains: Lightning's rich bar and model summary fitted to 80 columns in
a terminal, one line per epoch in a log file or a pipe."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)
from rich.progress import BarColumn

# Lightning's summary sizes the weights at the precision's bits; mixed precision keeps fp32
# weights, so its fallback to 32 bits is the right figure and the warning says nothing.
_SUMMARY_PRECISION = r"Precision .* is not supported by the model summary"


def in_fit_validation(trainer: L.Trainer) -> bool:
    """A validation inside fit (not the sanity check). ``trainer.training`` is False there:
    Lightning sets the stage to validating for the loop's duration."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


class EpochLineProgress(ProgressBar):
    """The progress "bar" for logs: one line per training epoch, through the `fruitnet.progress`
    logger (console and the run's log file), e.g.

        epoch 3/10: train loss 1.2345, val acc 0.8421, 812 img/s, 5.1 s

    img/s counts training images over the training batches' wall time (validation excluded);
    seconds is the whole epoch, validation and checkpoints included. As Lightning's progress-bar
    callback it replaces the default bar, so a log file gets no bar redraws. The epoch loss is
    summed on the device and read once per epoch (no per-step host sync).
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = self._train_end = 0.0
        self._images = 0
        self._loss_sum: torch.Tensor | None = None
        self._batches = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._train_end = time.perf_counter(), 0.0
        self._images, self._batches, self._loss_sum = 0, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) if isinstance(batch, (tuple, list)) else len(batch)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._batches += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        if in_fit_validation(trainer) and not self._train_end:
            self._train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        now = time.perf_counter()
        train_s = (self._train_end or now) - self._start
        parts = []
        if self._loss_sum is not None and self._batches:
            parts.append(f"train loss {float(self._loss_sum) / self._batches:.4f}")
        val = trainer.callback_metrics.get("val/acc") if self._train_end else None
        parts.append(f"val acc {float(val):.4f}" if val is not None else "val acc -")
        rate = self._images * trainer.world_size / train_s if train_s > 0 else 0.0
        parts += [f"{rate:.0f} img/s", f"{now - self._start:.1f} s"]
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        progress_log.info("epoch %d/%s: %s", trainer.current_epoch + 1, epochs, ", ".join(parts))


progress_log = logging.getLogger("fruitnet.progress")


class StepLogInterval(L.Callback):
    """``trainer.log_every_n_steps`` at most the training batches of an epoch.

    On a small dataset or with ``trainer.limit_train_batches`` an epoch can be shorter than the
    interval, and Lightning then warns about its own setting. Lightning counts the batches while
    it sets up the training data, right before ``on_train_start``: the interval is 0 (no step
    logs, and nothing to compare) from ``on_fit_start`` up to then, and from then on the
    configured interval, or the epoch's batch count where that is smaller (said in one line).
    """

    def __init__(self) -> None:
        self._configured: int | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._configured is None:
            self._configured = trainer.log_every_n_steps
        trainer.log_every_n_steps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        interval = self._configured or 0
        batches = trainer.num_training_batches
        if 0 < batches < interval:
            if not trainer.fast_dev_run:
                progress_log.info(
                    "training steps are logged once an epoch: an epoch has %d training batches, "
                    "fewer than trainer.log_every_n_steps=%d",
                    batches,
                    interval,
                )
            interval = int(batches)
        trainer.log_every_n_steps = interval

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._configured is not None:
            trainer.log_every_n_steps = self._configured


def progress_bar(**rich_kwargs: Any) -> ProgressBar:
    """The progress callback for where stdout goes: Lightning's `RichProgressBar` (with
    ``rich_kwargs``) in a terminal, `EpochLineProgress` when stdout is a file or a pipe."""
    stream = sys.stdout
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        return CompactRichProgressBar(**rich_kwargs)
    return EpochLineProgress()


class NetworkSummary(RichModelSummary):
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
