"""Progress output: a per-epoch line (epoch, train loss, val acc, img/s, seconds) when stdout is
not a terminal, and no progress-bar redraws in that log; the Rich bar in a terminal."""

from __future__ import annotations

import re
import sys

from helpers import cli

from fruitnet.callbacks import EpochLineProgress, progress_bar

LINE = re.compile(
    r"epoch (\d+)/(\d+): train loss (\d+\.\d{4}), val acc (\d\.\d{4}), (\d+) img/s, (\d+\.\d) s"
)


def test_log_file_gets_one_line_per_epoch(tmp_path, data_dir):
    proc = cli(
        "-m", "fruitnet.train", "data=synthetic", "data.num_classes=3", "data.image_size=32",
        "data.train_per_class=20", "data.test_per_class=4", "data.batch_size=8",
        "trainer=cpu", "trainer.max_epochs=2", "callbacks.model_summary=null",
        "callbacks.model_size.latency=false", "test=false", f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    out = proc.stdout + proc.stderr  # both are pipes here, as in `... > train.log 2>&1`
    assert proc.returncode == 0, out[-3000:]
    lines = LINE.findall(out)
    assert [(e, n) for e, n, *_ in lines] == [("1", "2"), ("2", "2")], out[-3000:]
    for _, _, loss, acc, rate, seconds in lines:
        # An epoch of 60 tiny images can take under 0.05 s on an idle machine: it prints "0.0 s";
        # the img/s figure is what shows that time was measured.
        assert float(loss) > 0 and 0 <= float(acc) <= 1 and int(rate) > 0 and float(seconds) >= 0
    # No bar: neither Rich's bar characters nor tqdm's carriage-return redraws (test=false: the
    # test-metrics table draws with the same characters).
    assert "━" not in out and "\r" not in out and "it/s" not in out
    # The run's own log file gets the lines too.
    assert len(LINE.findall((tmp_path / "run" / "train.log").read_text())) == 2


def test_terminal_gets_the_rich_bar(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, s):  # pragma: no cover - not written to
            return len(s)

    monkeypatch.setattr(sys, "stdout", Tty())
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.undo()
    assert isinstance(progress_bar(), EpochLineProgress)  # pytest captures stdout: not a tty
