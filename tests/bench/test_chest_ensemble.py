"""bench/chest_ensemble.py: ensembles average their members' probabilities and cuts, and the report."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
ensemble = importlib.import_module("chest_ensemble")

LABELS = torch.tensor([0, 0, 1, 1])


def test_an_ensemble_ranks_by_the_mean_probability_at_the_mean_cut():
    # Each member ranks one NORMAL film above one PNEUMONIA film; their mean ranks every film right
    a = (torch.tensor([0.1, 0.6, 0.5, 0.9]), LABELS, 0.55)
    b = (torch.tensor([0.6, 0.1, 0.9, 0.5]), LABELS, 0.55)
    singles = ensemble.ensembles([a, b], 1)
    assert [s["auroc"] for s in singles] == [pytest.approx(0.75), pytest.approx(0.75)]
    assert [s["acc"] for s in singles] == [50.0, 50.0]
    (pair,) = ensemble.ensembles([a, b], 2)
    # mean probabilities 0.35, 0.35, 0.7, 0.7
    assert pair["auroc"] == pytest.approx(1.0)
    assert (pair["acc"], pair["spec"], pair["sens"]) == (100.0, 100.0, 100.0)
    # the cut is the members' mean: 0.75 calls both PNEUMONIA films NORMAL
    (pair,) = ensemble.ensembles([a, (b[0], LABELS, 0.95)], 2)
    assert pair["auroc"] == pytest.approx(1.0)
    assert (pair["acc"], pair["spec"], pair["sens"]) == (50.0, 100.0, 0.0)
    assert len(ensemble.ensembles([a, b, a], 2)) == 3


def test_members_that_saw_the_films_in_another_order_are_refused():
    a = (torch.tensor([0.1, 0.9]), torch.tensor([0, 1]), 0.5)
    b = (torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), 0.5)
    with pytest.raises(SystemExit, match="different orders"):
        ensemble.ensembles([a, b], 2)


def test_render_names_the_budget_of_each_row_and_the_auroc_the_goal_needs():
    scores = [{"acc": 80.0, "spec": 70.0, "sens": 90.0, "auroc": 0.90, "best_acc": 84.0}]
    pairs = [
        {"acc": 82.0, "spec": 74.0, "sens": 90.0, "auroc": a, "best_acc": b}
        for a, b in ((0.91, 85.0), (0.93, 86.0))
    ]
    rows = [(60, "best val/acc", 1, scores), (20, "last epoch", 2, pairs)]
    text = ensemble.render(rows, "python bench/chest_ensemble.py --work w", "a CPU")
    one = "| best val/acc | 1 | 60 s | 60 s | 1 | 80.0 | 70.0 | 90.0 | 0.900 | 84.0 |"
    two = (
        "| last epoch | 2 | 20 s | 40 s | 2 | 82.0 ± 0.0 | 74.0 ± 0.0 | 90.0 ± 0.0 | 0.920 ± 0.014"
    )
    assert one in text.splitlines()
    assert f"{two} | 85.5 ± 0.7 |" in text.splitlines()
    assert "about 0.965" in text and "mean AUROC is 0.920" in text
    assert "more than 86.0 % at any cut" in text


def test_the_best_cut_is_the_most_accurate_one_that_keeps_the_specificity():
    probs = torch.tensor([0.5, 0.1, 0.2, 0.3, 0.4, 0.6])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    # cut 0.1: one NORMAL film right (50 % specificity), every PNEUMONIA film right: 5 of 6
    assert ensemble.best_accuracy(probs, labels, min_spec=0.0) == pytest.approx(500 / 6)
    assert ensemble.best_accuracy(probs, labels, min_spec=50.0) == pytest.approx(500 / 6)
    # both NORMAL films right needs cut 0.5, which leaves one PNEUMONIA film: 3 of 6
    assert ensemble.best_accuracy(probs, labels, min_spec=85.0) == pytest.approx(50.0)
