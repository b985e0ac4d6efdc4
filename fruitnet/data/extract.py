"""Unpacking a zip or tar that came from elsewhere without letting it write outside its folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from fruitnet.files import atomic_path
from fruitnet.settings import JUNK_DIR_NAMES

__all__ = ["UnsafeArchiveError", "safe_extract"]


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder."""


def _member_parts(name: str) -> list[str]:
    # Archives made on Windows may use backslashes; treat them as separators for the checks.
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_junk(parts: list[str]) -> bool:
    # __MACOSX/ holds AppleDouble "._name" twins of every file; stray "._*.jpg" files would look
    # like (corrupt) images to the loader. The junk names only, not `is_junk_dir`: that skips
    # every name with a leading dot, and a ".." member must be refused, not skipped.
    return any(p.lower() in JUNK_DIR_NAMES for p in parts) or (
        bool(parts) and parts[-1].startswith("._")
    )


def _check_name(name: str, dest_real: Path) -> Path:
    """Target path of member ``name`` under ``dest_real``; raise if it could escape."""
    norm = name.replace("\\", "/")
    if (
        norm.startswith("/")
        or PurePosixPath(norm).is_absolute()
        or (len(norm) > 1 and norm[1] == ":")
    ):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: absolute path")
    parts = _member_parts(name)
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: '..' in path")
    if not parts:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: empty path")
    target = dest_real.joinpath(*parts)
    if not _inside(target, dest_real):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: lands outside {dest_real}")
    return target


def _inside(path: Path, root: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def _check_link(name: str, link_target: str, dest_real: Path, *, hard: bool) -> None:
    kind = "hardlink" if hard else "symlink"
    norm = link_target.replace("\\", "/")
    if not norm or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(
            f"refusing archive member {name!r}: {kind} to absolute path {link_target!r}"
        )
    # Hardlink targets are archive paths; symlink targets are relative to the link's folder.
    base = dest_real if hard else dest_real.joinpath(*_member_parts(name)).parent
    resolved = Path(os.path.normpath(base.joinpath(*norm.split("/"))))
    if not (resolved == dest_real or dest_real in resolved.parents):
        raise UnsafeArchiveError(
            f"refusing archive member {name!r}: {kind} to {link_target!r} points outside the "
            "destination"
        )


def _make_symlink(name: str, link: str, target: Path, dest_real: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(target.parent, dest_real):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: its folder leads outside")
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    os.symlink(link, target)
    # The lexical check cannot see through links made by earlier members ("a" -> ".", then
    # "x" -> "a/.."), so resolve the new link on disk too.
    if not _inside(target, dest_real):
        target.unlink()
        raise UnsafeArchiveError(
            f"refusing archive member {name!r}: symlink to {link!r} resolves outside the "
            "destination"
        )


def _zip_symlink_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):  # 3 = Unix
        return zf.read(info).decode("utf-8", "surrogateescape")
    return None


def _write_stream(src, target: Path, dest_real: Path, name: str) -> None:
    # Re-check against what is on disk now: an earlier member may have made a symlinked folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(target.parent, dest_real):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: its folder leads outside")
    # The rename replaces a link at ``target`` itself, never what it points at; a member cut
    # short (a damaged archive, Ctrl-C) leaves no half file under the real name.
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _extract_zip(archive: Path, dest_real: Path) -> int:
    count = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        plan: list[tuple[zipfile.ZipInfo, Path, str | None]] = []
        # Validate every member before writing anything, so a refused archive leaves no debris.
        for info in infos:
            if _is_junk(_member_parts(info.filename)):
                continue
            target = _check_name(info.filename, dest_real)
            link = _zip_symlink_target(zf, info)
            if link is not None:
                _check_link(info.filename, link, dest_real, hard=False)
            plan.append((info, target, link))
        for info, target, link in plan:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if link is not None:
                _make_symlink(info.filename, link, target, dest_real)
            else:
                with zf.open(info) as src:
                    _write_stream(src, target, dest_real, info.filename)
            count += 1
    return count


def _extract_tar(archive: Path, dest_real: Path) -> int:
    count = 0
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        plan: list[tuple[tarfile.TarInfo, Path]] = []
        for m in members:
            if _is_junk(_member_parts(m.name)):
                continue
            target = _check_name(m.name, dest_real)
            if m.issym():
                _check_link(m.name, m.linkname, dest_real, hard=False)
            elif m.islnk():
                _check_link(m.name, m.linkname, dest_real, hard=True)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(
                    f"refusing archive member {m.name!r}: device, fifo or other special file"
                )
            plan.append((m, target))
        for m, target in plan:
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if m.issym():
                _make_symlink(m.name, m.linkname, target, dest_real)
            elif m.islnk():
                # A copy rather than os.link: no shared inode with whatever the name points at.
                source = dest_real.joinpath(*_member_parts(m.linkname))
                if not _inside(source, dest_real) or not source.is_file():
                    raise UnsafeArchiveError(
                        f"refusing archive member {m.name!r}: hardlink target {m.linkname!r} "
                        "is not an extracted file inside the destination"
                    )
                with open(source, "rb") as src:
                    _write_stream(src, target, dest_real, m.name)
            else:
                src = tf.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src:
                    _write_stream(src, target, dest_real, m.name)
            count += 1
    return count


def safe_extract(archive: Path | str, dest: Path | str) -> Path:
    """Unpack a zip or tar (any compression) into ``dest``; return ``dest``.

    Refuses (``UnsafeArchiveError``, naming the member) absolute paths, ``..`` components,
    links pointing outside ``dest`` and special files, checking the whole archive before
    writing anything. Skips ``__MACOSX/`` (and the other `fruitnet.settings.JUNK_DIR_NAMES`)
    and AppleDouble ``._*`` files.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = Path(os.path.realpath(dest))
    if zipfile.is_zipfile(archive):
        n = _extract_zip(archive, dest_real)
    elif tarfile.is_tarfile(archive):
        n = _extract_tar(archive, dest_real)
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")
    print(f"extracted {n} files from {archive} into {dest}")
    return dest
