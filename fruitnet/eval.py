"""`python -m fruitnet.eval`: test a checkpoint on a dataset's test split.

    python -m fruitnet.eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt \
        data=fruits data.root=/data/fruits-360

Writes into the run directory (logs/eval/runs/<timestamp>/):
  results.json           kind "eval": what this evaluation measured (`fruitnet.record.EVAL_KEYS`),
                         with the checkpoint's training run and its key numbers under `trained`
  confusion_matrix.png   labelled; above 30 classes the most-confused ones plus a table
  per_class.csv          support, precision, recall, f1, accuracy per class
  mistakes.png           the most confident mistakes (true / predicted + probability); with
                         explain on, one row each: the image and its Grad-CAM maps: for the
                         predicted and the true class, or for two classes one signed map of
                         logit(predicted) - logit(true) (red: evidence for the predicted class,
                         blue: for the true one)
  mistakes.csv           every mistake, most confident first, with its file
  cam_mean.png           two-class tasks, explain on: per class, the mean signed map of
                         logit(class) - logit(other class) over its test images, with the
                         central box and each class's central-mass share (below)

Two classes: the checkpoint's threshold on P(class 1) (`decision_threshold`, chosen on validation
with model.threshold=auto) makes the calls of the metrics, the confusion matrix, per_class.csv and
mistakes; results.json records it (`threshold`, null = argmax). With explain on, results.json has
`cam_central_share`: the mean share of each map's mass (its absolute value: evidence either way)
inside the central 50 % x 50 % box (`fruitnet.explain.focus`; 0.25 = spread evenly, low =
border and corner-marker shortcuts), overall and per class. Every eval compares the checkpoint's
validation accuracy with this test accuracy: over 10 points apart, one warning line and
`val_warning: true` (the validation split does not look like the test data).

`adapt_bn=true`: test-time BatchNorm adaptation (`fruitnet.batchnorm`): before scoring, the
net's BatchNorm statistics become those of the test images (labels unused); results.json records
it (`adapt_bn`: layers and images). For test images from another scanner or site than the
training images (bench/CHEST_BN_SHIFT.md); the scores then hold for this set of images.

`explain=auto` (the default) makes the Grad-CAM maps when the explain extra is installed
(`pip install 'fruitnet[explain]'`), and otherwise says so in one line.

The preprocessing follows the checkpoint (`hparams.preprocess`): `norm` and the image size are
taken from it, and its mean/std normalise the batches. Without ``data=``/``data.root=`` the
evaluation runs on the training run's data, which the checkpoint records (`use_training_data`);
any dataset given instead must have the checkpoint's class names.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from fruitnet import explain as cam
from fruitnet import plots
from fruitnet.analysis import mistakes, per_class_rows, write_csv
from fruitnet.assemble import build_datamodule, build_trainer
from fruitnet.batchnorm import adapt_batchnorm, batchnorm_layers
from fruitnet.callbacks import KeepTestOutputs
from fruitnet.checkpoints import (
    class_names_of,
    classifier_from_checkpoint,
    decide,
    load_checkpoint,
)
from fruitnet.config import CONFIG_PATH, check_keys, hydra_choices, run_entry
from fruitnet.data.transforms import BatchTransform, image_spec
from fruitnet.eval_data import check_classes, checkpoint_norm, data_config, use_training_data
from fruitnet.explain.focus import ShareRecorder, summarize
from fruitnet.files import file_mib
from fruitnet.models import profile
from fruitnet.module import ClassifierModule
from fruitnet.record import (
    model_values,
    run_record,
    test_metrics,
    trained_values,
    val_check,
    write_record,
)
from fruitnet.runtime import device_name

log = logging.getLogger("fruitnet.eval")


def load_for_eval(cfg: DictConfig) -> tuple[ClassifierModule, dict[str, Any], str | None, Any]:
    """The checkpoint's classifier, what results.json keeps of the checkpoint, the data preset, and
    the test data set up in the checkpoint's pipeline."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    module = classifier_from_checkpoint(ckpt, cfg.ckpt_path)
    preset = use_training_data(cfg, module.hparams.get("data_config"))
    # Keep what results.json needs; drop the rest (optimizer state can be hundreds of MiB).
    stored = {k: ckpt.get(k) for k in ("epoch", "global_step", "val_acc_best")}
    del ckpt
    preprocess = dict(module.hparams.preprocess)
    dm = build_datamodule(data_config(cfg, preprocess), "test", preprocess=preprocess)
    check_classes(dm.class_names, class_names_of(module), dm.data_root)
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
    return module, stored, preset, dm


def adapt_to_test_images(module: ClassifierModule, dm: Any) -> dict[str, int]:
    """adapt_bn=true: the BatchNorm statistics of the test images (`fruitnet.batchnorm`), read in
    the checkpoint's evaluation pipeline (no augmentation), on the CPU, labels unused."""
    batches = (dm.batch_transform(x, train=False) for x, _ in dm.test_dataloader())
    images = adapt_batchnorm(module, batches)
    layers = len(batchnorm_layers(module.net))
    log.info(
        "adapt_bn: %d BatchNorm layers now hold the statistics of the %d test images",
        layers,
        images,
    )
    return {"layers": layers, "images": images}


def write_artifacts(
    cfg: DictConfig, module: ClassifierModule, dm: Any, probs: torch.Tensor, labels: torch.Tensor,
    explainer: cam.CamExplainer | None,
) -> tuple[dict[str, str | None], int, dict[str, Any] | None]:  # fmt: skip
    """per_class.csv, confusion_matrix.png, mistakes.csv and .png, cam_mean.png; returns their
    paths, the number of mistakes and (two classes, explain on) the maps' central shares."""
    out = Path(cfg.paths.output_dir)
    names = class_names_of(module)
    details = module.test_details
    artifacts: dict[str, str | None] = {}
    preds = decide(probs, module.threshold)  # the checkpoint's threshold, as the test metrics
    rows = per_class_rows(probs, labels, names, details["per_class_acc"], preds)
    artifacts["per_class_csv"] = str(write_csv(out / "per_class.csv", rows, list(rows[0])))
    fig = plots.confusion_matrix_figure(
        details["confusion_matrix"], names, max_classes=int(cfg.confusion_top)
    )
    artifacts["confusion_matrix_png"] = str(plots.save_figure(fig, out / "confusion_matrix.png"))

    wrong = mistakes(probs, labels, preds)
    paths = dm.test_set.paths
    mistake_rows = [
        {"path": str(paths[i]), "true": names[int(labels[i])], "pred": names[p], "prob": prob}
        for i, p, prob in wrong
    ]
    fields = ["path", "true", "pred", "prob"]
    artifacts["mistakes_csv"] = str(write_csv(out / "mistakes.csv", mistake_rows, fields))
    artifacts["mistakes_png"] = None
    shown = wrong[: int(cfg.mistakes)]
    if shown:
        fig = mistakes_figure(shown, len(wrong), dm, labels, names, explainer)
        artifacts["mistakes_png"] = str(plots.save_figure(fig, out / "mistakes.png"))
    else:
        log.info("no mistakes on the test split: no mistakes.png")
    artifacts["cam_mean_png"] = None
    focus = None
    if explainer is not None and len(names) == 2:
        # Signed maps of the logit difference: the ReLU'd map of a class that is only the
        # absence of the other's evidence (NORMAL vs PNEUMONIA) is zero everywhere. The recorder
        # takes each map's central share on the way (the same maps, one pass).
        recorder = ShareRecorder(explainer, len(names))
        mean_images, mean_maps, counts = cam.class_mean_maps(
            recorder, dm.test_set, labels, len(names),
            limit=int(cfg.get("explain_images", 200)), batch_size=dm.batch_size, contrast=True,
        )  # fmt: skip
        focus = summarize(recorder.per_class(), names)
        fig = cam.mean_map_figure(mean_images, mean_maps, names, counts, signed=True, central=focus)
        artifacts["cam_mean_png"] = str(plots.save_figure(fig, out / "cam_mean.png"))
    return artifacts, len(wrong), focus


def mistakes_figure(shown, total, dm, labels, names, explainer):
    """The most confident mistakes; with an explainer, each with its Grad-CAM maps for the
    predicted and the true class, or for two classes the signed map of their logit difference."""
    images = torch.stack([dm.test_set[i][0] for i, _, _ in shown])
    true_idx = [int(labels[i]) for i, _, _ in shown]
    pred_idx = [p for _, p, _ in shown]
    title = f"The {len(shown)} most confident of {total} mistakes ({len(labels)} test images)"
    texts = ([names[t] for t in true_idx], [names[p] for p in pred_idx])
    probs_shown = [prob for _, _, prob in shown]
    if explainer is None:
        return plots.mistakes_figure(images, *texts, probs_shown, title=title)
    batch = dm.batch_size
    binary = len(names) == 2
    pred_maps = explainer.maps(images, pred_idx, batch_size=batch, contrast=binary)
    true_maps = None if binary else explainer.maps(images, true_idx, batch_size=batch)
    return cam.mistakes_cam_figure(images, pred_maps, true_maps, *texts, probs_shown, title=title)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns the results written to results.json."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    explain = cam.wanted(cfg.get("explain", "auto"), log)  # explain=true without Captum: stop now
    module, stored, preset, dm = load_for_eval(cfg)
    names = class_names_of(module)
    adapted = adapt_to_test_images(module, dm) if cfg.get("adapt_bn") else None

    outputs = KeepTestOutputs()
    trainer = build_trainer(cfg, [outputs], [])
    trainer.test(module, datamodule=dm, verbose=bool(cfg.get("verbose", True)))
    metrics = test_metrics(trainer.callback_metrics, names, module.test_details)
    probs = torch.cat(outputs.logits).softmax(-1)
    labels = torch.cat(outputs.labels)
    explainer = cam.CamExplainer(module, device=trainer.strategy.root_device) if explain else None
    artifacts, num_wrong, focus = write_artifacts(cfg, module, dm, probs, labels, explainer)

    values = eval_values(cfg, module, dm, preset)
    trained = trained_values(cfg.ckpt_path, stored, module.hparams)
    if focus is not None:
        values.update(
            cam_central_share=focus["overall"], cam_central_share_per_class=focus["per_class"]
        )
    values.update(
        val_check(trained["val_acc"], metrics.get("test_acc")),
        adapt_bn=adapted,
        trained=trained,
        precision=str(trainer.precision),
        num_test=len(labels),
        num_mistakes=num_wrong,
        artifacts=artifacts,
        wall_s=time.perf_counter() - started,
    )
    results = run_record(values, metrics, kind="eval")
    path = write_record(output_dir, results)
    written = [path.name] + [Path(p).name for p in artifacts.values() if p]
    log.info(
        "test accuracy %.2f %% on %d images (%d mistakes%s%s); wrote %s in %s",
        100 * results["test_acc"],
        len(labels),
        num_wrong,
        f", threshold {module.threshold:.3f}" if module.threshold is not None else "",
        f", Grad-CAM central share {focus['overall']:.2f}" if focus and focus["overall"] else "",
        ", ".join(written),
        output_dir,
    )
    return results


def eval_values(cfg: DictConfig, module: ClassifierModule, dm: Any, preset: str | None):
    """The record's values that the checkpoint, the data and this config tell (`EVAL_KEYS`);
    what the checkpoint's training run did goes under ``trained``, not here."""
    hp = module.hparams
    total, trainable = profile.count_params(module.net)
    choices, overrides = hydra_choices()
    how = model_values(hp)
    return {
        **{k: how[k] for k in ("model", "arch", "num_classes", "input_size")},
        "data": preset or choices.get("data", "?"),
        "data_root": str(dm.data_root),
        "layout": dm.layout,
        "norm": checkpoint_norm(hp.preprocess),
        "task": dm.task,
        "class_names": class_names_of(module),
        "batch_size": dm.batch_size,
        "seed": cfg.seed,
        "ckpt_path": str(cfg.ckpt_path),
        "preprocess": dict(hp.preprocess),
        "params": total,
        "trainable_params": trainable,
        "fp32_mib": profile.fp32_mib(module.net),
        "weights_mb": profile.state_dict_mib(module.net),
        "flops": profile.flops(module.net, int(hp.input_size)),
        "checkpoint_mb": file_mib(cfg.ckpt_path),
        "device": device_name(cfg.trainer.accelerator),
        "run_dir": str(cfg.paths.output_dir),
        "overrides": overrides,
        "task_name": cfg.task_name,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _main(cfg: DictConfig) -> float | None:
    return run_entry(run, cfg).get("test_acc")


def main() -> float | None:
    check_keys(sys.argv[1:], "eval")
    return _main()


if __name__ == "__main__":
    main()
