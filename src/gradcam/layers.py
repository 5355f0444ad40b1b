"""Resolve the layer to explain: a name, a module, several of them, or an automatic choice.

Example:
    >>> resolve_layers(model, "features.35")          # doctest: +SKIP
    [('features.35', ReLU(inplace=True))]
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

LayerSpec = str | nn.Module | Sequence[str | nn.Module] | None

# Modules whose output is never a good place for a class activation map: they only pool, reshape or
# pass the features through, so the map belongs to the module that produced their input.
_PASS_THROUGH = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
)

_auto_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: its name, output shape (without the batch) and whether it is the default."""

    name: str
    shape: tuple[int, ...]
    kind: str
    default: bool = False


def resolve_layers(
    model: nn.Module, layer: LayerSpec, example: torch.Tensor | None = None
) -> list[tuple[str, nn.Module]]:
    """Turn a layer spec into ``[(name, module), ...]``.

    ``None`` picks the last module with a spatial output before global pooling (see :func:`auto_layer`),
    which needs an ``example`` input to trace shapes.
    """
    if layer is None:
        if example is None:
            raise ValueError("layer=None needs an example input to choose a layer automatically")
        name = auto_layer(model, example)
        return [(name, model.get_submodule(name))]
    specs = [layer] if isinstance(layer, (str, nn.Module)) else list(layer)
    if not specs:
        raise ValueError("layer: empty list; give at least one layer name")
    return [_resolve_one(model, spec) for spec in specs]


def _resolve_one(model: nn.Module, spec: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(spec, nn.Module):
        for name, module in model.named_modules():
            if module is spec:
                return name, module
        raise ValueError(f"layer: the module {type(spec).__name__} given is not part of the model")
    if not isinstance(spec, str):
        raise TypeError(f"layer: expected a module name or an nn.Module, got {type(spec).__name__}")
    try:
        if spec:
            return spec, model.get_submodule(spec)
    except AttributeError:
        pass
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown layer {spec!r}{hint} (list the layers with `gradcam layers MODEL`)")


def trace_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Run ``model`` once on ``example`` and return ``(name, output)`` for every module, in completion order.

    The model's mode is left as it was; the forward runs without gradients.
    """
    from .hooks import preserved_state, run_model

    fired: list[tuple[str, torch.Tensor]] = []
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):  # a tuple or ModelOutput is explained only when named
                fired.append((name, output))

        return hook

    with preserved_state(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(make_hook(name)))
            with torch.no_grad():
                run_model(model, example)
        finally:
            for handle in handles:
                handle.remove()
    return fired


def _candidates(
    model: nn.Module, fired: list[tuple[str, torch.Tensor]], dims: int = 4
) -> list[tuple[str, torch.Tensor]]:
    """Spatial (B, C, h, w) outputs (``dims`` dimensions: (B, C, l) for signals, (B, C, d, h, w) for volumes
    and clips) not produced by pooling or pass-through modules.

    A pass-through module's output is "pooled" until a computing leaf module (an in-place activation
    after a timm ``Identity``, say) returns that same tensor; a container returning a pooled tensor is
    skipped, as VGG's ``features`` is.
    """
    pooled: set[int] = set()
    eligible = []
    for name, output in fired:
        module = model.get_submodule(name)
        is_leaf = next(module.children(), None) is None
        if isinstance(module, _PASS_THROUGH):
            pooled.add(id(output))
            continue
        if is_leaf:
            pooled.discard(id(output))
        elif id(output) in pooled:
            continue
        if output.dim() == dims and math.prod(output.shape[2:]) > 1:
            eligible.append((name, output))
    return eligible


def transformer_layer(model: nn.Module) -> str | None:
    """The conventional layer of a vision transformer: the first norm of the last block (timm ViT/DeiT,
    torchvision ViT). Swin returns a channels-last map and takes the automatic choice."""
    blocks = getattr(model, "blocks", None)
    if (
        isinstance(blocks, nn.Sequential)
        and len(blocks)
        and hasattr(blocks[-1], "norm1")
        and hasattr(model, "patch_embed")
    ):
        return f"blocks.{len(blocks) - 1}.norm1"
    encoder_layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(encoder_layers, nn.Sequential) and len(encoder_layers) and hasattr(encoder_layers[-1], "ln_1"):
        return f"encoder.layers.{list(dict(encoder_layers.named_children()))[-1]}.ln_1"
    return None


def auto_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last module with a spatial map before global pooling.

    Pooling, dropout and flatten modules are skipped, and so are containers whose output is a pooled map
    (VGG's ``features`` ends with a max-pool, so VGG-19 gets ``features.35``, the original work's layer).
    Where a block and the container around it return the same tensor, the outer name wins (``layer4`` for
    ResNets). The choice is cached per model and input shape.
    """
    key = tuple(example.shape[1:])
    cached = _auto_cache.get(model, {}).get(key)
    if cached is not None:
        return cached
    transformer = transformer_layer(model)
    if transformer is not None:
        _auto_cache.setdefault(model, {})[key] = transformer
        return transformer
    fired = trace_layers(model, example[:1])
    candidates = _candidates(model, fired, example.dim())
    order = {name: index for index, (name, _) in enumerate(fired)}
    tokens = _token_norm_layer(model, example[:1], fired) if example.dim() == 4 else None
    if tokens is not None and (not candidates or order[tokens] > order[candidates[-1][0]]):
        name = tokens
    elif candidates:
        name = candidates[-1][0]
    else:
        raise ValueError(
            "no layer with a spatial (B, C, h, w) output was found; pass layer= (the CLI's --layer) "
            "naming the layer to explain"
        )
    _auto_cache.setdefault(model, {})[key] = name
    return name


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _token_grids(model: nn.Module, fired: list[tuple[str, torch.Tensor]], size: tuple[int, int]) -> dict[str, Any]:
    """The normalisation layers whose output is a token sequence that lies on the input's grid."""
    from .spatial import LayoutError, TokenGrid, infer_layout

    grids: dict[str, Any] = {}
    for name, output in fired:
        if output.dim() == 3 and _is_norm(model.get_submodule(name)):
            try:
                layout = infer_layout(output, size)
            except LayoutError:
                continue
            if isinstance(layout, TokenGrid) and layout.height * layout.width > 1:  # not a pooled token
                grids[name] = layout
    return grids


def _token_norm_layer(model: nn.Module, example: torch.Tensor, fired: list[tuple[str, torch.Tensor]]) -> str | None:
    """For transformers not known by name (Hugging Face ViT, DeiT, BEiT, Swin, ...): the last normalisation
    layer whose output is a token grid and whose patch tokens reach the scores.

    Where a head reads only the class token, the final norm's patch tokens (and every per-token layer of
    the last block after its attention) have zero gradient and would give an empty map; the last norm
    whose patch tokens do reach the scores is the first norm of the last block, the layer the literature
    explains. Where the head pools all tokens (Swin), it is the final norm. One backward pass, cached.
    """
    from .hooks import capture, first_tensor, preserved_state, run_model

    grids = _token_grids(model, fired, (example.shape[-2], example.shape[-1]))
    if not grids:
        return None
    names = list(grids)
    with preserved_state(model), torch.enable_grad():
        x = example.detach().clone().requires_grad_()
        with capture([(n, model.get_submodule(n)) for n in names], graph_from_layer=False) as record:
            output = run_model(model, x)
        from .targets import select_logits

        scores: torch.Tensor | None
        try:
            scores = select_logits(output)
        except TypeError:
            scores = first_tensor(output)
        if scores is None or not scores.requires_grad:
            return names[-1]
        outputs = record.tensors()
        grads = torch.autograd.grad(scores.float().sum(), outputs, allow_unused=True)
    reached = [
        n for n, g in zip(names, grads, strict=True) if g is not None and bool(grids[n].to_spatial(g).abs().sum() > 0)
    ]
    return reached[-1] if reached else None


def list_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every module with a spatial output, and every norm whose output is a token grid (transformers),
    in execution order, the automatic choice marked."""
    fired = trace_layers(model, example[:1])
    default = auto_layer(model, example)
    chosen = {name for name, _ in _candidates(model, fired)}
    chosen |= set(_token_grids(model, fired, (example.shape[-2], example.shape[-1])))
    seen: set[str] = set()
    infos = []
    for name, output in fired:
        if name in seen or name not in chosen:
            continue
        seen.add(name)
        kind = type(model.get_submodule(name)).__name__
        infos.append(LayerInfo(name, tuple(output.shape[1:]), kind, name == default))
    return infos
