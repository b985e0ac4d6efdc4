"""`python -m fruitnet.eval`: test a checkpoint on a dataset's test split.

    python -m fruitnet.eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt \
        data=fruits data.root=/data/fruits-360

Writes into the run directory (logs/eval/runs/<timestamp>/):
  results.json           same schema as training's (`fruitnet.results`), plus `artifacts`
  confusion_matrix.png   labelled; above 30 classes the most-confused ones plus a table
  per_class.csv          support, precision, recall, f1, accuracy per class
  mistakes.png           the most confident mistakes (true / predicted + probability); with
                         explain on, one row each: image, Grad-CAM for the predicted class and
                         for the true class
  mistakes.csv           every mistake, most confident first, with its file
  cam_mean.png           two-class tasks, explain on: mean Grad-CAM per class (`fruitnet.explain`)

`explain=auto` (the default) makes the Grad-CAM maps when the explain extra is installed
(`pip install 'fruitnet[explain]'`), and otherwise says so in one line.

The preprocessing follows the checkpoint (`hparams.preprocess`): `norm` and the image size are
taken from it, and its mean/std normalise the batches. Without ``data=``/``data.root=`` the
evaluation runs on the training run's data, which the checkpoint records (`use_training_data`);
any dataset given instead must have the checkpoint's class names.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from fruitnet import explain as cam
from fruitnet import plots
from fruitnet.config import CONFIG_PATH, run_entry
from fruitnet.data.transforms import BatchTransform, image_spec
from fruitnet.models import profile
from fruitnet.predict import class_names_of, classifier_from_checkpoint
from fruitnet.results import environment, file_mib, test_metrics, write_json
from fruitnet.runtime import device_name, load_checkpoint
from fruitnet.train import build_trainer, hydra_choices

log = logging.getLogger("fruitnet.eval")


class ClassNamesError(ValueError):
    """The dataset's class names are not the checkpoint's."""


class KeepTestOutputs(L.Callback):
    """Keeps the logits and labels of the test loop. `test_step` computes the logits but returns
    nothing, so a forward hook on the module picks them up: no second pass over the test set."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None
        self._hook = pl_module.register_forward_hook(self._keep)

    def _keep(self, module, args, output: torch.Tensor) -> None:
        self._last = output.detach().float().cpu()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.logits.append(self._last)
        self.labels.append(batch[1].detach().cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()


def checkpoint_norm(preprocess: dict[str, Any]) -> bool:
    # norm=true is the only pipeline with a center crop (see fruitnet.data.transforms).
    return preprocess.get("crop") is not None


def training_data_hint(ckpt_path: str | Path) -> str:
    """What the checkpoint's own training run used, from its results.json (run/checkpoints/x)."""
    path = Path(ckpt_path).resolve().parent.parent / "results.json"
    try:
        trained = json.loads(path.read_text())
        return f" Its training run used data={trained['data']} data.root={trained['data_root']}."
    except (OSError, ValueError, KeyError):
        return ""


def require_data_root(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ValueError(
            "data.root is required: the dataset to evaluate on, e.g. data=fruits "
            "data.root=/data/fruits-360 (this checkpoint does not record its training data)."
            + training_data_hint(cfg.ckpt_path)
        )


# Data keys that belong to the machine evaluating, not to the dataset: taken from eval's config.
_LOCAL_DATA_KEYS = ("num_workers", "pin_memory", "persistent_workers", "cache", "cache_dir")


def use_training_data(cfg: DictConfig, record: Any) -> str | None:
    """Without ``data=``/``data.root=``, evaluate on the training run's data, which the checkpoint
    records (`fruitnet.train.data_record`); the command line's ``data.*`` overrides still apply.

    Sets ``cfg.data`` and returns the training data's preset name; returns None (``cfg`` as it
    is) when the command line names the data. Raises when the checkpoint has no record (older
    checkpoints) or the recorded data root no longer exists.
    """
    if not OmegaConf.is_missing(cfg.data, "root"):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("node"), dict):
        require_data_root(cfg)
    node = OmegaConf.create(record["node"])
    preset = record.get("preset") or "?"
    for key in _LOCAL_DATA_KEYS:
        if key in cfg.data:
            node[key] = OmegaConf.select(cfg, f"data.{key}")
    _, overrides = hydra_choices()
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if key.startswith("data.") and "=" in text:
            OmegaConf.update(node, key[len("data.") :], OmegaConf.select(cfg, key), merge=False)
    root = node.get("root")
    generated = str(node.get("_target_", "")).endswith("SyntheticDataModule")
    if root and not generated and not Path(root).exists():
        raise ValueError(
            f"the checkpoint's training data no longer exists: data={preset} data.root={root}. "
            "Name the dataset to evaluate on, e.g. data=fruits data.root=/data/fruits-360."
        )
    log.info("no data= given: evaluating on the training run's data=%s data.root=%s", preset, root)
    with open_dict(cfg):
        cfg.data = node
    return preset


def data_config(cfg: DictConfig, preprocess: dict[str, Any]) -> DictConfig:
    """The data node with `norm` and the image size set from the checkpoint."""
    norm = checkpoint_norm(preprocess)
    if cfg.get("norm") is not None and bool(cfg.norm) != norm:
        log.warning(
            "norm=%s ignored: the checkpoint was trained with norm=%s (preprocess %s)",
            cfg.norm,
            norm,
            preprocess,
        )
    data = cfg.data.copy()
    with open_dict(data):
        data.norm = norm
        if not norm:
            user_size = data.get("image_size")
            if user_size is not None and int(user_size) != int(preprocess["size"]):
                log.warning(
                    "data.image_size=%s ignored: the checkpoint's input size is %s",
                    user_size,
                    preprocess["size"],
                )
            data.image_size = int(preprocess["size"])
        # Statistics come from the checkpoint; computing the dataset's would be wasted work.
        data.stats = "imagenet"
    return data


def check_classes(data_names: list[str], ckpt_names: list[str], root: Any) -> None:
    if list(data_names) == list(ckpt_names):
        return
    missing = [n for n in ckpt_names if n not in set(data_names)]
    extra = [n for n in data_names if n not in set(ckpt_names)]

    def some(names: list[str]) -> str:
        return ", ".join(map(repr, names[:10])) + (
            f" (+{len(names) - 10} more)" if len(names) > 10 else ""
        )

    detail = []
    if missing:
        detail.append(f"{len(missing)} checkpoint class(es) not in the data: {some(missing)}")
    if extra:
        detail.append(f"{len(extra)} data class(es) unknown to the checkpoint: {some(extra)}")
    if not detail:
        detail.append("same names in a different order")
    raise ClassNamesError(
        f"the dataset at {root} has {len(data_names)} classes, the checkpoint {len(ckpt_names)}; "
        + "; ".join(detail)
        + ". Evaluate on the dataset the model was trained on (data=... data.root=...)."
    )


def per_class_rows(
    probs: torch.Tensor, labels: torch.Tensor, names: list[str], per_class_acc: list[float]
) -> list[dict[str, Any]]:
    k = len(names)
    preds = probs.argmax(-1)
    kw = {"num_classes": k, "average": None}
    precision = multiclass_precision(probs, labels, **kw).tolist()
    recall = multiclass_recall(probs, labels, **kw).tolist()
    f1 = multiclass_f1_score(probs, labels, **kw).tolist()
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


def mistakes(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int, float]]:
    """``(test index, predicted class, probability)`` of every mistake, most confident first."""
    conf, preds = probs.max(-1)
    wrong = (preds != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True, stable=True)]
    return [(int(i), int(preds[i]), float(conf[i])) for i in order]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns the results written to results.json."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)

    explain = cam.wanted(cfg.get("explain", "auto"), log)  # explain=true without Captum: stop now
    ckpt = load_checkpoint(cfg.ckpt_path)
    module = classifier_from_checkpoint(ckpt, cfg.ckpt_path)
    preset = use_training_data(cfg, module.hparams.get("data_config"))
    # Keep what results.json needs; drop the rest (optimizer state can be hundreds of MiB).
    stored = {k: ckpt.get(k) for k in ("epoch", "global_step", "val_acc_best")}
    del ckpt
    hp = module.hparams
    preprocess = dict(hp.preprocess)
    names = class_names_of(module)

    dm = hydra.utils.instantiate(data_config(cfg, preprocess))
    dm.prepare_data()
    dm.setup("test")
    check_classes(dm.class_names, names, dm.data_root)
    if image_spec(dm.preprocess) != image_spec(preprocess):
        raise ValueError(
            f"the data config decodes images as {image_spec(dm.preprocess)}, the checkpoint "
            f"expects {image_spec(preprocess)}"
        )
    # The checkpoint's mean/std normalise the batches, whatever this data config would pick.
    dm.batch_transform = BatchTransform(preprocess["mean"], preprocess["std"])
    dm.preprocess = preprocess
    if not dm.num_test:
        raise ValueError(f"the dataset at {dm.data_root} has no test images")

    outputs = KeepTestOutputs()
    trainer = build_trainer(cfg, [outputs], [])
    trainer.test(module, datamodule=dm, verbose=bool(cfg.get("verbose", True)))
    metrics = test_metrics(trainer.callback_metrics, names, module.test_details)
    probs = torch.cat(outputs.logits).softmax(-1)
    labels = torch.cat(outputs.labels)

    # -- artifacts ----------------------------------------------------------------------------
    artifacts: dict[str, str | None] = {}
    rows = per_class_rows(probs, labels, names, module.test_details["per_class_acc"])
    artifacts["per_class_csv"] = str(write_csv(output_dir / "per_class.csv", rows, list(rows[0])))
    fig = plots.confusion_matrix_figure(
        module.test_details["confusion_matrix"], names, max_classes=int(cfg.confusion_top)
    )
    artifacts["confusion_matrix_png"] = str(
        plots.save_figure(fig, output_dir / "confusion_matrix.png")
    )

    wrong = mistakes(probs, labels)
    paths = dm.test_set.paths
    mistake_rows = [
        {"path": str(paths[i]), "true": names[int(labels[i])], "pred": names[p], "prob": prob}
        for i, p, prob in wrong
    ]
    fields = ["path", "true", "pred", "prob"]
    artifacts["mistakes_csv"] = str(write_csv(output_dir / "mistakes.csv", mistake_rows, fields))
    shown = wrong[: int(cfg.mistakes)]
    artifacts["mistakes_png"] = None
    explainer = cam.CamExplainer(module, device=trainer.strategy.root_device) if explain else None
    if shown:
        images = torch.stack([dm.test_set[i][0] for i, _, _ in shown])
        true_idx = [int(labels[i]) for i, _, _ in shown]
        pred_idx = [p for _, p, _ in shown]
        title = (
            f"The {len(shown)} most confident of {len(wrong)} mistakes ({len(labels)} test images)"
        )
        texts = ([names[t] for t in true_idx], [names[p] for p in pred_idx])
        probs_shown = [prob for _, _, prob in shown]
        if explainer is not None:
            batch = dm.batch_size
            fig = cam.mistakes_cam_figure(
                images,
                explainer.maps(images, pred_idx, batch_size=batch),
                explainer.maps(images, true_idx, batch_size=batch),
                *texts,
                probs_shown,
                title=title,
            )
        else:
            fig = plots.mistakes_figure(images, *texts, probs_shown, title=title)
        artifacts["mistakes_png"] = str(plots.save_figure(fig, output_dir / "mistakes.png"))
    else:
        log.info("no mistakes on the test split: no mistakes.png")
    artifacts["cam_mean_png"] = None
    if explainer is not None and len(names) == 2:
        mean_images, mean_maps, counts = cam.class_mean_maps(
            explainer, dm.test_set, labels, len(names),
            limit=int(cfg.get("explain_images", 200)), batch_size=dm.batch_size,
        )  # fmt: skip
        fig = cam.mean_map_figure(mean_images, mean_maps, names, counts)
        artifacts["cam_mean_png"] = str(plots.save_figure(fig, output_dir / "cam_mean.png"))

    # -- results.json: the training schema, with what a checkpoint can tell -------------------
    total, trainable = profile.count_params(module.net)
    choices, overrides = hydra_choices()
    optimizer = dict(hp.optimizer or {})
    val_best = stored["val_acc_best"]
    results = {
        "model": hp.model_name,
        "data": preset or choices.get("data", "?"),
        "experiment": None,
        "data_root": str(dm.data_root),
        "layout": dm.layout,
        "norm": checkpoint_norm(preprocess),
        "task": dm.task,
        "num_classes": dm.num_classes,
        "class_names": names,
        "input_size": int(hp.input_size),
        "batch_size": dm.batch_size,
        "optimizer": str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1],
        "lr": optimizer.get("lr"),
        "seed": cfg.seed,
        # What training started from; the weights evaluated here are the checkpoint's.
        "pretrained": hp.get("pretrained"),
        "arch": hp.get("arch_path"),
        "weights_source": str(cfg.ckpt_path),
        "params": total,
        "trainable_params": trainable,
        "fp32_mib": profile.fp32_mib(module.net),
        "weights_mb": profile.state_dict_mib(module.net),
        "flops": profile.flops(module.net, int(hp.input_size)),
        "checkpoint_mb": file_mib(cfg.ckpt_path),
        "test_acc": metrics.get("test_acc"),
        "val_acc": float(val_best) if val_best is not None else None,
        **metrics,
        # Lightning stores the 0-based epoch it saved in; epoch-end checkpoints completed it.
        "epochs": int(stored["epoch"]) + 1 if stored["epoch"] is not None else None,
        "global_step": stored["global_step"],
        "wall_s": time.perf_counter() - started,
        "train_images_per_s": None,
        "device": device_name(cfg.trainer.accelerator),
        "precision": str(trainer.precision),
        "best_ckpt": str(cfg.ckpt_path),
        "last_ckpt": None,
        "resumed_from": None,
        "run_dir": str(output_dir),
        "overrides": overrides,
        **environment(),
        "task_name": cfg.task_name,
        "num_test": len(labels),
        "num_mistakes": len(wrong),
        "preprocess": preprocess,
        "artifacts": artifacts,
    }
    path = write_json(output_dir / "results.json", results)
    log.info(
        "test accuracy %.2f %% on %d images (%d mistakes); results in %s",
        100 * results["test_acc"],
        len(labels),
        len(wrong),
        path,
    )
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_entry(run, cfg).get("test_acc")


if __name__ == "__main__":
    main()
