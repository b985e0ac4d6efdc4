"""What a search run did, in numbers and words: epochs, weight and architecture steps, time, and
the budget's split into warm-up and architecture phase. A run in which no architecture step ran
chose nothing (its argmax is the random init's), so it is reported as such, never as an arch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fruitnet.files import write_json, write_text
from fruitnet.record import environment


def what_ran(module: Any) -> dict[str, Any]:
    """The run's phases, from the module (and its trainer: interrupted, epochs, time)."""
    trainer = module.trainer
    budget = module.time_budget()
    cfg = module.cfg
    return {
        "searched": module.arch_steps > 0,
        "weight_steps": module.weight_steps,
        "arch_steps": module.arch_steps,
        "epochs_run": int(trainer.current_epoch),
        "max_epochs": trainer.max_epochs,
        "train_s": budget[0] if budget else None,
        "time_budget_s": budget[1] if budget else None,
        "warmup_epochs": int(cfg.get("warmup_epochs", 0)),
        "warmup_fraction": float(cfg.get("warmup_fraction", 0.25)) if budget else None,
        "warmup_end": module.warmup_end,
        "interrupted": bool(trainer.interrupted),
    }


def ran_words(ran: dict[str, Any]) -> str:
    """One sentence: what ran."""
    text = (
        f"{ran['epochs_run']} epoch(s) started of {ran['max_epochs']}, {ran['weight_steps']} weight "
        f"steps, {ran['arch_steps']} architecture steps"
    )
    if ran["time_budget_s"] is not None:
        text += f", {ran['train_s']:.0f} s of a {ran['time_budget_s']:.0f} s cap"
    return text + (" (interrupted)" if ran["interrupted"] else "")


def what_to_change(ran: dict[str, Any]) -> str:
    """What makes the next run reach its architecture phase."""
    if ran["interrupted"]:
        return "resume it with ckpt_path=last (same run directory: hydra.run.dir=...)"
    if ran["time_budget_s"] is not None:
        per_step = (ran["train_s"] or 0.0) / max(1, ran["weight_steps"])
        share = ran["warmup_fraction"]
        # The architecture phase needs at least a few weight steps past the warm-up's share.
        need = max(ran["time_budget_s"], 20 * per_step / max(1e-6, 1.0 - share))
        return (
            f"a weight step took {per_step:.2f} s and the warm-up is {share:.0%} of the cap: "
            f"raise trainer.max_time (to {need / 60:.0f} min or more), lower "
            "search.warmup_fraction or search.warmup_epochs, or search on fewer images "
            "(data.max_samples_per_class)"
        )
    return (
        f"trainer.max_epochs={ran['max_epochs']} ends within the {ran['warmup_epochs']} warm-up "
        "epochs: raise trainer.max_epochs above search.warmup_epochs, or lower search.warmup_epochs"
    )


def write_unsearched(
    output_dir: Path, ran: dict[str, Any], extra: dict[str, Any], search_cfg: dict[str, Any]
) -> dict[str, Any]:
    """results.json (``searched: false``) and search_report.md saying what ran and what to change;
    no arch file: no architecture step chose one."""
    advice = what_to_change(ran)
    results = {
        "kind": "search",  # fruitnet.record.KINDS
        **ran,
        "arch_path": None,
        "targets_ms": extra.get("targets_ms"),
        "target_latency_ms": search_cfg.get("target_latency_ms"),
        "what_to_change": advice,
        **extra,
        **environment(),
    }
    write_json(Path(output_dir) / "results.json", results)
    write_text(
        Path(output_dir) / "search_report.md",
        "\n".join(
            [
                "# Architecture search report: nothing searched",
                "",
                f"No architecture step ran ({ran_words(ran)}), so no architecture was chosen and "
                "no arch file was written: the argmax of untrained architecture parameters is "
                "the random init's.",
                "",
                f"To search: {advice}.",
                "",
            ]
        ),
    )
    return results
