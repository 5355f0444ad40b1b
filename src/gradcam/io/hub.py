"""Models from hubs: timm's models by name (the ``timm`` extra), and what the ``hf:`` source shares with
them: whether a hub's weights are cached here, and whether its host can be reached (a clear one-line
error offline instead of a long time-out).

Example:
    >>> bundle = load_timm("convnext_tiny", None, None)           # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

from .models import LoadedModel, Preprocessing, _imagenet_labels
from .weights import ModelLoadError, WeightsFile, _sized_to


def _timm_preprocessing(cfg: dict) -> Preprocessing:
    height, width = cfg.get("input_size", (3, 224, 224))[1:]
    crop_pct = cfg.get("crop_pct", 0.875) or 1.0
    return Preprocessing(
        resize=int(math.floor(min(height, width) / crop_pct)),
        crop=(height, width),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation="bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear",
    )


def load_timm(arch: str, weights: str | None, file: WeightsFile | None) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"timm:{arch} needs timm: pip install 'gradcam[timm]' (or pip install timm)") from None

    if arch not in timm.list_models(pretrained=False):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ModelLoadError(f"unknown timm model {arch!r}{hint}")
    pretrained = weights is None
    cfg = timm.models.get_pretrained_cfg(arch)
    source = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or "the timm hub"

    def unavailable(reason: str) -> ModelLoadError:
        return ModelLoadError(
            f"cannot get pretrained weights for timm:{arch} from {source} ({reason}); with no network, download "
            "them elsewhere and pass --weights FILE, or --weights none for random weights"
        )

    if pretrained and not _timm_weights_cached(cfg) and not reachable(_timm_weights_host(cfg)):
        raise unavailable("not in the local cache, and the hub cannot be reached")  # at once, not after retries
    try:
        model, _ = _sized_to(file, partial(timm.create_model, arch, pretrained=pretrained), f"timm:{arch}")
    except Exception as error:  # hub and network errors come in many types
        raise unavailable(type(error).__name__) from error
    if file is not None:
        file.load_into(model)
    labels = _imagenet_labels() if getattr(model, "num_classes", 0) == 1000 else None
    return LoadedModel(
        f"timm:{arch}", model, _timm_preprocessing(dict(getattr(model, "pretrained_cfg", {}))), labels, None, arch
    )


def _timm_weights_cached(cfg: object) -> bool:
    """Whether timm's pretrained weights for ``cfg`` are already on this machine (Hugging Face cache)."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        url = getattr(cfg, "url", None)
        return isinstance(url, str) and (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists()
    names = [
        getattr(cfg, "hf_hub_filename", None),
        "model.safetensors",
        "open_clip_pytorch_model.bin",
        "pytorch_model.bin",
    ]
    return in_hub_cache(hub_id.split("@")[0], [name for name in names if name])


def in_hub_cache(repo: str, names: Sequence[str]) -> bool:
    """Whether any of the files ``names`` of the Hugging Face hub repository ``repo`` is in the local cache
    (no network is used)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def _timm_weights_host(cfg: object) -> str:
    if getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import constants

        return constants.ENDPOINT
    return getattr(cfg, "url", None) or "https://huggingface.co"


def reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (no request is sent)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
