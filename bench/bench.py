"""fruitnet speed benchmark: fruitnet.train against the study's plain fp32 PyTorch loop.

    python bench/bench.py                        # full run -> bench/RESULTS.md (make bench)
    python bench/bench.py --quick                # tiny settings: checks the script end to end
    python bench/bench.py --device cpu --out /tmp/cpu.md

On one machine, in one run, it measures:
0. end to end (the headline): the default `python -m fruitnet.train model=<m> data=fruits ...`
   command from the JPEG files against the study's script (`bench/study_loop.py`: ImageFolder +
   PIL, 2 workers, fp32, a plain loop with validation), each in a fresh process, interleaved
   rounds: wall time per epoch (validation and checkpoints included) and time to first step;
1. train-step images/s per model on pre-made random tensors (so it times the step, not data):
   (a) the study's plain fp32 loop and network (basic CNN: conv, ReLU, pool), contiguous tensors;
   (b) the same loop with fruitnet's network and settings (channels_last, the autocast dtype that
       `trainer.precision=auto` picks on this machine, fruitnet's Adam config: fused);
   (c) fruitnet.train itself: the Hydra-composed ClassifierModule, callbacks, logger and Trainer,
       fed uint8 batches through fruitnet's own on_after_batch_transfer;
2. data-loading images/s: torchvision ImageFolder + PIL + ToTensor (the study) against
   fruitnet's decoded-image cache (data.cache=true, cache already built, second epoch);
3. accuracy: the basic CNN trained by fruitnet.train in fp32 and in bf16, same seed and epochs.
Then it writes a markdown table with PASS/MISS per target (nothing is asserted). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from fruitnet.config import CONFIG_MODULE, CONFIG_PATH, instantiate_group
from fruitnet.data import (
    BatchTransform,
    ImageFolderDataModule,
    ImageListDataset,
    auto_num_workers,
    preprocess_spec,
)
from fruitnet.models import create_model
from fruitnet.runtime import (
    configure_malloc,
    cpu_flags,
    cpu_has_fast_bf16,
    cpu_name,
    resolve_precision,
)

# The study's network is defined once, in the study's script that the end-to-end table runs
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_loop import study_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASET = "fruits-360-small"
NUM_CLASSES = 95  # fruits-360-small (release 2019.01.16.0)
FULL_FRUITS_TRAIN = 48_905  # Training images of that full release (for the 40-epoch estimate)
STUDY_EPOCHS = 40
SEED = 0

# Step-benchmark cases: (model, input size, norm, batch size on the CPU, batch size on a GPU).
# The study fed every model 100x100 with norm=false (and 224 with norm=true); the CPU batch sizes
# keep an fp32 step of the big models to a few seconds on 2 cores.
CASES = [
    ("cnn", 100, False, 128, 128),
    ("proxyless", 100, False, 64, 128),
    ("resnet50", 100, False, 32, 128),
    ("proxyless", 224, True, 32, 128),
]
QUICK_BATCH = {"cnn": 16, "proxyless": 8, "resnet50": 8}

# End-to-end cases: (model, batch, training batches per epoch (None = the whole split), extra
# overrides of the fruitnet command, target ratio or None). The study trained the basic CNN at
# batch 1024 (stage 1); the big models run a few batches per epoch to keep `make bench` short.
# The 32-true row is the default command on a CPU without BF16 (precision=auto picks fp32 there),
# against the same study runs as the cnn 128 row.
E2E_CASES = [
    ("cnn", 128, None, [], 3.0),
    ("cnn", 1024, None, [], 3.0),
    ("cnn", 128, None, ["trainer.precision=32-true"], None),
    ("proxyless", 64, 6, [], 2.0),
    ("resnet50", 32, 6, [], 2.0),
]

TARGETS = {
    "first step s": 10.0,
    "c/a cnn": 4.0,
    "c/a big": 2.0,
    "c/b": 0.95,
    "cache": 10.0,
    "acc_points": 1.0,
}

# ----------------------------------------------------------------------------- helpers


def find_data(arg: str | None) -> Path:
    """--data, else $FRUITNET_SHARED_DATA/fruits-360-small, else <repo>/../shared/data/..."""
    candidates = [Path(arg)] if arg else []
    env = os.environ.get("FRUITNET_SHARED_DATA")
    if env:
        candidates.append(Path(env) / DATASET)
    candidates.append(REPO.parent / "shared" / "data" / DATASET)
    for c in candidates:
        if (c / "Training").is_dir() and (c / "Test").is_dir():
            return c
    tried = "\n  ".join(str(c) for c in candidates)
    sys.exit(
        f"bench: {DATASET} not found (a folder with Training/ and Test/). Tried:\n  {tried}\n"
        "Pass --data PATH or set FRUITNET_SHARED_DATA to the folder that holds it."
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def steps_for(rate: float, batch: int, seconds: float, lo: int, hi: int) -> int:
    """Steps that take about `seconds` at `rate` images/s, clamped to [lo, hi]."""
    if seconds <= 0 or rate <= 0:
        return lo
    return max(lo, min(hi, math.ceil(seconds * rate / batch)))


def random_pool(batch: int, size: int, pool: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pool` batches of random uint8 images and labels (the same pixels for a, b and c)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (pool * batch, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (pool * batch,), generator=g)
    return images, labels


def compose_cfg(overrides: list[str], run_dir: Path, cache_root: Path):
    """`train.yaml` composed like `python -m fruitnet.train <overrides>`, paths into run_dir."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    if CONFIG_PATH.startswith("pkg://"):
        init = initialize_config_module(CONFIG_MODULE, version_base="1.3")
    else:
        init = initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3")
    with init:
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(run_dir)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir / "logs")
        cfg.paths.cache_dir = str(cache_root)
    return cfg


def device_overrides(device: torch.device) -> list[str]:
    # One device either way: `devices=auto` would start DDP on a multi-GPU machine.
    return (
        ["trainer=cpu"]
        if device.type == "cpu"
        else ["trainer.accelerator=gpu", "trainer.devices=1"]
    )


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "fruitnet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Expected here: few DataLoader workers on 2 cores, no val loop, short epochs.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    warnings.filterwarnings("ignore", message=".*is larger than the.*split.*")
    # Lightning's note whenever OnExceptionCheckpoint is present and there is nothing to resume.
    warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


# ----------------------------------------------------------------------------- end to end


def _timeline(t: dict, t0: float, wall: float) -> dict:
    """Per-epoch wall times from a clock.EpochClock / study_loop.py timeline.

    An epoch runs from its start to the next epoch's start (everything between epochs included:
    validation, checkpoints, loader restarts), the last one to its end (after validation and its
    checkpoint). The steady epoch time is the median of the epochs after the first.
    """
    ep = t["epochs"]
    walls = [
        (ep[k + 1]["start"] if k + 1 < len(ep) else ep[k]["end"]) - ep[k]["start"]
        for k in range(len(ep))
    ]
    steady = walls[1:] or walls
    epoch_s = statistics.median(steady)
    val_s = statistics.median(
        [e["end"] - e["train_end"] for e in (ep[1:] or ep) if "train_end" in e and "end" in e]
    )
    images = ep[-1]["images"]
    return {
        "first_step_s": t["first_step"] - t0,
        "fit_start_s": t.get("fit_start", t["first_step"]) - t0,
        "epoch1_s": walls[0],
        "epoch_s": epoch_s,
        "val_s": val_s,
        "images": images,
        "images_per_s": images / epoch_s,
        "wall_s": wall,
    }


def _run_timed(cmd: list[str], out: Path, env: dict, what: str) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(
            f"bench end-to-end: {what} failed (exit {proc.returncode}):\n"
            f"{shlex.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return _timeline(json.loads(out.read_text()), t0, wall)


def e2e_env(args, cache: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "bench"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["FRUITNET_CACHE"] = str(cache)  # a fresh cache per run: it is built inside the timing
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def e2e_study(args, root, device, name, batch, limit, epochs, work: Path) -> dict:
    out = work / f"study-{uuid.uuid4().hex[:8]}.json"
    cmd = [
        sys.executable, str(REPO / "bench" / "study_loop.py"), f"--root={root}",
        f"--model={name}", f"--batch={batch}", f"--epochs={epochs}", f"--out={out}",
        f"--device={device.type}", "--workers=2",
    ]  # fmt: skip
    if limit:
        cmd.append(f"--limit-batches={limit}")
    if args.quick:
        cmd.append("--limit-val-batches=2")
    return _run_timed(cmd, out, e2e_env(args, work / "unused-cache"), f"study loop {name}")


def e2e_command(root, device, name, batch, limit, epochs, extra, quick) -> list[str]:
    """The default fruitnet command for this case (what a user types), as an argument list."""
    cmd = ["python", "-m", "fruitnet.train", f"model={name}", "data=fruits", f"data.root={root}",
           f"data.batch_size={batch}", f"trainer.max_epochs={epochs}"]  # fmt: skip
    if name != "cnn":
        cmd.append("model.pretrained=false")  # offline machine; the speed does not depend on it
    if limit:
        cmd.append(f"trainer.limit_train_batches={limit}")
    if quick:
        cmd.append("trainer.limit_val_batches=2")
    if device.type == "cpu" and torch.cuda.is_available():
        cmd.append("trainer=cpu")
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        cmd.append("trainer.devices=1")  # devices=auto would start DDP over every GPU
    return cmd + list(extra)


def e2e_fruitnet(args, root, device, name, batch, limit, epochs, extra, work: Path) -> dict:
    run = work / f"fruitnet-{uuid.uuid4().hex[:8]}"
    out = run / "clock.json"
    cmd = e2e_command(root, device, name, batch, limit, epochs, extra, args.quick)
    cmd[0] = sys.executable
    cmd += [
        "test=false",  # after fit, outside the timing; saves bench time
        f"hydra.run.dir={run}",
        "+callbacks.bench_clock._target_=clock.EpochClock",
        f"+callbacks.bench_clock.out={out}",
    ]
    result = _run_timed(cmd, out, e2e_env(args, run / "cache"), f"fruitnet.train {name}")
    shutil.rmtree(run, ignore_errors=True)  # checkpoints and the decoded cache
    return result


def measure_e2e(args, root: Path, device: torch.device, work: Path) -> list[dict]:
    """The default command against the study's script, end to end from the JPEG files, each run
    in a fresh process, the two interleaved per case and round; medians over rounds."""
    epochs = args.e2e_epochs
    cases = [c for c in E2E_CASES if not args.models or c[0] in args.models]
    if args.quick:  # checks the script: one case, two tiny runs
        cases = cases[:1]
    if device.type == "cuda":  # one batch size per model on a GPU: the study's
        cases = [(n, 1024 if n == "cnn" else 128, None, x, t) for n, _, _, x, t in cases]
        cases = [c for i, c in enumerate(cases) if c[:4] not in [d[:4] for d in cases[:i]]]
    rows = {i: {"study": [], "fruitnet": []} for i in range(len(cases))}
    study_of: dict[tuple, int] = {}  # cases with the same study run share it
    for round_ in range(1, args.e2e_rounds + 1):
        for i, (name, batch, limit, extra, _) in enumerate(cases):
            if args.quick:
                batch, limit = QUICK_BATCH[name], 2
            tag = f"[e2e] {name} b{batch}{' ' + ' '.join(extra) if extra else ''} round {round_}"
            key = (name, batch, limit)
            if key not in study_of or study_of[key] == i:
                study_of[key] = i
                m = e2e_study(args, root, device, name, batch, limit, epochs, work)
                rows[i]["study"].append(m)
                print(f"{tag} study loop: {_e2e_str(m)}", flush=True)
            m = e2e_fruitnet(args, root, device, name, batch, limit, epochs, extra, work)
            rows[i]["fruitnet"].append(m)
            print(f"{tag} fruitnet.train: {_e2e_str(m)}", flush=True)
    out = []
    for i, (name, batch, limit, extra, target) in enumerate(cases):
        if args.quick:
            batch, limit = QUICK_BATCH[name], 2
        study = rows[study_of[(name, batch, limit)]]["study"]
        ours = rows[i]["fruitnet"]
        med = {side: {k: statistics.median(m[k] for m in runs) for k in runs[0]}
               for side, runs in (("study", study), ("fruitnet", ours))}  # fmt: skip
        precision = next((x.split("=", 1)[1] for x in extra if "precision=" in x), None)
        out.append({
            "model": name, "batch": batch, "limit": limit, "extra": extra, "target": target,
            "precision": precision or str(resolve_precision("auto", _acc(device))),
            "study": med["study"], "fruitnet": med["fruitnet"],
            "ratio": med["fruitnet"]["images_per_s"] / med["study"]["images_per_s"],
            "round_ratios": [f["images_per_s"] / s["images_per_s"]
                             for f, s in zip(ours, study, strict=False)],
            "command": e2e_command("<fruits-360-small>", device, name, batch, limit, epochs,
                                   extra, args.quick),
        })  # fmt: skip
    return out


def _acc(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


def _e2e_str(m: dict) -> str:
    return (
        f"fit start {m['fit_start_s']:5.1f} s, first step {m['first_step_s']:5.1f} s, epoch 1 {m['epoch1_s']:5.1f} s, "
        f"epoch {m['epoch_s']:5.1f} s (val {m['val_s']:.1f} s), {m['images_per_s']:6.1f} img/s, "
        f"process {m['wall_s']:.0f} s"
    )


# ----------------------------------------------------------------------------- (a), (b): plain loop


def plain_loop(
    name: str,
    size: int,
    norm: bool,
    batch: int,
    device: torch.device,
    *,
    study: bool,
    channels_last: bool,
    dtype: torch.dtype | None,
    optimizer_kwargs: dict,
    warmup: int,
    seconds: float,
    min_steps: int,
    max_steps: int,
) -> dict:
    """The study's training loop on pre-made float batches; images/s over the steps after warm-up.

    ``study``: the study's network (layer order) instead of fruitnet's; ``optimizer_kwargs``
    go to Adam (fruitnet's config adds ``fused``).
    """
    torch.manual_seed(SEED)
    if study:
        model = study_model(name, size, NUM_CLASSES).to(device)
    else:
        model = create_model(name, num_classes=NUM_CLASSES, input_size=size).to(device)
    images, labels = random_pool(batch, size, pool=2, seed=SEED)
    spec = preprocess_spec(norm, size)
    x_all = BatchTransform(spec["mean"], spec["std"])(images).to(device)  # float, normalised
    batches = list(zip(x_all.split(batch), labels.to(device).split(batch), strict=True))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), **optimizer_kwargs)
    criterion = nn.CrossEntropyLoss()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        x = x.contiguous(memory_format=fmt)
        optimizer.zero_grad()
        with autocast:
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    model.train()
    warm = []
    for i in range(warmup):
        sync(device)
        t0 = time.perf_counter()
        step(i)
        sync(device)
        warm.append(time.perf_counter() - t0)
    steps = steps_for(batch / min(warm), batch, seconds, min_steps, max_steps)
    per_step = []
    sync(device)
    t0 = last = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
        if device.type == "cpu":  # free on the CPU; a GPU would stall on a per-step sync
            now = time.perf_counter()
            per_step.append(now - last)
            last = now
    sync(device)
    return result(steps, batch, time.perf_counter() - t0, per_step)


def result(steps: int, batch: int, seconds: float, per_step: list[float]) -> dict:
    """images/s over the whole window, and over the median step (CPU only: robust to spikes)."""
    median = statistics.median(per_step) if per_step else None
    return {
        "images_per_s": steps * batch / seconds,
        "median_images_per_s": batch / median if median else None,
        "steps": steps,
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------- (c): fruitnet.train


class InMemoryDataModule(ImageFolderDataModule):
    """ImageFolderDataModule with the files swapped for in-memory uint8 tensors.

    Its loaders are the real ones (`ImageFolderDataModule._loader`: epoch sampler, batched fetch,
    `on_after_batch_transfer` with the BatchTransform: uint8 -> float, normalisation), over
    `ImageListDataset.from_tensors`, as with data.cache=true or data.on_device=true: only JPEG
    decoding is left out.
    """

    def __init__(self, images, labels, *, steps: int, batch_size: int, norm: bool, size: int, **kw):
        super().__init__(root=None, norm=norm, image_size=size, batch_size=batch_size, **kw)
        # Enough images for `steps` batches in one epoch: the pool repeated.
        n = steps * batch_size
        reps = -(-n // len(labels))
        self.images = images.repeat(reps, 1, 1, 1)[:n]
        self.labels = labels.repeat(reps)[:n].tolist()

    def setup(self, stage: str | None = None) -> None:
        if self.batch_transform is not None:
            return
        spec = preprocess_spec(self.norm, self.image_size)
        self.num_classes = NUM_CLASSES
        self.class_names = [f"class_{i}" for i in range(NUM_CLASSES)]
        self.input_size = spec["size"]
        self.task = "multiclass"
        self.class_weights = None
        self.preprocess = spec
        self.layout = "memory"
        self.train_set = ImageListDataset.from_tensors(self.images, self.labels)
        self.val_set = ImageListDataset([], [], None)
        self.test_set = ImageListDataset([], [], None)
        self.batch_transform = BatchTransform(
            spec["mean"], spec["std"], augment=self.augment, channels_last=self.channels_last
        )


class StepTimer(L.Callback):
    """Wall time from the end of the last warm-up batch to the end of the last batch.

    Everything Lightning does between those points (fetch, transfer, batch transform, step,
    logging, progress bar, callbacks) is in the window. On a GPU it syncs only at those two
    batches; on the CPU it also keeps every step's time (for the median).
    """

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = self.warmup + self.steps - 1
        if batch_idx < self.warmup - 1 or batch_idx > last:
            return
        cpu = pl_module.device.type == "cpu"
        if cpu or batch_idx in (self.warmup - 1, last):
            sync(pl_module.device)
            self.marks.append(time.perf_counter())

    def result(self, batch: int) -> dict:
        if len(self.marks) < 2:
            raise RuntimeError(f"the trainer stopped before {self.warmup + self.steps} batches")
        per_step = [b - a for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]
        cpu_steps = per_step if len(per_step) == self.steps else []
        return result(self.steps, batch, self.marks[-1] - self.marks[0], cpu_steps)


def lightning_loop(
    name: str,
    size: int,
    norm: bool,
    batch: int,
    device: torch.device,
    *,
    steps: int,
    warmup: int,
    run_dir: Path,
    cache_root: Path,
) -> dict:
    """fruitnet.train's module, callbacks, logger and trainer (its defaults) on in-memory data."""
    from omegaconf import open_dict

    from fruitnet.train import build_module, build_trainer

    overrides = [
        f"model={name}",
        f"norm={str(norm).lower()}",
        "model.pretrained=false",  # random init: same speed, no download
        f"data.batch_size={batch}",
        # Fit-start only, outside the timed window: off to save bench time and console noise.
        "callbacks.model_size.latency=false",
        "callbacks.model_summary=null",
    ]
    overrides += device_overrides(device)
    cfg = compose_cfg(overrides, run_dir, cache_root)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = warmup + steps
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_model_summary = False

    L.seed_everything(SEED, verbose=False)
    images, labels = random_pool(batch, size, pool=2, seed=SEED)
    dm = InMemoryDataModule(
        images,
        labels,
        steps=warmup + steps,
        batch_size=batch,
        norm=norm,
        size=size,
        channels_last=cfg.data.channels_last,
    )
    dm.setup("fit")
    module = build_module(cfg, dm)
    timer = StepTimer(warmup, steps)
    callbacks = [*instantiate_group(cfg.get("callbacks")), timer]
    trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.get("logger")))
    trainer.fit(module, datamodule=dm)
    return {**timer.result(batch), "precision": str(trainer.precision)}


def run_variant(args, spec: dict) -> dict:
    """One measurement in a fresh Python process (`--variant`), so what one variant leaves in
    the process (glibc's malloc state, fruitnet's `malloc=reuse`, oneDNN caches, warmed pages)
    cannot speed up or slow down the next one: each starts like a user's own run."""
    out = Path(spec["work"]) / f"variant-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", json.dumps(spec)]
    cmd += ["--variant-out", str(out)]
    if args.threads:
        cmd.append(f"--threads={args.threads}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench variant {spec['variant']} of {spec['name']} failed "
            f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return json.loads(out.read_text())


def variant_main(spec: dict, out: Path) -> None:
    """`--variant SPEC`: run one of (a), (b), (c) in this process and write its result to out."""
    quiet_lightning()
    device = torch.device(spec["device"])
    common = {k: spec[k] for k in ("warmup",)}
    if spec["variant"] == "c":
        result = lightning_loop(
            spec["name"], spec["size"], spec["norm"], spec["batch"], device,
            steps=spec["steps"], run_dir=Path(spec["work"]) / spec["run"],
            cache_root=Path(spec["cache_root"]), **common,
        )  # fmt: skip
    else:
        fruitnet = spec["variant"] == "b"
        if fruitnet:  # fruitnet.train's build_trainer does the same for (c)
            configure_malloc("auto", "gpu" if device.type == "cuda" else "cpu")
        result = plain_loop(
            spec["name"], spec["size"], spec["norm"], spec["batch"], device,
            study=not fruitnet, channels_last=fruitnet,
            dtype=autocast_dtype(spec["precision"]) if fruitnet else None,
            optimizer_kwargs=spec["optimizer_kwargs"] if fruitnet else {"lr": 1e-3},
            seconds=spec["seconds"], min_steps=spec["min_steps"], max_steps=spec["max_steps"],
            **common,
        )  # fmt: skip
    out.write_text(json.dumps(result))


def fruitnet_optimizer_kwargs(work: Path) -> dict:
    """Adam's arguments as `conf/optimizer/adam.yaml` sets them (lr, weight decay, fused)."""
    cfg = compose_cfg(["optimizer=adam"], work / "optimizer", work / "cache")
    if cfg.optimizer._target_ != "torch.optim.Adam":
        raise RuntimeError(f"optimizer=adam composes {cfg.optimizer._target_}")
    return {k: v for k, v in cfg.optimizer.items() if not str(k).startswith("_")}


def measure_steps(args, device: torch.device, precision: str, work: Path) -> list[dict]:
    rows = []
    optimizer_kwargs = fruitnet_optimizer_kwargs(work)
    for name, size, norm, cpu_batch, gpu_batch in CASES:
        if args.models and name not in args.models:
            continue
        batch = (
            QUICK_BATCH[name] if args.quick else cpu_batch if device.type == "cpu" else gpu_batch
        )
        label = f"{name} {size}px norm={str(norm).lower()}"
        best: dict[str, dict] = {}
        rates: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        c_steps = None
        for round_ in range(1, args.rounds + 1):
            tag = f"[steps] {label} b{batch} round {round_}/{args.rounds}"
            spec = {
                "name": name, "size": size, "norm": norm, "batch": batch,
                "device": str(device), "precision": precision, "work": str(work),
                "cache_root": str(args.cache_root), "optimizer_kwargs": optimizer_kwargs,
                "warmup": args.warmup, "seconds": args.seconds, "min_steps": args.min_steps,
                "max_steps": args.max_steps,
            }  # fmt: skip
            a = run_variant(args, {**spec, "variant": "a"})
            print(f"{tag} (a) plain fp32:      {_rate(a)}", flush=True)
            b = run_variant(args, {**spec, "variant": "b"})
            print(f"{tag} (b) plain {precision}: {_rate(b)}", flush=True)
            # (c) runs about as fast as (b): size its window from (b)'s first rate.
            c_steps = c_steps or steps_for(
                b["images_per_s"], batch, args.seconds, args.min_steps, args.max_steps
            )
            c = run_variant(
                args, {**spec, "variant": "c", "steps": c_steps, "run": f"{name}-{size}-{round_}"}
            )
            print(f"{tag} (c) fruitnet.train:  {_rate(c)}", flush=True)
            for key, m in (("a", a), ("b", b), ("c", c)):
                rates[key].append(m["images_per_s"])
                if key not in best or m["images_per_s"] > best[key]["images_per_s"]:
                    best[key] = m
            gc.collect()
        a, b, c = ({**best[k], "rounds": rates[k]} for k in "abc")
        big = name != "cnn"
        rows.append(
            {
                "model": name, "size": size, "norm": norm, "batch": batch,
                "a": a, "b": b, "c": c,
                "c/a": c["images_per_s"] / a["images_per_s"],
                "c/b": c["images_per_s"] / b["images_per_s"],
                "c/b median": (
                    c["median_images_per_s"] / b["median_images_per_s"]
                    if c["median_images_per_s"] and b["median_images_per_s"]
                    else None
                ),
                "target c/a": TARGETS["c/a big" if big else "c/a cnn"],
            }
        )  # fmt: skip
        gc.collect()
    return rows


def _rate(m: dict) -> str:
    med = m["median_images_per_s"]
    median = f", median step {med:.1f} img/s" if med else ""
    return f"{m['images_per_s']:8.1f} img/s ({m['steps']} steps, {m['seconds']:.1f} s{median})"


# ----------------------------------------------------------------------------- data loading


def iterate(loader, device: torch.device, max_batches: int | None, transform=None) -> tuple:
    """(images, seconds) for one pass over `loader`, batches moved to `device` as float."""
    images = 0
    sync(device)
    t0 = time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = x.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        images += len(x)
    sync(device)
    return images, time.perf_counter() - t0


def measure_data(args, root: Path, device: torch.device) -> dict:
    """Study: ImageFolder + PIL + ToTensor; fruitnet: the decoded cache, second epoch."""
    batch = 16 if args.quick else args.data_batch
    workers = auto_num_workers() if args.workers == "auto" else int(args.workers)
    max_batches = 2 if args.quick else None

    study_set = torchvision.datasets.ImageFolder(
        root / "Training", transform=torchvision.transforms.ToTensor()
    )
    study = DataLoader(study_set, batch_size=batch, shuffle=True, num_workers=workers)
    iterate(study, device, max_batches)  # warm-up: page cache, worker start
    n, s = iterate(study, device, max_batches)
    pil = {"images": n, "seconds": s, "images_per_s": n / s}
    print(f"[data] ImageFolder + PIL + ToTensor: {pil['images_per_s']:8.0f} img/s", flush=True)

    dm = ImageFolderDataModule(
        root=root, layout="fruits", norm=False, image_size=100, batch_size=batch,
        num_workers=workers, cache=True, cache_dir=args.cache_root / "decoded",
        max_samples_per_class=2 if args.quick else None, seed=SEED,
    )  # fmt: skip
    t0 = time.perf_counter()
    dm.setup("fit")  # decodes everything once into the cache (or maps an existing one)
    setup_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    transform = dm.batch_transform.to(device)
    iterate(loader, device, max_batches, transform)  # first epoch
    n, s = iterate(loader, device, max_batches, transform)  # second epoch: what is reported
    cache = {"images": n, "seconds": s, "images_per_s": n / s, "setup_s": setup_s}
    print(f"[data] fruitnet decoded cache:       {cache['images_per_s']:8.0f} img/s", flush=True)

    # data.on_device=true: the same cached split held as one tensor on the device.
    dm.on_device = True
    t0 = time.perf_counter()
    dm.train_set.preload(device)
    preload_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    iterate(loader, device, max_batches, transform)
    n, s = iterate(loader, device, max_batches, transform)
    resident = {"images": n, "seconds": s, "images_per_s": n / s, "setup_s": preload_s}
    print(f"[data] fruitnet data.on_device=true: {resident['images_per_s']:8.0f} img/s", flush=True)
    return {
        "batch": batch, "workers": workers, "pil": pil, "cache": cache, "on_device": resident,
        "ratio": cache["images_per_s"] / pil["images_per_s"],
    }  # fmt: skip


# ----------------------------------------------------------------------------- accuracy


def measure_accuracy(args, root: Path, device: torch.device, work: Path) -> list[dict]:
    """The basic CNN through fruitnet.train.run, fp32 vs bf16, same seeds and epochs."""
    from fruitnet.train import run

    epochs = 1 if args.quick else args.epochs
    batch = 32 if args.quick else 128
    out = []
    for seed in range(SEED, SEED + args.acc_seeds):
        for precision in ("32-true", "bf16-mixed"):
            overrides = [
                "model=cnn",
                "data=fruits",
                f"data.root={root}",
                "norm=false",
                "data.cache=true",
                f"data.batch_size={batch}",
                f"trainer.max_epochs={epochs}",
                f"trainer.precision={precision}",
                f"seed={seed}",
                "callbacks.progress_bar=null",
                "callbacks.model_summary=null",
                "callbacks.model_size.latency=false",
                "++trainer.enable_progress_bar=false",
                "++trainer.enable_model_summary=false",
            ]
            if args.quick:
                overrides.append("data.max_samples_per_class=4")
            overrides += device_overrides(device)
            run_dir = work / f"acc-{precision}-{seed}"
            t0 = time.perf_counter()
            results = run(compose_cfg(overrides, run_dir, args.cache_root))
            wall = time.perf_counter() - t0
            steps_per_epoch = results["global_step"] / max(1, results["epochs"])
            val = results["val_acc"]
            row = {
                "precision": results["precision"],
                "seed": seed,
                "epochs": results["epochs"],
                "test_acc": 100.0 * results["test_acc"],
                "val_acc": 100.0 * val if val is not None else None,
                "train_images": int(steps_per_epoch * batch),
                "train_images_per_s": results["train_images_per_s"],
                "wall_s": wall,
                "batch": batch,
            }
            print(
                f"[accuracy] cnn {precision} seed {seed}: test acc {row['test_acc']:.2f} % after "
                f"{epochs} epoch(s), {row['train_images_per_s']:.0f} train img/s, {wall:.0f} s",
                flush=True,
            )
            out.append(row)
    return out


# ----------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def isa_flags() -> str:
    """AVX-512, AVX-512 BF16 and AMX as /proc/cpuinfo lists them."""
    flags = cpu_flags()
    parts = [
        ("AVX-512", "avx512f" in flags),
        ("AVX-512 BF16", "avx512_bf16" in flags),
        ("AVX-512 VNNI", "avx512_vnni" in flags),
        ("AMX", bool({"amx_bf16", "amx_tile"} & flags)),
    ]
    return ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in parts)


def machine_info(device: torch.device, precision: str) -> list[tuple[str, str]]:
    info = [
        ("CPU", f"{cpu_name()} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"),
        ("CPU ISA", isa_flags()),
        ("CPU bf16 (AVX-512 BF16 / AMX)", "yes" if cpu_has_fast_bf16() else "no"),
    ]
    if device.type == "cuda":
        info.append(("GPU", torch.cuda.get_device_name(device)))
    info += [
        ("device", str(device)),
        ('precision "auto" resolves to', precision),
        ("torch / torchvision / lightning",
         f"{torch.__version__} / {torchvision.__version__} / {L.__version__}"),
        ("python", platform.python_version()),
        ("date", datetime.datetime.now().isoformat(timespec="seconds")),
    ]  # fmt: skip
    return info


def render(args, device, precision, e2e, steps, data, acc, total_s) -> str:
    lines = ["# fruitnet benchmark", ""]
    if args.quick:
        lines += [
            "> **QUICK RUN** (`--quick`): tiny batches and 2 steps per measurement, to check the",
            "> script end to end. The numbers below mean nothing; run `make bench` for real ones.",
            "",
        ]
    cmd = shlex.join(["python", "bench/bench.py", *sys.argv[1:]])
    lines += [f"Command: `{cmd}` (total {total_s / 60:.1f} min)", ""]
    verdicts: list[tuple[str, str, str]] = []

    if e2e is not None:
        lines += render_e2e(args, device, e2e, verdicts)

    if steps is not None:
        lines += [
            "## Train step",
            "",
            "Training images/s over steady-state steps (warm-up excluded) on pre-made random "
            "tensors. (a) the study's plain fp32 loop and network (basic CNN stages conv, ReLU, "
            "pool), contiguous, Adam; (b) the same loop with fruitnet's network (pool before "
            f"ReLU), channels_last, `{precision}` and `conf/optimizer/adam.yaml` (fused Adam); "
            "(c) `fruitnet.train` (Lightning, its defaults). "
            f"Best window of {args.rounds} round(s) per variant, the variants interleaved "
            "(a, b, c, a, b, c): the machine's speed drifts between windows. "
            "Rates are steps x batch / window seconds; the last column compares median step "
            "times instead (CPU only), which ignores spikes from other load.",
            "",
            "| model | input | batch | steps a/b/c | (a) plain fp32 | (b) plain fruitnet settings "
            "| (c) fruitnet.train | c/a | target c/a | c/b | target c/b | c/b median step |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |",
        ]
        for r in steps:
            tca, tcb = r["target c/a"], TARGETS["c/b"]
            va, vb = verdict(r["c/a"], tca), verdict(r["c/b"], tcb)
            median = f"{r['c/b median']:.3f}" if r["c/b median"] is not None else "-"
            lines.append(
                f"| {r['model']} | {r['size']}px norm={str(r['norm']).lower()} | {r['batch']} "
                f"| {r['a']['steps']}/{r['b']['steps']}/{r['c']['steps']} "
                f"| {r['a']['images_per_s']:.1f} | {r['b']['images_per_s']:.1f} "
                f"| {r['c']['images_per_s']:.1f} | {r['c/a']:.2f} | >= {tca:g} {va} "
                f"| {r['c/b']:.3f} | >= {tcb:g} {vb} | {median} |"
            )
            key = f"{r['model']} {r['size']}px"
            verdicts += [(f"{key} c/a", f"{r['c/a']:.2f} (>= {tca:g})", va),
                         (f"{key} c/b", f"{r['c/b']:.3f} (>= {tcb:g})", vb)]  # fmt: skip
        lines.append("")

    if data is not None:
        t = TARGETS["cache"]
        v = verdict(data["ratio"], t)
        lines += [
            "## Data loading",
            "",
            f"Training images/s of {'2 batches' if args.quick else 'one epoch'} on `{DATASET}`, "
            f"batch {data['batch']}, "
            f"{data['workers']} workers for both, ending in a float batch on `{device}`.",
            "",
            "| path | images | seconds | images/s | ratio | target |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            f"| ImageFolder + PIL + ToTensor (study) | {data['pil']['images']} "
            f"| {data['pil']['seconds']:.2f} | {data['pil']['images_per_s']:.0f} | 1.00 | |",
            f"| fruitnet decoded cache (data.cache=true, 2nd epoch) | {data['cache']['images']} "
            f"| {data['cache']['seconds']:.2f} | {data['cache']['images_per_s']:.0f} "
            f"| {data['ratio']:.1f} | >= {t:g} {v} |",
            f"| fruitnet data.on_device=true (split held on `{device}`, 2nd epoch) "
            f"| {data['on_device']['images']} | {data['on_device']['seconds']:.2f} "
            f"| {data['on_device']['images_per_s']:.0f} "
            f"| {data['on_device']['images_per_s'] / data['pil']['images_per_s']:.1f} | |",
            "",
            f"Cache setup (scan + decode once, or map an existing cache): "
            f"{data['cache']['setup_s']:.1f} s; moving the cached split to `{device}`: "
            f"{data['on_device']['setup_s']:.2f} s.",
            "",
        ]
        verdicts.append(("decoded cache / ImageFolder+PIL", f"{data['ratio']:.1f} (>= {t:g})", v))
        cnn = next((r for r in steps or [] if r["model"] == "cnn"), None)
        if device.type == "cuda" and cnn is not None:
            model_rate = cnn["c"]["images_per_s"]
            ok = data["cache"]["images_per_s"] > model_rate
            lines += [
                f"GPU never waits for data: data path {data['cache']['images_per_s']:.0f} img/s "
                f"vs basic-CNN step {model_rate:.0f} img/s: {'PASS' if ok else 'MISS'}.",
                "",
            ]
            verdicts.append(
                ("GPU data path > CNN step", f"{data['cache']['images_per_s']:.0f} vs "
                 f"{model_rate:.0f} img/s", "PASS" if ok else "MISS")
            )  # fmt: skip

    if acc is not None:
        fp32 = [r for r in acc if r["precision"] == "32-true"]
        bf16 = [r for r in acc if r["precision"] != "32-true"]
        fp32_mean = statistics.mean(r["test_acc"] for r in fp32)
        diff = statistics.mean(r["test_acc"] for r in bf16) - fp32_mean
        t = TARGETS["acc_points"]
        v = "PASS" if abs(diff) <= t else "MISS"
        seeds = sorted({r["seed"] for r in acc})
        lines += [
            "## Accuracy",
            "",
            f"Basic CNN trained by `fruitnet.train` on `{DATASET}` (data.cache=true, batch "
            f"{acc[0]['batch']}, {acc[0]['epochs']} epochs, seeds {', '.join(map(str, seeds))}); "
            "test accuracy of the best-val checkpoint.",
            "",
            "| precision | seed | epochs | test acc % | best val acc % | train images/s | wall s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in acc:
            val = f"{r['val_acc']:.2f}" if r["val_acc"] is not None else "n/a"
            lines.append(
                f"| {r['precision']} | {r['seed']} | {r['epochs']} | {r['test_acc']:.2f} | {val} "
                f"| {r['train_images_per_s']:.0f} | {r['wall_s']:.0f} |"
            )
        mean = " (means over seeds)" if len(seeds) > 1 else ""
        lines += ["", f"bf16 - fp32 test accuracy{mean}: {diff:+.2f} points (target within "
                      f"{t:g} point): {v}."]  # fmt: skip
        if len(seeds) > 1:
            spread = max(r["test_acc"] for r in fp32) - min(r["test_acc"] for r in fp32)
            lines.append(f"Seed-to-seed spread of fp32 alone: {spread:.2f} points.")
        else:
            lines.append(
                "One seed per precision: the difference includes run-to-run noise of a model "
                "still learning; `--acc-seeds 3 --epochs 10` separates the two."
            )
        lines.append("")
        verdicts.append(("bf16 vs fp32 test accuracy", f"{diff:+.2f} points (within {t:g})", v))

        lines += schedule_estimate(steps, acc, device)

    if verdicts:
        lines += ["## Targets", "", "| target | value | result |", "| --- | --- | --- |"]
        lines += [f"| {name} | {value} | {res} |" for name, value, res in verdicts]
        lines.append("")

    if device.type != "cuda":
        lines += [
            "GPU: not measured (this run had no CUDA device); the CUDA paths of this script are "
            'unmeasured until it runs on one (bench/README.md, "GPU").',
            "",
        ]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in machine_info(device, precision)]
    lines += [
        "",
        f"Settings: {args.warmup} warm-up steps, then steps for ~{args.seconds:g} s per step "
        f"measurement ({args.min_steps} to {args.max_steps} steps); Adam lr 1e-3, "
        f"{NUM_CLASSES} classes, seed {SEED}.",
        "",
    ]
    return "\n".join(lines)


def render_e2e(args, device, e2e, verdicts) -> list[str]:
    limited = sorted({f"{r['model']} {r['limit']}" for r in e2e if r["limit"]})
    lines = [
        "## End to end: the default command from JPEG files",
        "",
        f"`python -m fruitnet.train model=<m> data=fruits data.root=<{DATASET}> "
        "data.batch_size=<b>` (every other setting its default), against the study's script "
        "(`bench/study_loop.py`: torchvision ImageFolder + PIL + ToTensor, 2 DataLoader workers, "
        "fp32, Adam, a plain loop with a validation pass per epoch), each run in a fresh process "
        f"from the JPEG files, {args.e2e_epochs} epochs, the two interleaved, median of "
        f"{args.e2e_rounds} round(s). **epoch s**: wall time of an epoch after the first "
        "(training, validation over the 380 validation images, checkpoints, everything between "
        "epochs); **img/s**: training images of that epoch / epoch s; **1st step s**: from "
        "starting the process to the end of the first training step (imports, scan, "
        "decoded-image cache build from a cold cache for fruitnet, model build, first step). "
        + (f"Training batches per epoch limited ({', '.join(limited)}) to keep the run short. "
           if limited else "")
        + "The fruitnet runs add only `test=false` and a timing callback to the command.",
        "",
        "| model | batch | precision | train images/epoch | study 1st step s | study epoch s "
        "| study img/s | fruitnet 1st step s | fruitnet epoch 1 s | fruitnet epoch s "
        "| fruitnet img/s | ratio | per round | target |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- | --- |",
    ]  # fmt: skip
    for r in e2e:
        st, fr = r["study"], r["fruitnet"]
        t = r["target"]
        v = verdict(r["ratio"], t) if t else ""
        target = f">= {t:g} {v}" if t else "(no BF16: info)"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['precision']} | {fr['images']:.0f} "
            f"| {st['first_step_s']:.1f} | {st['epoch_s']:.2f} | {st['images_per_s']:.0f} "
            f"| {fr['first_step_s']:.1f} | {fr['epoch1_s']:.2f} | {fr['epoch_s']:.2f} "
            f"| {fr['images_per_s']:.0f} | {r['ratio']:.2f} "
            f"| {' '.join(f'{x:.2f}' for x in r['round_ratios'])} | {target} |"
        )
        label = f"e2e {r['model']} b{r['batch']} {r['precision']}"
        if t:
            verdicts.append((f"{label} fruitnet / study img/s", f"{r['ratio']:.2f} (>= {t:g})", v))
    first = next((r for r in e2e if r["model"] == "cnn" and r["target"]), None)
    if first is not None:
        t = TARGETS["first step s"]
        fs = first["fruitnet"]["first_step_s"]
        v = "PASS" if fs <= t else "MISS"
        verdicts.append(
            (f"e2e cnn b{first['batch']} time to first step", f"{fs:.1f} s (<= {t:g})", v)
        )
        lines += [
            "",
            f"Time to first training step of the default basic-CNN command: {fs:.1f} s "
            f"(target <= {t:g} s): {v}.",
        ]
    lines += ["", "Commands (each with `test=false` and the timing callback added):", ""]
    lines += [f"- `{shlex.join(r['command'])}`" for r in e2e]
    return [*lines, ""]


def schedule_estimate(steps, acc, device) -> list[str]:
    """The study's 40-epoch basic-CNN schedule, training loop only, from measured rates."""
    bf16 = next(r for r in acc if r["precision"] != "32-true")
    cnn = next((r for r in steps or [] if r["model"] == "cnn"), None)
    n_here = bf16["train_images"]
    n_full = int(FULL_FRUITS_TRAIN * 0.9)  # fruitnet carves 10 % of Training for validation
    rows = [("fruitnet.train (accuracy run, bf16-mixed)", bf16["train_images_per_s"])]
    if cnn is not None:
        rows = [("study plain fp32 loop (a)", cnn["a"]["images_per_s"]),
                ("fruitnet.train (c)", cnn["c"]["images_per_s"])] + rows  # fmt: skip
    lines = [
        f"## Study schedule ({STUDY_EPOCHS} epochs, basic CNN)",
        "",
        f"Training-loop time extrapolated from measured images/s on `{device}` (validation "
        f"and test not included): {n_here} images/epoch here, {n_full} for full Fruits-360 "
        "(release 2019.01.16.0, 90 % of Training).",
        "",
        f"| loop | images/s | {STUDY_EPOCHS} epochs here | {STUDY_EPOCHS} epochs full Fruits-360 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, rate in rows:
        if not rate:
            continue
        lines.append(
            f"| {name} | {rate:.0f} | {_hms(STUDY_EPOCHS * n_here / rate)} "
            f"| {_hms(STUDY_EPOCHS * n_full / rate)} |"
        )
    return [*lines, ""]


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# ----------------------------------------------------------------------------- main


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: one variant
    p.add_argument("--variant-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--data", default=None, help=f"the {DATASET} folder (default: shared data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--models", nargs="*", default=None, help="subset of cnn proxyless resnet50")
    p.add_argument("--only", nargs="*", choices=["e2e", "steps", "data", "accuracy"], default=None)
    p.add_argument("--e2e-epochs", type=int, default=2, help="epochs of each end-to-end run")
    p.add_argument(
        "--e2e-rounds",
        type=int,
        default=3,
        help="end-to-end rounds (study loop and fruitnet.train interleaved); medians are kept",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="target seconds per measurement")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps, not timed")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of (a), (b), (c) per model, interleaved; the best window of each is kept "
        "(a shared machine's speed drifts by 10-20 %% between windows)",
    )
    p.add_argument("--min-steps", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8, help="epochs of each accuracy run")
    p.add_argument("--acc-seeds", type=int, default=1, help="accuracy runs per precision")
    p.add_argument("--data-batch", type=int, default=128)
    p.add_argument("--workers", default="auto", help='DataLoader workers for both paths ("auto")')
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's, one per core); 1 on a busy machine, "
        "where OpenMP threads that wait on each other slow every step down many times",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="fruitnet cache root (default: $FRUITNET_CACHE or <repo>/.cache/fruitnet, "
        "the same as fruitnet.train)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.min_steps, args.rounds = 0.0, 1, 2, 1
        args.e2e_rounds = 1
    env_cache = os.environ.get("FRUITNET_CACHE")
    args.cache_root = args.cache_dir or (Path(env_cache) if env_cache else REPO / ".cache/fruitnet")
    return args


def main(argv=None) -> None:
    args = get_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        variant_main(json.loads(args.variant), args.variant_out)
        return
    started = time.perf_counter()
    root = find_data(args.data)
    want = set(args.only or ["e2e", "steps", "data", "accuracy"])
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    precision = str(resolve_precision("auto", "gpu" if device.type == "cuda" else "cpu"))
    quiet_lightning()
    print(f"bench: {DATASET} at {root}; device {device}; precision auto -> {precision}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fruitnet-bench-") as tmp:
        work = Path(tmp)
        e2e = measure_e2e(args, root, device, work) if "e2e" in want else None
        steps = measure_steps(args, device, precision, work) if "steps" in want else None
        data = measure_data(args, root, device) if "data" in want else None
        acc = measure_accuracy(args, root, device, work) if "accuracy" in want else None

    text = render(args, device, precision, e2e, steps, data, acc, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\n{text}\nbench: wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
