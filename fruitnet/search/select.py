"""One net per latency target from one trained supernet (``search.targets``), once-for-all style.

For each target: start from the most probable path under the learned architecture distribution
whose predicted latency fits the target (exact, by dynamic programming over the edges: a
multiple-choice knapsack on log p), then a small evolutionary search around it: mutate one or two
edges (ops drawn from the edge's probabilities), keep a mutant when it fits the target and the
supernet with that path scores higher on the held-out split. The held-out split is the one the
architecture steps used, carved from the training data; the test split is never read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fruitnet.search.latency import LatencyTable
from fruitnet.search.supernet import SuperNet

# Latency steps of the knapsack: costs are rounded up to target / STEPS, so a path the DP
# accepts always fits the target in real ms.
STEPS = 2000


def most_probable_under(
    table: LatencyTable, log_p: Sequence[Sequence[float]], target_ms: float
) -> list[int] | None:
    """The path maximising sum of log p with predicted latency <= target (None: none fits)."""
    budget = target_ms - table.fixed_total
    if budget < 0:
        return None
    unit = max(budget, 1e-9) / STEPS
    best = np.full(STEPS + 1, -np.inf)
    best[0] = 0.0
    picks = []
    for costs, lp in zip(table.edges, log_p, strict=True):
        new = np.full(STEPS + 1, -np.inf)
        pick = np.full(STEPS + 1, -1, dtype=np.int64)
        for k, (ms, logp) in enumerate(zip(costs, lp, strict=True)):
            c = int(math.ceil(max(ms, 0.0) / unit - 1e-9))
            if c > STEPS:
                continue
            shifted = np.full(STEPS + 1, -np.inf)
            shifted[c:] = best[: STEPS + 1 - c] + logp
            better = shifted > new
            new[better], pick[better] = shifted[better], k
        best = new
        picks.append(pick)
    if not np.isfinite(best).any():
        return None
    at = int(np.argmax(best))
    choices = []
    for e in range(len(picks) - 1, -1, -1):
        k = int(picks[e][at])
        choices.append(k)
        at -= int(math.ceil(max(table.edges[e][k], 0.0) / unit - 1e-9))
    return choices[::-1]


@torch.no_grad()
def path_accuracy(net: SuperNet, choices: Sequence[int], batches: Sequence[Any]) -> float:
    """Held-out accuracy of the supernet with each edge running ``choices`` (eval mode)."""
    was_training = net.training
    net.eval()
    for edge, k in zip(net.edges, choices, strict=True):
        edge.active, edge.involved, edge.gates = int(k), None, None
    correct = total = 0
    for x, y in batches:
        correct += int((net(x).argmax(-1) == y).sum())
        total += int(y.numel())
    net.train(was_training)
    return correct / max(1, total)


def _mutant(
    choices: list[int],
    probs: list[list[float]],
    gen: torch.Generator,
    table: LatencyTable,
    t: float,
) -> list[int] | None:
    for _ in range(50):
        out = list(choices)
        n = 1 + int(torch.randint(2, (1,), generator=gen))
        for e in torch.randperm(len(out), generator=gen)[:n].tolist():
            # Mixed with uniform, so an op the distribution all but ruled out can still be tried
            p = 0.5 * torch.tensor(probs[e]) + 0.5 / len(probs[e])
            out[e] = int(torch.multinomial(p, 1, generator=gen))
        if out != choices and table.path_ms(out) <= t:
            return out
    return None


def select_for_targets(
    net: SuperNet,
    table: LatencyTable,
    targets: Sequence[float],
    batches: Sequence[Any],
    *,
    evals: int = 30,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For each target: the chosen path and its numbers; and every path scored (for the front
    plot), each ``{"choices", "predicted_ms", "val_acc"}``."""
    probs = net.probs()
    log_p = [[math.log(max(q, 1e-12)) for q in p] for p in probs]
    scores: dict[tuple[int, ...], float] = {}

    def score(choices: list[int]) -> float:
        key = tuple(choices)
        if key not in scores:
            scores[key] = path_accuracy(net, choices, batches)
        return scores[key]

    gen = torch.Generator().manual_seed(seed)
    picks = []
    for target in targets:
        start = most_probable_under(table, log_p, target)
        if start is None:
            raise ValueError(f"no path of the space fits {target:g} ms")
        best, best_acc = start, score(start)
        for _ in range(evals):
            cand = _mutant(best, probs, gen, table, target)
            if cand is None:
                break
            if score(cand) > best_acc:
                best, best_acc = cand, scores[tuple(cand)]
        picks.append(
            {
                "target_ms": float(target),
                "choices": best,
                "chosen": [net.edges[e].names[k] for e, k in enumerate(best)],
                "predicted_ms": table.path_ms(best),
                "val_acc": best_acc,
                "start_val_acc": scores[tuple(start)],
                "log_prob": sum(log_p[e][k] for e, k in enumerate(best)),
            }
        )
    scored = [
        {"choices": list(k), "predicted_ms": table.path_ms(list(k)), "val_acc": v}
        for k, v in scores.items()
    ]
    return picks, scored
