"""The folder layouts the scanner accepts and the datasets fruitnet knows by name.

Read by the scan (which folders are splits, what to print when a data root does not fit) and by
the download command (where to fetch a dataset, which folder of an archive is its data root).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "LAYOUT_ALIASES",
    "LAYOUT_TREES",
    "SPLITLIKE",
    "SPLIT_NAMES",
    "DatasetInfo",
    "dataset_hint",
]

LAYOUTS = ("auto", "fruits", "split", "single")

# Split folder names per layout, compared in lower case.
SPLIT_NAMES = {
    "fruits": {"train": ("training",), "val": ("validation",), "test": ("test",)},
    "split": {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)},
}
# Folder names that mean a split, never a class.
SPLITLIKE = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})

LAYOUT_TREES = {
    "fruits": "{root}/\n  Training/<class name>/*.jpg\n  Test/<class name>/*.jpg",
    "split": (
        "{root}/\n  train/<class name>/*.jpg\n  val/<class name>/*.jpg    (optional)\n"
        "  test/<class name>/*.jpg"
    ),
    "single": "{root}/\n  <class name>/*.jpg    (one folder per class, at least 2 classes)",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    handle: str  # the Kaggle dataset
    layout: str  # one of LAYOUTS
    splits: tuple[str, str]  # the train and test folder names as the dataset ships them
    layout_hint: str  # where data.root must point, in words
    aliases: tuple[str, ...] = ()  # further data.layout values that mean this dataset
    folder_words: tuple[str, ...] = ()  # a data root named with one is probably this dataset
    preferred_variant: str | None = None  # of several copies in one archive, the one named so
    min_classes: int = 2

    @property
    def url(self) -> str:
        return f"https://www.kaggle.com/datasets/{self.handle}"

    @property
    def download_command(self) -> str:
        return f"python -m fruitnet.data.download {self.name}"


DATASETS: dict[str, DatasetInfo] = {
    "fruits": DatasetInfo(
        name="fruits",
        handle="moltean/fruits",
        layout="fruits",
        splits=("Training", "Test"),
        layout_hint="the folder holding Training/ and Test/",
        folder_words=("fruit",),
        # Newer releases ship several image sizes; 100x100 is the study's format.
        preferred_variant="100x100",
    ),
    "chest_xray": DatasetInfo(
        name="chest_xray",
        handle="paultimothymooney/chest-xray-pneumonia",
        layout="split",
        splits=("train", "test"),
        layout_hint="the chest_xray/ folder holding train/, val/ and test/",
        aliases=("chest",),
        folder_words=("chest", "xray"),
    ),
}

# Preset names accepted as layouts: the preset's folder shape, but errors name its download.
LAYOUT_ALIASES = {
    alias: info.layout
    for info in DATASETS.values()
    for alias in (info.name, *info.aliases)
    if alias != info.layout
}


def dataset_hint(root: Path, layout: str) -> DatasetInfo | None:
    """The known dataset that a data root probably holds, from the layout asked for or the
    folder's name; None when nothing suggests one."""
    for info in DATASETS.values():
        if layout in (info.name, *info.aliases):
            return info
    name = root.name.lower().replace("-", "").replace("_", "")
    for info in DATASETS.values():
        if any(word in name for word in info.folder_words):
            return info
    return None
