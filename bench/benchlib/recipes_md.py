"""bench/RECIPES.md and the curve plots from the finished runs. The prose is in
bench/templates/recipes/."""

from __future__ import annotations

import datetime
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.common import machine_text, shown_args, template
from benchlib.recipe_panel import goal_verdict, share_cell, threshold_cell
from benchlib.recipe_plan import COLORS, COMMON, COMPARISONS, Comparison, Recipe
from benchlib.recipe_runs import Runs, joined_rows, machines
from benchlib.recipe_stats import spread, verdict

DASH = "\u2013"  # an empty cell


def _pct(s: dict[str, float]) -> str:
    if s["n"] == 0 or math.isnan(s["mean"]):
        return DASH
    if s["n"] == 1:
        return f"{100 * s['mean']:.2f}"
    mean, std, low, high = (100 * s[k] for k in ("mean", "std", "min", "max"))
    return f"{mean:.2f} ± {std:.2f} ({low:.1f}–{high:.1f})"


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None]


def comparison_table(comp: Comparison, runs: Runs) -> str:
    head = ["recipe", "seeds", "test acc %", "val acc %"]
    if comp.binary:
        head += ["sensitivity %", "specificity %", "AUROC"]
    if comp.explain:
        head += ["central share", "threshold"]
    head += ["epochs", "minutes (run)", "init"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for role, recipe in comp.roles():
        rs = runs.get(role, [])
        if not rs:
            continue
        row = [f"`{recipe.label}`", str(len(rs))]
        row += [_pct(spread(_values(rs, "test_acc"))), _pct(spread(_values(rs, "val_acc")))]
        if comp.binary:
            row += [
                _pct(spread(_values(rs, "test_recall"))),
                _pct(spread(_values(rs, "test_specificity"))),
            ]
            auroc = spread(_values(rs, "test_auroc"))
            row.append(DASH if not auroc["n"] else f"{auroc['mean']:.3f} ± {auroc['std']:.3f}")
        if comp.explain:
            row += [share_cell(rs), threshold_cell(rs)]
        epochs = sorted({int(r["epochs"]) for r in rs if r.get("epochs") is not None})
        row.append("/".join(str(e) for e in epochs))
        row.append(f"{spread(_values(rs, 'wall_s'))['mean'] / 60:.2f}")
        row.append(_init(rs[0]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _init(run: dict[str, Any]) -> str:
    if run.get("model") == "cnn":
        return "random (no weights exist)"
    return "ImageNet" if run.get("weights_source") else "**random** (no weights reachable)"


def write_curves(comp: Comparison, runs: Runs, out_dir: Path) -> Path:
    from fruitnet.report import write_curves as report_curves

    plotted, rows = [], []
    for role, recipe in comp.roles():
        palette = COLORS.get(role, COLORS.get("other", COLORS["study"]))
        for i, r in enumerate(runs.get(role, [])):
            plotted.append({"label": f"{recipe.label} s{r['seed']}", "color": palette[i % 4]})
            rows.append(joined_rows([Path(d) for d in r["run_dirs"]]))
    title = f"{comp.key}: {comp.dataset}, {comp.budget_s} s budget per run"
    return report_curves(plotted, out_dir / f"{comp.key}.png", rows=rows, title=title)


def _overrides(comp: Comparison, recipe: Recipe) -> str:
    extra = ((f"data={comp.data}",) if comp.data else ()) + recipe.overrides
    return f"`{' '.join(extra)}`" if extra else "none"


def _test_verdict(runs: Runs) -> str:
    return verdict(
        _values(runs.get("study", []), "test_acc"), _values(runs.get("best", []), "test_acc")
    )


def shown_command(argv: Sequence[str]) -> str:
    return shlex.join(["python", "bench/recipes.py", *shown_args(argv)])


def render_intro(all_runs, argv, started, minutes, also) -> str:
    any_run = next((r for c in all_runs.values() for rs in c.values() for r in rs), {})
    return template(
        "recipes/intro", command=shown_command(argv), started=started, minutes=minutes,
        also="".join(f"; then `{shown_command(more)}`" for more in also),
        machine=machine_text(), precision=any_run.get("precision", "?"),
        torch=any_run.get("torch_version", "?"), lightning=any_run.get("lightning_version", "?"),
    )  # fmt: skip


def render_comparison(comp: Comparison, runs: Runs) -> str:
    return template(
        "recipes/comparison", key=comp.key, dataset=comp.dataset,
        data=f", data={comp.data}" if comp.data else "", budget_s=comp.budget_s,
        seeds=list(comp.seeds), machine=" and ".join(machines(runs)) or "the machine above",
        note=f" {comp.note[0].upper()}{comp.note[1:]}." if comp.note else "",
        common=" ".join(COMMON), study_overrides=_overrides(comp, comp.study),
        best_overrides=_overrides(comp, comp.best), table=comparison_table(comp, runs),
        best=comp.best.label, study=comp.study.label, verdict=_test_verdict(runs),
        extra=_panel_text(comp, runs),
    )  # fmt: skip


def _panel_text(comp: Comparison, runs: Runs) -> str:
    """A goal's PASS / MISS, the other recipes' overrides, the machine's load (several recipes
    against a goal: the chest comparison); empty for a plain study-against-best comparison."""
    if not comp.goal and not comp.others:
        return ""
    every = [r for role, _ in comp.roles() for r in runs.get(role, [])]
    loads = [float(r["load_avg"]) for r in every if r.get("load_avg") is not None]
    loads = loads or next((list(r["load_range"]) for r in every if r.get("load_range")), [])
    return (
        "\n\n"
        + template(
            "recipes/panel",
            goal=goal_verdict(comp.best.label, runs.get("best", []), comp.goal),
            others="; ".join(f"`{r.label}` {_overrides(comp, r)}" for r in comp.others) or "none",
            load=f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded",
        )
        + ("\n\n" + template(comp.history) if comp.history else "")
    )


def render(
    comps: Sequence[Comparison],
    all_runs: dict[str, Runs],
    argv: Sequence[str],
    started: datetime.datetime,
    minutes: float,
    failures: Sequence[str] = (),
    also: Sequence[Sequence[str]] = (),
) -> str:
    out = [render_intro(all_runs, argv, started, minutes, also), ""]
    out += ["## Summary: test accuracy, best_* against the study, same fit-time cap", ""]
    for comp in comps:
        out.append(
            f"- {comp.key} ({comp.dataset}, {comp.budget_s} s a run): `{comp.best.label}` "
            f"against `{comp.study.label}`: {_test_verdict(all_runs.get(comp.key) or {})}."
        )
    out.append("")
    for comp in comps:
        if all_runs.get(comp.key):
            out += [render_comparison(comp, all_runs[comp.key]), ""]
    skipped = [c for c in COMPARISONS if c.key not in {d.key for d in comps}]
    if skipped:
        out += ["## Not in this run", ""]
        for c in skipped:
            why = (
                template("recipes/not_default")
                if not c.default
                else "not run this time (`--only KEY --into RUN` adds it)"
            )
            out.append(f"- `{c.key}` (`{c.study.label}` against `{c.best.label}`): {why}.")
        out.append("")
    if failures:
        out += ["## Failed runs (left out of the tables)", ""]
        out += [f"- {f}" for f in failures] + [""]
    out += ["## History of the tuning", "", template("recipes/history").rstrip(), ""]
    return "\n".join(out)
