"""The rules read in one place (`fruitnet.settings`)."""

from __future__ import annotations

import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS

from fruitnet import settings


def test_image_extensions_are_torchvisions():
    assert tuple(IMG_EXTENSIONS) == settings.IMAGE_EXTENSIONS
    assert settings.has_image_extension("a/B.JPG") and not settings.has_image_extension("x.gif")


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", " Yes ", "on"])
def test_offline_words(monkeypatch, word):
    monkeypatch.setenv(settings.OFFLINE_ENV, word)
    assert settings.is_offline()


@pytest.mark.parametrize("word", ["0", "false", "no", "", "offline"])
def test_other_words_are_not_offline(monkeypatch, word):
    monkeypatch.setenv(settings.OFFLINE_ENV, word)
    assert not settings.is_offline()


def test_junk_folders():
    for name in ("__MACOSX", ".git", "$RECYCLE.BIN", "System Volume Information"):
        assert settings.is_junk_dir(name)
    assert not settings.is_junk_dir("Apple Braeburn")
