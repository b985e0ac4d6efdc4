"""The study's protocol as runs (`PROTOCOLS`), each run's stable folder and state, the command
that trains or resumes it, and the plan printed before training: what each run needs (weights,
data) and how long it should take on this device, from a few timed steps.

`fruitnet.study` (the entry point) drives these; each run is its own ``python -m fruitnet.train``
process, so a crash costs that process only and the run resumes from its own last.ckpt.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruitnet.checkpoints import newest_checkpoint

# The study's published numbers (Fruits-360, 131 classes): test accuracy % and weights file MB.
STUDY_CLASSES = 131
CNN_REF = {"acc": 94.85, "mb": 11.68}
RESNET_REF = {"acc": 97.02, "mb": 97.75}
PROXYLESS_RAW_REF = {"acc": 98.24, "mb": 27.39}
PROXYLESS_NORM_REF = {"acc": 99.22, "mb": 27.39}
# Kermany et al. 2018 (Cell 172(5)): pretrained InceptionV3 on the same 624 chest test images
KERMANY_REF = {"acc": 92.8, "sensitivity": 93.2, "specificity": 90.1}
KERMANY_SOURCE = "Kermany et al. 2018, Cell (InceptionV3, 624 test images)"


@dataclass(frozen=True)
class StudyRun:
    """One run of the protocol: its experiment config, the run it continues (stage 2), and the
    study's number it is compared with (None: an intermediate stage)."""

    name: str
    after: str | None = None
    reference: dict[str, float] | None = None
    source: str = "the study (Fruits-360, 131 classes)"
    extra: tuple[str, ...] = field(default_factory=tuple)


PROTOCOLS: dict[str, tuple[StudyRun, ...]] = {
    "fruits": (
        StudyRun("study_cnn_stage1"),
        StudyRun("study_cnn_stage2", after="study_cnn_stage1", reference=CNN_REF),
        StudyRun("study_resnet50", reference=RESNET_REF),
        StudyRun("study_proxyless_raw", reference=PROXYLESS_RAW_REF),
        StudyRun("study_proxyless_norm", reference=PROXYLESS_NORM_REF),
        StudyRun("best_cnn", reference=CNN_REF),
        StudyRun("best_resnet50", reference=RESNET_REF),
        StudyRun("best_proxyless", reference=PROXYLESS_NORM_REF),
    ),
    "chest_xray": tuple(
        StudyRun(name, after=after, reference=None if name.endswith("stage1") else KERMANY_REF,
                 source=KERMANY_SOURCE)
        for name, after in (
            ("chest_cnn_stage1", None),
            ("chest_cnn_stage2", "chest_cnn_stage1"),
            ("chest_resnet50", None),
            ("chest_proxyless_raw", None),
            ("chest_proxyless_norm", None),
        )
    ),
}  # fmt: skip


class StudyError(ValueError):
    """A study setting the user chose does not fit (one line, naming the key)."""


def protocol(dataset: str, names: Sequence[str] | None) -> list[StudyRun]:
    """The runs of ``dataset``'s protocol, or the chosen subset (``study.runs``), in protocol
    order; a stage 2 without its stage 1 is refused unless stage 1 has already finished."""
    if dataset not in PROTOCOLS:
        raise StudyError(f"data={dataset}: the study has a protocol for {sorted(PROTOCOLS)} only")
    runs = list(PROTOCOLS[dataset])
    if not names:
        return runs
    known = {r.name for r in runs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StudyError(f"study.runs: {unknown} not in the {dataset} protocol {sorted(known)}")
    return [r for r in runs if r.name in set(names)]


def run_dir(root: Path, run: StudyRun) -> Path:
    return Path(root) / run.name


def state(folder: Path) -> str:
    """done (results.json written), partial (a checkpoint to resume) or todo."""
    if (folder / "results.json").is_file():
        return "done"
    if newest_checkpoint(folder / "checkpoints") is not None:
        return "partial"
    return "todo"


def resume_point(folder: Path) -> Path | None:
    """The checkpoint a rerun continues from: last.ckpt (the newest training state), else the
    newest checkpoint of the folder."""
    last = folder / "checkpoints" / "last.ckpt"
    return last if last.is_file() else newest_checkpoint(folder / "checkpoints")


def train_overrides(
    run: StudyRun, root: Path, common: Sequence[str], epochs: int | None, every_n_steps: int | None
) -> list[str]:
    """The overrides of ``python -m fruitnet.train`` for ``run``: its experiment, its stable
    folder, the checkpoint it continues (its own, else stage 1's; explicit paths, never
    ``last``, which could pick a sibling run), and the user's common overrides."""
    folder = run_dir(root, run)
    # one tracker experiment (logger=mlflow|wandb) for the whole study, a run per study run
    group = f"tracking_group=study/{root.name}"
    args = [f"experiment={run.name}", f"hydra.run.dir={folder}", group, *run.extra, *common]
    own = resume_point(folder)
    if own is not None:
        args.append(f"ckpt_path={own}")
    elif run.after is not None:
        args.append(f"ckpt_path={run_dir(root, StudyRun(run.after)) / 'checkpoints' / 'last.ckpt'}")
    else:
        args.append("ckpt_path=null")
    if epochs is not None:
        # Stage 2's max_epochs is absolute: it continues stage 1's count
        args.append(f"trainer.max_epochs={2 * epochs if run.after else epochs}")
    if every_n_steps:
        args.append(f"callbacks.model_checkpoint.every_n_train_steps={int(every_n_steps)}")
    return args


def train_command(overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "fruitnet.train", *overrides]


def weights_problem(cfg: Any) -> str | None:
    """Why ``cfg``'s pretrained weights are missing, or None (not needed, a file given, cached,
    or downloadable). Checks the cache only: the plan never downloads."""
    from fruitnet.models.registry import get_model_spec
    from fruitnet.settings import OFFLINE_ENV, is_offline

    model = cfg.model
    if model.get("pretrained") is not True or model.get("weights"):
        return None
    spec = get_model_spec(model.name)
    kwargs = dict(model.get("kwargs") or {})
    source = spec.weights_source(**kwargs) if spec.weights_source is not None else None
    if source is None or source.cache_path().is_file() or not is_offline():
        return None
    return (
        f"{model.name}: no cached {source.cache_path()} and {OFFLINE_ENV} is set; put the file "
        f"there, or pass model.weights=PATH (or model.pretrained=auto for random init)"
    )


def startup_seconds() -> float:
    """Seconds a fresh ``python -m fruitnet.train`` process spends importing before it trains."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import fruitnet.train, fruitnet.assemble, lightning"], check=True
    )
    return time.perf_counter() - started


def _limited(n_batches: int, limit: Any) -> int:
    if limit is None:
        return n_batches
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, math.floor(n_batches * limit))
    return min(n_batches, int(limit))


def estimate_seconds(cfg: Any, startup_s: float, start_epoch: int = 0) -> dict[str, Any]:
    """Time estimate of one run of config ``cfg`` on this device: a few timed training and
    evaluation steps of the real network on batches of the run's shape, times the run's steps,
    plus the data setup (timed here) and the process start-up. ``start_epoch``: the epochs a
    stage 2 inherits from stage 1."""
    import torch

    from fruitnet import assemble
    from fruitnet.runtime import configure_malloc, device_name, resolve_precision, uses_cuda
    from fruitnet.timing import median_ms

    started = time.perf_counter()
    dm = assemble.build_datamodule(cfg.data)
    setup_s = time.perf_counter() - started
    cfg.model.pretrained = False  # speed does not depend on the initial weights
    cfg.model.weights = None
    module = assemble.build_module(cfg, dm)
    accelerator = cfg.trainer.get("accelerator", "auto")
    # As the run will: the allocator setting alone moves a CPU step 1.5x (fruitnet.runtime)
    configure_malloc(cfg.get("malloc", "auto"), accelerator)
    device = torch.device("cuda" if uses_cuda(accelerator) else "cpu")
    precision = str(resolve_precision(cfg.trainer.get("precision"), accelerator))
    net = module.net.to(device).train()
    batch = int(cfg.data.batch_size)
    layout = torch.channels_last if module.memory_format == torch.channels_last else None
    net = net.to(memory_format=layout) if layout else net
    x = torch.rand(batch, 3, dm.input_size, dm.input_size, device=device)
    x = x.contiguous(memory_format=layout) if layout else x
    y = torch.randint(0, dm.num_classes, (batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    mixed = "mixed" in precision or "true" in precision

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=mixed):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=mixed):
            net(x)

    step_s = median_ms(step, device=device, warmup=2, repeats=3) / 1000
    infer_s = median_ms(infer, device=device, warmup=1, repeats=3) / 1000
    trainer = cfg.trainer
    train_steps = _limited(math.ceil(dm.num_train / batch), trainer.get("limit_train_batches"))
    val_steps = _limited(math.ceil(dm.num_val / batch), trainer.get("limit_val_batches"))
    test_steps = _limited(math.ceil(dm.num_test / batch), trainer.get("limit_test_batches"))
    epochs = int(trainer.max_epochs) - start_epoch
    total = (
        startup_s
        + setup_s
        + epochs * (train_steps * step_s + val_steps * infer_s)
        + (test_steps * infer_s if cfg.get("test", True) else 0.0)
    )
    return {
        "seconds": total,
        "step_s": step_s,
        "epochs": epochs,
        "steps_per_epoch": train_steps,
        "device": device_name(accelerator),
        "precision": precision,
        "images": (dm.num_train, dm.num_val, dm.num_test),
        "classes": dm.num_classes,
    }


def release_device() -> None:
    """Hand back the GPU memory the timed steps cached: the runs train in other processes."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
