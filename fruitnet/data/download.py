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
import sys
import tarfile
import zipfile
from pathlib import Path

from fruitnet.data.catalog import DATASETS, DatasetInfo
from fruitnet.data.extract import UnsafeArchiveError, safe_extract
from fruitnet.data.layout import find_data_root, verify_data_root
from fruitnet.settings import OFFLINE_ENV, is_offline, root_dir
from fruitnet.sockets import socket_timeout, unreachable

__all__ = ["DownloadUnavailable", "main"]

KAGGLE_HOST = "www.kaggle.com"
CONNECT_TIMEOUT_S = 5.0
# Upper bound on any single socket wait of the fallback `kaggle` client, which sets none itself.
# kagglehub bounds its own requests (connect 5 s, read 15 s between bytes).
SOCKET_STALL_TIMEOUT_S = 60.0


class DownloadUnavailable(RuntimeError):
    """Downloading is not possible here (offline, no client, refused); the message says why."""


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


def _check_connectivity(timeout: float) -> None:
    reason = unreachable(KAGGLE_HOST, timeout)
    if reason is not None:
        raise DownloadUnavailable(reason)


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


def _parser() -> argparse.ArgumentParser:
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
    return parser


def _unpack(archive: Path, dest: Path) -> int:
    """0 when ``archive`` is unpacked into ``dest``, else 1 with the reason on stderr."""
    try:
        safe_extract(archive, dest)
    except (UnsafeArchiveError, ValueError, FileNotFoundError, OSError) as e:
        _err(f"error: {e}")
        return 1
    except (zipfile.BadZipFile, tarfile.TarError) as e:
        _err(f"error: {archive} is damaged: {e}")
        return 1
    return 0


def _fetch(info: DatasetInfo, dest: Path, args: argparse.Namespace) -> Path | int:
    """The folder the download landed in, or the exit code when it could not run."""
    try:
        if is_offline():
            raise DownloadUnavailable(f"offline mode ({OFFLINE_ENV} is set)")
        _check_connectivity(args.timeout)
        src = _credential_source()
        print(
            f"downloading Kaggle dataset {info.handle} into {dest} "
            f"(credentials: {src or 'none found, trying anonymous access'})"
        )
        return _download(info, dest, force=args.force)
    except DownloadUnavailable as e:
        _err(_manual_message(info, str(e), dest))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    info = DATASETS[args.dataset]
    # Same base as conf/paths (`$FRUITNET_ROOT` or the launch folder) so data/ ends up in one place.
    dest: Path = args.dest if args.dest is not None else root_dir() / "data" / info.name

    if args.from_archive is not None:
        if _unpack(args.from_archive, dest):
            return 1
    else:
        if not args.force and dest.is_dir():
            # Already there (e.g. a second `make data`): no network needed.
            with contextlib.suppress(FileNotFoundError):
                root = find_data_root(dest, info.name)
                print(f"{info.name} is already in {dest}; pass --force to download again")
                print(_ready_message(info, root, verify_data_root(root, info.name)))
                return 0
        fetched = _fetch(info, dest, args)
        if isinstance(fetched, int):
            return fetched
        dest = fetched

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
