"""Shared fixtures: where the real sample images live, and small image trees made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
