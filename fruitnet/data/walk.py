"""Walking the image files of a data root: each real file once, links followed, loops skipped,
and the checks that one file never gets two labels or two splits (see `fruitnet.data.scan`).

Class names are folder names in Unicode NFC (`class_name`): macOS writes file names decomposed
(NFD: ``e`` + U+0301, Hangul as separate jamo), Linux and Windows tools composed, so one dataset
can hold both forms of one name, and only the normalised names compare equal.
"""

from __future__ import annotations

import difflib
import os
import unicodedata
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
    "class_name",
    "direct_images",
    "list_classes",
    "name_difference",
    "near_name",
    "stat_id",
    "visible_dirs",
    "walk_images",
    "warn_loops",
]


def class_name(folder_name: str) -> str:
    """The class a folder name stands for: the name in Unicode NFC, as fruitnet stores and
    compares every class name (scan, checkpoints, predict output, reports)."""
    return unicodedata.normalize("NFC", folder_name)


def _code_points(text: str) -> str:
    if not text:
        return "nothing"
    return " + ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, '(unnamed)')}" for ch in text)


def name_difference(name: str, other: str, where: str = "here", other_where: str = "there") -> str:
    """Where two names that look alike differ, code point by code point, e.g. ``character 6:
    U+00A0 NO-BREAK SPACE here, U+0020 SPACE there``: a difference no font shows."""
    ops = difflib.SequenceMatcher(None, name, other, autojunk=False).get_opcodes()
    diffs = [
        f"character {i1 + 1}: {_code_points(name[i1:i2])} {where}, "
        f"{_code_points(other[j1:j2])} {other_where}"
        for tag, i1, i2, j1, j2 in ops
        if tag != "equal"
    ]
    more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return "; ".join(diffs[:3]) + more


def _letters(name: str) -> str:
    # Caseless and compatibility-folded (NFKC: no-break space -> space, full-width -> ASCII,
    # ligatures split), without invisible format characters (zero-width space, soft hyphen).
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


def near_name(name: str, known: list[str]) -> tuple[str, str] | None:
    """``(the known name, how it differs)`` for a class name that is probably one of ``known``
    written another way, else None. Both sides are NFC already (`class_name`)."""
    by_case = {k.casefold(): k for k in known}
    hit = by_case.get(name.casefold())
    if hit is not None:
        return hit, "in another case"
    by_letters = {_letters(k): k for k in known}
    hit = by_letters.get(_letters(name))
    if hit is not None:
        return hit, "the same letters, in another Unicode form"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return (close[0], "a near spelling") if close else None


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
    """``({class: its files}, [empty class names])`` for one split folder, names in NFC.

    Refuses (`DataConflictError`) two class folders whose names are equal in NFC or differ only
    in case, and a folder inside a class folder named like a split or like another class: a copy
    of the dataset nested there (``Training/Apple/fruits-360/Training/...``) would label all of
    it with one class.
    """
    classes: dict[str, FileTree] = {}
    empty = []
    folders: dict[str, list[Path]] = {}
    for c in visible_dirs(split_dir):
        name = class_name(c.name)
        folders.setdefault(name, []).append(c)
        tree = walk_images(c)
        if tree.files:
            classes[name] = tree
        else:
            empty.append(name)
    _refuse_twins(folders, classes)
    others = {name.lower(): name for name in classes}
    for name, tree in classes.items():
        for sub in tree.subdirs:
            key = class_name(sub.name).lower()
            if key in SPLITLIKE or (key in others and others[key] != name):
                kind = "a split" if key in SPLITLIKE else f"the class {others[key]!r}"
                raise DataConflictError(
                    f"{sub} is named like {kind} but lies inside the class folder "
                    f"{split_dir / name}: a copy of the dataset nested there would label all its "
                    f"images {name!r}. Move it out of {split_dir / name}, or rename it."
                )
    return classes, empty


def _refuse_twins(folders: dict[str, list[Path]], classes: dict[str, FileTree]) -> None:
    """Two folders of one split that name one class: the same name in two Unicode forms (which
    a macOS disk keeps as one folder), or in two cases (with images in both)."""
    twins = [paths for paths in folders.values() if len(paths) > 1]
    if twins:
        listed = "; ".join(
            " and ".join(map(str, paths))
            + f" ({name_difference(paths[0].name, paths[1].name, 'in the first', 'in the second')})"
            for paths in twins
        )
        raise DataConflictError(
            f"class folders with the same name in two Unicode forms (one composed, NFC, one "
            f"decomposed, NFD, as macOS writes names): {listed}. They would be two labels for one "
            "class (and are one folder on a macOS disk): merge them into one folder."
        )
    by_case: dict[str, list[Path]] = {}
    for name in classes:
        by_case.setdefault(name.lower(), []).extend(folders[name])
    clashes = [paths for paths in by_case.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(str, paths)) for paths in clashes)
        raise DataConflictError(
            f"class folders whose names differ only in case: {listed}. They would be two labels "
            "for one class (and are one folder on a case-insensitive disk): merge or rename them."
        )


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
