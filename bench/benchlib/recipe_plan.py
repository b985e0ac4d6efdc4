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
        out.append(Comparison(**fields))
    return out


CASES = load_cases("recipes")
COMMON: tuple[str, ...] = tuple(CASES["common"])
COLORS: dict[str, list[str]] = CASES["colors"]
COMPARISONS: list[Comparison] = _comparisons(CASES)
