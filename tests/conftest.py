"""Shared fixtures: where the real sample images live, and small image trees made on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs one pytest-xdist worker per core: one torch thread each (and in the
        # commands they start), else every worker spreads over all cores and they fight for them.
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


def shared_data_dir() -> Path | None:
    """`$FRUITNET_SHARED_DATA`, else `../shared/data` beside the checkout; None when absent."""
    env = os.environ.get("FRUITNET_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real sample data not found: set FRUITNET_SHARED_DATA or put shared/ beside the repo"
        )
    return path


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch, tmp_path):
    # Tests never download: any accidental hub/Kaggle access must fail fast, and caches stay per test.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("FRUITNET_OFFLINE", "1")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One paths.data_dir for the whole session, so the synthetic set is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory, data_dir) -> SimpleNamespace:
    """The basic CNN trained once per session (per xdist worker) on the synthetic set: the
    checkpoint eval, predict, export and explain tests start from. Read it, never write to it."""
    from helpers import TRAINED_RECIPE, train

    from fruitnet.data import SyntheticDataModule

    run_dir = tmp_path_factory.mktemp("trained_cnn")
    with pytest.MonkeyPatch.context() as mp:  # the autouse isolation is function-scoped
        mp.setenv("FRUITNET_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(run_dir / "torch_home"))
        results = train(TRAINED_RECIPE, run_dir, data_dir)
    dm = SyntheticDataModule(
        root=data_dir / "synthetic", train_per_class=20, test_per_class=8, num_workers=0
    )
    dm.setup("test")
    return SimpleNamespace(
        run_dir=run_dir,
        results=results,
        ckpt=Path(results["best_ckpt"]),
        test_paths=dm.test_set.paths,
    )


@pytest.fixture(scope="session")
def tiny_data(data_dir) -> Path:
    """`data_dir` with the `helpers.TINY_DATA` synthetic set written into it."""
    from helpers import TINY_DATA

    from fruitnet.data import generate_synthetic_fruits

    generate_synthetic_fruits(data_dir / "synthetic", **TINY_DATA, seed=0)
    return data_dir
