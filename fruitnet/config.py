"""Where the Hydra configs are, what Hydra's runtime says about the run, config nodes turned into
objects, and the wrapper every entry point runs in."""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fruitnet.settings import MALLOC_MODES

log = logging.getLogger(__name__)

_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"

# A source checkout (editable install, or `python -m` from the repo) uses conf/ directly, so edits
# show up at once; a wheel install ships the same files as the package `fruitnet.conf`.
CONFIG_PATH = (
    str(_SOURCE_CONF) if (_SOURCE_CONF / "train.yaml").is_file() else "pkg://fruitnet.conf"
)
CONFIG_MODULE = "fruitnet.conf"


def to_primitive(node: Any) -> Any:
    """DictConfig/ListConfig -> plain dict/list (resolved), so nothing OmegaConf-typed is pickled."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def config_keys(name: str) -> set[str]:
    """The top-level keys of ``conf/<name>.yaml`` and of the groups its defaults list selects."""
    if CONFIG_PATH.startswith("pkg://"):
        text = importlib.resources.files(CONFIG_MODULE).joinpath(f"{name}.yaml").read_text()
    else:
        text = (Path(CONFIG_PATH) / f"{name}.yaml").read_text()
    node = OmegaConf.create(text)
    keys = {str(k) for k in node if k != "defaults"} | {"hydra"}
    for entry in node.get("defaults") or []:
        if isinstance(entry, DictConfig):
            keys.update(str(k).split("@")[0].split("/")[0].split()[-1] for k in entry)
    return keys


def check_keys(argv: Sequence[str], name: str) -> None:
    """A mistyped top-level key of ``conf/<name>.yaml`` (``top_k=3`` for predict) stops with "did
    you mean topk?". Hydra would refuse it too, but only with a hint to add it as a new key
    (``+top_k=3``), which is never what was meant. Every entry point's ``main`` calls it first."""
    if any(a.split("=")[0] in ("-cn", "--config-name", "-cp", "--config-path") for a in argv):
        return  # another config: its keys are not the ones read here
    known = config_keys(name)
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue  # flags, and keys added (+) or removed (~) on purpose
        key = arg.split("=", 1)[0].split("@")[0].replace("/", ".").split(".")[0]
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the keys are {', '.join(sorted(known))}"
        print(f"fruitnet: unknown key {key!r} in {arg!r}: {hint}", file=sys.stderr)
        raise SystemExit(1)


def hydra_choices() -> tuple[dict[str, Any], list[str]]:
    """Chosen group options and command-line overrides (empty when composed without Hydra's app)."""
    if not HydraConfig.initialized():
        return {}, []
    hydra_cfg = HydraConfig.get()
    return dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group; null entries are dropped."""
    objects: list[Any] = []
    if not group:
        return objects
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"config entry '{name}' needs a _target_ (got {node!r})")
        objects.append(hydra.utils.instantiate(node))
    return objects


def run_entry(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point, its output kept to what is about the run (`fruitnet.console`).

    A failure prints one readable line, ``fruitnet: <what is wrong>``, and exits with status 1,
    no traceback: a bad value or a missing file is the user's to fix, not a crash. With
    ``HYDRA_FULL_ERROR=1``, and in a multirun (where Hydra records each failed job and a sweep
    goes on), the exception propagates after that line and Hydra prints the traceback.
    """
    from fruitnet.console import quiet_third_party

    quiet_third_party()
    try:
        return run(cfg)
    except SystemExit as stop:
        if not _is_sigterm(stop):
            raise
        # Lightning stops on SIGTERM with SystemExit() = status 0 once the exception checkpoint is
        # saved; a run that did not finish must not look successful to a shell or a scheduler.
        log.error(
            "fruitnet: stopped by SIGTERM before the run finished; resume with ckpt_path=last "
            "hydra.run.dir=%s",
            cfg.get("paths", {}).get("output_dir"),
        )
        raise SystemExit(128 + signal.SIGTERM) from stop
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or is_multirun():
            log.error("fruitnet: %s", err)
            raise
        log.error("fruitnet: %s", error_line(err))
        raise SystemExit(1) from None


def _is_sigterm(stop: SystemExit) -> bool:
    """Lightning's SIGTERMException. Looked up only once Lightning is loaded: ``--help`` and
    ``--cfg job`` answer without loading it (5 s on a 2-core CPU)."""
    if "lightning.pytorch" not in sys.modules:
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(stop, SIGTERMException)


def check_config(cfg: DictConfig) -> None:
    """Reject switches that Hydra accepts as strings but Python would read as true (norm=maybe),
    and values torch would refuse only at fit start. Needs no torch: a command checks its config
    before loading it."""
    for key in ("norm", "train", "test"):
        value = cfg.get(key)
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r} (e.g. {key}=true)")
    if cfg.get("malloc", "auto") not in MALLOC_MODES:
        raise ValueError(f"malloc must be one of {MALLOC_MODES}, got {cfg.malloc!r}")
    _check_trainer(cfg.get("trainer"))
    # (fruitnet.search has no optimizer group: its two optimizers are search.* keys)
    lr = cfg.optimizer.get("lr") if cfg.get("optimizer") is not None else 0.0
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 <= lr < float("inf"):
        raise ValueError(f"optimizer.lr must be a number >= 0, got {lr!r} (e.g. optimizer.lr=1e-3)")


# trainer.<key>: the smallest integer Lightning accepts (None is always fine), and what it means.
_TRAINER_COUNTS = {
    "max_epochs": (-1, " (-1: no limit)"),
    "max_steps": (-1, " (-1: no limit)"),
    "min_epochs": (0, ""),
    "min_steps": (0, ""),
    "log_every_n_steps": (0, ""),
    "check_val_every_n_epoch": (1, ""),
    "accumulate_grad_batches": (1, ""),
}


def _check_trainer(trainer: DictConfig | None) -> None:
    """The trainer's counts, checked before any data is read; Lightning would stop at fit start
    with a `MisconfigurationException:` line instead."""
    if not trainer:
        return
    for key, (least, meaning) in _TRAINER_COUNTS.items():
        value = trainer.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(
                f"trainer.{key} must be an integer >= {least}{meaning}, got {value!r} "
                f"(e.g. trainer.{key}={max(least, 1)})"
            )
    for split in ("train", "val", "test", "predict"):
        key = f"limit_{split}_batches"
        value = trainer.get(key)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not whole and not (isinstance(value, float) and 0.0 <= value <= 1.0):
            raise ValueError(
                f"trainer.{key} must be a number of batches (an integer >= 0) or a fraction of "
                f"them (0.0 to 1.0), got {value!r}"
            )


# Errors that are about the user's input (a value, a file, the data): their message is the line.
_USER_ERRORS = (ValueError, OSError, LookupError, RuntimeError)


def error_line(err: BaseException) -> str:
    """The message of ``err``; the exception's type leads where the message alone would not say
    what went wrong (``KeyError: 'x'``), with a pointer to the traceback for unexpected errors."""
    cause = err.__cause__
    if isinstance(err, InstantiationException) and cause is not None:
        # "Error in call to target ...: ValueError(...)": the constructor's own message says it
        return error_line(cause)
    message = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) or not isinstance(err, _USER_ERRORS):
        message = f"{type(err).__name__}: {message}"
    if not isinstance(err, _USER_ERRORS):
        message += " (HYDRA_FULL_ERROR=1 shows the traceback)"
    return message
