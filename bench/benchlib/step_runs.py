"""The train-step table: (a), (b) and (c) of each case, each in a fresh process, interleaved over
rounds; the best window of each variant is kept."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import uuid
from pathlib import Path

import torch

from benchlib.common import BENCH
from benchlib.compose import CASES, QUICK_BATCH, TARGETS, accelerator, compose_cfg, quiet_lightning
from benchlib.steps import autocast_dtype, lightning_loop, plain_loop, steps_for
from fruitnet.runtime import configure_malloc


def run_variant(args, spec: dict) -> dict:
    """One measurement in a fresh Python process (`--variant`), so what one variant leaves in
    the process (glibc's malloc state, fruitnet's `malloc=reuse`, oneDNN caches, warmed pages)
    cannot speed up or slow down the next one: each starts like a user's own run."""
    out = Path(spec["work"]) / f"variant-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, str(BENCH / "bench.py"), "--variant", json.dumps(spec)]
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
        if fruitnet:  # fruitnet.assemble.build_trainer does the same for (c)
            configure_malloc("auto", accelerator(device))
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
    for case in CASES["steps"]:
        name = case["model"]
        if args.models and name not in args.models:
            continue
        batch = case["cpu_batch"] if device.type == "cpu" else case["gpu_batch"]
        spec = {
            "name": name, "size": case["size"], "norm": case["norm"],
            "batch": QUICK_BATCH[name] if args.quick else batch,
            "device": str(device), "precision": precision, "work": str(work),
            "cache_root": str(args.cache_root), "optimizer_kwargs": optimizer_kwargs,
            "warmup": args.warmup, "seconds": args.seconds, "min_steps": args.min_steps,
            "max_steps": args.max_steps,
        }  # fmt: skip
        rows.append(step_row(args, spec))
        gc.collect()
    return rows


def step_row(args, spec: dict) -> dict:
    """(a), (b), (c) of one case, `--rounds` times interleaved; each variant's best window."""
    name, size, batch, precision = spec["name"], spec["size"], spec["batch"], spec["precision"]
    label = f"{name} {size}px norm={str(spec['norm']).lower()}"
    best: dict[str, dict] = {}
    rates: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    c_steps = None
    for round_ in range(1, args.rounds + 1):
        tag = f"[steps] {label} b{batch} round {round_}/{args.rounds}"
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
    medians = c["median_images_per_s"] and b["median_images_per_s"]
    return {
        "model": name, "size": size, "norm": spec["norm"], "batch": batch,
        "a": a, "b": b, "c": c,
        "c/a": c["images_per_s"] / a["images_per_s"],
        "c/b": c["images_per_s"] / b["images_per_s"],
        "c/b median": c["median_images_per_s"] / b["median_images_per_s"] if medians else None,
        "target c/a": TARGETS["c/a big" if name != "cnn" else "c/a cnn"],
    }  # fmt: skip


def _rate(m: dict) -> str:
    med = m["median_images_per_s"]
    median = f", median step {med:.1f} img/s" if med else ""
    return f"{m['images_per_s']:8.1f} img/s ({m['steps']} steps, {m['seconds']:.1f} s{median})"
