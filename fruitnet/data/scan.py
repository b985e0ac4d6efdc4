"""Folder layouts, the class index, name mapping between splits, corrupt files, stratified splits.

One scanner serves every preset (fruits, chest_xray, folder, synthetic):

- ``fruits``: ``Training/`` + ``Test/`` (+ optional ``Validation/``), as Fruits-360 ships.
- ``split``:  ``train/`` + ``test/`` (+ optional ``val/``), any case, as the chest X-ray set ships.
- ``single``: one folder of class folders; the datamodule splits it.
- ``auto``:   the first of those that matches, logged.

The class index is the sorted list of the training folder's (non-empty) class folders. Other
splits are mapped onto it by folder NAME, so a class missing from Test cannot shift labels. Names
are compared and stored in Unicode NFC (`fruitnet.data.walk.class_name`): ``Test/Café`` written
on a Mac (NFD) is the class ``Training/Café`` written on Linux (NFC). A name that still matches
no training class is shown with its nearest training name and the code points where they differ.

One image never gets two labels or two splits. Links are followed, but each real folder is walked
once per class folder; a link back to the class folder or to a folder holding it (a loop) is
skipped with a warning. Files are told apart by what they are on disk (device and inode), so a
symbolic link, a hard link or a linked folder reaching a file already seen is the same image:
reached twice in one class it counts once (the scan line reports the duplicates skipped); in two
classes or two splits the scan stops with `DataConflictError` naming both paths. Class or split
folders whose names differ only in case (class folders: or in Unicode form), and a copy of the
dataset nested inside a class folder, stop the scan as well.

The file walker and those checks live in `fruitnet.data.walk`, finding the layout in
`fruitnet.data.layout`; this module lists the samples, checks every image and splits them.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fruitnet.data.catalog import LAYOUTS
from fruitnet.data.errors import ClassMismatchError, DataConflictError, DataRootError, DataWarning
from fruitnet.data.io import CorruptImageError, check_image
from fruitnet.data.layout import data_root_error, resolve_layout
from fruitnet.data.walk import (
    FileTree,
    check_conflicts,
    list_classes,
    name_difference,
    near_name,
    warn_loops,
)

__all__ = [
    "LAYOUTS",
    "ClassMismatchError",
    "DataConflictError",
    "DataRootError",
    "DataWarning",
    "Sample",
    "ScanResult",
    "find_corrupt",
    "resolve_layout",
    "scan_dataset",
    "stratified_split",
]


Sample = tuple[Path, int]


@dataclass
class ScanResult:
    """What a data root holds. ``val``/``test`` are None when the layout has no such folder."""

    root: Path
    layout: str
    class_names: list[str]
    train: list[Sample]
    val: list[Sample] | None = None
    test: list[Sample] | None = None
    split_dirs: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Paths skipped because they reach a file (or folder) already counted in the same class.
    duplicates: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- scanning


def _cap(files: list[Path], cap: int | None, salt: str, seed: int) -> list[Path]:
    if cap is None or len(files) <= cap:
        return files
    # Seeded by name so the subset of one class does not change when other classes are added.
    rng = random.Random(f"{seed}/{salt}")
    return sorted(rng.sample(files, cap))


def find_corrupt(paths: Sequence[Path], num_threads: int | None = None) -> list[tuple[Path, str]]:
    """``[(path, reason)]`` for every file in ``paths`` that `check_image` rejects, in order."""
    threads = num_threads or min(4, os.cpu_count() or 1)

    def one(p: Path) -> tuple[Path, str] | None:
        try:
            check_image(p)
        except CorruptImageError as e:
            return (p, e.reason)
        return None

    if threads <= 1 or len(paths) < 64:
        results = map(one, paths)
        return [r for r in results if r is not None]
    # Pillow releases the GIL while decoding, so threads overlap the decode work.
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check") as ex:
        return [r for r in ex.map(one, paths, chunksize=64) if r is not None]


def _report_corrupt(bad: list[tuple[Path, str]], skip: bool, total: int) -> None:
    if not bad:
        return
    if not skip:
        (path, reason), *others = bad
        raise CorruptImageError(
            path,
            reason,
            others,
            hint="Remove or replace the file(s), or set data.skip_corrupt=true to skip them.",
        )
    listed = "\n".join(f"  {p}: {r}" for p, r in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    warnings.warn(
        f"skipped {len(bad)} corrupt image(s) of {total} (skip_corrupt=True):\n{listed}{more}",
        DataWarning,
        stacklevel=3,
    )


def _map_split(
    split: str,
    split_dir: Path,
    classes: dict[str, list[Path]],
    index: dict[str, int],
    train_dir: Path,
) -> list[Sample]:
    extra = sorted(set(classes) - set(index))
    if extra:
        details = [f"  {split_dir / name}{_near_tip(name, list(index))}" for name in extra]
        raise ClassMismatchError(
            f"{len(extra)} class folder(s) in the {split} folder {split_dir} have no folder in "
            f"the training folder {train_dir}: {', '.join(map(repr, extra))}\n"
            + "\n".join(details)
            + "\nThe class index comes from the training folder; rename or remove these "
            "folders, or add training images for them."
        )
    missing = [n for n in index if n not in classes]
    if missing:
        shown = ", ".join(map(repr, missing[:20])) + (" ..." if len(missing) > 20 else "")
        warnings.warn(
            f"{len(missing)} class(es) of the training folder have no images in the {split} "
            f"folder {split_dir}: {shown}. Labels stay mapped by name; {split} metrics just "
            "lack these classes.",
            DataWarning,
            stacklevel=3,
        )
    return [(p, index[name]) for name in sorted(classes) for p in classes[name]]


def _near_tip(name: str, known: list[str]) -> str:
    near = near_name(name, known)
    if near is None:
        return ""
    hit, how = near
    if how == "in another case":
        return f" (training has {hit!r}: names must match exactly)"
    difference = name_difference(name, hit, "here", "in training")
    return f": did you mean {hit!r} ({how})? They differ at {difference}"


def scan_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    skip_corrupt: bool = False,
    max_per_class: int | None = None,
    seed: int = 42,
    verify: bool = True,
) -> ScanResult:
    """Scan a data root: layout, class index, ``(path, label)`` lists per split.

    Every file is decoded once here (`check_image`), so a broken file stops the run before
    training, not in the middle of an epoch. Raises `DataConflictError` when one file would get
    two labels or two splits (see the module docstring).
    """
    folder, lay, dirs = resolve_layout(root, layout)
    listed: dict[str, dict[str, FileTree]] = {}
    empty_train: list[str] = []
    for split, d in dirs.items():
        listed[split], empty = list_classes(d)
        if split == "train":
            empty_train = empty
    check_conflicts(listed, dirs)
    warn_loops(listed)
    duplicates = sum(t.duplicates for classes in listed.values() for t in classes.values())
    trees: dict[str, dict[str, list[Path]]] = {
        split: {
            name: _cap(tree.files, max_per_class, f"{split}/{name}", seed)
            for name, tree in classes.items()
        }
        for split, classes in listed.items()
    }

    skipped: list[tuple[Path, str]] = []
    if verify:
        all_files = [p for tree in trees.values() for files in tree.values() for p in files]
        skipped = find_corrupt(all_files)
        _report_corrupt(skipped, skip_corrupt, len(all_files))
        if skipped:
            bad = {p for p, _ in skipped}
            for tree in trees.values():
                for name in list(tree):
                    tree[name] = [p for p in tree[name] if p not in bad]
                    if not tree[name]:
                        del tree[name]
                        if tree is trees["train"]:
                            empty_train.append(name)

    train_dir = dirs["train"]
    if empty_train:
        warnings.warn(
            f"dropped {len(empty_train)} empty class folder(s) in {train_dir} (no readable "
            f"images): {', '.join(map(repr, sorted(empty_train)))}",
            DataWarning,
            stacklevel=2,
        )
    class_names = sorted(trees["train"])
    if len(class_names) < 2:
        raise data_root_error(
            Path(root),
            layout,
            f"has {len(class_names)} usable class folder(s) in {train_dir}; at least 2 are needed",
        )
    index = {name: i for i, name in enumerate(class_names)}
    result = ScanResult(
        root=folder,
        layout=lay,
        class_names=class_names,
        train=_map_split("train", train_dir, trees["train"], index, train_dir),
        split_dirs=dict(dirs),
        skipped=skipped,
        duplicates=duplicates,
    )
    for split in ("val", "test"):
        if split in dirs:
            samples = _map_split(split, dirs[split], trees[split], index, train_dir)
            setattr(result, split, samples)
    return result


# --------------------------------------------------------------------------- splits


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int = 42
) -> list[np.ndarray]:
    """Split indices ``0..len(labels)-1`` into ``len(fractions)`` parts, class by class.

    The first part is the training part. Per class, part ``j >= 1`` gets
    ``round(n * fractions[j])`` images but at least one when its fraction is positive, as long as
    training keeps one; so any class with 2+ images lands in the validation part (``j = 1``),
    and a class with a single image stays in training (with a warning). Seeded and deterministic.
    """
    labels = np.asarray(labels, dtype=np.int64)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 2 or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be >= 0, at least two, not all 0; got {list(fractions)}")
    fr = fr / fr.sum()
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    singletons = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = _part_counts(len(idx), fr)
        if len(idx) == 1 and fr[1:].any():
            singletons.append(int(c))
        start = 0
        for j, k in enumerate(counts):
            parts[j].append(idx[start : start + k])
            start += k
    if singletons:
        warnings.warn(
            f"{len(singletons)} class(es) have a single image, kept in training only "
            f"(label(s) {singletons[:20]})",
            DataWarning,
            stacklevel=2,
        )
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]


def _part_counts(n: int, fr: np.ndarray) -> list[int]:
    rest = [int(np.floor(n * f + 0.5)) for f in fr[1:]]
    rest = [max(k, 1) if f > 0 else 0 for k, f in zip(rest, fr[1:], strict=True)]
    # Training keeps at least one image; take back from the last parts first so that the
    # validation part (index 1) is the last to lose its image.
    while n - sum(rest) < 1 and any(rest):
        j = max(i for i, k in enumerate(rest) if k > 0)
        rest[j] -= 1
    return [n - sum(rest), *rest]


def group_pattern(pattern: str | None) -> re.Pattern | None:
    """``data.val_group`` compiled; a bad regex is a one-line error naming it."""
    if pattern in (None, ""):
        return None
    try:
        return re.compile(str(pattern))
    except re.error as err:
        raise ValueError(f"data.val_group={pattern!r} is not a regular expression: {err}") from err


def carve_val(
    samples: Sequence[Sample], fraction: float, seed: int = 42, group: str | None = None
) -> tuple[list[Sample], list[Sample]]:
    """``fraction`` of ``samples`` carved out for validation, stratified by class and seeded.

    ``group``: the first match of this regex in a file's name names its group (a patient:
    ``person\\d+``), and a group goes wholly to one side, so no patient's images sit in both;
    a file without a match is a group of its own. Groups are taken in a seeded random order
    while their class still needs validation images (at least one group per class with 2+
    groups), so the fractions come out close to, not exactly at, ``fraction``.
    """
    labels = np.asarray([y for _, y in samples], dtype=np.int64)
    pattern = group_pattern(group)
    if pattern is None:
        train_idx, val_idx = stratified_split(labels, (1 - fraction, fraction), seed)
    else:
        train_idx, val_idx = _grouped_split(samples, labels, fraction, seed, pattern)
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def _grouped_split(samples, labels, fraction, seed, group) -> tuple[np.ndarray, np.ndarray]:
    names = [m.group(0) if (m := group.search(p.name)) else p.name for p, _ in samples]
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        members.setdefault(name, []).append(i)
    keys = sorted(members)
    order = np.random.default_rng(seed).permutation(len(keys))
    classes = np.unique(labels)
    want = {int(c): round(int((labels == c).sum()) * fraction) for c in classes}
    # Groups per class (by their first image's label): a class keeps at least one in train
    groups_of = {int(c): sum(1 for k in keys if labels[members[k][0]] == c) for c in classes}
    taken = dict.fromkeys(want, 0)
    chosen = dict.fromkeys(want, 0)
    val: list[int] = []
    for j in order:
        idx = members[keys[j]]
        c = int(labels[idx[0]])
        first = chosen[c] == 0 and groups_of[c] > 1 and fraction > 0
        if first or (taken[c] + len(idx) <= want[c] and chosen[c] < groups_of[c] - 1):
            val += idx
            taken[c] += len(idx)
            chosen[c] += 1
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(samples)), val_idx)
    return train_idx, val_idx
