"""bench/chest_data_curve.py: the AUROC the chest goal needs, the learning-curve fit and its report."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
curve = importlib.import_module("chest_data_curve")


def test_the_goal_needs_the_binormal_auroc_through_90_percent_both_ways():
    # d' = 2 z(0.9) = 2.563, AUROC = Phi(d' / sqrt 2) = Phi(1.812)
    assert curve.auroc_needed(0.90) == pytest.approx(0.9650, abs=5e-4)
    assert curve.auroc_needed(0.5) == pytest.approx(0.5)
    assert curve.auroc_needed(0.95) > curve.auroc_needed(0.90)


def test_the_fit_recovers_a_power_law_and_inverts_it():
    films = [120, 120, 200, 200, 300, 300]
    auroc = [1 - 2.0 * f**-0.5 for f in films]
    a, b = curve.fit_power_law(films, auroc)
    assert (math.exp(a), b) == (pytest.approx(2.0), pytest.approx(-0.5))
    assert curve.films_for(a, b, 1 - 2.0 * 400**-0.5) == pytest.approx(400)
    # an error that grows with films never reaches a target
    a, b = curve.fit_power_law([100, 200], [0.9, 0.8])
    assert b > 0 and curve.films_for(a, b, 0.95) == math.inf


def test_render_has_a_row_per_film_count_and_the_fit():
    def run(acc: float, auroc: float, epochs: int) -> dict:
        return {
            "test_acc": acc, "test_specificity": acc - 0.1, "test_recall": acc + 0.1,
            "test_auroc": auroc, "epochs": epochs,
        }  # fmt: skip

    rows = {
        150: [run(0.8, 0.90, 100), run(0.7, 0.88, 104)],
        60: [run(0.7, 0.80, 200), run(0.6, 0.84, 210)],
    }
    text = curve.render(rows, "python bench/chest_data_curve.py --work w", "a CPU")
    table = [
        line for line in text.splitlines() if line.startswith("| 60") or line.startswith("| 150")
    ]
    assert table == [
        "| 60 | 2 | 65.0 ± 7.1 | 55.0 ± 7.1 | 75.0 ± 7.1 | 0.820 ± 0.028 | 200-210 |",
        "| 150 | 2 | 75.0 ± 7.1 | 65.0 ± 7.1 | 85.0 ± 7.1 | 0.890 ± 0.014 | 100-104 |",
    ]
    a, b = curve.fit_power_law([120, 120, 300, 300], [0.80, 0.84, 0.90, 0.88])
    assert f"films^{b:.2f}" in text and "about 0.965" in text and "120-300 films" in text
    assert f"{curve.films_for(a, b, curve.auroc_needed()):,.0f} films" in text
    # a flat or falling curve is said to extrapolate to nothing
    rows[60] = [run(0.8, 0.95, 200), run(0.8, 0.93, 210)]
    flat = curve.render(rows, "python bench/chest_data_curve.py --work w", "a CPU")
    assert "extrapolates to nothing" in flat and "Kermany" not in flat


def test_a_cap_under_the_test_films_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="at least 60 per class"):
        curve.main(["--work", str(tmp_path), "--films", "40"])
