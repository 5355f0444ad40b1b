"""Models with several inputs (image + metadata, two images, image + text tokens): the map is laid on one
of them, the image input; the others are held fixed.

``explain(model, (image, metadata))`` calls ``model(image, metadata)``; ``explain(model, {"pixels": image,
"age": age})`` calls ``model(pixels=image, age=age)``. The image input is the only 4-D floating tensor, or the
one ``image_input=`` names (a position or a key). The model is wrapped in :class:`BoundInputs`, whose
``forward(image)`` puts the image back among the other inputs, so that everything ``explain`` does for one
input (hooks, targets, gradients, the automatic layer) applies unchanged; layer names are the model's own.

Example:
    >>> ex = gradcam.explain(model, (photos, metadata), layer="backbone.layer4")   # doctest: +SKIP
    >>> ex.maps.shape                                          # photos' (B, K, H, W)
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

PREFIX = "model."


class BoundInputs(nn.Module):
    """``model`` with every input but the image fixed: ``forward(image) = model(*args, **kwargs)`` with the
    image in its place. The model is the submodule ``model`` (names gain the prefix ``model.``)."""

    def __init__(self, model: nn.Module, inputs: Sequence[Any] | Mapping[str, Any], key: int | str) -> None:
        super().__init__()
        self.model = model
        self.inputs, self.key = inputs, key
        self.batch = len(image_of(inputs, key))

    def forward(self, image: torch.Tensor) -> Any:
        """The model on ``image`` and the other inputs; ``image`` may be the first rows of the batch (the
        automatic layer's probe runs on one), and the other inputs' batched tensors are cut to match."""
        rows = len(image)
        if rows > self.batch:
            raise ValueError(f"several inputs: the other inputs hold {self.batch} rows, the image {rows}")

        def cut(value: Any) -> Any:
            batched = isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == self.batch
            return value[:rows] if batched and rows < self.batch else value

        if isinstance(self.inputs, Mapping):
            return self.model(**{k: image if k == self.key else cut(v) for k, v in self.inputs.items()})
        return self.model(*(image if i == self.key else cut(v) for i, v in enumerate(self.inputs)))


_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def automatic_layer(bound: BoundInputs, image: torch.Tensor) -> str:
    """:func:`gradcam.auto_layer` of the bound model, cached per user model, image input and image shape
    (the wrapper is new on every call; the probe pass should not be)."""
    from .layers import auto_layer

    cache = _LAYERS.setdefault(bound.model, {})
    key = (bound.key, tuple(image.shape[1:]))
    if key not in cache:
        cache[key] = unprefixed(auto_layer(bound, image))
    return cache[key]


def image_of(inputs: Sequence[Any] | Mapping[str, Any], key: int | str) -> torch.Tensor:
    return inputs[key] if isinstance(inputs, Mapping) else inputs[int(key)]  # type: ignore[index]


def image_key(
    model: nn.Module, inputs: Sequence[Any] | Mapping[str, Any], chosen: int | str | None, layer: Any
) -> int | str:
    """The input the map is laid on: ``chosen``; else the only float (B, C, H, W) tensor; else, of several,
    the one the layer's output depends on (one forward and backward pass on the first row)."""
    keys: list[int | str] = list(inputs) if isinstance(inputs, Mapping) else list(range(len(inputs)))
    if chosen is not None:
        if chosen not in keys:
            raise ValueError(f"image_input={chosen!r}: the inputs are {keys}")
        if not _is_image(image_of(inputs, chosen)):
            raise ValueError(f"image_input={chosen!r}: not a float (B, C, H, W) tensor")
        return chosen
    images = [k for k in keys if _is_image(image_of(inputs, k))]
    if not images:
        raise ValueError("several inputs: none is a float (B, C, H, W) tensor to lay the map on")
    if len(images) == 1:
        return images[0]
    name = layer_name(model, BoundInputs(model, inputs, images[0]), layer)
    holders = _inputs_reaching(model, inputs, images, name)
    if len(holders) != 1:
        found = ", ".join(map(repr, holders)) if holders else "none of them"
        raise ValueError(
            f"several inputs: {len(images)} float (B, C, H, W) tensors ({', '.join(map(repr, images))}), and layer "
            f"{name!r} depends on {found}; say which holds the map with image_input="
        )
    return holders[0]


def layer_name(model: nn.Module, bound: BoundInputs, layer: Any) -> str:
    """The (first) layer's name in ``model``: the automatic choice when ``layer`` is None."""
    from .layers import resolve_layers

    if layer is None:
        return automatic_layer(bound, image_of(bound.inputs, bound.key))
    return resolve_layers(model, layer)[0][0]


def _inputs_reaching(
    model: nn.Module, inputs: Sequence[Any] | Mapping[str, Any], candidates: list[int | str], name: str
) -> list[int | str]:
    """Of the ``candidates`` inputs, those the output of layer ``name`` depends on (first rows only)."""
    from .hooks import first_tensor, preserved_state

    batch = len(image_of(inputs, candidates[0]))

    def first_row(key: int | str, value: Any) -> Any:
        if key in candidates:
            return value[:1].detach().clone().requires_grad_()
        batched = isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == batch
        return value[:1] if batched else value

    kept: dict[str, torch.Tensor | None] = {}
    module = model.get_submodule(name)
    with preserved_state(model), torch.enable_grad():
        if isinstance(inputs, Mapping):
            probe: Any = {k: first_row(k, v) for k, v in inputs.items()}
        else:
            probe = [first_row(i, v) for i, v in enumerate(inputs)]
        handle = module.register_forward_hook(lambda m, a, out: kept.update(output=first_tensor(out)))
        try:
            model(**probe) if isinstance(probe, dict) else model(*probe)
        finally:
            handle.remove()
        output = kept.get("output")
        if output is None or not output.requires_grad:
            return []
        leaves = [probe[k] for k in candidates]
        grads = torch.autograd.grad(output.float().sum(), leaves, allow_unused=True)
    return [k for k, g in zip(candidates, grads, strict=True) if g is not None and bool(g.abs().sum() > 0)]


def _is_image(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point()


def prefixed(layer: Any) -> Any:
    """A layer spec for :class:`BoundInputs`: names gain ``model.``; modules stay as they are."""
    if layer is None or isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        return PREFIX + layer
    return [prefixed(item) for item in layer]


def unprefixed(name: str) -> str:
    return name.removeprefix(PREFIX)
