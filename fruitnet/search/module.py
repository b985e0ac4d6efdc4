"""`SearchModule`: the ProxylessNAS search as a LightningModule (manual optimization).

One training batch = one weight step: each mixed edge samples one op from its probabilities, only
that path runs, SGD (Nesterov) updates the weights. After ``search.warmup_epochs`` weights-only
epochs, every ``search.arch_every``-th weight step is followed by one architecture step on a batch
of the held-out split (the datamodule's validation split, carved from the training data; never the
test split): binary gates, the loss ``CE (x) latency term`` toward ``search.target_latency_ms``,
the paper's gradient estimate (`fruitnet.search.supernet`), Adam (betas (0, 0.999)).

Under ``trainer.max_time`` the phases are laid over the time budget (as ``scheduler=onecycle_time``
lays the lr): the warm-up ends at ``search.warmup_fraction`` of the budget or after
``search.warmup_epochs`` epochs, whichever comes first, mid-epoch if need be, and the weights' cosine
follows the larger of the time and epoch fractions spent. So a capped search spends the rest of its
budget on architecture steps however slow an epoch is.

Validation runs the current argmax architecture on the same held-out split, so ``val/acc`` (what
checkpoints rank) is the accuracy of the net `export_arch` would write now. Every hparam is a
primitive, the latency table included, so a checkpoint resumes without re-timing.

Several devices (DDP): every rank draws the same paths (same sampling seed) and the architecture
gradients are averaged across ranks; only the sampled ops take part in a step, so use
``trainer.strategy=ddp_find_unused_parameters_true``. Not exercised on the CPU test machine.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fruitnet.search.latency import LatencyTable, latency_loss
from fruitnet.search.prepare import held_out_to_device
from fruitnet.search.space import SearchSpace
from fruitnet.search.supernet import SuperNet

log = logging.getLogger(__name__)


class SearchModule(L.LightningModule):
    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int,
        space: dict[str, Any],
        search: dict[str, Any],
        latency_table: dict[str, Any],
        channels_last: bool = True,
        preprocess: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.space = SearchSpace.from_config(space)
        self.net = SuperNet(
            self.space,
            num_classes=num_classes,
            input_size=input_size,
            dropout=float(search.get("dropout", 0.0)),
            init_std=float(search.get("arch_init_std", 1e-3)),
        )
        self.table = LatencyTable.from_dict(latency_table)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.cfg = dict(search)
        self.mode = str(search.get("arch_mode", "two"))
        self.train_loss, self.arch_loss, self.val_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Per epoch: the probabilities of every edge (for the report), kept across resumes
        self.prob_history: list[dict[str, Any]] = []
        self.arch_steps = 0
        self.weight_steps = 0
        # Weight step and train seconds at which the first architecture step ran (None: not yet)
        self.warmup_end: dict[str, float] | None = None
        self.arch_loader: DataLoader | None = None
        self._arch_iter = None
        self._gen = torch.Generator().manual_seed(int(search.get("seed", 0)))

    # -- helpers -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def expected_latency(self) -> torch.Tensor:
        return self.table.expected_ms([e.probs() for e in self.net.edges])

    def _next_arch_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.arch_loader is None:
            raise RuntimeError("SearchModule.arch_loader is not set (the held-out split's loader)")
        if self._arch_iter is None:
            self._arch_iter = iter(self.arch_loader)
        try:
            batch = next(self._arch_iter)
        except StopIteration:
            self._arch_iter = iter(self.arch_loader)
            batch = next(self._arch_iter)
        return held_out_to_device(self, batch)

    def _timer(self) -> Timer | None:
        if self._trainer is None:
            return None
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        return timer if timer is not None and timer.time_remaining() is not None else None

    def time_budget(self) -> tuple[float, float] | None:
        """(seconds of training so far, seconds of trainer.max_time), None without a cap."""
        timer = self._timer()
        if timer is None:
            return None
        elapsed = timer.time_elapsed()
        return elapsed, elapsed + float(timer.time_remaining())

    def progress(self) -> float:
        """Share of the run spent: of the epochs, or of the time budget if that is further on."""
        trainer = self.trainer
        epochs = max(1, int(trainer.max_epochs or 1)) if trainer.max_epochs != -1 else None
        per_epoch = float(trainer.num_training_batches or 1)  # inf before the loop is set up
        batch = trainer.fit_loop.epoch_loop.batch_idx
        step = self.current_epoch + (min(1.0, batch / per_epoch) if per_epoch > 0 else 0.0)
        done = step / epochs if epochs else 0.0
        budget = self.time_budget()
        if budget is not None and budget[1] > 0:
            done = max(done, budget[0] / budget[1])
        return min(1.0, done)

    def _in_warmup(self) -> bool:
        if self.warmup_end is not None:
            return False
        if self.current_epoch >= int(self.cfg.get("warmup_epochs", 0)):
            return False
        budget = self.time_budget()
        if budget is None:
            return True
        share = float(self.cfg.get("warmup_fraction", 0.25))
        over = budget[0] >= share * budget[1]
        if self.trainer.world_size > 1:
            # Every rank must make the same architecture steps: rank 0's clock decides.
            over = bool(self.trainer.strategy.broadcast(over))
        return not over

    # -- training ------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        opt_w, opt_a = self.optimizers()
        x, y = batch
        self.net.sample_weight_paths(self._gen)
        logits = self(x)
        loss = F.cross_entropy(
            logits.float(), y, label_smoothing=float(self.cfg.get("label_smoothing", 0.0))
        )
        opt_w.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_w.step()
        self.weight_steps += 1
        if self.time_budget() is not None:
            self.lr_schedulers().step()
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

        every = max(1, int(self.cfg.get("arch_every", 5)))
        if not self._in_warmup() and (batch_idx + 1) % every == 0:
            if self.warmup_end is None:
                budget = self.time_budget()
                self.warmup_end = {
                    "weight_steps": self.weight_steps,
                    "epoch": self.current_epoch,
                    "train_s": budget[0] if budget else None,
                    "budget_s": budget[1] if budget else None,
                }
            for _ in range(max(1, int(self.cfg.get("arch_steps", 1)))):
                self._arch_step(opt_a)
        return loss.detach()

    def _arch_step(self, opt_a) -> None:
        xa, ya = self._next_arch_batch()
        self.net.sample_arch_paths(self.mode, self._gen)
        # The weights' gradients are not needed here: skipping them saves a third of the
        # backward (single process only: DDP expects the same parameters to take part each step).
        frozen = self.trainer.world_size == 1
        if frozen:
            for p in self.net.weight_parameters():
                p.requires_grad_(False)
        try:
            self._arch_update(opt_a, xa, ya)
        finally:
            if frozen:
                for p in self.net.weight_parameters():
                    p.requires_grad_(True)

    def _arch_update(self, opt_a, xa: torch.Tensor, ya: torch.Tensor) -> None:
        logits = self(xa)
        ce = F.cross_entropy(logits.float(), ya)
        expected = self.expected_latency()
        loss = latency_loss(
            ce,
            expected,
            float(self.cfg["target_latency_ms"]),
            str(self.cfg.get("latency_loss", "mul_log")),
            beta=float(self.cfg.get("latency_beta", 0.3)),
            lam=float(self.cfg.get("latency_lambda", 0.1)),
        )
        opt_a.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.net.apply_arch_grads(self.mode)
        if self.trainer.world_size > 1:
            for alpha in self.net.arch_parameters():
                if alpha.grad is None:
                    alpha.grad = torch.zeros_like(alpha)
                alpha.grad = self.trainer.strategy.reduce(alpha.grad, reduce_op="mean")
        opt_a.step()
        self.net.rescale(self.mode)
        self.net.end_arch_step()
        self.arch_steps += 1
        self.arch_loss(loss.detach())
        self.log("search/arch_loss", self.arch_loss, on_step=False, on_epoch=True)
        self.log("search/arch_ce", ce.detach(), on_step=False, on_epoch=True)

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if sched is not None and self.time_budget() is None:
            sched.step()
        probs = self.net.probs()
        choices = [max(range(len(p)), key=p.__getitem__) for p in probs]
        record = {
            "epoch": int(self.current_epoch),
            "warmup": self._in_warmup(),
            "probs": probs,
            "chosen": self.net.chosen(),
            "expected_latency_ms": float(self.expected_latency()),
            "argmax_latency_ms": self.table.path_ms(choices),
            "arch_steps": self.arch_steps,
        }
        self.prob_history.append(record)
        self.log("search/expected_latency_ms", record["expected_latency_ms"])
        self.log("search/argmax_latency_ms", record["argmax_latency_ms"])
        self.log("search/arch_steps", float(self.arch_steps))
        entropy = sum(-sum(q * math.log(max(q, 1e-12)) for q in p) for p in probs) / len(probs)
        self.log("search/mean_entropy", entropy)
        for e, p in enumerate(probs):
            for k, q in enumerate(p):
                self.log(f"arch/edge{e:02d}/{self.net.edges[e].names[k]}", q)
        log.info(
            "epoch %d%s: E[latency] %.3f ms, argmax path %.3f ms (target %g): %s",
            self.current_epoch,
            " (warm-up)" if record["warmup"] else "",
            record["expected_latency_ms"],
            record["argmax_latency_ms"],
            self.cfg["target_latency_ms"],
            " ".join(record["chosen"]),
        )

    # -- validation: the current argmax architecture -------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.net.set_argmax()
        self.val_loss.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        self.val_loss(loss)
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    # -- optimizers ----------------------------------------------------------------------------

    def configure_optimizers(self):
        cfg = self.cfg
        weights = torch.optim.SGD(
            self.net.weight_parameters(),
            lr=float(cfg.get("weight_lr", 0.05)),
            momentum=float(cfg.get("weight_momentum", 0.9)),
            nesterov=True,
            weight_decay=float(cfg.get("weight_decay", 4e-5)),
        )
        arch = torch.optim.Adam(
            self.net.arch_parameters(),
            lr=float(cfg.get("arch_lr", 1e-3)),
            betas=(0.0, 0.999),
            eps=1e-8,
            weight_decay=0.0,
        )
        if self.time_budget() is not None:
            # Stepped every weight step: the cosine at the share of the run spent (time or
            # epochs), so it reaches its floor when the budget ends, however fast the steps are.
            sched = torch.optim.lr_scheduler.LambdaLR(
                weights, lambda _: 0.5 * (1.0 + math.cos(math.pi * self.progress()))
            )
            return [weights, arch], [{"scheduler": sched, "interval": "step"}]
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=epochs)
        return [weights, arch], [{"scheduler": sched, "interval": "epoch"}]

    # -- checkpoint state ----------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["search_state"] = {
            "prob_history": self.prob_history,
            "arch_steps": self.arch_steps,
            "weight_steps": self.weight_steps,
            "warmup_end": self.warmup_end,
            "generator": self._gen.get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("search_state") or {}
        self.prob_history = list(state.get("prob_history", []))
        self.arch_steps = int(state.get("arch_steps", 0))
        self.weight_steps = int(state.get("weight_steps", 0))
        self.warmup_end = state.get("warmup_end")
        if "generator" in state:
            self._gen.set_state(state["generator"])
