"""Image-text models (CLIP, SigLIP) as image models whose scores are similarities to text prompts.

An :class:`ImageTextModel`'s ``forward(images)`` is the unit-length image embedding (B, D), and
``encode_text(prompts)`` the unit-length text embeddings (K, D); with ``targets=gradcam.TextPrompt([...])``
the K explained scores are the cosine similarities ``s_k = <e_image, e_text_k>``, all from one forward pass
of the image. ``clip:ARCH[@TAG]`` loads an open_clip model (``open_clip_torch``), ``hf:ORG/NAME`` of a CLIP or
SigLIP checkpoint a Hugging Face one (``transformers``).

Example:
    >>> bundle = load_model("clip:ViT-B-32")                               # doctest: +SKIP
    >>> ex = gradcam.explain(bundle.model, x, targets=gradcam.TextPrompt(["a cat", "a remote control"]))
    >>> ex.scores                                           # cosine similarities, (B, 2)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hub import in_hub_cache, reachable
from .models import LoadedModel, ModelLoadError, Preprocessing, WeightsFile

TEXT_CACHE_SIZE = 64


class ImageTextModel(nn.Module):
    """Base of the adapters: the image embedding is the output; text embeddings are cached per prompt
    list (a folder's batches share one text pass)."""

    def __init__(self) -> None:
        super().__init__()
        self._text_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._text_lock = threading.Lock()

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (K, D) of ``prompts``, computed without gradients in eval mode."""
        from ..hooks import preserved_state

        key = tuple(prompts)
        with self._text_lock:
            cached = self._text_cache.get(key)
            if cached is not None:
                self._text_cache.move_to_end(key)
                return cached
        with preserved_state(self), torch.inference_mode():
            embeddings = F.normalize(self._embed_text(list(key)).float(), dim=-1)
        with self._text_lock:
            self._text_cache[key] = embeddings
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return embeddings

    def _embed_text(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class OpenClipModel(ImageTextModel):
    """An open_clip model: ``clip.encode_image`` / ``clip.encode_text`` with its own tokenizer."""

    def __init__(self, clip: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        super().__init__()
        self.clip: Any = clip
        self.tokenizer = tokenizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def _embed_text(self, prompts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(self.tokenizer(prompts).to(self._device()))


class HfImageTextModel(ImageTextModel):
    """A Hugging Face ``CLIPModel`` / ``SiglipModel``: ``get_image_features`` / ``get_text_features``."""

    def __init__(self, model: nn.Module, tokenizer: Any, padding: str | bool = True) -> None:
        super().__init__()
        self.model: Any = model
        self.tokenizer = tokenizer
        self.padding = padding

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=images)), dim=-1)

    def _embed_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=self.padding, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self._device()) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return _pooled(self.model.get_text_features(**tokens))


def _pooled(features: Any) -> torch.Tensor:
    """transformers 4 returns the projected embedding; 5 a ModelOutput holding it as ``pooler_output``."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output


IMAGE_TEXT_TYPES = ("clip", "siglip", "siglip2", "chinese_clip", "altclip")


def load_hf_image_text(spec: str, config: Any, where: dict, preprocessing: Preprocessing) -> LoadedModel:
    """A Hugging Face CLIP/SigLIP checkpoint (``hf:ORG/NAME`` whose config is one of ``IMAGE_TEXT_TYPES``)."""
    import transformers

    try:
        model = transformers.AutoModel.from_pretrained(spec, **where)
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec, **where)
    except Exception as error:
        raise ModelLoadError(f"hf:{spec}: cannot load the model or its tokenizer ({type(error).__name__})") from None
    padding = "max_length" if config.model_type.startswith("siglip") else True  # SigLIP was trained so
    return LoadedModel(
        name=f"hf:{spec}",
        model=HfImageTextModel(model, tokenizer, padding).eval(),
        preprocessing=preprocessing,
        labels=None,
        source=f"Hugging Face {spec}",
        extra={"image_text": True},
    )


def load_open_clip(spec: str, weights: str | None, file: WeightsFile | None) -> LoadedModel:
    """``clip:ARCH`` (its first pretrained tag, ``openai`` where there is one) or ``clip:ARCH@TAG``."""
    try:
        import open_clip
    except ImportError as error:
        raise ModelLoadError(
            "clip: models need open_clip (pip install 'gradcam[clip]' or pip install open_clip_torch)"
        ) from error
    arch, _, tag = spec.partition("@")
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join('clip:' + c for c in close)}?" if close else ""
        raise ModelLoadError(f"unknown open_clip model {arch!r}{hint}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights is None:
        tag = tag or ("openai" if "openai" in tags else (tags[0] if tags else ""))
        if not tag:
            raise ModelLoadError(f"clip:{arch} has no pretrained weights; pass --weights FILE or --weights none")
        if tag not in tags:
            raise ModelLoadError(f"clip:{arch}@{tag}: unknown tag; known: {', '.join(tags)}")
        _check_open_clip_weights(open_clip, arch, tag)
    try:
        clip = open_clip.create_model(arch, pretrained=tag if weights is None else None)
    except Exception as error:  # download and file errors come in many types
        raise ModelLoadError(
            f"cannot load clip:{arch}@{tag} ({type(error).__name__}); pass --weights FILE or --weights none"
        ) from error
    source = f"open_clip {arch}@{tag}" if weights is None else "random weights"
    if file is not None:
        file.load_into(clip)
        source = f"weights from {weights}"
    cfg = dict(getattr(clip.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(clip.visual, "image_size", 224))
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    preprocessing = Preprocessing(
        resize=min(height, width),
        crop=(height, width),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation="bicubic" if cfg.get("interpolation", "bicubic") == "bicubic" else "bilinear",
        squash=cfg.get("resize_mode") == "squash",
    )
    model = OpenClipModel(clip, open_clip.get_tokenizer(arch)).eval()
    name = f"clip:{arch}" + (f"@{tag}" if tag and weights is None else "")
    return LoadedModel(name, model, preprocessing, None, None, source, {"image_text": True})


def _check_open_clip_weights(open_clip: Any, arch: str, tag: str) -> None:
    """Fail at once, naming the weights, when they are neither cached nor downloadable."""
    from huggingface_hub import constants

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        repo = "/".join(hub.split("/")[:2])  # ORG/NAME, without a file path after it
        names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        if in_hub_cache(repo, names) or reachable(constants.ENDPOINT):
            return
        where = f"{constants.ENDPOINT}/{repo}"
    else:
        url = cfg.get("url", "")
        if not url or reachable(url):
            return
        where = url
    raise ModelLoadError(
        f"cannot get the clip:{arch}@{tag} weights from {where} (not in the local cache, and it cannot be reached); "
        "with no network, download them elsewhere and pass --weights FILE, or --weights none for random weights"
    )
