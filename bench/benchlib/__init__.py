"""The code behind the bench scripts (`bench/bench.py`, `recipes.py`, `search.py`); their cases are
data in `bench/cases/`, the prose of their reports markdown in `bench/templates/`."""
