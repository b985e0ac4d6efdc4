"""Outputs of a search run: arch.json, edge_probs.png, search_report.md, results.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from fruitnet.config import hydra_choices
from fruitnet.files import write_json, write_text
from fruitnet.models.profile import count_params, flops, fp32_mib, state_dict_mib
from fruitnet.models.proxyless import ProxylessNASNets
from fruitnet.plots import save_figure
from fruitnet.record import environment
from fruitnet.runtime import device_name
from fruitnet.search.latency import time_module


def edge_probs_figure(history: Sequence[dict[str, Any]], names: Sequence[Sequence[str]]) -> Figure:
    """One panel per mixed edge: each candidate's probability over the epochs."""
    n = len(names)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows))
    epochs = [h["epoch"] for h in history]
    warm = [h["epoch"] for h in history if h.get("warmup")]
    all_names = sorted({x for ns in names for x in ns}, key=lambda s: (s == "zero", s))
    colours = {name: f"C{i % 10}" for i, name in enumerate(all_names)}
    for e in range(n):
        ax = fig.add_subplot(rows, cols, e + 1)
        for k, name in enumerate(names[e]):
            ys = [h["probs"][e][k] for h in history]
            style = ":" if name == "zero" else "-"
            ax.plot(epochs, ys, style, color=colours[name], label=name, lw=1.4)
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.9", lw=0)
        ax.set_title(
            f"edge {e} ({history[-1]['chosen'][e]})" if history else f"edge {e}", fontsize=8
        )
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    handles = [
        fig.axes[0].plot([], [], ":" if k == "zero" else "-", color=c)[0]
        for k, c in colours.items()
    ]
    fig.legend(handles, list(colours), loc="lower center", ncol=min(7, len(colours)), fontsize=8)
    fig.suptitle(
        "ProxylessNAS search: probability of each candidate op per edge and epoch "
        "(grey: weights-only warm-up)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def measure(
    arch: dict[str, Any],
    num_classes: int,
    input_size: int,
    *,
    batch: int,
    device: torch.device,
    channels_last: bool = True,
    warmup: int = 10,
    repeats: int = 30,
    rounds: int = 3,
) -> dict[str, Any]:
    """Params, MiB, FLOPs and the measured latency of the finished net built from ``arch``:
    ms per batch of ``batch`` on ``device``, fp32, eval, timed as the table was (median of
    repeats, best of rounds)."""
    net = ProxylessNASNets(num_classes=num_classes, input_size=input_size, arch=arch)
    total, _ = count_params(net)
    stats = {
        "params": total,
        "fp32_mib": fp32_mib(net),
        "weights_mb": state_dict_mib(net),
        "flops": flops(net, input_size),
    }
    stats["measured_latency_ms"] = time_module(
        net,
        (batch, 3, input_size, input_size),
        device=device,
        channels_last=channels_last,
        warmup=warmup,
        repeats=repeats,
        rounds=rounds,
    )
    return stats


def run_values(
    cfg: Any,
    dm: Any,
    trainer: Any,
    *,
    ckpt_path: str | None,
    output_dir: Path,
    lut_s: float,
    search_s: float,
) -> dict[str, Any]:
    """The record's keys about the run itself: config, data, trainer, timings."""
    choices, overrides = hydra_choices()
    ckpt_cb = trainer.checkpoint_callback
    return {
        "task_name": cfg.get("task_name", "search"),
        "data": choices.get("data", "?"),
        "data_root": str(cfg.data.root),
        "num_classes": dm.num_classes,
        "input_size": dm.input_size,
        "train_images": dm.num_train,
        "heldout_images": dm.num_val,
        "batch_size": cfg.data.batch_size,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "lut_s": lut_s,
        "search_s": search_s,
        "device": device_name(cfg.trainer.accelerator),
        "precision": str(trainer.precision),
        "last_ckpt": ckpt_cb.last_model_path if ckpt_cb is not None else None,
        "resumed_from": ckpt_path,
        "run_dir": str(output_dir),
        "overrides": overrides,
    }


def write_outputs(
    module: Any,
    output_dir: Path,
    *,
    target_ms: float,
    search_cfg: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    output_dir = Path(output_dir)
    net = module.net
    arch = net.export_arch()
    choices = [int(e.alpha.detach().argmax()) for e in net.edges]
    arch_path = write_json(output_dir / "arch.json", arch, indent=1)
    table = module.table
    predicted = table.path_ms(choices)
    stats = measure(
        arch,
        net.num_classes,
        net.input_size,
        batch=int(table.meta.get("batch", 1)),
        device=torch.device("cuda" if str(table.meta.get("device")).startswith("cuda") else "cpu"),
        channels_last=bool(table.meta.get("channels_last", True)),
        repeats=int(search_cfg.get("latency_repeats", 30)),
        rounds=int(search_cfg.get("latency_rounds", 3)),
    )
    history = module.prob_history
    names = [e.names for e in net.edges]
    png = None
    if history:
        png = save_figure(edge_probs_figure(history, names), output_dir / "edge_probs.png")
    val = module.trainer.callback_metrics.get("val/acc") if module._trainer is not None else None
    results = {
        "kind": "search",  # fruitnet.record.KINDS
        "arch_path": str(arch_path),
        "chosen": [names[e][c] for e, c in enumerate(choices)],
        "target_latency_ms": target_ms,
        "latency_loss": search_cfg.get("latency_loss"),
        "arch_mode": search_cfg.get("arch_mode"),
        "predicted_latency_ms": predicted,
        "expected_latency_ms": float(module.expected_latency().detach()),
        "min_latency_ms": table.min_ms(),
        "max_latency_ms": table.max_ms(),
        "latency_table": table.to_dict(),
        **stats,
        "within_target_pct": 100.0 * (stats["measured_latency_ms"] - target_ms) / target_ms,
        "arch_steps": module.arch_steps,
        "val_acc": float(val) if val is not None else None,
        "probs": net.probs(),
        "edge_names": names,
        "history": history,
        "edge_probs_png": str(png) if png else None,
        **extra,
        **environment(),
    }
    write_json(output_dir / "results.json", results)
    write_text(output_dir / "search_report.md", report_markdown(results))
    return results


def report_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Architecture search report",
        "",
        f"Data: `{r.get('data')}` at `{r.get('data_root')}`, {r.get('num_classes')} classes, "
        f"{r.get('input_size')} px; {r.get('train_images')} training images for the weight steps, "
        f"{r.get('heldout_images')} held-out images (carved from the training split) for the "
        "architecture steps. The test split was not used.",
        f"Device: {r.get('device')}, precision {r.get('precision')}; search "
        f"{r.get('search_s', 0) / 60:.1f} min ({r.get('epochs')} epochs, {r.get('arch_steps')} "
        f"architecture steps, latency table {r.get('lut_s', 0):.1f} s).",
        "",
        "## Result",
        "",
        "| | value |",
        "| --- | ---: |",
        f"| target latency (batch {r['latency_table']['meta'].get('batch')}) "
        f"| {r['target_latency_ms']:.3f} ms |",
        f"| predicted latency (lookup table) | {r['predicted_latency_ms']:.3f} ms |",
        f"| measured latency (whole net, as the table: median, best of rounds) "
        f"| {r['measured_latency_ms']:.3f} ms |",
        f"| measured vs target | {r['within_target_pct']:+.1f} % |",
        f"| smallest / largest net in the space (table) | {r['min_latency_ms']:.3f} / "
        f"{r['max_latency_ms']:.3f} ms |",
        f"| params | {r['params']:,} |",
        f"| fp32 MiB | {r['fp32_mib']:.2f} |",
        f"| FLOPs | {r['flops'] / 1e6:.1f} M |",
        "| val accuracy of the argmax net (supernet weights) | "
        + (f"{100 * r['val_acc']:.2f} % |" if r.get("val_acc") is not None else "n/a |"),
        "",
        f"Loss: `{r.get('latency_loss')}`; architecture steps: `{r.get('arch_mode')}` mode.",
        f"Net config: `{r['arch_path']}`; train it with "
        f"`python -m fruitnet.train model=proxyless model.arch={r['arch_path']}`.",
        "",
        "## Chosen ops",
        "",
        "| edge | chosen | p(chosen) | latency table (ms) per candidate |",
        "| ---: | --- | ---: | --- |",
    ]
    edges = r["latency_table"]["edges"]
    for e, (name, probs) in enumerate(zip(r["chosen"], r["probs"], strict=True)):
        k = r["edge_names"][e].index(name)
        cells = ", ".join(f"{n} {t:.3f}" for n, t in zip(r["edge_names"][e], edges[e], strict=True))
        lines.append(f"| {e} | {name} | {probs[k]:.3f} | {cells} |")
    fixed = r["latency_table"]["fixed_ms"]
    lines += [
        "",
        "Fixed layers (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in fixed.items()) + ".",
        "",
    ]
    cal = r["latency_table"]["meta"].get("calibration")
    if cal:
        pts = ", ".join(f"{p['table_ms']:.2f} -> {p['measured_ms']:.2f}" for p in cal["points"])
        lines += [
            f"Table calibrated on whole nets (`search.latency_calibrate`): measured = "
            f"{cal['scale']:.3f} x table {cal['offset_ms']:+.3f} ms, fitted on (raw table ms -> "
            f"measured ms) {pts}. The entries above are the calibrated ones.",
            "",
        ]
    if r.get("edge_probs_png"):
        lines += ["![edge probabilities](edge_probs.png)", ""]
    hist = r.get("history") or []
    if hist:
        lines += [
            "## Per epoch",
            "",
            "| epoch | warm-up | E[latency] ms | argmax-path ms | mean max p |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for h in hist:
            maxp = float(np.mean([max(p) for p in h["probs"]]))
            lines.append(
                f"| {h['epoch']} | {'yes' if h.get('warmup') else ''} | "
                f"{h['expected_latency_ms']:.3f} | {h['argmax_latency_ms']:.3f} | {maxp:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)
