"""The comparisons bench/recipes.py runs, read from bench/cases/recipes.yaml."""

from __future__ import annotations

import dataclasses

from benchlib.common import load_cases


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe: experiment configs run one after the other, each resuming the previous one."""

    label: str
    # (experiment, epochs of that stage): the epochs split the budget between the stages
    stages: tuple[tuple[str, int], ...]
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A study recipe against its best_* counterpart on one data set, at one budget."""

    key: str
    dataset: str
    study: Recipe
    best: Recipe
    budget_s: int
    seeds: tuple[int, ...] = (0, 1, 2)
    # data= preset instead of the experiment's own (the folder comparison)
    data: str | None = None
    note: str = ""
    binary: bool = False
    # Part of a plain `make bench-recipes`; the others run with --only KEY
    default: bool = True
    # Key of a comparison whose study runs (same data, budget, seeds) this one shares
    study_from: str | None = None
    # More recipes in the same table, run between study and best for each seed
    others: tuple[Recipe, ...] = ()
    # (result key, lowest value) every seed of best must reach: PASS or MISS in the report
    goal: tuple[tuple[str, float], ...] = ()
    # Evaluate each run's checkpoint with Grad-CAM (fruitnet.eval explain=true): central share
    explain: bool = False
    # A template (bench/templates/<history>.md) with how the comparison's best was set up
    history: str | None = None

    def roles(self) -> list[tuple[str, Recipe]]:
        """(role, recipe) in the order each seed runs them and the table lists them."""
        others = [(f"other{i + 1}", r) for i, r in enumerate(self.others)]
        return [("study", self.study), *others, ("best", self.best)]


def _recipes(cases: dict) -> dict[str, Recipe]:
    sets = cases["override_sets"]
    return {
        name: Recipe(
            label=r["label"],
            stages=tuple((exp, int(epochs)) for exp, epochs in r["stages"]),
            overrides=tuple(o for s in r.get("overrides", ()) for o in sets[s]),
        )
        for name, r in cases["recipes"].items()
    }


def _comparisons(cases: dict) -> list[Comparison]:
    recipes = _recipes(cases)
    out = []
    for c in cases["comparisons"]:
        fields = {**c, "study": recipes[c["study"]], "best": recipes[c["best"]]}
        if "seeds" in fields:
            fields["seeds"] = tuple(fields["seeds"])
        fields["others"] = tuple(recipes[name] for name in c.get("others", ()))
        fields["goal"] = tuple((k, float(v)) for k, v in c.get("goal", {}).items())
        out.append(Comparison(**fields))
    return out


CASES = load_cases("recipes")
COMMON: tuple[str, ...] = tuple(CASES["common"])
COLORS: dict[str, list[str]] = CASES["colors"]
COMPARISONS: list[Comparison] = _comparisons(CASES)
