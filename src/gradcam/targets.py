"""Which scalar is explained: targets are callables on the model output returning one score per image.

Shorthands, resolved against the model's output in :func:`resolve_targets`:

- ``None``: each image's top-1 class;
- ``int``: that class for every image; a list with one int per image; a list of lists (K per image);
- ``"top-k"`` / ``"top3"``: each image's k best classes;
- a class name (``"tiger cat"``), case-insensitive, where labels are known;
- a callable ``f(logits) -> (B,)``, or a list of them (K targets per image).

Example:
    >>> ClassScore(281)(torch.zeros(2, 1000)).shape
    torch.Size([2])
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

TargetFn = Callable[[torch.Tensor], torch.Tensor]

_TOPK = re.compile(r"^top-?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ClassScore:
    """The logit of one class: ``logits[:, index]``."""

    index: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.index]


def _unit(output: Any, index: int, kind: str) -> torch.Tensor:
    """Column ``index`` of (B, K) scores, or the (B,) scores themselves (index 0)."""
    scores = select_logits(output)
    if scores.dim() == 1 and index == 0:
        return scores
    if scores.dim() != 2:
        raise ValueError(f"{kind}: expected (B,) or (B, K) outputs, got {tuple(scores.shape)}")
    if not 0 <= index < scores.shape[1]:
        raise ValueError(f"{kind}: output {index} is out of range for a model with {scores.shape[1]} outputs")
    return scores[:, index]


@dataclass(frozen=True)
class Positive:
    """Evidence *for* one output unit: its logit ``y[:, index]``.

    For a binary head with one sigmoid logit (``index=0``), the map of the positive class; for a
    multi-label head (independent sigmoids), the map of label ``index``. The logit, not the sigmoid,
    is differentiated: a saturated sigmoid would give vanishing gradients (the Grad-CAM paper explains
    the pre-softmax score for the same reason).

    Example:
        >>> ex = gradcam.explain(model, x, targets=gradcam.Positive())          # doctest: +SKIP
        >>> ex = gradcam.explain(model, x, targets=[gradcam.Positive(i) for i in (2, 5)])   # two labels
    """

    index: int = 0

    def __call__(self, output: Any) -> torch.Tensor:
        return _unit(output, self.index, "Positive")


@dataclass(frozen=True)
class Negative:
    """Evidence *against* one output unit: ``-y[:, index]``. For a binary head, the map of the negative
    class (what makes the model say "no"); it equals ``Positive`` with ``counterfactual=True``.

    Example:
        >>> ex = gradcam.explain(model, x, targets=[gradcam.Positive(), gradcam.Negative()])   # doctest: +SKIP
    """

    index: int = 0

    def __call__(self, output: Any) -> torch.Tensor:
        return -_unit(output, self.index, "Negative")


@dataclass(frozen=True)
class Regression:
    """A regression output ``y[:, index]`` (or ``y`` for (B,) outputs): where the evidence raises it.

    With ``toward=v`` the score is ``-(y - v)^2``: where the evidence pulls the prediction toward ``v``
    (for example the true value, to see what the model got right); ``direction=-1`` shows what lowers it.

    Example:
        >>> ex = gradcam.explain(age_model, x, targets=gradcam.Regression())               # doctest: +SKIP
        >>> ex = gradcam.explain(age_model, x, targets=gradcam.Regression(toward=30.0))
    """

    index: int = 0
    toward: float | None = None
    direction: int = 1

    def __call__(self, output: Any) -> torch.Tensor:
        value = _unit(output, self.index, "Regression")
        if self.toward is not None:
            return -((value - self.toward) ** 2)
        return value if self.direction >= 0 else -value


class TargetsFromOutput:
    """Targets chosen from the model's own output in the same forward pass (a detector's boxes after its
    non-maximum suppression): :func:`gradcam.explain` calls ``choose(output)`` once, on the output of its
    forward pass, and explains the callables it returns (one score per image each)."""

    def choose(self, output: Any) -> list[TargetFn]:
        raise NotImplementedError


class NoTargets(ValueError):
    """``TargetsFromOutput.choose`` found nothing to explain (a detector saw no box)."""


@dataclass(frozen=True)
class ResolvedTargets:
    """K targets for each of B images: class indices (B, K), or K callables applied to every image."""

    indices: torch.Tensor | None
    functions: tuple[TargetFn, ...] | None
    comparisons: torch.Tensor | None = None  # (B, K, m) Finer-CAM's comparison classes of each target
    alpha: float = 1.0
    batch: int | None = None  # the images' count, for callables on an output that is not one tensor

    @property
    def count(self) -> int:
        return self.indices.shape[1] if self.indices is not None else len(self.functions or ())

    def finer(self, logits: torch.Tensor, ranks: Sequence[int], alpha: float) -> ResolvedTargets:
        """These class targets made Finer-CAM's: each compared with the classes whose logits are nearest
        to its own (``ranks`` in that order, 0 being the class itself), chosen on ``logits``."""
        if self.indices is None:
            raise ValueError("finercam: give class targets (an index, a name, top-k), not callables")
        own = logits.detach().gather(1, self.indices)  # (B, K)
        distance = (logits.detach()[:, None, :] - own[..., None]).abs()  # (B, K, num_classes)
        order = distance.argsort(dim=2, stable=True)
        usable = [r for r in ranks if 0 < r < logits.shape[1]]
        if not usable:
            raise ValueError(f"finercam: no comparison class among ranks {list(ranks)} for {logits.shape[1]} classes")
        return ResolvedTargets(self.indices, None, order[..., usable], alpha)

    def scores(self, logits: Any, image_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N, K) scores to differentiate; row n of ``logits`` stands for image ``image_ids[n]``
        (default: row n is image n)."""
        if self.indices is not None:
            indices = self.indices.to(logits.device)
            if image_ids is not None:
                indices = indices[image_ids.to(logits.device)]
            main = logits.gather(1, indices)
            if self.comparisons is None:
                return main
            compared = self.comparisons.to(logits.device)
            if image_ids is not None:
                compared = compared[image_ids.to(logits.device)]
            flat = compared.flatten(1)  # (N, K * m)
            others = logits.gather(1, flat).view(compared.shape)
            weights = logits.softmax(dim=1).gather(1, flat).view(compared.shape)
            differences = main[..., None] - self.alpha * others
            return (weights * differences).sum(dim=2) / (weights.sum(dim=2) + 1e-9)
        return torch.stack(self.columns(logits, image_ids), dim=1)

    def columns(self, output: Any, image_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each callable target's (N,) scores on ``output``, before they are stacked."""
        if isinstance(output, torch.Tensor):
            rows = output.shape[0]
        elif image_ids is not None:
            rows = len(image_ids)
        else:  # a tuple or dict output (a detector's): its length is not the batch's
            rows = self.batch if self.batch is not None else len(output)
        return [_check_score(fn(output), rows) for fn in self.functions or ()]


def _check_score(score: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(score, torch.Tensor) or score.shape != (batch,):
        shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        raise ValueError(f"targets: a callable target must return one score per image, shape ({batch},), got {shape}")
    return score


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, torchvision's (``weights.meta["categories"]``), kept in
    ``io/imagenet_classes.txt`` so that naming a class does not import torchvision (about 2 s)."""
    text = (Path(__file__).parent / "io" / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def class_index(name: str, labels: Sequence[str]) -> int:
    """Index of a class name, case-insensitive; an unknown name raises with the closest names."""
    lowered = [label.lower() for label in labels]
    key = name.strip().lower()
    if key in lowered:
        return lowered.index(key)
    words = key.split()
    containing = [c for c in lowered if words and all(w in re.findall(r"[a-z0-9']+", c) for w in words)]
    close = containing[:6] or difflib.get_close_matches(key, lowered, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(labels[lowered.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"unknown class name {name!r}{hint}")


def _to_index(item: Any, labels: Sequence[str] | None, num_classes: int) -> int:
    if isinstance(item, bool):
        raise TypeError("targets: a class must be an int or a class name, not a bool")
    if isinstance(item, numbers.Integral) or (isinstance(item, torch.Tensor) and item.dim() == 0):
        index = int(item)
    elif isinstance(item, str):
        if re.fullmatch(r"\s*-?[0-9]+\s*", item):  # ASCII digits only: "²".isdigit() is True
            index = int(item)
        elif labels is None:
            raise ValueError(f"targets: class name {item!r} given but the model's labels are unknown; pass labels=")
        else:
            index = class_index(item, labels)
    else:
        raise TypeError(f"targets: expected a class index or name, got {type(item).__name__}")
    if not 0 <= index < num_classes:
        raise ValueError(f"targets: class index {index} is out of range for a model with {num_classes} outputs")
    return index


def resolve_targets(
    targets: TargetSpec, logits: Any, labels: Sequence[str] | None = None, batch: int | None = None
) -> ResolvedTargets:
    """Resolve a target spec against ``logits`` (B, num_classes). A count that does not match the batch
    is an error, never a silent drop. Callable targets accept any model output (segmentation maps,
    detection lists)."""
    if are_callable_targets(targets):
        functions = (targets,) if _is_function(targets) else tuple(targets)  # type: ignore[arg-type]
        return ResolvedTargets(None, functions, batch=batch)
    batch, num_classes = (batch or logits.shape[0]), logits.shape[-1]
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"labels: {len(labels)} class names for a model with {num_classes} outputs")
    if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
        targets = int(targets)  # numpy integers
    elif hasattr(targets, "tolist") and not isinstance(targets, torch.Tensor):
        targets = targets.tolist()  # type: ignore[union-attr]  # numpy arrays
    if labels is None and num_classes == 1000:
        labels = imagenet_labels()
    if targets is None:
        return ResolvedTargets(logits.argmax(dim=1, keepdim=True), None)
    if isinstance(targets, str):
        top = _TOPK.match(targets.strip())
        if top:
            k = int(top.group(1))
            if not 1 <= k <= num_classes:
                raise ValueError(f"targets: {targets!r} asks for {k} classes; the model has {num_classes}")
            return ResolvedTargets(logits.topk(k, dim=1).indices, None)
        return _same_for_all([targets], batch, labels, num_classes)
    if isinstance(targets, int) or (isinstance(targets, torch.Tensor) and targets.dim() == 0):
        return _same_for_all([targets], batch, labels, num_classes)
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    items = list(targets)  # type: ignore[arg-type]
    if not items:
        raise ValueError("targets: empty list")
    if len(items) != batch:
        raise ValueError(
            f"targets: {len(items)} targets given for a batch of {batch} images; give one per image "
            "(or a list per image for several classes)"
        )
    rows = [item if isinstance(item, (list, tuple)) else [item] for item in items]
    widths = {len(row) for row in rows}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(f"targets: every image needs the same number of classes, got {sorted(widths)}")
    indices = [[_to_index(item, labels, num_classes) for item in row] for row in rows]
    return ResolvedTargets(torch.tensor(indices, dtype=torch.long, device=logits.device), None)


def _is_function(item: Any) -> bool:
    return callable(item) and not isinstance(item, (str, int, torch.Tensor))


def are_callable_targets(targets: Any) -> bool:
    """True for a callable target or a non-empty list of them (they may take any model output)."""
    if _is_function(targets):
        return True
    return isinstance(targets, (list, tuple)) and bool(targets) and all(_is_function(t) for t in targets)


def _same_for_all(row: list[Any], batch: int, labels: Sequence[str] | None, num_classes: int) -> ResolvedTargets:
    indices = torch.tensor([_to_index(item, labels, num_classes) for item in row], dtype=torch.long)
    return ResolvedTargets(indices.expand(batch, -1).contiguous(), None)  # (batch, K), also for batch 0


def select_logits(output: Any) -> torch.Tensor:
    """The default output selector: a tensor itself; the first element of a tuple or list; ``.logits``;
    a dict's ``"logits"`` or ``"out"`` entry, else its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"cannot find the scores in a model output of type {type(output).__name__}; pass output= "
        "(a function from the model output to a (B, num_classes) tensor)"
    )


@dataclass(frozen=True)
class SegmentationScore:
    """Semantic segmentation: the summed score of class ``index`` over a pixel ``mask`` (H, W), for
    outputs (B, classes, H, W) (torchvision's ``{"out": ...}`` and Hugging Face's ``.logits`` are unwrapped).

    Example:
        >>> target = SegmentationScore(15, mask=(logits.argmax(1)[0] == 15).float())   # doctest: +SKIP
        >>> gradcam.explain(deeplab, x, layer="backbone.layer4", targets=target)
    """

    index: int
    mask: torch.Tensor

    def __call__(self, output: Any) -> torch.Tensor:
        maps = output["out"] if isinstance(output, dict) and "out" in output else select_logits(output)
        return (maps[:, self.index] * self.mask.to(maps.device, maps.dtype)).sum(dim=(-2, -1))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (N, 4) and (M, 4) in (x1, y1, x2, y2): (N, M)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


@dataclass(frozen=True)
class BoxScore:
    """Detection (torchvision Faster R-CNN style outputs, a list of ``{"boxes", "labels", "scores"}`` per
    image): the score of the detection of class ``label`` that overlaps ``box`` (x1, y1, x2, y2) most,
    among those with IoU >= ``iou_threshold``; 0 (and so a zero map) where none does.

    Example:
        >>> det = model(x)[0]                                                   # doctest: +SKIP
        >>> target = BoxScore(int(det["labels"][0]), det["boxes"][0].detach())
        >>> gradcam.explain(model, x, layer="backbone.body.layer4", targets=target)
    """

    label: int
    box: torch.Tensor
    iou_threshold: float = 0.5

    def __call__(self, output: Any) -> torch.Tensor:
        scores = []
        for detections in output:
            boxes, labels, values = detections["boxes"], detections["labels"], detections["scores"]
            same = labels == self.label
            if boxes.numel() == 0 or not bool(same.any()):
                scores.append(values.sum() * 0 if values.numel() else torch.zeros((), device=self.box.device))
                continue
            overlap = box_iou(boxes, self.box.view(1, 4).to(boxes))[:, 0]
            candidates = same & (overlap >= self.iou_threshold)
            if not bool(candidates.any()):
                scores.append(values.sum() * 0)
                continue
            best = torch.where(candidates, overlap, torch.full_like(overlap, -1)).argmax()
            scores.append(values[best])
        return torch.stack(scores)


@dataclass(frozen=True, eq=False)
class Similarity:
    """Targets that are cosine similarities of the image embedding to K reference embeddings.

    ``s_k = <e / |e|, r_k / |r_k|>`` where ``e`` is the model's output for the image (an embedding (B, D),
    or what ``output=`` picks from it) and ``r_k`` row k of ``references`` (K, D): the embedding of another
    image, a concept vector, or a text prompt's (see :class:`TextPrompt`). All K maps come from one forward
    pass of the image.

    Example:
        >>> reference = model(other_image)                                  # doctest: +SKIP
        >>> ex = gradcam.explain(model, images, targets=gradcam.Similarity(reference, ["like the other photo"]))
    """

    references: torch.Tensor
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        references = self.references.detach()
        if references.dim() == 1:
            references = references[None]
        if references.dim() != 2 or len(references) == 0:
            raise ValueError(f"Similarity: references must be (K, D) embeddings, got {tuple(self.references.shape)}")
        if self.names is not None and len(self.names) != len(references):
            raise ValueError(f"Similarity: {len(self.names)} names for {len(references)} references")
        object.__setattr__(self, "references", torch.nn.functional.normalize(references.float(), dim=-1))

    def labels(self) -> tuple[str, ...]:
        return tuple(self.names) if self.names is not None else tuple(f"reference {k}" for k in range(len(self)))

    def __len__(self) -> int:
        return len(self.references)

    def scores(self, output: Any) -> torch.Tensor:
        """(B, K) cosine similarities of the output embeddings to the references."""
        embeddings = select_logits(output)
        if embeddings.dim() != 2 or embeddings.shape[1] != self.references.shape[1]:
            raise ValueError(
                f"Similarity: the model's output {tuple(embeddings.shape)} is not (B, {self.references.shape[1]}) "
                "embeddings; pass output= to pick them"
            )
        unit = torch.nn.functional.normalize(embeddings, dim=-1)
        return unit @ self.references.to(device=unit.device, dtype=unit.dtype).T


@dataclass(frozen=True)
class TextPrompt:
    """Targets that are text prompts on an image-text model (CLIP, SigLIP): the map of prompt k explains
    the cosine similarity between the image embedding and the prompt's text embedding (a
    :class:`Similarity` to the model's ``encode_text(prompts)``); K prompts cost one forward pass of the
    image and one, cached, of the text encoder.

    Example:
        >>> bundle = gradcam.load_model("clip:ViT-B-32")                       # doctest: +SKIP
        >>> ex = gradcam.explain(bundle.model, x, targets=gradcam.TextPrompt(["a red car", "a tree"]))
    """

    prompts: tuple[str, ...]

    def __init__(self, prompts: str | Sequence[str]) -> None:
        listed = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        if not listed or any(not isinstance(p, str) or not p.strip() for p in listed):
            raise ValueError("TextPrompt: give one or more non-empty prompts")
        object.__setattr__(self, "prompts", listed)

    def similarity(self, model: Any) -> Similarity:
        encode = getattr(model, "encode_text", None)
        if not callable(encode):
            raise ValueError(
                f"TextPrompt: {type(model).__name__} has no encode_text; load an image-text model "
                "(clip:ARCH or hf: CLIP/SigLIP), or give embeddings with Similarity"
            )
        return Similarity(encode(list(self.prompts)), self.prompts)


TargetSpec = int | str | TargetFn | Sequence[Any] | TextPrompt | Similarity | TargetsFromOutput | None
