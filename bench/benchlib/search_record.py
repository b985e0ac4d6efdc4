"""The record of every command bench/search.py finished (``bench/runs/search/<run>.json``,
committed): what ``--resume`` keeps when the run folder is gone. The whole benchmark takes
longer than one working session on a 2-core CPU (the references alone 2.5 h), and a run folder
does not outlive the machine it was written on; the records do, so a run goes on in the next
session, on another machine, where it stopped. The runs are epoch-bound, so a net trained on
another machine gets the same accuracy (bench/README.md).

A record holds no checkpoint and no path of the machine that wrote it: the command's overrides
as the report shows them (the placeholders of `shown_args`), its results.json, its wall time,
the net's hyper-parameters (rebuilt with fresh weights for the latency and size columns, which
do not depend on the weights) and, for a search, its arch files (the retrains read them)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib.common import Places, shown_value

# Left out of a record: per-class tables (95 x 95 on fruits) and the search's step-by-step
# history and tables, which the report does not read (they stay in the run folder's results.json)
BULKY = ("class_names", "per_class_acc", "confusion_matrix", "history", "latency_table", "probs",
         "edge_names")  # fmt: skip

# What rebuilds a trained net without its weights (`fruitnet.checkpoints.untrained_network`)
NET_KEYS = (
    "model_name",
    "num_classes",
    "input_size",
    "model_kwargs",
    "preprocess",
    "channels_last",
)


def net_spec(results: dict[str, Any]) -> dict[str, Any] | None:
    """The hyper-parameters of a run's best checkpoint that rebuild its net (None: no checkpoint,
    as for a search)."""
    ckpt = results.get("best_ckpt")
    if not ckpt or not Path(ckpt).is_file():
        return None
    from fruitnet.checkpoints import load_checkpoint

    hparams = load_checkpoint(ckpt).get("hyper_parameters") or {}
    return {k: hparams[k] for k in NET_KEYS if k in hparams}


def build_net(spec: dict[str, Any]):
    """(network in eval mode with fresh weights, its preprocessing) from a `net_spec`, as
    `fruitnet.checkpoints.load_network` builds it (memory format included)."""
    from fruitnet.checkpoints import Classifier, untrained_network

    return Classifier(untrained_network(spec), spec).eval().net, spec["preprocess"]


def _mapped(obj: Any, text: Callable[[str], str]) -> Any:
    if isinstance(obj, dict):
        return {k: _mapped(v, text) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mapped(v, text) for v in obj]
    return text(obj) if isinstance(obj, str) else obj


def _hidden(value: str, places: Places) -> str:
    """A string as a record keeps it: the folders of ``places`` as their placeholders wherever they
    occur (``model.arch=<run>/...``), any other absolute path as `shown_value` shows it."""
    for folder, placeholder in sorted(places.items(), key=lambda p: -len(os.fspath(p[0]))):
        value = value.replace(os.fspath(folder), placeholder)
    return shown_value(value, places)


def _restored(value: str, places: Places) -> str:
    for folder, placeholder in places.items():
        value = value.replace(placeholder, os.fspath(folder))
    return value


def path(record_dir: Path, run_dir: Path) -> Path:
    return record_dir / f"{run_dir.name}.json"


def save(record_dir: Path, run_dir: Path, shown: list[str], results: dict[str, Any],
         places: Places) -> None:  # fmt: skip
    """Writes the record of a finished command (``results`` with ``bench_wall_s`` and ``net``)."""
    files = {p.name: p.read_text() for p in sorted(run_dir.glob("arch_*.json"))}
    skip = ("bench_wall_s", "bench_kept", "net", *BULKY)
    body = {k: v for k, v in results.items() if k not in skip}
    record = {
        "overrides": shown,
        "wall_s": round(float(results["bench_wall_s"]), 3),
        "net": results.get("net"),
        "results": _mapped(body, lambda v: _hidden(v, places)),
        "files": files,
    }
    record_dir.mkdir(parents=True, exist_ok=True)
    path(record_dir, run_dir).write_text(json.dumps(record, indent=1) + "\n")


def load(record_dir: Path, run_dir: Path, shown: list[str] | None,
         places: Places) -> dict[str, Any] | None:  # fmt: skip
    """The results of ``run_dir``'s command from its record (paths of this machine again, arch
    files written back into ``run_dir``), or None: no record, or one of another command
    (``shown`` None: any command of that run folder)."""
    file = path(record_dir, run_dir)
    if not file.is_file():
        return None
    record = json.loads(file.read_text())
    if shown is not None and record["overrides"] != list(shown):
        return None
    for name, text in record.get("files", {}).items():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    results = _mapped(record["results"], lambda v: _restored(v, places))
    return results | {"bench_wall_s": float(record["wall_s"]), "net": record.get("net")}


def status(record_dir: Path) -> list[str]:
    """One line per search and per retrained net of the records: what is done, for `--status`."""
    from statistics import mean, pstdev

    lines, nets = [], {}
    for file in sorted(record_dir.glob("*.json")):
        stem = file.stem
        if stem.endswith("_placement"):
            continue
        record = json.loads(file.read_text())
        res, minutes = record["results"], record["wall_s"] / 60
        if stem.endswith("_search"):
            steps = res.get("arch_steps")
            lines.append(f"{stem}: targets {res.get('targets_ms')} ms, {steps} architecture "
                         f"steps, {minutes:.1f} min")  # fmt: skip
        elif "_seed" in stem:
            nets.setdefault(stem.rsplit("_seed", 1)[0], []).append((res["test_acc"], minutes))
    for net, runs in nets.items():
        accs = [100 * float(a) for a, _ in runs]
        std = pstdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"{net}: test acc {mean(accs):.2f} ± {std:.2f} % over {len(runs)} seed(s), "
                     f"{mean(m for _, m in runs):.1f} min a retrain")  # fmt: skip
    return lines
