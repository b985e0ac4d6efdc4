"""bench/SEARCH.md from the searches, the retrained nets and their latencies. The prose is in
bench/templates/search/."""

from __future__ import annotations

import datetime
import shlex
import sys
from pathlib import Path

from benchlib.common import machine, shown_args, shown_value, template

# The search goals of the issue: a found net's measured latency within 20 % of its target and
# a search shorter than 20 minutes
WITHIN = 0.2
SEARCH_MAX_S = 1200


def render(args, rows, searches, targets, span, commands, total_min, work) -> str:
    cmd = shlex.join(["python", "bench/search.py", *shown_args(sys.argv[1:])])
    lines = ["# Architecture search on this CPU", ""]
    lines += [f"Command: `{cmd}` (`make bench-search`; total {total_min:.1f} min)", ""]
    if args.quick:
        lines += ["**QUICK RUN: tiny settings, the numbers mean nothing.**", ""]
    intro = template(
        "search/intro", dataset=args.dataset, low=span[0], high=span[1], fractions=args.fractions,
        targets=", ".join(f"{t:g} ms" for t in targets), latency_loss=args.latency_loss,
        latency_lambda=args.latency_lambda, warmup_epochs=args.warmup_epochs,
        search_epochs=args.search_epochs, retrain_epochs=args.retrain_epochs, batch=args.batch,
        rounds=args.rounds,
    )  # fmt: skip
    lines += [intro, ""]
    lines += nets_table(rows) + searches_table(rows[2:]) + goals_table(rows[0], rows[2:])
    lines += ["", template("search/notes"), "", "## Edge probabilities", ""]
    for s in searches:
        name = f"search_edge_probs_{s['target_latency_ms']:g}ms.png"
        lines += [
            f"Target {s['target_latency_ms']:g} ms:",
            "",
            # A run output: written by this command, not tracked in the repository
            f"`bench/{name}` (written by the command below).",
            "",
        ]
    lines += ["## Commands", "", "Run in this order (each in its own process):", "", "```"]
    lines += [f"python {c}" for c in commands]
    where = shown_value(str(work), name="run")
    folders = f"`{where}`" if where == "<run>" else f"`<run>` = `{where}`"
    lines += ["```", "", f"Run folders: {folders}.", "", "## Machine", ""]
    here = machine()
    lines += [
        f"- CPU: {here['cpu']} ({here['cores']} cores), torch threads "
        f"{args.threads or here['threads']}",
        f"- Python {here['python']}, torch {here['torch']}",
        f"- date {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
    ]
    return "\n".join(lines)


def shown_command(cmd: list[str], work: Path, data: str, cache_dir: Path) -> str:
    """A command as SEARCH.md shows it: `<run>` for the run folder, `<fruits-360-small>` for
    the data, never a path of this machine."""
    places = {work: "<run>", data: "<fruits-360-small>"}
    if not cache_dir.is_relative_to(work):
        places[cache_dir] = "<cache>"
    return shlex.join(shown_args(cmd, places))


def nets_table(rows) -> list[str]:
    lines = [
        "| net | test acc % | latency ms (b1) | params | MiB (fp32) | MFLOPs | search min "
        "| retrain min |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        acc = row["train"].get("test_acc")
        search_min = f"{row['search']['wall_s'] / 60:.1f}" if row["search"] else ""
        lines.append(
            f"| {row['label']} | {100 * acc:.2f} | {row['latency_ms']:.2f} | {row['params']:,} "
            f"| {row['fp32_mib']:.2f} | {row['flops'] / 1e6:.1f} | {search_min} "
            f"| {row['train_s'] / 60:.1f} |"
        )
    return lines


def searches_table(found) -> list[str]:
    lines = [
        "",
        "## Searches",
        "",
        "| target ms | predicted ms (table) | measured ms (search end) | measured ms (above) "
        "| within 20 % | chosen ops | search min | arch steps |",
        "| ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for row in found:
        s = row["search"]
        err = (row["latency_ms"] - s["target_latency_ms"]) / s["target_latency_ms"]
        ok = "PASS" if abs(err) <= WITHIN else "MISS"
        lines.append(
            f"| {s['target_latency_ms']:g} | {s['predicted_latency_ms']:.2f} "
            f"| {s['measured_latency_ms']:.2f} | {row['latency_ms']:.2f} | {ok} ({100 * err:+.0f} %) "
            f"| {' '.join(s['chosen'])} | {s['wall_s'] / 60:.1f} | {s['arch_steps']} |"
        )
    return [*lines, ""]


def goals_table(cnn, found) -> list[str]:
    goals = []
    if len(found) == 2:
        a, b = found
        different = a["search"]["chosen"] != b["search"]["chosen"]
        larger = b["params"] > a["params"] and b["latency_ms"] > a["latency_ms"]
        goals.append(("two different nets", different))
        goals.append(("the larger target gives the larger net (params and latency)", larger))
        for r in found:
            t = r["search"]["target_latency_ms"]
            within = abs(r["latency_ms"] - t) / t <= WITHIN
            goals.append((f"target {t:g} ms: measured within 20 %", within))
            fast = r["search"]["wall_s"] < SEARCH_MAX_S
            goals.append((f"target {t:g} ms: search under 20 min", fast))
        cnn_acc = cnn["train"]["test_acc"]
        beats = [
            r
            for r in found
            if r["train"]["test_acc"] > cnn_acc and r["latency_ms"] <= cnn["latency_ms"]
        ]
        goals.append(
            ("a found net beats the basic CNN's accuracy at equal or lower latency", bool(beats))
        )
    lines = ["## Goals", "", "| goal | result |", "| --- | --- |"]
    return lines + [f"| {g} | {'PASS' if ok else 'MISS'} |" for g, ok in goals]
