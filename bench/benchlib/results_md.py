"""bench/RESULTS.md from the measured rows: the tables, PASS/MISS per target, the machine. The
prose is in bench/templates/bench/."""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys

import torch

from benchlib.common import isa_flags, machine, shown_args, template
from benchlib.compose import CASES, DATASET, NUM_CLASSES, SEED, TARGETS

Verdicts = list[tuple[str, str, str]]  # (target, value, PASS/MISS) for the Targets table


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def render(args, device, precision, e2e, steps, data, acc, total_s) -> str:
    lines = ["# fruitnet benchmark", ""]
    if args.quick:
        lines += [template("bench/quick"), ""]
    cmd = shlex.join(["python", "bench/bench.py", *shown_args(sys.argv[1:])])
    lines += [f"Command: `{cmd}` (total {total_s / 60:.1f} min)", ""]
    verdicts: Verdicts = []
    if e2e is not None:
        lines += render_e2e(args, e2e, verdicts)
    if steps is not None:
        lines += render_steps(args, precision, steps, verdicts)
    if data is not None:
        lines += render_data(args, device, data, steps, verdicts)
    if acc is not None:
        lines += render_accuracy(acc, verdicts)
        lines += schedule_estimate(steps, acc, device)
    if verdicts:
        lines += ["## Targets", "", "| target | value | result |", "| --- | --- | --- |"]
        lines += [f"| {name} | {value} | {res} |" for name, value, res in verdicts]
        lines.append("")
    if device.type != "cuda":
        lines += [template("bench/no_gpu"), ""]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in machine_info(device, precision)]
    settings = template(
        "bench/settings", warmup=args.warmup, seconds=args.seconds, min_steps=args.min_steps,
        max_steps=args.max_steps, num_classes=NUM_CLASSES, seed=SEED,
    )  # fmt: skip
    lines += ["", settings, ""]
    return "\n".join(lines)


def render_e2e(args, e2e, verdicts: Verdicts) -> list[str]:
    limited = sorted({f"{r['model']} {r['limit']}" for r in e2e if r["limit"]})
    limited_text = (
        f"Training batches per epoch limited ({', '.join(limited)}) to keep the run short. "
        if limited
        else ""
    )
    intro = template(
        "bench/e2e", dataset=DATASET, epochs=args.e2e_epochs, rounds=args.e2e_rounds,
        limited=limited_text,
    )  # fmt: skip
    lines = intro.split("\n")
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


def render_steps(args, precision, steps, verdicts: Verdicts) -> list[str]:
    lines = template("bench/steps", precision=precision, rounds=args.rounds).split("\n")
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
    return [*lines, ""]


def render_data(args, device, data, steps, verdicts: Verdicts) -> list[str]:
    t = TARGETS["cache"]
    v = verdict(data["ratio"], t)
    text = template(
        "bench/data", what="2 batches" if args.quick else "one epoch", dataset=DATASET,
        batch=data["batch"], workers=data["workers"], device=device, pil=data["pil"],
        cache=data["cache"], on_device=data["on_device"], ratio=data["ratio"], target=t,
        verdict=v, on_device_ratio=data["on_device"]["images_per_s"] / data["pil"]["images_per_s"],
    )  # fmt: skip
    lines = [*text.split("\n"), ""]
    verdicts.append(("decoded cache / ImageFolder+PIL", f"{data['ratio']:.1f} (>= {t:g})", v))
    cnn = next((r for r in steps or [] if r["model"] == "cnn"), None)
    if device.type == "cuda" and cnn is not None:
        model_rate = cnn["c"]["images_per_s"]
        data_rate = data["cache"]["images_per_s"]
        ok = "PASS" if data_rate > model_rate else "MISS"
        lines += [
            f"GPU never waits for data: data path {data_rate:.0f} img/s "
            f"vs basic-CNN step {model_rate:.0f} img/s: {ok}.",
            "",
        ]
        rates = f"{data_rate:.0f} vs {model_rate:.0f} img/s"
        verdicts.append(("GPU data path > CNN step", rates, ok))
    return lines


def render_accuracy(acc, verdicts: Verdicts) -> list[str]:
    fp32 = [r for r in acc if r["precision"] == "32-true"]
    bf16 = [r for r in acc if r["precision"] != "32-true"]
    fp32_mean = statistics.mean(r["test_acc"] for r in fp32)
    diff = statistics.mean(r["test_acc"] for r in bf16) - fp32_mean
    t = TARGETS["acc_points"]
    v = "PASS" if abs(diff) <= t else "MISS"
    seeds = sorted({r["seed"] for r in acc})
    intro = template(
        "bench/accuracy", dataset=DATASET, batch=acc[0]["batch"], epochs=acc[0]["epochs"],
        seeds=", ".join(map(str, seeds)),
    )  # fmt: skip
    lines = intro.split("\n")
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
        lines.append(template("bench/one_seed"))
    verdicts.append(("bf16 vs fp32 test accuracy", f"{diff:+.2f} points (within {t:g})", v))
    return [*lines, ""]


def schedule_estimate(steps, acc, device) -> list[str]:
    """The study's 40-epoch basic-CNN schedule, training loop only, from measured rates."""
    bf16 = next(r for r in acc if r["precision"] != "32-true")
    cnn = next((r for r in steps or [] if r["model"] == "cnn"), None)
    epochs = CASES["study_epochs"]
    n_here = bf16["train_images"]
    n_full = int(CASES["full_fruits_train"] * 0.9)  # fruitnet carves 10 % of Training for val
    rows = [("fruitnet.train (accuracy run, bf16-mixed)", bf16["train_images_per_s"])]
    if cnn is not None:
        rows = [("study plain fp32 loop (a)", cnn["a"]["images_per_s"]),
                ("fruitnet.train (c)", cnn["c"]["images_per_s"])] + rows  # fmt: skip
    intro = template("bench/schedule", epochs=epochs, device=device, n_here=n_here, n_full=n_full)
    lines = intro.split("\n")
    for name, rate in rows:
        if not rate:
            continue
        lines.append(
            f"| {name} | {rate:.0f} | {_hms(epochs * n_here / rate)} "
            f"| {_hms(epochs * n_full / rate)} |"
        )
    return [*lines, ""]


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def machine_info(device: torch.device, precision: str) -> list[tuple[str, str]]:
    import lightning as L
    import torchvision

    here = machine()
    info = [
        ("CPU", f"{here['cpu']} ({here['cores']} cores, torch threads {here['threads']})"),
        ("CPU ISA", isa_flags()),
        ("CPU bf16 (AVX-512 BF16 / AMX)", "yes" if here["bf16"] else "no"),
    ]
    if device.type == "cuda":
        info.append(("GPU", torch.cuda.get_device_name(device)))
    info += [
        ("device", str(device)),
        ('precision "auto" resolves to', precision),
        ("torch / torchvision / lightning",
         f"{here['torch']} / {torchvision.__version__} / {L.__version__}"),
        ("python", here["python"]),
        ("date", datetime.datetime.now().isoformat(timespec="seconds")),
    ]  # fmt: skip
    return info
