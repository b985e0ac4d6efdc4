"""`make help`: every target listed, descriptions in one column, make variables expanded."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_make_help_aligns_every_target_and_expands_variables():
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "help", "VENV=/opt/some-venv"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    documented = re.findall(r"^([a-zA-Z_-]+):.*## ", (REPO / "Makefile").read_text(), re.M)
    assert [line.split()[0] for line in lines] == documented
    # The description starts in one column on every line, after the longest target's name
    starts = {len(line) - len(line[2:].split(maxsplit=1)[1]) for line in lines}
    assert starts == {2 + max(map(len, documented)) + 2}, lines
    assert "$(" not in proc.stdout
    assert "create /opt/some-venv and install" in proc.stdout
