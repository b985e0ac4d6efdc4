"""Any timm model by name: ``model=timm model.arch=<name>`` (the ``timm`` extra).

Per architecture everything comes from timm: the names from ``timm.list_models``, the eval
pipeline from its ``pretrained_cfg`` through ``timm.data.resolve_data_config`` (input size, crop
fraction, mean/std), the classifier from ``get_classifier``/the built net, the weights from the
Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), loaded by timm itself (its
checkpoint filters resample a ViT's position embedding to another input size).
"""

from __future__ import annotations

import logging
import os
from functools import cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from fruitnet.models.registry import ModelSpec, register_model
from fruitnet.models.weights import DOWNLOAD_SOCKET_TIMEOUT_S, WeightsUnavailableError
from fruitnet.models.zoo import eval_resize, inspect_net, require_arch, unknown_arch
from fruitnet.settings import OFFLINE_ENV, is_offline
from fruitnet.sockets import socket_timeout, unreachable

FAMILY = "timm"
INSTALL_HINT = "pip install 'fruitnet[timm]'"
# What timm's own hub loader looks for, in its order (safetensors first).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

log = logging.getLogger(__name__)


def import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError(
            f"model=timm needs the timm extra, which is not installed: {INSTALL_HINT}"
        ) from None
    return timm


def available() -> bool:
    try:
        import_timm()
    except ValueError:
        return False
    return True


@cache
def names() -> tuple[str, ...]:
    return tuple(import_timm().list_models())


def check_arch(arch: object) -> str:
    """A timm architecture, optionally with a pretrained tag (``vit_tiny_patch16_224.augreg_in21k``)."""
    arch = require_arch(FAMILY, arch)
    timm = import_timm()
    base, _, tag = arch.partition(".")
    if not timm.is_model(base):
        raise unknown_arch(FAMILY, arch, names())
    if tag and timm.models.get_pretrained_cfg(arch) is None:
        tags = timm.list_models(base, pretrained=True)
        raise ValueError(f"timm {base} has no pretrained tag {tag!r}; tags: {', '.join(tags)}")
    return arch


def pretrained_cfg(arch: str) -> dict[str, Any]:
    cfg = import_timm().models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def _build_options(arch: str, input_size: int, options: dict[str, object]) -> dict[str, object]:
    """A network with a fixed input size (a ViT's position embedding) is built at ``input_size``
    (``img_size``): timm resamples pretrained position embeddings to it."""
    spec = resolve_timm(arch=arch)
    if pretrained_cfg(arch).get("fixed_input_size") and input_size != spec.input_size:
        options = {"img_size": input_size, **options}
        _log_resized(arch, input_size, spec.input_size)
    return options


@cache
def _log_resized(arch: str, size: int, native: int) -> None:
    log.info("timm %s is built for %d px inputs (img_size=%d; its default is %d)", arch, size, size,
             native)  # fmt: skip


def _create(arch: str, input_size: int, options: dict[str, object], **kw: object) -> nn.Module:
    timm = import_timm()
    try:
        return timm.create_model(arch, **kw, **_build_options(arch, input_size, options))
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        native = resolve_timm(arch=arch).input_size
        raise ValueError(
            f"timm {arch} takes {native} px inputs only (it cannot be built for {input_size} px): "
            f"use norm=true or data.image_size={native}"
        ) from None


def build_timm(
    *, num_classes: int, input_size: int = 224, arch: str, **options: object
) -> nn.Module:
    """timm's ``arch``, randomly initialised, with a ``num_classes`` classifier; ``options`` go to
    ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``)."""
    return _create(check_arch(arch), int(input_size), options, num_classes=num_classes)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved at call time as huggingface_hub resolves it at
    import: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


# Seconds the hub gets to answer a TCP connect before a download is tried: hf_hub_download
# retries a failed request with backoff (about 25 s a file, two file names) before it gives up
PROBE_TIMEOUT_S = 5.0


def weights_file(arch: str) -> Path:
    """The cached weights file of ``arch`` (downloaded first when online), timm's file names in
    timm's order; offline or failing, WeightsUnavailableError names the file and where it goes."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = pretrained_cfg(arch)["hf_hub_id"].partition("@")
    cache_dir = hub_cache_dir()
    for name in WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo, name, revision=revision or None,
                                        cache_dir=cache_dir, local_files_only=True))  # fmt: skip
        except (LocalEntryNotFoundError, EntryNotFoundError):
            continue
    if is_offline():
        raise WeightsUnavailableError(
            _unavailable(arch, repo, cache_dir, f"not in the cache and {OFFLINE_ENV} is set")
        )
    hub = urlparse(constants.ENDPOINT)  # HF_ENDPOINT: a mirror is probed, not huggingface.co
    port = hub.port or (80 if hub.scheme == "http" else 443)
    reason = unreachable(hub.hostname or "huggingface.co", PROBE_TIMEOUT_S, port=port)
    if reason is not None:
        raise WeightsUnavailableError(
            _unavailable(arch, repo, cache_dir, f"not in the cache; {reason}")
        )
    for name in WEIGHT_FILES:
        try:
            with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                return Path(hf_hub_download(repo, name, revision=revision or None,
                                            cache_dir=cache_dir))  # fmt: skip
        except LocalEntryNotFoundError as exc:  # the hub went away after the probe
            reason = f"the hub could not be reached ({str(exc)[:200]})"
            raise WeightsUnavailableError(_unavailable(arch, repo, cache_dir, reason)) from exc
        except EntryNotFoundError:
            continue
        except Exception as exc:
            reason = f"download failed ({type(exc).__name__}: {str(exc)[:200]})"
            raise WeightsUnavailableError(_unavailable(arch, repo, cache_dir, reason)) from exc
    raise WeightsUnavailableError(
        _unavailable(arch, repo, cache_dir, "no weights file in the repo")
    )


def _unavailable(arch: str, repo: str, cache_dir: Path, reason: str) -> str:
    folder = cache_dir / f"models--{repo.replace('/', '--')}"
    return (
        f"Pretrained weights for timm {arch} are not available: {reason}. Download "
        f"{WEIGHT_FILES[0]} of https://huggingface.co/{repo} on a machine with network "
        f"(`hf download {repo} {WEIGHT_FILES[0]}`) and copy the cache folder {folder} "
        "(it is picked up from there; HF_HUB_CACHE or HF_HOME move it), or pass a local file "
        "with model.weights=PATH, or train from scratch with model.pretrained=false."
    )


def load_pretrained(
    *, num_classes: int, input_size: int = 224, arch: str, **options: object
) -> tuple[nn.Module, str]:
    """timm loads the file strictly into the network with the file's own classifier (its
    checkpoint filter adapts a ViT's position embedding), then the classifier is replaced:
    every backbone key is checked and loaded."""
    arch = check_arch(arch)
    path = weights_file(arch)
    file_classes = int(pretrained_cfg(arch).get("num_classes") or 1000)
    net = _create(
        arch,
        int(input_size),
        options,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "custom_load": False},
        num_classes=file_classes,
    )
    if num_classes != file_classes:
        net.reset_classifier(num_classes)
    return net, str(path)


def resolve_timm(*, arch: object = None, **_: object) -> ModelSpec:
    return _resolve(check_arch(arch))


@cache
def _resolve(arch: str) -> ModelSpec:
    timm = import_timm()
    cfg = pretrained_cfg(arch)
    data = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
    size = int(data["input_size"][-1])
    facts = inspect_net(partial(timm.create_model, arch), size)
    return ModelSpec(
        name=f"{FAMILY}/{arch}",
        builder=build_timm,
        input_size=size,
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        description=f"timm {arch}"
        + (f", weights {cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else ""),
        head=facts.head,
        cam_layer=facts.cam_layer,
        resize=eval_resize(size, float(data.get("crop_pct") or 1.0)),
        load_pretrained=load_pretrained if cfg.get("hf_hub_id") else None,
    )


register_model(
    ModelSpec(
        name=FAMILY,
        builder=build_timm,
        input_size=224,
        description=f"any timm model (model.arch=<name>; {INSTALL_HINT})",
        resolve=resolve_timm,
    )
)
