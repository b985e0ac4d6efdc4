"""Which file `ckpt_path=last` means (`fruitnet.checkpoints`)."""

from __future__ import annotations

import pytest
import torch

from fruitnet.checkpoints import CheckpointError, resolve_ckpt_path


def test_ckpt_path_last_prefers_own_run_then_newest_earlier(tmp_path):
    runs = tmp_path / "runs"
    old, new, own = runs / "a", runs / "b", runs / "c"
    for d in (old, new):
        (d / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": {}}, d / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", own, runs) == str(new / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_ckpt_path("last", own, None)  # a multirun job looks only at itself
    (own / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, own / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", own, runs) == str(own / "checkpoints" / "last.ckpt")
