"""bench/SEARCH.md and its front plots from the searches, the retrained nets and their measured
latencies. The prose is in bench/templates/search/; the goals in benchlib/search_goals.py."""

from __future__ import annotations

import datetime
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from benchlib.common import machine, shown_args, shown_value, template
from benchlib.search_goals import SEARCH_MAX_MIN, WITHIN, goals
from benchlib.search_runs import RUNTIME


def render(args, results: Sequence[dict[str, Any]], commands: list[str], total_min: float) -> str:
    here = machine()
    threads = args.threads or here["threads"]
    cpu = f"{here['cpu']} ({here['cores']} cores), {threads} torch threads"
    cmd = shlex.join(["python", "bench/search.py", *shown_args(sys.argv[1:])])
    lines = ["# Architecture search against the references on this CPU", ""]
    lines += [f"Command: `{cmd}` (`make bench-search`; total {total_min:.1f} min)", ""]
    if args.quick:
        lines += ["**QUICK RUN: tiny settings, the numbers mean nothing.**", ""]
    intro = template(
        "search/intro", runtime=RUNTIME, cpu=cpu, targets=args.targets, seeds=args.seeds,
        search_epochs=args.search_epochs, search_minutes=args.search_minutes,
        warmup_epochs=args.warmup_epochs, retrain_epochs=" / ".join(f"{r['dataset']['retrain_epochs']} ({r['dataset']['folder']})"
                                  for r in results),
        augment=" / ".join(f"{_augment(r['dataset'])} ({r['dataset']['folder']})" for r in results),
        retrain_minutes=args.retrain_minutes, batch=args.batch, rounds=args.rounds, jobs=args.jobs,
        threads_per_job=max(1, threads // max(1, args.jobs)),
        repeats=args.repeats, within=100 * WITHIN, search_max=SEARCH_MAX_MIN,
    )  # fmt: skip
    lines += [intro, ""]
    summary = []
    for res in results:
        part, verdicts = dataset_section(res)
        lines += part
        summary += [(res["dataset"]["folder"], g, v) for g, v, _ in verdicts]
    lines += ["## Goals, all datasets", "", "| dataset | goal | result |", "| --- | --- | --- |"]
    lines += [f"| {d} | {g} | {v} |" for d, g, v in summary]
    lines += ["", template("search/notes", runtime=RUNTIME), "", "## Commands", ""]
    lines += ["Run in this order (each in its own process):", "", "```", *commands, "```"]
    where = shown_value(str(args.work), name="run")
    folders = f"`{where}`" if where == "<run>" else f"`<run>` = `{where}`"
    lines += ["", f"Run folders: {folders}.", "", "## Machine", ""]
    lines += [
        f"- CPU: {cpu}",
        f"- Python {here['python']}, torch {here['torch']}, {runtime_version()}",
        f"- date {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
    ]
    return "\n".join(lines)


def runtime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def dataset_section(res: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    ds, search, rows = res["dataset"], res["search"], res["rows"]
    lo, hi = res["range"]
    lines = [f"## {ds['folder']}", ""]
    searched = search.get("searched", False)
    state = (
        f"{search.get('arch_steps')} architecture steps"
        if searched
        else f"**no architecture step ran**, no searched net: {search.get('what_to_change')}"
    )
    lines += [
        f"{res['classes']} classes, {ds['size']} px (`{' '.join(ds['overrides'])}`). Space: "
        f"{lo:.2f} .. {hi:.2f} ms in {RUNTIME}; the references before the search: "
        f"{', '.join(f'{k} {v:.2f}' for k, v in res['refs_ms'].items())} ms; "
        f"targets {', '.join(f'{t:g}' for t in res['targets'])} ms. One search: "
        f"{search['bench_wall_s'] / 60:.1f} min ({search.get('epochs')} epochs, {state}; "
        f"calibration error {fmt(search.get('calibration_error_pct'), '.1f')} %). "
        f"{scale_words(res)}",
        "",
        *nets_table(rows),
        "",
        f"![{ds['folder']}: test accuracy against {RUNTIME} latency]({res['png']})",
        "",
    ]
    verdicts = goals(rows, {**search, "minutes": search["bench_wall_s"] / 60}, ds["name"],
                     res["refs_ms"])  # fmt: skip
    lines += ["| goal | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {g} | {v} | {d} |" for g, v, d in verdicts]
    return [*lines, ""], verdicts


def scale_words(res: dict[str, Any]) -> str:
    """What the ORT column's scale is: the search's yardstick's, or absolute (records of a
    search that kept no yardstick)."""
    yard, now = res.get("yardstick"), res.get("yardstick_now_ms")
    if not yard or now is None:
        return (
            f"{RUNTIME} times absolute (this search's records keep no yardstick): placed "
            "one net at a time, finally the best of the interleaved rounds."
        )
    return (
        f"{RUNTIME} times, placing and final, on the calibration's scale: each reading against "
        f"the search's yardstick (a path of the space: {yard['ms']:.2f} ms at the calibration, "
        f"{now:.2f} ms in the final timing), the median ratio times {yard['ms']:.2f} ms."
    )


def _augment(ds: dict[str, Any]) -> str:
    """The ``data.augment`` of every training (search and retrains) on dataset ``ds``
    (``train_overrides`` in bench/cases/search.yaml), else none."""
    given = [
        o.split("=", 1)[1] for o in ds.get("train_overrides", []) if o.startswith("data.augment=")
    ]
    return f"`{given[-1]}`" if given else "none"


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def nets_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One row per net; binary datasets get test AUROC beside accuracy (the ranking of the films
    apart from where argmax cuts it, which a test split from other sources moves)."""
    auroc = all(r.get("auroc_mean") is not None for r in rows)
    lines = [
        "| net | target ms | test acc % (mean ± std) | "
        + ("test AUROC | " if auroc else "")
        + f"seeds | {RUNTIME} ms | eager torch ms | params | MiB (fp32) | MFLOPs | search min "
        f"| retrain min (per seed) | epochs | {RUNTIME} ms at the search's end |",
        "| --- " + "| ---: " * (13 if auroc else 12) + "|",
    ]
    for r in rows:
        target = f"{r['target_ms']:g}" if r["target_ms"] is not None else ""
        ranked = f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f} | " if auroc else ""
        lines.append(
            f"| {r['label']} | {target} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} "
            f"| {ranked}{r['seeds']} | {r['ort_ms']:.2f} | {r['eager_ms']:.2f} | {r['params']:,} "
            f"| {r['fp32_mib']:.2f} | {r['flops'] / 1e6:.1f} | {fmt(r['search_min'], '.1f')} "
            f"| {r['retrain_min']:.1f} | {r['epochs']} | {fmt(r.get('search_ms'), '.2f')} |"
        )
    return lines


def front_figure(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """Test accuracy (mean, std bars) against ORT latency: the searched nets as one line, each
    reference a point named in the legend, outside the axes: references sit at nearly one latency
    (four within 0.1 ms on chest), where labels beside the points overlapped."""
    fig = Figure(figsize=(8.5, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    found = sorted((r for r in rows if r["searched"]), key=lambda r: r["ort_ms"])
    if found:
        ax.errorbar(
            [r["ort_ms"] for r in found],
            [100 * r["acc_mean"] for r in found],
            yerr=[100 * r["acc_std"] for r in found],
            fmt="o-", color="C0", capsize=3, label="searched (one supernet)",
        )  # fmt: skip
    for i, r in enumerate(r for r in rows if not r["searched"]):
        x, y = r["ort_ms"], 100 * r["acc_mean"]
        ax.errorbar([x], [y], yerr=[100 * r["acc_std"]], fmt="sDv^<>phX"[i % 9],
                    color=f"C{i % 9 + 1}", capsize=3, label=r["label"])  # fmt: skip
    for j, r in enumerate(found):
        # under the bar's lower end, where no other point's label sits; every other one lower, as
        # neighbouring targets can be 10 % apart
        ax.annotate(f"{r['target_ms']:g} ms", (r["ort_ms"], 100 * (r["acc_mean"] - r["acc_std"])),
                    textcoords="offset points", xytext=(0, -10 - 9 * (j % 2)), ha="center",
                    fontsize=7, color="C0")  # fmt: skip
    ax.set_xscale("log")
    # plain ms on the log axis, not powers of ten
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"latency ms ({RUNTIME}, batch 1, fp32, this CPU)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(f"{title}: searched nets vs references", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
