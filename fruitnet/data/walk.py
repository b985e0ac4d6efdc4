"""Walking the image files of a data root: each real file once, links followed, loops skipped,
and the checks that one file never gets two labels or two splits (see `fruitnet.data.scan`)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from fruitnet.data.catalog import SPLITLIKE
from fruitnet.data.errors import DataConflictError, DataWarning
from fruitnet.data.io import is_image_file
from fruitnet.settings import is_junk_dir

__all__ = [
    "FileId",
    "FileTree",
    "check_conflicts",
    "direct_images",
    "list_classes",
    "stat_id",
    "visible_dirs",
    "walk_images",
    "warn_loops",
]


def visible_dirs(d: Path) -> list[Path]:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir() and not is_junk_dir(e.name))


def direct_images(d: Path) -> list[Path]:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_file() and is_image_file(e.name)]


FileId = tuple  # (st_dev, st_ino) of what a path points at; ("unreadable", path) when stat fails


def stat_id(path: str, entry: os.DirEntry | None = None) -> FileId:
    """What ``path`` is on disk, links followed: hard links and symbolic links share it."""
    try:
        st = entry.stat() if entry is not None else os.stat(path)
        if st.st_ino == 0:  # Windows fills st_ino only on os.stat
            st = os.stat(path)
    except OSError:
        return ("unreadable", path)
    return (st.st_dev, st.st_ino)


@dataclass
class FileTree:
    """The image files below one folder, each real file once (see `walk_images`)."""

    files: list[Path] = field(default_factory=list)
    ids: list[FileId] = field(default_factory=list)
    duplicates: int = 0  # paths skipped: a file or folder reached a second time
    loops: list[tuple[Path, Path]] = field(default_factory=list)  # (link, the folder it reaches)
    subdirs: list[Path] = field(default_factory=list)  # every folder walked below the top


def walk_images(top: Path, *, first_only: bool = False) -> FileTree:
    """Image files below ``top``, recursively (like ImageFolder), hidden and junk dirs pruned.

    Links are followed, but a real folder is walked once: a folder reached again through another
    link is skipped (its images counted as duplicates), and a link to ``top`` itself, to a folder
    holding it, or to a folder being walked (a loop) is skipped and recorded in ``loops``.
    A file reached under a second name (symbolic or hard link) is kept once. Files come out
    sorted by path; ``first_only`` stops at the first image.
    """
    tree = FileTree()
    top_id = stat_id(str(top))
    # A link to `top` or to a folder holding it leads back into `top`: the walk would never end.
    enclosing = {stat_id(str(p)) for p in Path(os.path.realpath(top)).parents} | {top_id}
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
                if not is_junk_dir(e.name):
                    subdirs.append((Path(e.path), stat_id(e.path, e)))
            elif is_image_file(e.name):
                fid = stat_id(e.path, e)
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


def list_classes(split_dir: Path) -> tuple[dict[str, FileTree], list[str]]:
    """``({class: its files}, [empty class names])`` for one split folder.

    Refuses (`DataConflictError`) class folders whose names differ only in case, and a folder
    inside a class folder named like a split or like another class: a copy of the dataset nested
    there (``Training/Apple/fruits-360/Training/...``) would label all of it with one class.
    """
    classes: dict[str, FileTree] = {}
    empty = []
    for c in visible_dirs(split_dir):
        tree = walk_images(c)
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
            if key in SPLITLIKE or (key in others and others[key] != name):
                kind = "a split" if key in SPLITLIKE else f"the class {others[key]!r}"
                raise DataConflictError(
                    f"{sub} is named like {kind} but lies inside the class folder "
                    f"{split_dir / name}: a copy of the dataset nested there would label all its "
                    f"images {name!r}. Move it out of {split_dir / name}, or rename it."
                )
    return classes, empty


def warn_loops(trees: dict[str, dict[str, FileTree]]) -> None:
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


def check_conflicts(trees: dict[str, dict[str, FileTree]], dirs: dict[str, Path]) -> None:
    """Refuse one file under two classes (two labels) or two splits (train/test leakage)."""
    split_ids: dict[FileId, str] = {}
    for split, d in dirs.items():
        other = split_ids.setdefault(stat_id(str(d)), split)
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
