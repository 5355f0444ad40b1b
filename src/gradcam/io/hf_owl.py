"""OWL-ViT and OWLv2 (open-vocabulary detectors): ``hf:FOLDER`` of an ``OwlViTForObjectDetection`` or
``Owlv2ForObjectDetection`` checkpoint with text queries (``--prompt "a cat"``, repeatable): every box it keeps
for a query gets its own map, as any detector's (:mod:`gradcam.detection`).

OWL-ViT scores each image patch against each query: ``logits`` (B, patches, queries), a sigmoid head, a box per
patch. :class:`TextQueries` fixes the queries (tokenised once) so the model takes the image alone, and the
queries are its classes; a box's score is its patch's sigmoid probability for its query (Minderer et al., "Simple
Open-Vocabulary Object Detection with Vision Transformers", ECCV 2022). The default layer is the image tower's
last block's first norm (a ViT's tokens: a class token, then the patches).

Example:
    >>> bundle = gradcam.load_model("hf:owlvit-folder")                         # doctest: +SKIP
    >>> net = bundle.extra["queries"](["a cat", "a remote control"])
    >>> explain_boxes(net, x[None], bundle.extra["detector"])
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from .letterbox import padded_square, squashed
from .models import LoadedModel, ModelLoadError, Preprocessing

OWL_TYPES = ("owlvit", "owlv2")
MAX_QUERIES = 32
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # OWL processors' own


class TextQueries(nn.Module):
    """An OWL model with its text queries fixed: ``forward(pixel_values)`` is its output for those queries.
    Its children are the OWL model's own (the same layer names and parameters: nothing is copied)."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_owl", model)  # runs the children with its own forward; not a second child
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> Any:
        if pixel_values.shape[0] != 1:
            raise ValueError("an OWL model with text queries explains one image at a time")
        owl: Any = self._owl
        return owl(input_ids=self.input_ids, pixel_values=pixel_values, attention_mask=self.attention_mask)


def with_queries(model: nn.Module, tokenizer: Any, prompts: Sequence[str]) -> TextQueries:
    """``model`` bound to ``prompts`` (1 to ``MAX_QUERIES`` non-empty texts), tokenised by ``tokenizer``."""
    prompts = [str(p) for p in prompts]
    if not prompts or not all(p.strip() for p in prompts) or len(prompts) > MAX_QUERIES:
        raise ValueError(f"an OWL detector needs 1 to {MAX_QUERIES} non-empty text queries (--prompt TEXT)")
    tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    parameter = next(model.parameters())
    ids, mask = tokens["input_ids"].to(parameter.device), tokens["attention_mask"].to(parameter.device)
    return TextQueries(model, ids, mask).eval()


def load_owl(spec: str, config: Any, where: dict, model: nn.Module, source: str, processor: dict) -> LoadedModel:
    """The bundle of an OWL detector: its ``extra["queries"](prompts)`` makes the model to explain; the
    detector is a sigmoid head's (a patch's probability for a query; 0.1 from Python, as OWL-ViT's own examples
    threshold it; the command line's ``--conf``, 0.25 unless given); photos are resized to the processor's
    square (768 for OWL-ViT B/32; OWLv2's 960, the photo padded to a square first)."""
    from .hf import _import_transformers, bounded
    from .hf_detection import HfDetector, normalisation

    transformers = _import_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec, **where)
    except Exception as error:
        raise ModelLoadError(
            f"hf:{spec}: an OWL detector needs its tokenizer for the text queries ({type(error).__name__}); save "
            "the processor with the model (processor.save_pretrained(FOLDER))"
        ) from None
    size: dict[str, Any] = dict(processor.get("size") or {})
    side = int(size.get("height", 0) or size.get("shortest_edge", 0) or config.vision_config.image_size or 768)
    width = int(size.get("width") or side)
    mean, std = normalisation(processor, CLIP_MEAN_STD)
    blocks = int(config.vision_config.num_hidden_layers)
    v2 = config.model_type == "owlv2"  # OWLv2 pads the photo to a square first, OWL-ViT squashes it
    frame = (
        partial(padded_square, side=side, mean=mean, std=std)
        if v2
        else partial(squashed, size=(side, width), mean=mean, std=std)
    )
    return LoadedModel(
        name=f"hf:{spec}",
        model=model,
        preprocessing=bounded(Preprocessing(max(side, width), (side, width), mean, std, squash=not v2), spec),
        labels=None,
        default_layer=f"{config.model_type}.vision_model.encoder.layers.{blocks - 1}.layer_norm1",
        source=source,
        extra={
            "detector": HfDetector(sigmoid=True, conf=0.1),
            "frame": frame,
            "task": "detect",
            "queries": partial(with_queries, model, tokenizer),
        },
    )
