"""One net per latency target from one trained supernet (``search.targets``), once-for-all style.

For each target: start from the most probable path under the learned architecture distribution
whose predicted latency lies in the target's band [band x target, target] (exact, by dynamic
programming over the edges: a multiple-choice knapsack on log p), then a small evolutionary search
around it: mutate one or two edges (ops drawn from the edge's probabilities), keep a mutant when it
stays in the band and the supernet with that path scores higher on the held-out split. Each path
is scored with its BatchNorm statistics recomputed on a few training batches (Once-for-All's
recalibration): the supernet's running statistics mix every path it trained, and a small path read
with them scored 1-5 % on fruits-360-small, so the accuracy comparison chose noise. The band's
floor keeps a target's net near its target: with only a ceiling, the supernet's accuracy on a few
hundred held-out images often prefers a net half the target's latency (one run chose a 0.31 ms net
for a 0.63 ms target), and a front of targets collapses onto a few small nets. Where no path
reaches the band (a target near the space's minimum), the floor is dropped. The held-out split is the one the
architecture steps used, carved from the training data; the test split is never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fruitnet.batchnorm import adapt_batchnorm, batchnorm_layers
from fruitnet.search.latency import LatencyTable
from fruitnet.search.supernet import SuperNet

# Latency steps of the knapsack: costs are rounded up to target / STEPS, so a path the DP
# accepts always fits the target in real ms.
STEPS = 2000


def most_probable_under(
    table: LatencyTable,
    log_p: Sequence[Sequence[float]],
    target_ms: float,
    floor_ms: float = 0.0,
) -> list[int] | None:
    """The path maximising sum of log p with floor <= predicted latency <= target (None: no path
    fits under the target; when no path reaches the floor, the slowest path that fits)."""
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
    # Rounding costs up keeps every accepted path under the target; the floor index rounds down
    lowest = max(0, int(math.floor((floor_ms - table.fixed_total) / unit)))
    if lowest <= STEPS and np.isfinite(best[lowest:]).any():
        at = lowest + int(np.argmax(best[lowest:]))
    else:
        # Nothing reaches the floor: the slowest path that fits, the nearest under the target
        at = int(np.flatnonzero(np.isfinite(best))[-1])
    choices = []
    for e in range(len(picks) - 1, -1, -1):
        k = int(picks[e][at])
        choices.append(k)
        at -= int(math.ceil(max(table.edges[e][k], 0.0) / unit - 1e-9))
    return choices[::-1]


@torch.no_grad()
def path_accuracy(
    net: SuperNet,
    choices: Sequence[int],
    batches: Sequence[Any],
    calib: Sequence[Any] = (),
) -> float:
    """Held-out accuracy of the supernet with each edge running ``choices`` (eval mode), with
    BatchNorm statistics recomputed on ``calib`` batches first when given (restored after)."""
    was_training = net.training
    for edge, k in zip(net.edges, choices, strict=True):
        edge.active, edge.involved, edge.gates = int(k), None, None
    norms = batchnorm_layers(net)
    saved = [[b.clone() for b in m.buffers()] for m in norms] if calib else []
    try:
        if calib:
            # The same re-estimation as eval's adapt_bn: a plain average over the batches
            adapt_batchnorm(net, (b[0] if isinstance(b, list | tuple) else b for b in calib))
        net.eval()
        correct = total = 0
        for x, y in batches:
            correct += int((net(x).argmax(-1) == y).sum())
            total += int(y.numel())
    finally:
        for m, buffers in zip(norms, saved, strict=False):
            for b, old in zip(m.buffers(), buffers, strict=True):
                b.copy_(old)
        net.train(was_training)
    return correct / max(1, total)


def _mutant(
    choices: list[int],
    probs: list[list[float]],
    gen: torch.Generator,
    table: LatencyTable,
    t: float,
    floor: float,
) -> list[int] | None:
    for _ in range(50):
        out = list(choices)
        n = 1 + int(torch.randint(2, (1,), generator=gen))
        for e in torch.randperm(len(out), generator=gen)[:n].tolist():
            # Mixed with uniform, so an op the distribution all but ruled out can still be tried
            p = 0.5 * torch.tensor(probs[e]) + 0.5 / len(probs[e])
            out[e] = int(torch.multinomial(p, 1, generator=gen))
        if out != choices and floor <= table.path_ms(out) <= t:
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
    band: float = 0.9,
    measure: Callable[[list[int]], float] | None = None,
    retries: int = 4,
    calib: Sequence[Any] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For each target: the chosen path and its numbers; and every path scored (for the front
    plot), each ``{"choices", "predicted_ms", "val_acc"}``. ``band``: the chosen path's predicted
    latency is at least band x target (0 keeps only the ceiling). ``calib``: training batches that
    each scored path recomputes its BatchNorm statistics on (none: the supernet's own).
    ``measure`` (choices -> ms, timed where the net will run): a chosen net measured outside
    [band, 1] x target is moved an edge or two toward the band (`_measured_pick`), up to
    ``retries`` times: a calibrated table misses single nets by 10-30 % on a small CPU."""
    if not 0.0 <= band < 1.0:
        raise ValueError(f"search.select_band must be in [0, 1), got {band!r}")
    probs = net.probs()
    log_p = [[math.log(max(q, 1e-12)) for q in p] for p in probs]
    scores: dict[tuple[int, ...], float] = {}

    def score(choices: list[int]) -> float:
        key = tuple(choices)
        if key not in scores:
            scores[key] = path_accuracy(net, choices, batches, calib)
        return scores[key]

    def describe(choices: list[int], goal: float, start: list[int]) -> dict[str, Any]:
        return {
            "goal_ms": float(goal),
            "choices": list(choices),
            "chosen": [net.edges[e].names[k] for e, k in enumerate(choices)],
            "predicted_ms": table.path_ms(choices),
            "val_acc": score(choices),
            "start_val_acc": score(start),
            "log_prob": sum(log_p[e][k] for e, k in enumerate(choices)),
        }

    gen = torch.Generator().manual_seed(seed)

    # The knapsack rounds each edge's cost up to a step: a path it puts in the band may sit up to
    # this far under the floor
    slack = (len(table.edges) + 1) / STEPS

    def choose(goal: float) -> dict[str, Any]:
        # A goal over the space's largest net aims at the top of the space
        want = band * min(goal, table.max_ms())
        start = most_probable_under(table, log_p, goal, want)
        if start is None:
            raise ValueError(f"no path of the space fits {goal:g} ms")
        # No path in the band (a target near the space's minimum): keep the ceiling only
        at = table.path_ms(start)
        floor = min(want, at) if at >= want - slack * goal else 0.0
        best, best_acc = start, score(start)
        for _ in range(evals):
            cand = _mutant(best, probs, gen, table, goal, floor)
            if cand is None:
                break
            if score(cand) > best_acc:
                best, best_acc = cand, scores[tuple(cand)]
        return describe(best, goal, start)

    def nudge(choices: list[int], need: float, tol: float, tried: set) -> dict[str, Any] | None:
        near = nearby_paths(table, log_p, choices, need, tol, tried)
        if not near:
            return None
        best = max(near, key=score)
        return describe(best, table.path_ms(choices) + need, choices)

    picks = [_measured_pick(t, choose, nudge, measure, band=band, retries=retries) for t in targets]
    scored = [
        {"choices": list(k), "predicted_ms": table.path_ms(list(k)), "val_acc": v}
        for k, v in scores.items()
    ]
    return picks, scored


def nearby_paths(
    table: LatencyTable,
    log_p: Sequence[Sequence[float]],
    choices: Sequence[int],
    need: float,
    tol: float,
    tried: set,
    top: int = 4,
) -> list[list[int]]:
    """Paths one or two edges from ``choices`` whose predicted latency differs from it by
    ``need`` ± ``tol`` ms, the ``top`` most probable; when none does, the one nearest to it."""
    base = list(choices)
    moves = [
        (e, k, table.edges[e][k] - table.edges[e][c], log_p[e][k] - log_p[e][c])
        for e, c in enumerate(base)
        for k in range(len(table.edges[e]))
        if k != c
    ]
    found = [((m,), m[2], m[3]) for m in moves]
    found += [
        ((a, b), a[2] + b[2], a[3] + b[3])
        for i, a in enumerate(moves)
        for b in moves[i + 1 :]
        if a[0] != b[0]
    ]

    def path(changes: tuple) -> list[int]:
        out = list(base)
        for e, k, _, _ in changes:
            out[e] = k
        return out

    found = [f for f in found if tuple(path(f[0])) not in tried]
    inside = sorted((f for f in found if abs(f[1] - need) <= tol), key=lambda f: -f[2])
    if inside:
        return [path(f[0]) for f in inside[:top]]
    nearest = min(found, key=lambda f: abs(f[1] - need), default=None)
    return [] if nearest is None else [path(nearest[0])]


def _measured_pick(
    target: float,
    choose: Callable[[float], dict[str, Any]],
    nudge: Callable[[list[int], float, float, set], dict[str, Any] | None],
    measure: Callable[[list[int]], float] | None,
    *,
    band: float,
    retries: int,
) -> dict[str, Any]:
    """One target's net: ``choose(target)``, then (with ``measure``) while it is measured outside
    [band, 1] x target, the attempt nearest the band's middle moved one or two edges by
    the predicted change that its measured miss asks for; the attempt measured nearest the middle.

    The predicted change is divided by the measured change per predicted ms of the last move (a
    secant): near the space's small end one run's table predicted a two-edge move at +0.09 ms
    that measured +0.17 ms."""
    middle = (1.0 + band) / 2
    # Measured in the same band the prediction was chosen in: a target is a ceiling
    lo, hi = band * target, target
    attempts = [choose(target)]
    bases: list[int | None] = [None]
    slope = 1.0
    while measure is not None:
        last = attempts[-1]
        # The median of three timings, each in a session of its own: one small net read 0.32
        # and 0.37 ms in two sessions on one CPU, a spread of the band's width
        ms = float(np.median([measure(last["choices"]) for _ in range(3)]))
        last["selection_ms"] = ms
        if lo <= ms <= hi or len(attempts) > retries:
            break
        if bases[-1] is not None:
            before = attempts[bases[-1]]
            dp = last["predicted_ms"] - before["predicted_ms"]
            dm = ms - before["selection_ms"]
            if dp * dm > 0:
                slope = min(4.0, max(0.25, dm / dp))
        at = min(
            range(len(attempts)), key=lambda i: abs(attempts[i]["selection_ms"] - middle * target)
        )
        base = attempts[at]
        need = (middle * target - base["selection_ms"]) / slope
        tried = {tuple(a["choices"]) for a in attempts}
        moved = nudge(base["choices"], need, (middle - band) * target / slope, tried)
        if moved is None:
            break
        attempts.append(moved)
        bases.append(at)
    pick = min(attempts, key=lambda a: abs(a.get("selection_ms", target) - middle * target))
    return {"target_ms": float(target), **pick, "attempts": len(attempts)}
