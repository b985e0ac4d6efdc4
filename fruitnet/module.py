"""ClassifierModule: the one LightningModule, wrapping any network from the model registry."""

from __future__ import annotations

import logging
import math
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchvision.transforms.v2 import MixUp

from fruitnet.checkpoints import decide
from fruitnet.explain.focus import gradient_outside_share, twice_differentiable
from fruitnet.models import create_model

log = logging.getLogger(__name__)


def _binary_metrics(prefix: str) -> tuple[MetricCollection, MetricCollection]:
    """The metrics of a decision (fed the predicted class, 0 or 1) and of a ranking (fed P(1)).
    Positive class = index 1, the second class name in sorted order (PNEUMONIA for chest)."""
    decided = MetricCollection(
        {
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
            "specificity": BinarySpecificity(),
            "f1": BinaryF1Score(),
        },
        prefix=prefix,
    )
    return decided, MetricCollection({"auroc": BinaryAUROC()}, prefix=prefix)


def choose_threshold(probs: torch.Tensor, labels: torch.Tensor) -> float | None:
    """The cut on P(class 1) that maximises balanced accuracy on these images (the same cut as
    Youden's J = sensitivity + specificity - 1 = 2 x balanced accuracy - 1), halfway between two
    neighbouring probabilities; among equally good cuts the one nearest 0.5 (argmax), so a
    validation split that argmax already separates keeps it. None without both classes."""
    p, y = probs.detach().double().flatten().cpu(), labels.detach().flatten().cpu()
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not pos or not neg:
        return None
    p, order = p.sort()
    y = y[order]
    # Cut i puts images 0..i-1 on the negative side (i = 0..n): true negatives and false negatives
    tn = torch.cat([torch.zeros(1, dtype=torch.float64), (y == 0).double().cumsum(0)])
    fn = torch.cat([torch.zeros(1, dtype=torch.float64), (y == 1).double().cumsum(0)])
    balanced = (tn / neg + (pos - fn) / pos) / 2
    lower = torch.cat([p[:1] * 0, p])  # the probability just below cut i (0 below all)
    upper = torch.cat([p, p[-1:] * 0 + 1])  # just above it (1 above all)
    valid = upper > lower  # no cut between two equal probabilities
    cuts = (lower + upper) / 2
    best = balanced[valid].max()
    candidates = cuts[valid & (balanced >= best - 1e-12)]
    return float(candidates[(candidates - 0.5).abs().argmin()])


class ClassifierModule(L.LightningModule):
    """Cross-entropy classification around `fruitnet.models.create_model(model_name, ...)`.

    Every constructor argument is a primitive (str/int/float/bool/list/dict), and the network is
    built here from its registry name, so checkpoints load with `weights_only=True` and
    `ClassifierModule.load_from_checkpoint(path)` needs neither Hydra nor pickled objects.
    A searched ProxylessNAS arch travels as ``model_kwargs["arch"]`` (the net-config dict, so the
    checkpoint rebuilds without the file); ``arch_path`` only records where it came from.
    ``data_config`` records the training data (``{"preset": name, "node": data config}``,
    resolved, absolute root) so that `fruitnet.eval` finds it without ``data=``; unused here.
    ``threshold`` (two classes): the cut on P(class 1) that test metrics, eval and predict use:
    a float, ``"auto"`` (`choose_threshold` on each validation epoch's probabilities) or None
    (argmax). The value in force is ``self.threshold``, saved as the checkpoint's
    ``decision_threshold`` (`fruitnet.checkpoints.decision_threshold` reads it back).
    ``focus_penalty`` (> 0): the training loss adds that times the share of the input gradient
    outside the central ``focus_fraction`` box (`fruitnet.explain.focus.gradient_outside_share`),
    on the first ``focus_images`` images of each batch.
    """

    def __init__(
        self,
        *,
        model_name: str,
        num_classes: int,
        input_size: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str = False,
        weights: str | None = None,
        class_names: list[str] | None = None,
        task: str = "multiclass",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        focus_penalty: float = 0.0,
        focus_fraction: float = 0.5,
        focus_images: int = 16,
        preprocess: dict[str, Any] | None = None,
        channels_last: bool = True,
        compile: bool = False,
        arch_path: str | None = None,
        data_config: dict[str, Any] | None = None,
        threshold: str | float | None = None,
    ) -> None:
        super().__init__()
        _check_losses(mixup, focus_penalty, focus_fraction, focus_images)
        self.save_hyperparameters()
        self.net = create_model(
            model_name,
            num_classes=num_classes,
            input_size=input_size,
            pretrained=pretrained,
            weights=weights,
            **(model_kwargs or {}),
        )
        if focus_penalty > 0:
            twice_differentiable(self.net)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if compile:
            # Module.compile() compiles in place, so state_dict keys stay `net.*` (no `_orig_mod.`).
            self.net.compile()
        # torchvision's batch MixUp: each training batch blended with itself rolled by one, the
        # targets the same blend of one-hot labels (Zhang et al. 2018). With class weights, torch
        # averages soft-target losses over the batch rather than over the weights: a scale only
        self.mixup = MixUp(alpha=mixup, num_classes=num_classes) if mixup > 0 else None
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weight, persistent=False)

        def acc() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, average="micro")

        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.binary = task == "binary" and num_classes == 2
        self.threshold = _initial_threshold(threshold) if self.binary else None
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        if self.binary:
            self.val_extra, self.val_rank = _binary_metrics("val/")
            self.test_extra, self.test_rank = _binary_metrics("test/")
        else:
            self.val_extra, self.val_rank = MetricCollection({}), MetricCollection({})
            self.test_extra = MetricCollection(
                {"f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro")},
                prefix="test/",
            )
            self.test_rank = MetricCollection({})
        self.test_per_class = MulticlassAccuracy(num_classes=num_classes, average=None)
        self.test_confmat = MulticlassConfusionMatrix(num_classes=num_classes)
        # Filled at test end for results.json (per-class accuracy, confusion matrix)
        self.test_details: dict[str, Any] = {}
        self._restored_from_checkpoint = False
        self._restored_val_acc_best: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        target = y
        if self.training and self.mixup is not None:
            x, target = self.mixup(x, y)
        logits = self(x)
        loss = F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weight,
            label_smoothing=self.hparams.label_smoothing if self.training else 0.0,
        )
        if self.training and self.hparams.focus_penalty > 0:
            # Right for the Right Reasons: evidence outside the central box costs, so the border,
            # the corner marker and the film's text stop paying. On a separate forward of the
            # first focus_images images: over a whole batch of 64 the double backward made a CPU
            # step 4-5x slower, over 16 of them about 2x (bench/RECIPES.md, the chest history)
            part = x[: self.hparams.focus_images].detach().requires_grad_(True)
            outside = gradient_outside_share(part, self(part), self.hparams.focus_fraction)
            loss = loss + self.hparams.focus_penalty * outside
            self.log("train/grad_outside", outside.detach(), on_step=False, on_epoch=True)
        return loss, logits, y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # with mixup, train/acc is against each image's own label: a trend, not a score
        loss, logits, y = self._step(batch)
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_loss.reset()
        self._val_probs.clear()
        self._val_labels.clear()

    def validation_step(self, batch, batch_idx: int) -> None:
        # Validation metrics stay argmax: val/acc picks the best checkpoint, and a threshold
        # fitted to these very images would flatter it.
        loss, logits, y = self._step(batch)
        self.val_loss(loss)
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        if self.binary:
            probs = logits.float().softmax(-1)
            self.val_extra(probs.argmax(-1), y)
            self.val_rank(probs[:, 1], y)
            self.log_dict(self.val_extra, on_epoch=True)
            self.log_dict(self.val_rank, on_epoch=True)
            if self.hparams.get("threshold") == "auto":
                self._val_probs.append(probs[:, 1].detach())
                self._val_labels.append(y.detach())

    def on_validation_epoch_end(self) -> None:
        # compute() syncs across processes; val/acc_best is what checkpoints and sweeps compare.
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)
        if self._val_probs:
            self._fit_threshold()

    def _fit_threshold(self) -> None:
        """`threshold=auto`: the cut chosen on this epoch's validation images, saved with the
        checkpoint this epoch may write (so each checkpoint carries its own weights' cut)."""
        probs, labels = torch.cat(self._val_probs), torch.cat(self._val_labels)
        if self.trainer.world_size > 1:
            probs, labels = self.all_gather(probs).flatten(), self.all_gather(labels).flatten()
        chosen = choose_threshold(probs, labels)
        if chosen is None:
            log.warning("threshold=auto: the validation split lacks a class; keeping argmax")
            return
        self.threshold = chosen
        self.log("val/threshold", chosen, sync_dist=False)

    def _decided(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = logits.float().softmax(-1)
        return probs, decide(probs, self.threshold)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        probs, preds = self._decided(logits)
        self.test_loss(loss)
        self.test_acc(preds, y)
        self.test_per_class(preds, y)
        self.test_confmat(preds, y)
        self.log("test/loss", self.test_loss, on_epoch=True)
        self.log("test/acc", self.test_acc, on_epoch=True, prog_bar=True)
        if self.binary:
            self.test_extra(preds, y)
            self.test_rank(probs[:, 1], y)
            self.log_dict(self.test_rank, on_epoch=True)
        else:
            self.test_extra(logits, y)
        self.log_dict(self.test_extra, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute().tolist()
        self.test_details = {
            "per_class_acc": per_class,
            "confusion_matrix": self.test_confmat.compute().tolist(),
            "threshold": self.threshold,
        }
        self.test_per_class.reset()
        self.test_confmat.reset()

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).float().softmax(-1)

    # -- optimisation ---------------------------------------------------------------------------

    def configure_optimizers(self):
        optimizer = hydra.utils.instantiate(dict(self.hparams.optimizer))(params=self.parameters())
        sched_cfg = dict(self.hparams.scheduler or {})
        if not sched_cfg:
            return optimizer
        # `interval`/`monitor` are Lightning's, not the scheduler's.
        interval = sched_cfg.pop("interval", "epoch")
        monitor = sched_cfg.pop("monitor", "val/loss")
        if sched_cfg["_target_"].endswith("OneCycleLR") and "total_steps" not in sched_cfg:
            sched_cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
        if sched_cfg["_target_"].endswith("TimeBudgetOneCycle") and not sched_cfg.get("budget_s"):
            sched_cfg["budget_s"] = self._time_budget_s()
        scheduler = hydra.utils.instantiate(sched_cfg)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": monitor},
        }

    def _time_budget_s(self) -> float:
        """Seconds of trainer.max_time left, the span of a time-budgeted schedule."""
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None:
            raise ValueError(
                "scheduler=onecycle_time spreads the cycle over trainer.max_time: set it "
                "(e.g. trainer.max_time=00:00:10:00) or use scheduler=onecycle"
            )
        return float(remaining)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Metric states are not in the state_dict; keep the best val acc across resumes.
        if self.val_acc_best.update_count:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        if self.threshold is not None:
            checkpoint["decision_threshold"] = float(self.threshold)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_from_checkpoint = True
        self._restored_val_acc_best = checkpoint.get("val_acc_best")
        if self.binary and checkpoint.get("decision_threshold") is not None:
            self.threshold = float(checkpoint["decision_threshold"])

    def on_train_start(self) -> None:
        # The sanity-check validation must not count towards the best val acc.
        self.val_acc_best.reset()
        if self._restored_from_checkpoint:
            if self._restored_val_acc_best is not None:
                self.val_acc_best(torch.tensor(self._restored_val_acc_best))
            self._apply_configured_lr()

    def _apply_configured_lr(self) -> None:
        """On resume Lightning restores the optimizer state, lr included; the configured lr wins.

        Only when it differs from the checkpoint's base lr, so a plain resume after a crash keeps
        the scheduler's exact position and the run stays bit-identical to an uninterrupted one.
        """
        lr = float(self.hparams.optimizer["lr"])
        for opt_idx, optimizer in enumerate(self.trainer.optimizers):
            for group in optimizer.param_groups:
                stored = group.get("initial_lr", group["lr"])
                if stored == lr:
                    continue
                log.warning(
                    "Resumed optimizer %d had lr %g; using the configured optimizer.lr=%g",
                    opt_idx,
                    stored,
                    lr,
                )
                group["lr"] = lr
                if "initial_lr" in group:
                    group["initial_lr"] = lr
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr for _ in sched.base_lrs]
            if hasattr(sched, "_last_lr"):
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]


def _check_losses(mixup: float, penalty: float, fraction: float, images: int) -> None:
    if mixup < 0:
        raise ValueError(f"model.mixup must be >= 0 (Beta's alpha; 0 = off), got {mixup!r}")
    if penalty < 0 or not 0 < fraction <= 1 or images < 1:
        raise ValueError(
            "model.focus_penalty must be >= 0, model.focus_fraction in (0, 1] and "
            f"model.focus_images >= 1, got {penalty!r}, {fraction!r} and {images!r}"
        )


def _initial_threshold(value: str | float | None) -> float | None:
    """The cut in force before any validation: a float as given, None for argmax and for
    ``auto`` (until the first validation epoch chooses one)."""
    if value in (None, "auto", "argmax"):
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"model.threshold must be auto, null or a number in (0, 1), got {value!r}")
    return threshold
