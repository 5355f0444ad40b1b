"""The method contract and the registry.

One contract for every method: :meth:`CAMMethod.layer_result` turns a :class:`LayerContext` (the layer's
activations ``A`` (B, C, h, w), the gradients ``G = dy/dA`` of the explained scores when the method uses
them, a handle that re-runs the network for perturbation methods, the attention's tokens for attention
methods) into that layer's :class:`~gradcam.result.LayerResult`. What a method needs in its context is
metadata on its class (``uses_gradients``, ``needs_model``, ``reads_attention``), which
:func:`gradcam.explain` reads to capture it; it never tests what kind of method it runs.

Most methods only supply channel weights, (B, C) or element-wise (B, C, h, w) (:meth:`CAMMethod.weights`);
the shared code forms ``sum_c w_c * A_c``, and :mod:`gradcam.explain` does the upsampling and
normalisation.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..contributions import channel_contributions


@dataclass(frozen=True)
class LayerContext:
    """What a method may use to make one layer's maps (see :meth:`CAMMethod.layer_result`).

    ``activations`` (B, C, h, w) float32 on the layer's grid (a signal's or volume's grid flattened to 2-D);
    ``gradients``: per explained target, (B, C, h, w), already negated for counterfactual maps (None for
    methods that do not use them); ``count``: targets per image; ``probe``: re-runs the network
    (:class:`~gradcam.methods.perturbation.Probe`, for ``needs_model`` methods); ``tokens``,
    ``attention``, ``output_gradients`` and ``layout``: the layer's own tokens, the attention module beside
    it and the gradients at its output, for ``reads_attention`` methods."""

    name: str
    activations: torch.Tensor
    count: int
    gradients: list[torch.Tensor] | None = None
    eigen_smooth: bool = False
    probe: Any = None
    tokens: torch.Tensor | None = None
    attention: Any = None
    output_gradients: list[torch.Tensor] | None = None
    layout: Any = None
    warn_zero: bool = True  # False where a zero gradient at this layer is expected (explain(layers_apart=True))


class CAMMethod:
    """Base class: override :meth:`weights`, or :meth:`combine` for methods without channel weights.

    What a method needs and gives is metadata on its class, so that :func:`gradcam.explain`, the engines
    and the command line ask the method instead of testing its name or class."""

    name: ClassVar[str]
    # What a method needs and gives: explain(), the engines and the CLI read these, never a method's name.
    # A new method sets the ones that describe it (docs/methods.md, "The method contract"); the four
    # marked "derived" follow from the others unless the method (or a parent) says otherwise.
    uses_gradients: ClassVar[bool] = True  # derived: needs G = dy/dA at the layer (not: it re-runs the model)
    second_order: ClassVar[bool] = False  # needs the gradients with their own graph (Shapley-CAM's Hessian term)
    needs_model: ClassVar[bool] = False  # re-runs (part of) the network: the perturbation and wrapping methods
    reads_attention: ClassVar[bool] = False  # reads the attention module beside the layer (Grad-ECLIP, LeGrad)
    channel_weights: ClassVar[bool] = True  # derived: gives per-channel weights (the per-feature-map picture)
    one_gradient_per_class: ClassVar[bool] = True  # derived: a class's map is that class's gradient alone
    fusion: ClassVar[str] = "mean"  # how the maps of several layers are fused: mean, or product (Refine-CAM)
    evaluated_by_default: ClassVar[bool] = True  # derived: in `gradcam evaluate`'s default list (fast, any CNN)
    wraps_explain: ClassVar[bool] = False  # makes its maps itself from the model (SESS, FullGrad): wrapped_maps()
    uses_layer: ClassVar[bool] = True  # explains one chosen layer (FullGrad: every bias of the network)
    reads_linear_head: ClassVar[bool] = False  # its gradient is a linear classifier's rows (CAM: linear_head.py)
    any_dimensions: ClassVar[bool] = True  # works on signals, volumes and clips as on images

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fill the derived flags a method (or a parent of it) did not set: a method that re-runs the model
        takes no gradient at the layer; only gradient and perturbation methods have channel weights;
        re-running, reading attention and second-order terms break "one gradient per class"; and those, the
        slow ones, are not in evaluate's default list."""
        super().__init_subclass__(**kwargs)
        derived = {
            "uses_gradients": lambda: not (cls.needs_model or cls.wraps_explain),
            "channel_weights": lambda: not cls.wraps_explain and (cls.uses_gradients or cls.needs_model),
            "one_gradient_per_class": lambda: (
                not (cls.needs_model or cls.reads_attention or cls.wraps_explain or cls.second_order)
            ),
            "evaluated_by_default": lambda: not (cls.needs_model or cls.reads_attention or cls.wraps_explain),
        }
        for flag, rule in derived.items():  # in this order: channel_weights reads uses_gradients
            if not any(flag in vars(owner) for owner in cls.__mro__ if owner is not CAMMethod):
                setattr(cls, flag, rule())

    @classmethod
    def accepts(cls, option: str) -> bool:
        """Whether the method's constructor takes ``option`` (``batch_size``, ``top_channels``, ...)."""
        import inspect

        parameter = inspect.signature(cls.__init__).parameters.get(option)
        return (
            parameter is not None
            and option != "self"
            and parameter.kind
            not in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            )
        )

    def wrapped_maps(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        layer: Any,
        targets_of: Callable[[torch.Tensor], torch.Tensor],
        explain: Callable[..., Any],
        select: Callable[[Any], torch.Tensor],
    ) -> torch.Tensor:
        """For ``wraps_explain`` methods: (B, K, H, W) maps in [0, 1], made from the model itself.

        ``targets_of(scores)`` turns the whole images' scores (B, classes) into the (B, K) class indices to
        explain: call it once, with the scores of the method's own forward pass when it has one (no
        second forward pass just to choose the classes). ``explain`` is :func:`gradcam.explain`,
        ``select`` picks the scores from the model's output."""
        raise NotImplementedError(f"{self.name} does not make its maps itself")

    def layer_label(self, model: torch.nn.Module, layer: Any) -> str:
        """What a ``wraps_explain`` method's result names as its layer (the layer asked for, by default)."""
        return str(layer) if self.uses_layer else "every bias"

    def adjust_targets(self, resolved: Any, logits: Any) -> Any:
        """The targets as this method explains them (Finer-CAM turns each into a comparison); unchanged
        by default."""
        return resolved

    def layer_result(self, context: LayerContext) -> Any:
        """One layer's :class:`~gradcam.result.LayerResult` (maps before normalisation, ReLU'd) from its
        context. The default: :meth:`combine` once per target (activation-only methods once for all), with
        a warning when a target's gradient is zero everywhere; ``eigen_smooth`` replaces the weighted sum
        by the first principal component of the contributions."""
        import warnings

        from ..result import LayerResult

        activations, gradients = context.activations, context.gradients
        if gradients is None:
            cam, _ = self.combine(activations, None)
            raw = cam.clamp(min=0).unsqueeze(1).expand(-1, context.count, -1, -1).contiguous()
            return LayerResult(context.name, activations, None, raw)
        cams, weights = [], []
        for gradient in gradients:
            cam, weight = self.combine(activations, gradient)
            cams.append(cam)
            weights.append(weight)
        raw = torch.stack(cams, dim=1).clamp(min=0)
        # a zero gradient gives a zero map: look at the (larger) gradients only when some map is zero
        zero_maps = context.warn_zero and bool((raw == 0).flatten(2).all(dim=2).any())
        if zero_maps and any(_zero_rows(g) for g in gradients):
            warnings.warn(
                f"layer {context.name!r}: the gradient of a target is zero everywhere, so its map is zero; "
                "the layer may not influence that score",
                stacklevel=4,
            )
        present = [w for w in weights if w is not None]
        stacked = torch.stack(present, dim=1) if len(present) == len(weights) else None
        if context.eigen_smooth and stacked is not None:
            return weighted_result(context.name, activations, stacked, True)
        return LayerResult(context.name, activations, stacked, raw)

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(map before ReLU (B, h, w), weights or None)``."""
        if gradients is None:
            raise ValueError(f"method {self.name!r} needs gradients")
        weights = self.weights(activations, gradients)
        return weighted_sum(weights, activations), weights


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``sum_c w_c * A_c`` for channel weights (B, C) or element-wise weights (B, C, h, w)."""
    if weights.dim() == 2:
        return torch.einsum("bc,bchw->bhw", weights, activations)
    return (weights * activations).sum(dim=1)


def weighted_result(name: str, activations: torch.Tensor, weights: torch.Tensor, eigen_smooth: bool = False) -> Any:
    """The :class:`~gradcam.result.LayerResult` ``ReLU(sum_c w_c A_c)`` for weights (B, K, C) or
    (B, K, C, h, w); with ``eigen_smooth`` the first principal component of the contributions ``w_c A_c``
    instead of their sum."""
    from ..result import LayerResult
    from .activation import first_principal_component

    contributions = channel_contributions(weights, activations.unsqueeze(1))  # (B, K, C, h, w)
    if eigen_smooth:
        batch, count = contributions.shape[:2]
        flat = contributions.flatten(0, 1)
        cams = first_principal_component(flat).reshape(batch, count, *flat.shape[-2:])
    else:
        cams = contributions.sum(dim=2)
    return LayerResult(name, activations, weights, cams.clamp(min=0))


def _zero_rows(gradient: torch.Tensor) -> bool:
    """Whether the gradient of some image is zero everywhere."""
    return bool((gradient == 0).flatten(1).all(dim=1).any())


_REGISTRY: dict[str, type[CAMMethod]] = {}


def register(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def methods() -> list[str]:
    """The registered method names."""
    return list(_REGISTRY)


def get_method(name: str | CAMMethod | type[CAMMethod]) -> CAMMethod:
    """A method instance by name (case-insensitive); an unknown name raises with the closest names."""
    if isinstance(name, CAMMethod):
        return name
    if isinstance(name, type) and issubclass(name, CAMMethod):
        return name()
    if not isinstance(name, str):
        raise TypeError(
            f"method: expected a method name ({', '.join(_REGISTRY)}) or a CAMMethod, got {type(name).__name__}"
        )
    key = name.strip().lower().replace("_", "")
    aliases = {registered.replace("-", "").replace("_", ""): registered for registered in _REGISTRY}
    if key in _REGISTRY:
        return _REGISTRY[key]()
    if key.replace("-", "") in aliases:
        return _REGISTRY[aliases[key.replace("-", "")]]()
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown method {name!r}{hint} (choose from {', '.join(_REGISTRY)})")
