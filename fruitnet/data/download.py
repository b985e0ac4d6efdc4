"""Fetch a full dataset from Kaggle, or unpack one downloaded by hand, and say how to train on it.

    python -m fruitnet.data.download fruits [--dest DIR]
    python -m fruitnet.data.download chest_xray [--dest DIR]
    python -m fruitnet.data.download fruits --from-archive ~/Downloads/archive.zip [--dest DIR]

Exit codes: 0 ready (prints the ``data.root=...`` override and a train command); 1 a bad archive
or no recognisable data inside it; 2 cannot download here (offline, no credentials, no Kaggle
client) - the message explains the manual route.

Credentials are left to the Kaggle client (env ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or
``KAGGLE_API_TOKEN``, or ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``). This module
only checks whether some are present; it never prints, logs or writes them, and it scrubs their
values out of any error text it relays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import socket
import stat
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fruitnet.network import socket_timeout

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "UnsafeArchiveError",
    "find_data_root",
    "main",
    "safe_extract",
    "verify_data_root",
]

KAGGLE_HOST = "www.kaggle.com"
CONNECT_TIMEOUT_S = 5.0
# Upper bound on any single socket wait of the fallback `kaggle` client, which sets none itself.
# kagglehub bounds its own requests (connect 5 s, read 15 s between bytes).
SOCKET_STALL_TIMEOUT_S = 60.0
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_MAX_SEARCH_DEPTH = 6
_JUNK_DIRS = frozenset({"__MACOSX"})


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    handle: str
    splits: tuple[str, ...]  # required split folders under the data root
    optional_splits: tuple[str, ...]
    min_classes: int
    layout_hint: str

    @property
    def url(self) -> str:
        return f"https://www.kaggle.com/datasets/{self.handle}"


DATASETS: dict[str, DatasetInfo] = {
    "fruits": DatasetInfo(
        name="fruits",
        handle="moltean/fruits",
        splits=("Training", "Test"),
        optional_splits=("Validation",),
        min_classes=2,
        layout_hint="the folder holding Training/ and Test/",
    ),
    "chest_xray": DatasetInfo(
        name="chest_xray",
        handle="paultimothymooney/chest-xray-pneumonia",
        splits=("train", "test"),
        optional_splits=("val",),
        min_classes=2,
        layout_hint="the chest_xray/ folder holding train/, val/ and test/",
    ),
}


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder."""


class DownloadUnavailable(RuntimeError):
    """Downloading is not possible here (offline, no client, refused); the message says why."""


# --------------------------------------------------------------------------- safe extraction


def _member_parts(name: str) -> list[str]:
    # Archives made on Windows may use backslashes; treat them as separators for the checks.
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_junk(parts: list[str]) -> bool:
    # __MACOSX/ holds AppleDouble "._name" twins of every file; stray "._*.jpg" files would look
    # like (corrupt) images to the loader.
    return any(p in _JUNK_DIRS for p in parts) or (bool(parts) and parts[-1].startswith("._"))


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
    if target.is_symlink():
        target.unlink()
    with open(target, "wb") as out:
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
    writing anything. Skips ``__MACOSX/`` and AppleDouble ``._*`` files.
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


# --------------------------------------------------------------------------- data root


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    out = [
        Path(e.path)
        for e in entries
        if e.is_dir() and e.name not in _JUNK_DIRS and not e.name.startswith(".")
    ]
    return sorted(out)


def _count_images(folder: Path) -> int:
    n = 0
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _JUNK_DIRS and not d.startswith(".")]
        n += sum(
            1
            for f in filenames
            if not f.startswith("._") and os.path.splitext(f)[1].lower() in IMAGE_EXTS
        )
    return n


def _candidates(dest: Path, info: DatasetInfo) -> Iterator[Path]:
    def walk(folder: Path, depth: int) -> Iterator[Path]:
        subs = _subdirs(folder)
        names = {s.name for s in subs}
        is_root = all(s in names for s in info.splits)
        if is_root:
            yield folder
        if depth >= _MAX_SEARCH_DEPTH:
            return
        skip = set(info.splits + info.optional_splits) if is_root else set()
        for s in subs:
            # Split folders hold class folders, never another data root; don't walk 100k files.
            if s.name not in skip:
                yield from walk(s, depth + 1)

    yield from walk(dest, 0)


def verify_data_root(root: Path | str, dataset: str) -> dict[str, dict[str, int]]:
    """Minimal check of a data root: every split has enough class folders and some images.

    Returns ``{split: {"classes": int, "images": int}}``; raises ``ValueError`` saying what
    is wrong.
    """
    info = DATASETS[dataset]
    root = Path(root)
    report: dict[str, dict[str, int]] = {}
    for split in info.splits + info.optional_splits:
        folder = root / split
        if not folder.is_dir():
            if split in info.splits:
                raise ValueError(f"{root} has no {split}/ folder")
            continue
        classes = _subdirs(folder)
        images = _count_images(folder)
        if len(classes) < info.min_classes:
            raise ValueError(
                f"{folder} has {len(classes)} class folder(s); {dataset} needs at least "
                f"{info.min_classes}"
            )
        if images == 0:
            raise ValueError(f"{folder} has class folders but no images")
        report[split] = {"classes": len(classes), "images": images}
    return report


def find_data_root(dest: Path | str, dataset: str) -> Path:
    """The folder under ``dest`` (or ``dest`` itself) to use as ``data.root`` for ``dataset``.

    Looks up to a few levels down, skipping ``__MACOSX``, for folders holding the required
    splits that pass :func:`verify_data_root`. Several can match (Kaggle's chest_xray archive
    nests a duplicate ``chest_xray/chest_xray``; newer Fruits-360 releases ship several
    variants): the shallowest wins, and for fruits a ``100x100`` variant, the study's format,
    wins over other sizes. Raises ``FileNotFoundError`` describing what was searched.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    info = DATASETS[dataset]
    dest = Path(dest)
    if not dest.is_dir():
        raise FileNotFoundError(f"{dest} is not a folder")
    valid: list[Path] = []
    problems: list[str] = []
    for cand in _candidates(dest, info):
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
            f"no {dataset} data root under {dest} (looked {_MAX_SEARCH_DEPTH} levels deep for "
            f"{info.layout_hint}): {detail}"
        )

    def rank(p: Path) -> tuple[int, int, str]:
        rel = p.relative_to(dest)
        preferred = 0 if (dataset != "fruits" or "100x100" in str(rel)) else 1
        return (preferred, len(rel.parts), str(rel))

    return min(valid, key=rank)


# --------------------------------------------------------------------------- credentials


def _kaggle_config_dir() -> Path:
    env = os.environ.get("KAGGLE_CONFIG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".kaggle"


def _credential_source() -> str | None:
    """Where Kaggle credentials would come from, without reading out their values."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "env KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "env KAGGLE_USERNAME/KAGGLE_KEY"
    cfg = _kaggle_config_dir() / "kaggle.json"
    if cfg.is_file():
        return str(cfg)
    if (Path.home() / ".kaggle" / "access_token").is_file():
        return "~/.kaggle/access_token"
    return None


def _secrets() -> list[str]:
    vals = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    cfg = _kaggle_config_dir() / "kaggle.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        vals.append(str(json.loads(cfg.read_text()).get("key", "")))
    # Very short values would redact ordinary words; real keys are long.
    return [v for v in vals if len(v) >= 6]


def _redact(text: str) -> str:
    for s in _secrets():
        text = text.replace(s, "***")
    return text


# --------------------------------------------------------------------------- download


def _offline_env() -> bool:
    return os.environ.get("FRUITNET_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _check_connectivity(timeout: float) -> None:
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        # A direct probe says nothing behind a proxy; the client's own timeouts bound the wait.
        return
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((KAGGLE_HOST, 443), timeout=timeout):
                pass
            result.append(None)
        except OSError as e:
            result.append(e)

    # The socket timeout does not cover the DNS lookup, which can block far longer on a broken
    # resolver; a daemon thread bounds the whole probe and is abandoned if it overruns.
    t = threading.Thread(target=probe, name="kaggle-probe", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if not result:
        raise DownloadUnavailable(
            f"no answer from {KAGGLE_HOST}:443 within {timeout:g} s; this machine looks offline"
        )
    err = result[0]
    if err is not None:
        raise DownloadUnavailable(
            f"cannot reach {KAGGLE_HOST}:443 within {timeout:g} s ({type(err).__name__}: {err}); "
            "this machine looks offline"
        )


def _download(info: DatasetInfo, dest: Path, *, force: bool) -> Path:
    """Download and unpack ``info`` into ``dest`` with whichever Kaggle client is installed."""
    try:
        import kagglehub
    except ImportError:
        kagglehub = None
    if kagglehub is not None:
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with socket_timeout(SOCKET_STALL_TIMEOUT_S):
                path = kagglehub.dataset_download(
                    info.handle, output_dir=str(dest), force_download=force
                )
        except Exception as e:
            raise DownloadUnavailable(
                f"kagglehub could not download {info.handle}: {type(e).__name__}: {e}"
            ) from e
        return Path(path)

    try:
        # Importing `kaggle` authenticates at import time and may raise or sys.exit without
        # credentials, so both are turned into a clean "cannot download".
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DownloadUnavailable(
            "no Kaggle client is installed: pip install 'fruitnet[kaggle]' (kagglehub)"
        ) from None
    except (Exception, SystemExit) as e:
        raise DownloadUnavailable(f"the kaggle package failed to start: {e}") from None
    archive_dir = dest / ".download"
    archive_dir.mkdir(parents=True, exist_ok=True)
    try:
        with socket_timeout(SOCKET_STALL_TIMEOUT_S):
            api = KaggleApi()
            api.authenticate()
            api.dataset_download_files(info.handle, path=str(archive_dir), unzip=False, quiet=False)
    except (Exception, SystemExit) as e:
        raise DownloadUnavailable(
            f"the kaggle package could not download {info.handle}: {type(e).__name__}: {e}"
        ) from None
    archives = sorted(p for p in archive_dir.iterdir() if p.is_file())
    if not archives:
        raise DownloadUnavailable(f"the kaggle package left no archive in {archive_dir}")
    for a in archives:
        safe_extract(a, dest)
        a.unlink()
    with contextlib.suppress(OSError):
        archive_dir.rmdir()
    return dest


# --------------------------------------------------------------------------- messages


def _hydra_path(path: Path) -> str:
    s = str(path)
    if all(c.isalnum() or c in "/._-+~" for c in s):
        return s
    # Spaces, commas or quotes would confuse Hydra's override grammar: quote for Hydra too.
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ready_message(info: DatasetInfo, root: Path, report: dict[str, dict[str, int]]) -> str:
    root = root.resolve()
    override = f"data.root={_hydra_path(root)}"
    lines = [f"{info.name} data root: {root}"]
    for split, r in report.items():
        lines.append(f"  {split}/: {r['classes']} classes, {r['images']} images")
    lines += [
        "use the override:",
        f"  {override}",
        "train with:",
        f"  python -m fruitnet.train data={info.name} {shlex.quote(override)}",
    ]
    return "\n".join(lines)


def _manual_message(info: DatasetInfo, reason: str, dest: Path) -> str:
    creds = _credential_source()
    cred_line = (
        f"Kaggle credentials: found ({creds})."
        if creds
        else "Kaggle credentials: none found (set KAGGLE_USERNAME and KAGGLE_KEY, or put "
        "kaggle.json from kaggle.com -> Settings -> API into ~/.kaggle/ or $KAGGLE_CONFIG_DIR)."
    )
    return "\n".join(
        [
            f"cannot download {info.name} (Kaggle dataset {info.handle}): {_redact(reason)}",
            "Offline or without Kaggle credentials, download it by hand:",
            f"  1. open {info.url} and click Download (needs a free Kaggle account)",
            "  2. unpack it safely and locate the data with:",
            f"       python -m fruitnet.data.download {info.name} --from-archive "
            f"PATH/TO/archive.zip --dest {shlex.quote(str(dest))}",
            f"     or unzip it yourself and point data.root at {info.layout_hint}:",
            f"       python -m fruitnet.train data={info.name} data.root=/path/to/that/folder",
            cred_line,
        ]
    )


def _err(msg: str) -> None:
    print(_redact(msg), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fruitnet.data.download",
        description="Download a full dataset from Kaggle (or unpack a manual download) and print "
        "the data.root override to train on it.",
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="folder to unpack into (default: $FRUITNET_ROOT/data/<dataset>, else ./data/<dataset>)",
    )
    parser.add_argument(
        "--from-archive",
        type=Path,
        default=None,
        metavar="ZIP_OR_TAR",
        help="unpack this manually downloaded archive instead of downloading",
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even if --dest already holds data"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        help=f"seconds for the connectivity check (default {CONNECT_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    info = DATASETS[args.dataset]
    # Same base as conf/paths (`$FRUITNET_ROOT` or the launch folder) so data/ ends up in one place.
    base = Path(os.environ.get("FRUITNET_ROOT") or ".")
    dest: Path = args.dest if args.dest is not None else base / "data" / info.name

    if args.from_archive is not None:
        try:
            safe_extract(args.from_archive, dest)
        except (UnsafeArchiveError, ValueError, FileNotFoundError, OSError) as e:
            _err(f"error: {e}")
            return 1
        except (zipfile.BadZipFile, tarfile.TarError) as e:
            _err(f"error: {args.from_archive} is damaged: {e}")
            return 1
    elif not args.force and dest.is_dir():
        # Already there (e.g. a second `make data`): no network needed.
        with contextlib.suppress(FileNotFoundError):
            root = find_data_root(dest, info.name)
            print(f"{info.name} is already in {dest}; pass --force to download again")
            print(_ready_message(info, root, verify_data_root(root, info.name)))
            return 0

    if args.from_archive is None:
        try:
            if _offline_env():
                raise DownloadUnavailable("offline mode (FRUITNET_OFFLINE is set)")
            _check_connectivity(args.timeout)
            src = _credential_source()
            print(
                f"downloading Kaggle dataset {info.handle} into {dest} "
                f"(credentials: {src or 'none found, trying anonymous access'})"
            )
            downloaded = _download(info, dest, force=args.force)
        except DownloadUnavailable as e:
            _err(_manual_message(info, str(e), dest))
            return 2
        except KeyboardInterrupt:
            _err("interrupted")
            return 130
        dest = downloaded

    try:
        root = find_data_root(dest, info.name)
        report = verify_data_root(root, info.name)
    except (FileNotFoundError, ValueError) as e:
        _err(f"error: {e}")
        return 1
    print(_ready_message(info, root, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
