"""Outputs of a search run: arch.json, edge_probs.png, search_report.md, results.json."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fruitnet.config import hydra_choices
from fruitnet.files import write_json, write_text
from fruitnet.plots import save_figure
from fruitnet.record import environment
from fruitnet.runtime import device_name
from fruitnet.search.calibration import CALIBRATION_WARN_PCT
from fruitnet.search.front import arch_name, front_figure, front_markdown, front_table
from fruitnet.search.measure import NetTimer

log = logging.getLogger("fruitnet.search")


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


def latency_keys(meta: dict[str, Any]) -> dict[str, Any]:
    """What every latency of the run means: runtime, batch, precision, device (CPU and threads)."""
    cal = meta.get("calibration") or {}
    return {
        "latency_runtime": meta.get("runtime", "torch"),
        "latency_runtime_version": meta.get("runtime_version"),
        "latency_batch": meta.get("batch"),
        "latency_precision": {"float32": "fp32"}.get(meta.get("dtype"), meta.get("dtype")),
        "latency_device": meta.get("device"),
        "calibration_error_pct": cal.get("error_pct"),
        # the net whose readings put later timings on the calibration's scale, and its time then:
        # what a timing of this run's nets elsewhere (bench/search.py) compares against
        "latency_yardstick": cal.get("yardstick"),
    }


def latency_words(r: dict[str, Any]) -> str:
    return (
        f"{r.get('latency_runtime')}, batch {r.get('latency_batch')}, "
        f"{r.get('latency_precision')}, {r.get('latency_device')}"
    )


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


def measure_picks(
    module: Any,
    picks: list[dict[str, Any]],
    output_dir: Path,
    search_cfg: dict[str, Any],
    timer: NetTimer,
) -> None:
    """Each target's net: arch_<target>ms.json, its sizes and measured latency, the misses."""
    net = module.net
    for pick in picks:
        arch = net.export_arch(pick["choices"])
        path = write_json(Path(output_dir) / arch_name(pick["target_ms"]), arch, indent=1)
        stats = timer.stats(arch)
        measured, target = stats["measured_latency_ms"], pick["target_ms"]
        pick.update(stats)
        pick["arch_path"] = str(path)
        pick["within_target_pct"] = 100.0 * (measured - target) / target
        pick["prediction_miss_pct"] = 100.0 * (pick["predicted_ms"] - measured) / measured
        if abs(pick["prediction_miss_pct"]) > CALIBRATION_WARN_PCT:
            log.warning(
                "the net for %g ms: predicted %.3f ms, measured %.3f ms (%+.1f %%, over %g %%)",
                target,
                pick["predicted_ms"],
                measured,
                pick["prediction_miss_pct"],
                CALIBRATION_WARN_PCT,
            )


def write_outputs(
    module: Any,
    output_dir: Path,
    *,
    picks: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    several: bool,
    search_cfg: dict[str, Any],
    extra: dict[str, Any],
    timer: NetTimer,
) -> dict[str, Any]:
    """arch_<target>ms.json per target (and arch.json for a single target), edge_probs.png,
    front.md and front.png (several targets), search_report.md, results.json."""
    output_dir = Path(output_dir)
    net, table = module.net, module.table
    measure_picks(module, picks, output_dir, search_cfg, timer)
    history = module.prob_history
    names = [e.names for e in net.edges]
    png = None
    if history:
        png = save_figure(edge_probs_figure(history, names), output_dir / "edge_probs.png")
    val = module.trainer.callback_metrics.get("val/acc") if module._trainer is not None else None
    argmax = [int(e.alpha.detach().argmax()) for e in net.edges]
    results = {
        "kind": "search",  # fruitnet.record.KINDS
        "searched": True,
        "targets_ms": [p["target_ms"] for p in picks],
        "target_latency_ms": float(search_cfg["target_latency_ms"]),
        "latency_loss": search_cfg.get("latency_loss"),
        "arch_mode": search_cfg.get("arch_mode"),
        **latency_keys(table.meta),
        "expected_latency_ms": float(module.expected_latency().detach()),
        "argmax": {"chosen": net.chosen(), "predicted_ms": table.path_ms(argmax)},
        "argmax_val_acc": float(val) if val is not None else None,
        "min_latency_ms": table.min_ms(),
        "max_latency_ms": table.max_ms(),
        "latency_table": table.to_dict(),
        "front": picks,
        "select_evals": int(search_cfg.get("select_evals", 30)),
        "select_bn_images": int(search_cfg.get("select_bn_images", 256)),
        "probs": net.probs(),
        "edge_names": names,
        "history": history,
        "edge_probs_png": str(png) if png else None,
        **extra,
        **environment(),
    }
    if several:
        results["arch_path"] = None
        write_text(output_dir / "front.md", front_markdown(results, latency_words(results)))
        fig = front_figure(picks, scored, latency_words(results))
        results["front_png"] = str(save_figure(fig, output_dir / "front.png"))
    else:
        # One target: its net is also arch.json, the file `make search-retrain` trains
        one = picks[0]
        arch_path = write_json(output_dir / "arch.json", net.export_arch(one["choices"]), indent=1)
        keys = ("chosen", "params", "fp32_mib", "weights_mb", "flops", "measured_latency_ms")
        keys += ("within_target_pct", "prediction_miss_pct", "val_acc")
        results |= {k: one[k] for k in keys}
        results |= {"arch_path": str(arch_path), "predicted_latency_ms": one["predicted_ms"]}
    write_json(output_dir / "results.json", results)
    write_text(output_dir / "search_report.md", report_markdown(results))
    return results


def report_markdown(r: dict[str, Any]) -> str:
    meta = r["latency_table"]["meta"]
    lines = [
        "# Architecture search report",
        "",
        f"Data: `{r.get('data')}` at `{r.get('data_root')}`, {r.get('num_classes')} classes, "
        f"{r.get('input_size')} px; {r.get('train_images')} training images for the weight steps, "
        f"{r.get('heldout_images')} held-out images (carved from the training split) for the "
        "architecture steps and the choice of each target's net. The test split was not used.",
        f"Training device: {r.get('device')}, precision {r.get('precision')}; search "
        f"{r.get('search_s', 0) / 60:.1f} min ({r.get('epochs')} epochs, {r.get('weight_steps')} "
        f"weight and {r.get('arch_steps')} architecture steps, latency table "
        f"{r.get('lut_s', 0):.1f} s).",
        f"Latency: {latency_words(r)} (table, calibration and measured nets alike); smallest / "
        f"largest net in the space {r['min_latency_ms']:.3f} / {r['max_latency_ms']:.3f} ms.",
        "",
        "## Result: one net per target",
        "",
        *front_table(r["front"]),
        "",
        f"Argmax of the architecture parameters: {' '.join(r['argmax']['chosen'])} (predicted "
        f"{r['argmax']['predicted_ms']:.3f} ms). Loss `{r.get('latency_loss')}`, "
        f"`{r.get('arch_mode')}` mode, training target {r['target_latency_ms']:g} ms.",
        "",
        "## Chosen ops",
        "",
        "| edge | " + " | ".join(f"{p['target_ms']:g} ms" for p in r["front"])
        + " | latency table (ms) per candidate |",
        "| ---: | " + " | ".join("---" for _ in r["front"]) + " | --- |",
    ]  # fmt: skip
    for e, names in enumerate(r["edge_names"]):
        row = r["latency_table"]["edges"][e]
        cells = ", ".join(f"{n} {t:.3f}" for n, t in zip(names, row, strict=True))
        chosen = " | ".join(p["chosen"][e] for p in r["front"])
        lines.append(f"| {e} | {chosen} | {cells} |")
    fixed = r["latency_table"]["fixed_ms"]
    lines += ["", "Fixed layers (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in fixed.items()), ""]
    lines += _calibration_lines(meta.get("calibration"))
    if r.get("edge_probs_png"):
        lines += ["![edge probabilities](edge_probs.png)", ""]
    lines += _history_lines(r.get("history") or [])
    return "\n".join(lines)


def _calibration_lines(cal: dict[str, Any] | None) -> list[str]:
    if not cal:
        return []
    pts = ", ".join(f"{p['table_ms']:.2f} -> {p['measured_ms']:.2f}" for p in cal["points"])
    check = ", ".join(
        f"{c['predicted_ms']:.2f} vs {c['measured_ms']:.2f} ({c['miss_pct']:+.1f} %)"
        for c in cal.get("check") or []
    )
    return [
        f"Table calibrated on whole nets (`search.latency_calibrate`): measured = "
        f"{cal['scale']:.3f} x table {cal['offset_ms']:+.3f} ms, fitted on (raw table ms -> "
        f"measured ms) {pts}. The entries above are the calibrated ones. Checked on other nets "
        f"(predicted vs measured ms): {check or 'none'}.",
        "",
    ]


def _history_lines(hist: list[dict[str, Any]]) -> list[str]:
    if not hist:
        return []
    lines = [
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
    return [*lines, ""]
