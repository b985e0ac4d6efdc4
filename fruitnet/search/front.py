"""The accuracy-latency front of one search: one net per target (``search.targets``), as a table
(front.md, also the result section of search_report.md) and a plot (front.png): held-out accuracy
of the supernet with each path against its latency, every path the selection scored in grey."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure


def arch_name(target_ms: float) -> str:
    """arch_<target>ms.json: the file of the net chosen for ``target_ms``."""
    return f"arch_{target_ms:g}ms.json"


def front_table(picks: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows: one per target."""
    lines = [
        "| target ms | predicted ms | measured ms | measured vs target | prediction miss | "
        "val acc (supernet) | params | MFLOPs | net config |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in picks:
        lines.append(
            f"| {p['target_ms']:g} | {p['predicted_ms']:.3f} | {p['measured_latency_ms']:.3f} | "
            f"{p['within_target_pct']:+.1f} % | {p['prediction_miss_pct']:+.1f} % | "
            f"{100 * p['val_acc']:.2f} % | {p['params']:,} | {p['flops'] / 1e6:.1f} | "
            f"`{arch_name(p['target_ms'])}` |"
        )
    return lines


def front_markdown(r: dict[str, Any], words: str) -> str:
    picks = r["front"]
    lines = [
        "# Accuracy-latency front",
        "",
        f"One supernet training ({r.get('arch_steps')} architecture steps, "
        f"{r.get('search_s', 0) / 60:.1f} min), then one net per target, chosen on the held-out "
        f"split ({r.get('select_images')} images carved from the training split; the test split "
        "was not used): the most probable path that fits the target, then "
        f"{r.get('select_evals')} mutations scored by held-out accuracy (each path's BatchNorm "
        f"statistics recomputed on {r.get('select_bn_images', 0)} training images), then moved "
        "an edge or two while measured off its target.",
        f"Latency: {words}; predicted by the calibrated table, measured on the whole net "
        f"(calibration error on other nets: {_pct(r.get('calibration_error_pct'))}).",
        "",
        *front_table(picks),
        "",
        "Val acc: the supernet's weights on that path, before retraining. Train one with "
        f"`python -m fruitnet.train model=proxyless model.arch={arch_name(picks[0]['target_ms'])}`"
        " (the path of its file).",
        "",
        "![front](front.png)",
        "",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "not checked" if value is None else f"{value:.1f} %"


def front_figure(
    picks: Sequence[dict[str, Any]], scored: Sequence[dict[str, Any]], words: str
) -> Figure:
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(
        [s["predicted_ms"] for s in scored],
        [100 * s["val_acc"] for s in scored],
        s=10,
        color="0.7",
        label="paths scored (predicted ms)",
    )
    xs = [p["measured_latency_ms"] for p in picks]
    ys = [100 * p["val_acc"] for p in picks]
    ax.plot(xs, ys, "o-", color="C0", label="chosen net per target (measured ms)")
    for i, p in enumerate(picks):
        ax.axvline(p["target_ms"], color="C3", ls=":", lw=1, label="targets" if i == 0 else None)
    ax.set_xlabel(f"latency, ms ({words})", fontsize=8)
    ax.set_ylabel("held-out accuracy of the supernet path, %")
    ax.set_title("Accuracy-latency front of one supernet", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
