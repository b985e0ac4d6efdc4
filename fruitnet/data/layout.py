"""Where the data sits under a data root and in which layout (see `fruitnet.data.catalog`), the
error that says what was expected, and the search for a known dataset inside an unpacked archive.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from fruitnet.data.catalog import (
    DATASETS,
    LAYOUT_ALIASES,
    LAYOUT_TREES,
    LAYOUTS,
    SPLIT_NAMES,
    SPLITLIKE,
    dataset_hint,
)
from fruitnet.data.errors import DataConflictError, DataRootError
from fruitnet.data.walk import direct_images, list_classes, visible_dirs, walk_images

log = logging.getLogger(__name__)

__all__ = [
    "data_root_error",
    "find_data_root",
    "find_splits",
    "match_layout",
    "resolve_layout",
    "verify_data_root",
]

# How deep `find_data_root` looks below the folder an archive was unpacked into.
MAX_SEARCH_DEPTH = 6


# --------------------------------------------------------------------------- matching one folder


def find_splits(d: Path, layout: str) -> dict[str, Path | None]:
    """``{split: its folder in d, or None}`` for a split layout ("fruits" or "split")."""
    children = visible_dirs(d)
    found = {}
    for split, names in SPLIT_NAMES[layout].items():
        hits = [child for child in children if child.name.lower() in names]
        if len(hits) > 1:
            # `train/` and `Train/` (or `val/` and `valid/`): which one holds the split is a
            # guess, and on a case-insensitive disk they would be one folder.
            raise DataConflictError(
                f"{d} has {len(hits)} folders for the {split} split: "
                f"{', '.join(c.name + '/' for c in hits)}. Merge them into one, or rename the "
                "others so that they do not look like a split."
            )
        found[split] = hits[0] if hits else None
    return found


def _match_split_layout(d: Path, layout: str) -> dict[str, Path] | None:
    found = find_splits(d, layout)
    if found["train"] is None or found["test"] is None:
        return None
    return {k: v for k, v in found.items() if v is not None}


def _match_single(d: Path) -> bool:
    classes = [c for c in visible_dirs(d) if walk_images(c, first_only=True).files]
    return len(classes) >= 2 and not any(c.name.lower() in SPLITLIKE for c in classes)


def match_layout(d: Path, layout: str) -> dict[str, Path] | None:
    """``{split: folder}`` when ``d`` itself is a data root in ``layout``, else None."""
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
        if any(match_layout(d, lay) for lay in layouts):
            return d
        subdirs = visible_dirs(d)
        if len(subdirs) != 1 or direct_images(d):
            return d
        log.info("data root %s holds only %s/: looking inside it", d, subdirs[0].name)
        d = subdirs[0]
    return d


# --------------------------------------------------------------------------- layout + errors


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
    base = LAYOUT_ALIASES.get(layout, layout)
    lines = [f"Data root {root} {problem}."]
    if base == "auto":
        lines.append("Accepted layouts (data.layout=auto tries them in this order):")
        for name in ("fruits", "split", "single"):
            tree = LAYOUT_TREES[name].format(root=root).replace("\n", "\n    ")
            lines.append(f"  {name}:\n    {tree}")
    else:
        lines.append(f"Expected layout '{base}':")
        lines.append(LAYOUT_TREES[base].format(root=root))
    info = dataset_hint(root, layout)
    if info is not None:
        lines.append(f"Get the dataset with:  {info.download_command}")
        lines.append(f"then set data.root to {info.layout_hint}.")
    else:
        lines.append("Set data.root to your image folder (and data.layout if auto does not fit).")
    return DataRootError("\n".join(lines))


def resolve_layout(root: str | os.PathLike, layout: str = "auto") -> tuple[Path, str, dict]:
    """Find where and in which layout the data sits: ``(folder, layout, {split: dir})``.

    Raises `DataRootError` when nothing fits, naming what was expected.
    """
    root = Path(root).expanduser()
    if layout not in LAYOUTS and layout not in LAYOUT_ALIASES:
        raise ValueError(
            f"unknown data layout {layout!r}; choose one of {LAYOUTS} "
            f"(or a preset alias: {sorted(LAYOUT_ALIASES)})"
        )
    if not root.exists():
        raise data_root_error(root, layout, "does not exist")
    if not root.is_dir():
        raise data_root_error(root, layout, "is not a directory")
    if not visible_dirs(root) and not direct_images(root):
        raise data_root_error(root, layout, f"is empty (it holds: {_contents(root)})")

    base = LAYOUT_ALIASES.get(layout, layout)
    candidates = ("fruits", "split", "single") if base == "auto" else (base,)
    d = _descend(root, candidates)
    for lay in candidates:
        dirs = match_layout(d, lay)
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
    for child in visible_dirs(d):
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
    others = [lay for lay in ("fruits", "split", "single") if lay != base and match_layout(d, lay)]
    if base == "single" and any(c.name.lower() in SPLITLIKE for c in visible_dirs(d)):
        problem += "; its folders look like train/test splits, not classes"
    if others:
        problem += (
            f"; that looks like the '{others[0]}' layout: set data.layout={others[0]} "
            "(or data.layout=auto)"
        )
    return data_root_error(root, layout, problem)


# --------------------------------------------------------------------------- known datasets


def verify_data_root(root: Path | str, dataset: str) -> dict[str, dict[str, int]]:
    """Minimal check of a data root: every split has enough class folders and some images.

    Returns ``{split folder name: {"classes": int, "images": int}}``, the required splits
    first; raises ``ValueError`` saying what is wrong.
    """
    info = DATASETS[dataset]
    root = Path(root)
    found = find_splits(root, info.layout)
    report: dict[str, dict[str, int]] = {}
    for split in ("train", "test", "val"):
        folder = found[split]
        if folder is None:
            if split != "val":
                name = info.splits[0 if split == "train" else 1]
                raise ValueError(f"{root} has no {name}/ folder")
            continue
        classes, empty = list_classes(folder)
        n_classes = len(classes) + len(empty)
        if n_classes < info.min_classes:
            raise ValueError(
                f"{folder} has {n_classes} class folder(s); {dataset} needs at least "
                f"{info.min_classes}"
            )
        images = sum(len(tree.files) for tree in classes.values())
        if images == 0:
            raise ValueError(f"{folder} has class folders but no images")
        report[folder.name] = {"classes": n_classes, "images": images}
    return report


def _roots_below(top: Path, layout: str, depth: int = 0) -> Iterator[Path]:
    """Folders at most `MAX_SEARCH_DEPTH` below ``top`` (``top`` included) that hold the split
    folders of ``layout``; folders that hold two candidates for one split are yielded as well,
    for `verify_data_root` to refuse with the reason."""
    try:
        dirs = _match_split_layout(top, layout)
        is_root = dirs is not None
    except DataConflictError:
        dirs, is_root = None, True
    if is_root:
        yield top
    if depth >= MAX_SEARCH_DEPTH:
        return
    # Split folders hold class folders, never another data root; don't walk 100k files.
    skip = set((dirs or {}).values())
    for sub in visible_dirs(top):
        if sub not in skip:
            yield from _roots_below(sub, layout, depth + 1)


def find_data_root(dest: Path | str, dataset: str) -> Path:
    """The folder under ``dest`` (or ``dest`` itself) to use as ``data.root`` for ``dataset``.

    Looks up to a few levels down, skipping junk folders, for folders in the dataset's layout
    that pass :func:`verify_data_root`. Several can match (Kaggle's chest_xray archive nests a
    duplicate ``chest_xray/chest_xray``; newer Fruits-360 releases ship several variants): the
    shallowest wins, and the dataset's preferred variant (for fruits ``100x100``, the study's
    format) wins over others. Raises ``FileNotFoundError`` describing what was searched.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    info = DATASETS[dataset]
    dest = Path(dest)
    if not dest.is_dir():
        raise FileNotFoundError(f"{dest} is not a folder")
    valid: list[Path] = []
    problems: list[str] = []
    for cand in _roots_below(dest, info.layout):
        try:
            verify_data_root(cand, dataset)
        except ValueError as e:
            problems.append(str(e))
            continue
        valid.append(cand)
    if not valid:
        detail = (
            ("; ".join(problems[:3]))
            if problems
            else "no folder with " + " and ".join(f"{s}/" for s in info.splits)
        )
        raise FileNotFoundError(
            f"no {dataset} data root under {dest} (looked {MAX_SEARCH_DEPTH} levels deep for "
            f"{info.layout_hint}): {detail}"
        )

    def rank(p: Path) -> tuple[int, int, str]:
        rel = p.relative_to(dest)
        variant = info.preferred_variant
        preferred = 0 if (variant is None or variant in str(rel)) else 1
        return (preferred, len(rel.parts), str(rel))

    return min(valid, key=rank)
