"""The assembly every run shares: the config checked, data, model and trainer built from it.

`fruitnet.train` and `fruitnet.search` build a run from here, `fruitnet.eval` builds its trainer
here; none of them imports another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from omegaconf import DictConfig, OmegaConf

from fruitnet.callbacks import RNGStateCheckpoint
from fruitnet.callbacks.progress import StepLogInterval
from fruitnet.checkpoint_io import AtomicCheckpointIO
from fruitnet.checkpoints import CheckpointError, load_checkpoint, resolve_ckpt_path
from fruitnet.config import hydra_choices, instantiate_group, is_multirun, to_primitive
from fruitnet.models.net_config import load_arch
from fruitnet.module import ClassifierModule
from fruitnet.runtime import configure_malloc, resolve_precision, uses_cuda

log = logging.getLogger(__name__)


def start_run(cfg: DictConfig) -> tuple[Path, str | None]:
    """What train and search do before any data is read, once `config.check_config` passed: the
    checkpoint to resume (``ckpt_path``), the seed. Returns the run directory and the resolved
    checkpoint."""
    output_dir = Path(cfg.paths.output_dir)
    # Resolved first, so a missing checkpoint fails before the dataset is scanned. In a multirun the
    # sibling folders are other jobs with other configs: only this job's own folder counts.
    runs_dir = None if is_multirun() else output_dir.parent
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, runs_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    from fruitnet.tracking import check_servers

    check_servers(cfg)  # now, not after the data is scanned and cached
    L.seed_everything(cfg.seed, workers=True)
    return output_dir, ckpt_path


def build_datamodule(
    data_cfg: DictConfig,
    stage: str = "fit",
    *,
    cfg: DictConfig | None = None,
    preprocess: dict[str, Any] | None = None,
) -> Any:
    """The datamodule, set up: the model needs num_classes and input_size before Lightning would
    call these itself. The images are decoded as ``preprocess`` says (a checkpoint's), else as
    the run config ``cfg``'s model asks (a torchvision/timm model's own pipeline), else as the
    data's ``norm`` and ``image_size`` say."""
    if preprocess is None and cfg is not None:
        from fruitnet.models import preprocess_for

        kwargs = model_kwargs_of(cfg, None)
        preprocess = preprocess_for(cfg.model.name, kwargs, norm=bool(data_cfg.get("norm")))
        if preprocess is not None and float(data_cfg.get("crop_fraction") or 1.0) != 1.0:
            raise ValueError(
                f"data.crop_fraction is for the study models; model={cfg.model.name} decodes "
                "with its own pipeline (resize, crop), so leave data.crop_fraction=1.0"
            )
    dm = hydra.utils.instantiate(data_cfg)
    if preprocess is not None:
        # Set here, not as an instantiate kwarg: Hydra would turn the dict into a DictConfig,
        # which the checkpoint's hparams must not hold (weights_only=True loading).
        dm.model_preprocess = dict(preprocess)
    dm.prepare_data()
    dm.setup(stage)
    return dm


def model_kwargs_of(cfg: DictConfig, input_size: int | None) -> dict[str, Any]:
    """``model.kwargs``, plus ``model.arch``: for proxyless its net config (a plain dict, checked
    against the input size when given) so that the checkpoint's hparams rebuild the network
    without the file; for a family (torchvision, timm) the architecture's name, a string."""
    from fruitnet.models import get_model_spec

    model = cfg.model
    kwargs = to_primitive(model.get("kwargs")) or {}
    arch = None if OmegaConf.is_missing(model, "arch") else model.get("arch")
    if get_model_spec(model.name).resolve is not None:
        kwargs["arch"] = None if arch is None else str(arch)  # the family says what is missing
    elif arch:
        if model.name != "proxyless":
            raise ValueError(f"model.arch is for model=proxyless, not model={model.name}")
        kwargs["arch"] = load_arch(arch, input_size)
    return kwargs


def build_module(cfg: DictConfig, dm: Any) -> ClassifierModule:
    module = ClassifierModule(
        model_name=cfg.model.name,
        num_classes=dm.num_classes,
        input_size=dm.input_size,
        optimizer=to_primitive(cfg.optimizer),
        scheduler=to_primitive(cfg.get("scheduler")) or None,
        model_kwargs=model_kwargs_of(cfg, dm.input_size),
        arch_path=str(cfg.model.arch) if cfg.model.get("arch") else None,
        pretrained=cfg.model.pretrained,
        weights=cfg.model.get("weights"),
        class_names=list(dm.class_names),
        task=dm.task,
        class_weights=dm.class_weights,
        label_smoothing=float(cfg.model.get("label_smoothing", 0.0)),
        mixup=float(cfg.model.get("mixup", 0.0)),
        focus_penalty=float(cfg.model.get("focus_penalty", 0.0)),
        focus_fraction=float(cfg.model.get("focus_fraction", 0.5)),
        focus_images=int(cfg.model.get("focus_images", 16)),
        preprocess=dm.preprocess,
        channels_last=bool(cfg.model.get("channels_last", True)),
        compile=bool(cfg.model.get("compile", False)),
        data_config=data_record(cfg),
        threshold=cfg.model.get("threshold"),
    )
    if cfg.get("init_from"):
        init_weights_from(module, cfg.init_from)
    return module


def data_record(cfg: DictConfig) -> dict[str, Any]:
    """The data config as the checkpoint keeps it: primitive, resolved, with an absolute root, so
    `fruitnet.eval ckpt_path=...` evaluates on the training run's data without ``data=``."""
    node = to_primitive(cfg.data)
    if node.get("root") is not None:
        node["root"] = str(Path(node["root"]).expanduser().absolute())
    return {"preset": hydra_choices()[0].get("data"), "node": node}


def init_weights_from(module: ClassifierModule, path: str) -> None:
    """`init_from=CKPT`: weights only; optimizer, scheduler and epoch start fresh."""
    state = load_checkpoint(path).get("state_dict")
    if state is None:
        raise CheckpointError(f"{path} has no 'state_dict' (not a Lightning checkpoint)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"init_from={path} does not fit this model: {err}") from err
    log.info("initialised weights from %s (fresh optimizer)", path)


def run_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The configured callbacks, plus the random-state checkpoint, always: without it a resumed
    run draws other dropout masks than an uninterrupted one."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    if find_callback(callbacks, RNGStateCheckpoint) is None:
        callbacks.append(RNGStateCheckpoint())
    return callbacks


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list | None = None) -> L.Trainer:
    """The Trainer, with the runtime choices for its device: precision and the host allocator.
    ``loggers`` None: the config's logger group. `StepLogInterval` keeps the step-logging
    interval within an epoch: Lightning knows the number of batches only once fit starts."""
    if loggers is None:
        from fruitnet.tracking import build_loggers

        loggers = build_loggers(cfg)
    precision = resolve_precision(cfg.trainer.get("precision", "auto"), cfg.trainer.accelerator)
    configure_malloc(cfg.get("malloc", "auto"), cfg.trainer.accelerator)
    extra = {}
    if cfg.trainer.get("enable_model_summary") is None and not find_callback(
        callbacks, ModelSummary
    ):
        # callbacks.model_summary=null drops the summary; Lightning would add its own default.
        extra["enable_model_summary"] = False
    if not find_callback(callbacks, StepLogInterval):
        callbacks = [*callbacks, StepLogInterval()]
    if cfg.trainer.get("sync_batchnorm") and not uses_cuda(cfg.trainer.accelerator):
        # torch's SyncBatchNorm runs on CUDA only: CPU processes (gloo) keep per-process stats
        log.info("trainer.sync_batchnorm: off, it needs GPUs (this run's processes are on the CPU)")
        extra["sync_batchnorm"] = False
    return hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


def find_callback(callbacks: list, kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)
