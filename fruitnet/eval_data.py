"""Which data a checkpoint is evaluated on, and in which pipeline: the training run's data unless
the command line names other data, the checkpoint's norm, input size and mean/std, and class
names that must match the checkpoint's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from fruitnet.config import hydra_choices

log = logging.getLogger("fruitnet.eval")


class ClassNamesError(ValueError):
    """The dataset's class names are not the checkpoint's."""


def checkpoint_norm(preprocess: dict[str, Any]) -> bool:
    # norm=true: a centre crop and a normalisation; norm=false with data.crop_fraction < 1 has the
    # crop but feeds /255 only (see fruitnet.data.transforms).
    plain = (
        list(preprocess.get("mean", [])) == [0.0] * 3
        and list(preprocess.get("std", [])) == [1.0] * 3
    )
    return preprocess.get("crop") is not None and not plain


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
    records (`fruitnet.assemble.data_record`); the command line's ``data.*`` overrides still apply.

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
