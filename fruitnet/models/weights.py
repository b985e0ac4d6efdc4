"""Pretrained weights: where they come from, where they are cached, and how files are loaded.

Nothing here executes code from a download: files are fetched with
``torch.hub.download_url_to_file`` (never ``torch.hub.load``) and read with
``torch.load(weights_only=True, map_location="cpu")``.

Cache layout is torch hub's: ``$TORCH_HOME/hub/checkpoints/<file name from the URL>``, so a file
that torchvision or another tool already downloaded is reused, and a manually downloaded file is
picked up when put at exactly that path.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
from torch import nn

from fruitnet.settings import OFFLINE_ENV, is_offline
from fruitnet.sockets import socket_timeout

DOWNLOAD_SOCKET_TIMEOUT_S = 15.0

# Wrappers that prefix every key of a state_dict: DataParallel/DDP ("module."), and a
# LightningModule holding the network as an attribute ("net." / "model.").
_WRAPPER_PREFIXES = ("module.", "net.", "model.")
# torchvision names its files "<arch>-<first hex digits of the sha256>.pth".
_TORCHVISION_HASH = re.compile(r"-([a-f0-9]{6,})\.")
_CHUNK = 1 << 20


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (offline, or the download failed)."""


class WeightsFileError(ValueError):
    """A weights file exists but is unreadable, refused, or does not fit the network."""


@dataclass(frozen=True)
class WeightsSource:
    """One downloadable weights file and how to recognise a byte-identical copy of it."""

    url: str
    git_blob_sha1: str | None = None
    sha256_prefix: str | None = None

    @property
    def file_name(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name

    def cache_path(self) -> Path:
        return hub_checkpoint_dir() / self.file_name


PROXYLESS_GPU = WeightsSource(
    url="https://raw.githubusercontent.com/han-cai/files/master/proxylessnas/proxyless_gpu.pth",
    git_blob_sha1="4783a278b25364291d8117a06c442cffbbd8b5a4",
)


def torchvision_source(url: str) -> WeightsSource:
    """Source for a torchvision weights URL, verified by the sha256 prefix in its file name."""
    match = _TORCHVISION_HASH.search(PurePosixPath(urlparse(url).path).name)
    return WeightsSource(url=url, sha256_prefix=match.group(1) if match else None)


def hub_checkpoint_dir() -> Path:
    # Resolved at call time so that TORCH_HOME set after import (tests, Hydra) is honoured.
    return Path(torch.hub.get_dir()) / "checkpoints"


def git_blob_sha1(path: str | Path) -> str:
    """``git hash-object``: sha1 over ``b"blob <size>\\0"`` + content."""
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    _update_digest(digest, path)
    return digest.hexdigest()


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    _update_digest(digest, Path(path))
    return digest.hexdigest()


def _update_digest(digest, path: Path) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def verify(source: WeightsSource, path: Path) -> str | None:
    """None when ``path`` is the published file (or nothing is known to check); else why not."""
    if source.git_blob_sha1 is not None:
        got = git_blob_sha1(path)
        if got != source.git_blob_sha1:
            return f"git blob id {got} != expected {source.git_blob_sha1}"
    if source.sha256_prefix is not None:
        got = sha256(path)
        if not got.startswith(source.sha256_prefix):
            return f"sha256 {got} does not start with {source.sha256_prefix}"
    return None


def unavailable_message(model: str, source: WeightsSource, reason: str) -> str:
    return (
        f"Pretrained weights for model '{model}' are not available: {reason}.\n"
        f"  URL:        {source.url}\n"
        f"  cache path: {source.cache_path()}\n"
        "Either download the file manually and put it at exactly that cache path "
        "(it is picked up from there), or pass a local file with model.weights=PATH "
        '(a state_dict, or a checkpoint with a "state_dict" entry), '
        "or train from scratch with model.pretrained=false."
    )


def fetch(source: WeightsSource, *, model: str) -> Path:
    """Path of the cached weights file, downloading it first when allowed.

    A file the user placed in the cache that does not match the published checksum only warns:
    re-saved copies of the official weights are legitimate, and strict key/shape loading still
    guards against a wrong file. A file this function downloads must match exactly.
    """
    path = source.cache_path()
    if path.is_file():
        problem = verify(source, path)
        if problem:
            warnings.warn(
                f"{path} is not byte-identical to {source.url} ({problem}); "
                "loading it anyway, keys and shapes are checked strictly.",
                stacklevel=2,
            )
        return path
    if is_offline():
        raise WeightsUnavailableError(
            unavailable_message(model, source, f"no cached file and {OFFLINE_ENV} is set (offline)")
        )
    _download(source, path, model=model)
    return path


def _download(source: WeightsSource, path: Path, *, model: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            # Writes to a temp file beside `path` and renames, so an interrupted download never
            # leaves a partial file at the cache path.
            torch.hub.download_url_to_file(source.url, str(path), hash_prefix=source.sha256_prefix)
    except Exception as exc:
        path.unlink(missing_ok=True)
        reason = f"download failed ({type(exc).__name__}: {exc})"
        raise WeightsUnavailableError(unavailable_message(model, source, reason)) from exc
    problem = verify(source, path)
    if problem:
        path.unlink(missing_ok=True)
        reason = f"the downloaded file failed verification ({problem}) and was deleted"
        raise WeightsUnavailableError(unavailable_message(model, source, reason))


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a raw state_dict or a checkpoint with a ``"state_dict"`` entry, tensors only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = _torch_load(path)
    is_checkpoint = isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
    state = obj["state_dict"] if is_checkpoint else obj
    if not isinstance(state, Mapping):
        raise WeightsFileError(
            f"{path}: expected a state_dict (a dict), got {type(state).__name__}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(
            f"{path}: not a state_dict, entries are not tensors: {_preview(bad)} "
            '(a checkpoint must keep its weights under a "state_dict" entry)'
        )
    stripped, prefix = _strip_wrapper_prefix(dict(state), lightning=is_checkpoint)
    return keep_metadata(stripped, state, prefix)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise WeightsFileError(
                f"{path}: refused, the file contains pickled Python objects other than tensors "
                "and plain containers, and fruitnet only loads with weights_only=True. "
                "Re-save just the state_dict: torch.save(model.state_dict(), PATH)."
            ) from exc
        raise WeightsFileError(f"{path}: not a PyTorch weights file ({exc})") from exc
    except Exception as exc:
        raise WeightsFileError(
            f"{path}: could not be read as a PyTorch weights file, it may be truncated or "
            f"corrupt ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], *, lightning: bool) -> tuple[dict, str]:
    """The state without its wrappers' key prefix, and that prefix."""
    removed = ""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                removed += prefix
                changed = True
    if lightning:
        # A LightningModule's state_dict also holds non-network tensors (e.g. a loss's class
        # weights); keep only the wrapped network when it sits under a known attribute.
        for prefix in _WRAPPER_PREFIXES[1:]:
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                return sub, removed + prefix
    return state, removed


def keep_metadata(
    state: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``state`` (``source``'s keys below ``prefix``, without it) with ``source``'s per-module
    version metadata carried over: torchvision's MNASNet refuses a state_dict without it."""
    meta = getattr(source, "_metadata", None)
    if meta is None:
        return dict(state)
    out = OrderedDict(state)
    root = prefix.rstrip(".")
    out._metadata = OrderedDict(
        ("" if k == root else k[len(prefix) :], v)
        for k, v in meta.items()
        if k == root or k.startswith(prefix)
    )
    return out


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` with every key and shape checked first, and an error worth reading.

    Missing ``num_batches_tracked`` buffers are tolerated: older BatchNorm checkpoints (such as
    the 2018 ProxylessNAS file) may not have them, and they do not affect inference.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source}: weights do not fit the {type(model).__name__} network"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        raise WeightsFileError("\n".join(lines))
    model.load_state_dict(state, strict=False)


def _preview(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
