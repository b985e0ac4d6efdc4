"""Folder layouts, the class index, name mapping between splits, corrupt files, stratified splits.

One scanner serves every preset (fruits, chest_xray, folder, synthetic):

- ``fruits``: ``Training/`` + ``Test/`` (+ optional ``Validation/``), as Fruits-360 ships.
- ``split``:  ``train/`` + ``test/`` (+ optional ``val/``), any case, as the chest X-ray set ships.
- ``single``: one folder of class folders; the datamodule splits it.
- ``auto``:   the first of those that matches, logged.

The class index is the sorted list of the training folder's (non-empty) class folders. Other
splits are mapped onto it by folder NAME, so a class missing from Test cannot shift labels.

One image never gets two labels or two splits. Links are followed, but each real folder is walked
once per class folder; a link back to the class folder or to a folder holding it (a loop) is
skipped with a warning. Files are told apart by what they are on disk (device and inode), so a
symbolic link, a hard link or a linked folder reaching a file already seen is the same image:
reached twice in one class it counts once (the scan line reports the duplicates skipped); in two
classes or two splits the scan stops with `DataConflictError` naming both paths. Class or split
folders whose names differ only in case, and a copy of the dataset nested inside a class folder,
stop the scan as well.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fruitnet.data.io import CorruptImageError, check_image, is_image_file

log = logging.getLogger(__name__)

__all__ = [
    "LAYOUTS",
    "ClassMismatchError",
    "DataConflictError",
    "DataRootError",
    "DataWarning",
    "ScanResult",
    "find_corrupt",
    "resolve_layout",
    "scan_dataset",
    "stratified_split",
]

LAYOUTS = ("auto", "fruits", "split", "single")
# Preset names accepted as layouts: same folder shape as "split", but errors name the download.
_LAYOUT_ALIASES = {"chest_xray": "split", "chest": "split"}

_SPLIT_NAMES = {
    "fruits": {"train": ("training",), "val": ("validation",), "test": ("test",)},
    "split": {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)},
}
_SPLITLIKE = {"train", "training", "val", "valid", "validation", "test", "testing"}
_JUNK_DIRS = {"__macosx", "__pycache__", "$recycle.bin", "system volume information"}

_TREES = {
    "fruits": "{root}/\n  Training/<class name>/*.jpg\n  Test/<class name>/*.jpg",
    "split": (
        "{root}/\n  train/<class name>/*.jpg\n  val/<class name>/*.jpg    (optional)\n"
        "  test/<class name>/*.jpg"
    ),
    "single": "{root}/\n  <class name>/*.jpg    (one folder per class, at least 2 classes)",
}
_DOWNLOADS = {
    "fruits": ("python -m fruitnet.data.download fruits", "the folder holding Training/ and Test/"),
    "chest_xray": (
        "python -m fruitnet.data.download chest_xray",
        "the chest_xray/ folder holding train/, val/ and test/",
    ),
}


class DataRootError(ValueError):
    """The data root is missing, empty or not in the expected layout."""


class ClassMismatchError(ValueError):
    """A val/test class folder has no counterpart in the training folder."""


class DataConflictError(ValueError):
    """One image would get two labels or two splits (links, hard links, case-variant names,
    a nested copy of the dataset); the message names both paths."""


class DataWarning(UserWarning):
    """Something in the data was dropped or is unusual, but training can go on."""


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


# --------------------------------------------------------------------------- folder helpers


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_DIRS


def _visible_dirs(d: Path) -> list[Path]:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir() and not _is_junk(e.name))


def _direct_images(d: Path) -> list[Path]:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_file() and is_image_file(e.name)]


FileId = tuple  # (st_dev, st_ino) of what a path points at; ("unreadable", path) when stat fails


def _stat_id(path: str, entry: os.DirEntry | None = None) -> FileId:
    """What ``path`` is on disk, links followed: hard links and symbolic links share it."""
    try:
        st = entry.stat() if entry is not None else os.stat(path)
        if st.st_ino == 0:  # Windows fills st_ino only on os.stat
            st = os.stat(path)
    except OSError:
        return ("unreadable", path)
    return (st.st_dev, st.st_ino)


@dataclass
class _Tree:
    """The image files below one folder, each real file once (see `_walk`)."""

    files: list[Path] = field(default_factory=list)
    ids: list[FileId] = field(default_factory=list)
    duplicates: int = 0  # paths skipped: a file or folder reached a second time
    loops: list[tuple[Path, Path]] = field(default_factory=list)  # (link, the folder it reaches)
    subdirs: list[Path] = field(default_factory=list)  # every folder walked below the top


def _walk(top: Path, *, first_only: bool = False) -> _Tree:
    """Image files below ``top``, recursively (like ImageFolder), hidden and junk dirs pruned.

    Links are followed, but a real folder is walked once: a folder reached again through another
    link is skipped (its images counted as duplicates), and a link to ``top`` itself, to a folder
    holding it, or to a folder being walked (a loop) is skipped and recorded in ``loops``.
    A file reached under a second name (symbolic or hard link) is kept once. Files come out
    sorted by path; ``first_only`` stops at the first image.
    """
    tree = _Tree()
    top_id = _stat_id(str(top))
    # A link to `top` or to a folder holding it leads back into `top`: the walk would never end.
    enclosing = {_stat_id(str(p)) for p in Path(os.path.realpath(top)).parents} | {top_id}
    reached: dict[FileId, int] = {}  # walked folder -> image paths reached below it
    active: set[FileId] = set()  # the folders being walked: `top` down to the current one
    seen: set[FileId] = set()
    found: list[tuple[Path, FileId]] = []
    # (folder, its id, None to enter it | the image-path count when it was entered, to leave it)
    stack: list[tuple[Path, FileId, int | None]] = [(top, top_id, None)]
    while stack:
        d, did, entered = stack.pop()
        if entered is not None:
            active.discard(did)
            reached[did] = len(found) + tree.duplicates - entered
            continue
        if d is not top:
            if did in active or did in enclosing:
                tree.loops.append((d, Path(os.path.realpath(d))))
                continue
            if did in reached:
                tree.duplicates += reached[did]
                continue
            tree.subdirs.append(d)
        active.add(did)
        stack.append((d, did, len(found) + tree.duplicates))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                if not _is_junk(e.name):
                    subdirs.append((Path(e.path), _stat_id(e.path, e)))
            elif is_image_file(e.name):
                fid = _stat_id(e.path, e)
                if fid in seen:
                    tree.duplicates += 1
                    continue
                seen.add(fid)
                found.append((Path(e.path), fid))
                if first_only:
                    stack.clear()
                    subdirs.clear()
                    break
        stack.extend((path, sid, None) for path, sid in reversed(subdirs))
    found.sort(key=lambda item: item[0])
    tree.files = [p for p, _ in found]
    tree.ids = [i for _, i in found]
    return tree


def _find_child(d: Path, names: Iterable[str], split: str = "") -> Path | None:
    wanted = set(names)
    found = [child for child in _visible_dirs(d) if child.name.lower() in wanted]
    if len(found) > 1:
        # `train/` and `Train/` (or `val/` and `valid/`): which one holds the split is a guess,
        # and on a case-insensitive disk they would be one folder.
        raise DataConflictError(
            f"{d} has {len(found)} folders for the {split or 'same'} split: "
            f"{', '.join(c.name + '/' for c in found)}. Merge them into one, or rename the "
            "others so that they do not look like a split."
        )
    return found[0] if found else None


def _match_split_layout(d: Path, layout: str) -> dict[str, Path] | None:
    names = _SPLIT_NAMES[layout]
    found = {split: _find_child(d, aliases, split) for split, aliases in names.items()}
    if found["train"] is None or found["test"] is None:
        return None
    return {k: v for k, v in found.items() if v is not None}


def _match_single(d: Path) -> bool:
    classes = [c for c in _visible_dirs(d) if _has_image(c)]
    return len(classes) >= 2 and not any(c.name.lower() in _SPLITLIKE for c in classes)


def _has_image(d: Path) -> bool:
    return bool(_walk(d, first_only=True).files)


def _matches(d: Path, layout: str) -> dict[str, Path] | None:
    if layout == "single":
        return {"train": d} if _match_single(d) else None
    return _match_split_layout(d, layout)


def _descend(root: Path, layouts: Sequence[str]) -> Path:
    """Step into a lone nested folder (``chest_xray/chest_xray/``, ``fruits-360_dataset/...``).

    Archives often wrap the dataset in one more folder; the wrapper then holds nothing but that
    folder and junk (``__MACOSX``, readme files), which is what this looks for.
    """
    d = root
    for _ in range(4):
        if any(_matches(d, lay) for lay in layouts):
            return d
        subdirs = _visible_dirs(d)
        if len(subdirs) != 1 or _direct_images(d):
            return d
        log.info("data root %s holds only %s/: looking inside it", d, subdirs[0].name)
        d = subdirs[0]
    return d


# --------------------------------------------------------------------------- layout + errors


def _dataset_hint(root: Path, layout: str) -> str | None:
    if layout in _LAYOUT_ALIASES:
        return "chest_xray"
    if layout == "fruits":
        return "fruits"
    name = root.name.lower()
    if "chest" in name or "xray" in name.replace("-", "").replace("_", ""):
        return "chest_xray"
    if "fruit" in name:
        return "fruits"
    return None


def _contents(d: Path, limit: int = 12) -> str:
    try:
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(d))
    except OSError:
        return "unreadable"
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def data_root_error(root: Path, layout: str, problem: str) -> DataRootError:
    """A `DataRootError` naming the path, the expected tree and how to get the data."""
    base = _LAYOUT_ALIASES.get(layout, layout)
    lines = [f"Data root {root} {problem}."]
    if base == "auto":
        lines.append("Accepted layouts (data.layout=auto tries them in this order):")
        for name in ("fruits", "split", "single"):
            tree = _TREES[name].format(root=root).replace("\n", "\n    ")
            lines.append(f"  {name}:\n    {tree}")
    else:
        lines.append(f"Expected layout '{base}':")
        lines.append(_TREES[base].format(root=root))
    hint = _dataset_hint(root, layout)
    if hint is not None:
        cmd, where = _DOWNLOADS[hint]
        lines.append(f"Get the dataset with:  {cmd}")
        lines.append(f"then set data.root to {where}.")
    else:
        lines.append("Set data.root to your image folder (and data.layout if auto does not fit).")
    return DataRootError("\n".join(lines))


def resolve_layout(root: str | os.PathLike, layout: str = "auto") -> tuple[Path, str, dict]:
    """Find where and in which layout the data sits: ``(folder, layout, {split: dir})``.

    Raises `DataRootError` when nothing fits, naming what was expected.
    """
    root = Path(root).expanduser()
    if layout not in LAYOUTS and layout not in _LAYOUT_ALIASES:
        raise ValueError(
            f"unknown data layout {layout!r}; choose one of {LAYOUTS} "
            f"(or a preset alias: {sorted(_LAYOUT_ALIASES)})"
        )
    if not root.exists():
        raise data_root_error(root, layout, "does not exist")
    if not root.is_dir():
        raise data_root_error(root, layout, "is not a directory")
    if not _visible_dirs(root) and not _direct_images(root):
        raise data_root_error(root, layout, f"is empty (it holds: {_contents(root)})")

    base = _LAYOUT_ALIASES.get(layout, layout)
    candidates = ("fruits", "split", "single") if base == "auto" else (base,)
    d = _descend(root, candidates)
    for lay in candidates:
        dirs = _matches(d, lay)
        if dirs:
            if base == "auto":
                log.info("data root %s: detected layout '%s'", d, lay)
            if lay != "single":
                _note_nested_copies(d, lay, dirs)
            return d, lay, dirs
    raise _layout_mismatch(root, d, layout, base)


def _note_nested_copies(d: Path, layout: str, dirs: dict[str, Path]) -> None:
    """Kaggle archives can hold the dataset twice (``chest_xray/chest_xray/``,
    ``fruits-360/fruits-360/``): only the split folders at the data root are read; say so."""
    used = set(dirs.values())
    for child in _visible_dirs(d):
        if child not in used and _match_split_layout(child, layout):
            log.info(
                "data root %s: ignoring %s/, another copy of the dataset (only %s are read)",
                d,
                child.name,
                ", ".join(f"{p.name}/" for p in dirs.values()),
            )


def _layout_mismatch(root: Path, d: Path, layout: str, base: str) -> DataRootError:
    where = "" if d == root else f" (looked inside {d})"
    problem = f"does not match{where}; it holds: {_contents(d)}"
    others = [lay for lay in ("fruits", "split", "single") if lay != base and _matches(d, lay)]
    if base == "single" and any(c.name.lower() in _SPLITLIKE for c in _visible_dirs(d)):
        problem += "; its folders look like train/test splits, not classes"
    if others:
        problem += (
            f"; that looks like the '{others[0]}' layout: set data.layout={others[0]} "
            "(or data.layout=auto)"
        )
    return data_root_error(root, layout, problem)


# --------------------------------------------------------------------------- scanning


def _list_classes(split_dir: Path) -> tuple[dict[str, _Tree], list[str]]:
    """``({class: its files}, [empty class names])`` for one split folder.

    Refuses (`DataConflictError`) class folders whose names differ only in case, and a folder
    inside a class folder named like a split or like another class: a copy of the dataset nested
    there (``Training/Apple/fruits-360/Training/...``) would label all of it with one class.
    """
    classes: dict[str, _Tree] = {}
    empty = []
    for c in _visible_dirs(split_dir):
        tree = _walk(c)
        if tree.files:
            classes[c.name] = tree
        else:
            empty.append(c.name)
    by_case: dict[str, list[str]] = {}
    for name in classes:
        by_case.setdefault(name.lower(), []).append(name)
    clashes = [names for names in by_case.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(" and ".join(str(split_dir / n) for n in names) for names in clashes)
        raise DataConflictError(
            f"class folders whose names differ only in case: {listed}. They would be two labels "
            "for one class (and are one folder on a case-insensitive disk): merge or rename them."
        )
    others = {name.lower(): name for name in classes}
    for name, tree in classes.items():
        for sub in tree.subdirs:
            key = sub.name.lower()
            if key in _SPLITLIKE or (key in others and others[key] != name):
                kind = "a split" if key in _SPLITLIKE else f"the class {others[key]!r}"
                raise DataConflictError(
                    f"{sub} is named like {kind} but lies inside the class folder "
                    f"{split_dir / name}: a copy of the dataset nested there would label all its "
                    f"images {name!r}. Move it out of {split_dir / name}, or rename it."
                )
    return classes, empty


def _warn_loops(trees: dict[str, dict[str, _Tree]]) -> None:
    loops = [loop for tree in trees.values() for t in tree.values() for loop in t.loops]
    if not loops:
        return
    listed = "\n".join(f"  {link} -> {target}" for link, target in loops[:10])
    more = f"\n  ... and {len(loops) - 10} more" if len(loops) > 10 else ""
    warnings.warn(
        f"skipped {len(loops)} folder link(s) that lead back into their own class folder "
        f"(a loop; their images are counted once, where they really are):\n{listed}{more}",
        DataWarning,
        stacklevel=3,
    )


def _check_conflicts(trees: dict[str, dict[str, _Tree]], dirs: dict[str, Path]) -> None:
    """Refuse one file under two classes (two labels) or two splits (train/test leakage)."""
    split_ids: dict[FileId, str] = {}
    for split, d in dirs.items():
        other = split_ids.setdefault(_stat_id(str(d)), split)
        if other != split:
            raise DataConflictError(
                f"the {split} folder {d} is the {other} folder {dirs[other]} (a link): every "
                f"{split} image would also be a{'n' if other[0] in 'aeiou' else ''} {other} "
                "image. Give each split its own images."
            )
    owner: dict[FileId, tuple[str, str, Path]] = {}
    labels, leaks = [], []
    for split, classes in trees.items():
        for name, tree in classes.items():
            for path, fid in zip(tree.files, tree.ids, strict=True):
                if fid[0] == "unreadable":
                    continue
                first = owner.setdefault(fid, (split, name, path))
                if first[2] == path:
                    continue
                (leaks if first[0] != split else labels).append((first, (split, name, path)))
    if labels:
        raise DataConflictError(
            _conflict_message(
                labels,
                "in two classes",
                "One image cannot have two labels: remove the extra link (or hard link) so "
                "that each image sits in one class folder.",
            )
        )
    if leaks:
        raise DataConflictError(
            _conflict_message(
                leaks,
                "in two splits",
                "An image in both the training and an evaluation split makes the evaluation "
                "measure memory, not generalisation (leakage): keep each image in one split.",
            )
        )


def _conflict_message(pairs: list, what: str, advice: str) -> str:
    def where(item: tuple[str, str, Path]) -> str:
        split, name, path = item
        return f"{path} ({split}, class {name!r})"

    lines = [
        f"{len(pairs)} image file(s) are reached {what} (the same file on disk, through a link "
        "or a hard link):"
    ]
    lines += [f"  {where(a)}\n    and {where(b)}" for a, b in pairs[:10]]
    if len(pairs) > 10:
        lines.append(f"  ... and {len(pairs) - 10} more")
    lines.append(advice)
    return "\n".join(lines)


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
        lower = {n.lower(): n for n in index}
        details = []
        for name in extra:
            near = lower.get(name.lower())
            tip = f" (training has {near!r}: names must match exactly)" if near else ""
            details.append(f"  {split_dir / name}{tip}")
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
    listed: dict[str, dict[str, _Tree]] = {}
    empty_train: list[str] = []
    for split, d in dirs.items():
        listed[split], empty = _list_classes(d)
        if split == "train":
            empty_train = empty
    _check_conflicts(listed, dirs)
    _warn_loops(listed)
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
