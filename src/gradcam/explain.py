"""``explain()``: one call, one forward pass, no state between calls."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import (
    ForwardError,
    captured_forward,
    check_dimensions,
    forward_error,
    is_out_of_memory,
    model_lock,
    preserved_state,
    twice_differentiable,
)
from .inputs import BoundInputs, automatic_layer, image_key, image_of, prefixed, unprefixed
from .layers import LayerSpec, resolve_layers
from .linear_head import linear_head_gradients
from .methods import CAMMethod, get_method
from .methods.attention import attention_beside
from .methods.base import LayerContext
from .methods.perturbation import Probe
from .result import Explanation, LayerResult, fuse, normalise, upsample
from .spatial import Volume, infer_layout
from .targets import (
    NoTargets,
    ResolvedTargets,
    Similarity,
    TargetsFromOutput,
    TargetSpec,
    TextPrompt,
    are_callable_targets,
    resolve_targets,
    select_logits,
)


@dataclass(frozen=True)
class _Settings:
    method: CAMMethod
    select: Callable[[Any], torch.Tensor]
    labels: Sequence[str] | None
    counterfactual: bool
    eval_mode: bool
    eigen_smooth: bool
    prefix_tokens: int | None
    grid: tuple[int, int] | None
    every_class: bool = False
    layers_apart: bool = False
    head_first: bool = True  # a method that reads a linear head (CAM) first tries it without a graph


def explain(
    model: nn.Module,
    images: torch.Tensor | Sequence[Any] | Mapping[str, Any],
    method: str | CAMMethod = "gradcam",
    layer: LayerSpec = None,
    targets: TargetSpec = None,
    *,
    output: Callable[[Any], torch.Tensor] | None = None,
    labels: Sequence[str] | None = None,
    counterfactual: bool = False,
    eval_mode: bool = True,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    guided: bool = False,
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    image_input: int | str | None = None,
    every_class: bool = False,
    layers_apart: bool = False,
) -> Explanation:
    """Explain ``model``'s decision on ``images`` with a class activation map.

    Args:
        model: any PyTorch vision model; it is left exactly as it was (mode, ``requires_grad``,
            parameter ``.grad``, hooks), also when this raises.
        images: a preprocessed float tensor (B, C, H, W) on the model's device; for a model with several
            inputs, a tuple (``model(*images)``) or dict (``model(**images)``) of them, the map laid on the
            one float (B, C, H, W) tensor or on ``image_input`` (a position or key); see :mod:`gradcam.inputs`.
        method: a registered name (:func:`gradcam.methods`) or a :class:`CAMMethod` instance.
        layer: a module name (``"features.35"``), a module, a list of them (maps fused), or None for the
            last layer with a spatial map before global pooling.
        targets: None (top-1), an int, one int per image, a list of K per image, ``"top-k"``, a class
            name, callables on the output, :class:`TextPrompt` prompts on an image-text model or a
            :class:`Similarity` to reference embeddings; all K targets come from one forward pass.
            ``"all"``: every class, returned as a :class:`~gradcam.all_classes.ClassMaps` (raw maps at the
            layer's resolution; one forward pass and one batched backward pass per chunk of classes).
        output: picks the scores from the model's output (default: the tensor, the first element of a
            tuple, ``.logits``, or a dict's ``"logits"``/``"out"``).
        labels: class names for name targets (ImageNet's for 1,000-class models by default).
        counterfactual: negate the gradients: what speaks *against* each target (Grad-CAM paper, sec. 5).
        eval_mode: run the model in eval mode (restored afterwards).
        eigen_smooth: replace the weighted sum by the first principal component of the weighted
            activations ``w_c A_c`` (less noise; sign agreeing with the unsmoothed map).
        aug_smooth: average the maps of 6 test-time augmentations (horizontal flip x scales 1, 0.875,
            1.125), each carried back to the original frame; targets fixed by the plain image.
        guided: also compute guided backpropagation (``ex.guided``) and so ``ex.guided_gradcam``.
        prefix_tokens, grid: how a transformer layer's tokens lie on the image (guessed when None).
        image_input: with several inputs, the one that holds the map.
        every_class: also every class's map from the same forward pass, as ``ex.class_maps`` (a
            :class:`~gradcam.all_classes.ClassMaps`; gradient methods, one layer): what
            ``targets="all"`` gives, without running the model a second time.
        layers_apart: with several layers, each layer's gradient comes only by paths that pass no other of
            them (every layer starts its own graph): a detector's scales, where each box is explained at the
            feature map its head reads (:func:`gradcam.detection.explain_boxes`), and the backward pass of a
            target stops there; the layers' raw maps are then summed before scaling (not averaged).

    Returns:
        an :class:`Explanation`; ``maps`` is (B, K, H, W) in [0, 1].

    Example:
        >>> model = torchvision.models.resnet18().eval()          # doctest: +SKIP
        >>> ex = gradcam.explain(model, torch.randn(2, 3, 224, 224), targets="top-3")
        >>> ex.maps.shape, ex.layer
        (torch.Size([2, 3, 224, 224]), 'layer4')
    """
    if isinstance(images, (tuple, list, Mapping)):
        key = image_key(model, images, image_input, layer)
        chosen = get_method(method)
        if chosen.needs_model or aug_smooth:
            raise ValueError(
                f"several inputs: {'aug_smooth' if aug_smooth else chosen.name} re-runs the model on changed copies "
                "of the image alone; use a gradient or activation method"
            )
        bound = BoundInputs(model, images, key)
        with model_lock(model):
            layer = automatic_layer(bound, image_of(images, key)) if layer is None else layer
            ex = explain(
                bound, image_of(images, key), chosen, prefixed(layer), targets, output=output, labels=labels,
                counterfactual=counterfactual, eval_mode=eval_mode, eigen_smooth=eigen_smooth, guided=guided,
                prefix_tokens=prefix_tokens, grid=grid,
            )  # fmt: skip
        named = tuple(replace(r, name=unprefixed(r.name)) for r in ex.layer_results)
        return replace(ex, layer_results=named)
    if not isinstance(images, torch.Tensor) or not 3 <= images.dim() <= 5 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"images: expected a float tensor (B, C, H, W), or (B, C, L) signals, (B, C, D, H, W) volumes or "
            f"clips, got {shape}"
        )
    chosen = get_method(method)
    if images.dim() != 4:  # a 4-D batch is checked only when the model refuses it (below): no cost otherwise
        check_dimensions(model, images)
        _refuse_outside_images(chosen, targets, aug_smooth, guided, images.dim() - 2)
    if not bool(torch.isfinite(images.sum())) and not bool((finite := torch.isfinite(images)).all()):
        bad = int((~finite).sum())  # the sum is one cheap pass; it is not finite when any value is not
        warnings.warn(f"images: {bad} values are NaN or infinite; the scores and maps may mean nothing", stacklevel=2)
    if isinstance(targets, str) and targets.strip().lower() == "all":
        from .all_classes import explain_all

        return explain_all(  # type: ignore[return-value]
            model, images, method, layer, output=output, labels=labels, eval_mode=eval_mode,
            counterfactual=counterfactual, prefix_tokens=prefix_tokens, grid=grid,
        )  # fmt: skip
    if isinstance(targets, TextPrompt):
        targets = targets.similarity(model)
    if isinstance(targets, Similarity):
        output, labels, targets = _similarity_scores(targets, output), targets.labels(), [list(range(len(targets)))]
        targets = targets * len(images)
    if every_class:  # before anything runs (a method that makes its own maps has no per-class gradients)
        from .all_classes import check_every_class

        check_every_class(chosen)
        if aug_smooth or images.dim() != 4 or (isinstance(layer, (list, tuple)) and len(layer) != 1):
            raise ValueError("every_class: one plain image batch (B, C, H, W) and one layer, without aug_smooth")
    if chosen.wraps_explain:
        return _wrapped(chosen, model, images, layer, targets, output or select_logits, labels, eval_mode)
    settings = _Settings(
        chosen,
        output or select_logits,
        labels,
        counterfactual,
        eval_mode,
        eigen_smooth,
        prefix_tokens,
        grid,
        every_class,
        layers_apart,
    )
    with model_lock(model), torch.inference_mode(False):
        if images.is_inference():
            images = images.clone()
        layers = resolve_layers(model, layer, images)
        try:
            result = _explain_once(model, images, layers, targets, settings)
        except ForwardError:
            check_dimensions(model, images)  # a 3-D model given a 4-D batch: said in those words
            raise
        if aug_smooth:
            result = _augmented(model, images, layers, result, settings)
        if guided:
            from .guided import guided_backprop

            fixed = result.targets.tolist() if result.targets is not None else targets
            result = replace(result, guided=guided_backprop(model, images, fixed, output=output, labels=labels))
    return result


def _wrapped(
    method: CAMMethod,
    model: nn.Module,
    images: torch.Tensor,
    layer: LayerSpec,
    targets: TargetSpec,
    select: Callable[[Any], torch.Tensor],
    labels: Sequence[str] | None,
    eval_mode: bool,
) -> Explanation:
    """A method that makes its maps itself from the model: SESS (runs :func:`explain` on parts of each
    image), FullGrad (every bias-gradient), LeGrad (the attention of several blocks). The targets are
    resolved on the whole images' scores, from the method's own forward pass where it has one."""
    seen: dict[str, Any] = {}

    def targets_of(scores: torch.Tensor) -> torch.Tensor:
        resolved = resolve_targets(targets, scores.detach(), labels, len(images))
        if resolved.indices is None:
            raise ValueError(f"{method.name}: give class targets (an index, a name, top-k), not callables")
        seen.update(logits=scores.detach(), resolved=resolved)
        return resolved.indices

    with model_lock(model), torch.inference_mode(False), preserved_state(model, eval_mode=eval_mode):
        single = method.uses_layer and not isinstance(layer, (list, tuple))
        name = resolve_layers(model, layer, images)[0][0] if single else None
        try:
            maps = method.wrapped_maps(model, images, name or layer, targets_of, explain, select)
        except ForwardError:
            raise
        except RuntimeError as error:  # the method's own forward passes: one line, as explain()'s are
            if is_out_of_memory(error):
                raise
            raise forward_error(images, error, f"{method.name} could not run the model on them") from error
        if "resolved" not in seen:
            raise RuntimeError(f"{method.name}: wrapped_maps did not resolve its targets (call targets_of once)")
        logits, resolved = seen["logits"], seen["resolved"]
        scores = resolved.scores(logits).float()
    label = method.layer_label(model, name or layer)
    result = LayerResult(label, images.new_zeros(0), None, maps)
    return Explanation(maps, resolved.indices, scores, logits.float(), method.name, (result,))


def _refuse_outside_images(method: CAMMethod, targets: TargetSpec, aug_smooth: bool, guided: bool, dims: int) -> None:
    """What does not work yet on signals, volumes and clips, said in one line with the reason."""
    what = {1: "signals (B, C, L)", 3: "volumes and clips (B, C, D, H, W)"}[dims]
    reason = None
    if not method.any_dimensions:
        reason = f"{method.name} is written for images"
    elif method.reads_attention:
        reason = f"{method.name} reads a vision transformer's attention over an image's patches"
    elif aug_smooth or guided:
        reason = "aug_smooth flips and rescales images" if aug_smooth else "guided backpropagation draws images"
    elif (isinstance(targets, str) and targets.strip().lower() == "all") or isinstance(
        targets, (TextPrompt, Similarity)
    ):
        reason = "targets='all' and text prompts are written for images"
    if reason is not None:
        raise ValueError(
            f"{what}: {reason}; use a gradient, activation or masking method "
            "(gradcam, hirescam, eigencam, scorecam, ablationcam, ...)"
        )


def _explain_once(
    model: nn.Module,
    images: torch.Tensor,
    layers: list[tuple[str, nn.Module]],
    targets: TargetSpec,
    settings: _Settings,
) -> Explanation:
    method = settings.method
    reads_attention = method.reads_attention
    captured = [*layers, attention_beside(model, layers[0][0])] if reads_attention else layers
    if reads_attention and len(layers) != 1:
        raise ValueError(f"{method.name} explains one layer at a time")
    head_first = method.reads_linear_head and settings.head_first and len(layers) == 1 and not settings.every_class
    asked = targets
    with preserved_state(model, eval_mode=settings.eval_mode):
        torch.set_grad_enabled(False)
        with twice_differentiable(method.second_order):
            graph = method.uses_gradients and not head_first
            raw_output, outputs = captured_forward(
                model, images, captured, graph_from_layer=graph, layers_apart=settings.layers_apart
            )
        if isinstance(targets, TargetsFromOutput):
            targets = targets.choose(raw_output)
            if not targets:
                raise NoTargets("the model's output gave no target to explain")
        callables = are_callable_targets(targets)
        logits = (
            raw_output
            if callables and settings.select is select_logits and not _is_scores(raw_output)
            else settings.select(raw_output)
        )
        if not callables and (not isinstance(logits, torch.Tensor) or logits.dim() != 2):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"the model's scores have shape {shape}; expected (B, num_classes): pass output= "
                "or callable targets for other outputs (segmentation, detection)"
            )
        resolved = resolve_targets(
            targets, logits.detach() if isinstance(logits, torch.Tensor) else logits, settings.labels, len(images)
        )
        resolved = method.adjust_targets(resolved, logits)
        columns = resolved.columns(logits) if resolved.functions is not None else None
        scores = torch.stack(columns, dim=1) if columns is not None else resolved.scores(logits)
        gradients = None
        if head_first:  # CAM: the classifier's rows, if one linear layer gives the scores from the pooled layer
            found = None
            if resolved.indices is not None and resolved.comparisons is None and isinstance(logits, torch.Tensor):
                found = linear_head_gradients(model, outputs[0], logits, resolved.indices)
            if found is None:  # no such classifier: the gradient decides (and CAM refuses a layer not read so)
                return _explain_once(model, images, layers, asked, replace(settings, head_first=False))
            gradients = [[g] for g in found]
        elif method.uses_gradients:
            differentiated = outputs[len(layers) :] if reads_attention else outputs
            gradients = _gradients(
                scores,
                differentiated,
                [n for n, _ in captured[-len(differentiated) :]],
                method.second_order,
                keep_graph=settings.every_class,
                columns=columns,
            )
        size = tuple(images.shape[2:])
        layouts = [
            infer_layout(output, size, settings.prefix_tokens, settings.grid, name)
            for output, (name, _) in zip(outputs[: len(layers)], layers, strict=True)
        ]
        class_maps = None
        if settings.every_class:  # the same forward pass: its graph to the scores is still there
            from .all_classes import class_maps_of

            class_maps = class_maps_of(method, model, logits, outputs[0], layouts[0], layers[0][0], (size[0], size[1]),
                                       settings.labels, counterfactual=settings.counterfactual)  # fmt: skip

    def signed(gradient: torch.Tensor) -> torch.Tensor:  # counterfactual maps: what speaks against the target
        return -gradient if settings.counterfactual else gradient

    results = []
    for index, (name, _) in enumerate(layers):
        output, layout = outputs[index].detach(), layouts[index]
        context = LayerContext(name, layout.to_spatial(output).float(), resolved.count,
                               eigen_smooth=settings.eigen_smooth, layout=layout,
                               warn_zero=not (settings.layers_apart and len(layers) > 1))  # fmt: skip
        if reads_attention:  # the gradients were taken at the attention's output, not at the layer
            assert gradients is not None
            context = replace(context, tokens=output, attention=captured[-1][1],
                              output_gradients=[signed(g[0]) for g in gradients])  # fmt: skip
        elif gradients is not None:
            laid = [signed(layout.to_spatial(g[index].detach()).float()) for g in gradients]
            context = replace(context, gradients=laid)
        if method.needs_model:
            probe = Probe(model, images, name, context.activations, _row_scores(settings.select, resolved, logits),
                          scores.detach(), layout, output, settings.eval_mode)  # fmt: skip
            context = replace(context, probe=probe)
        result = method.layer_result(context)
        results.append(_laid_back(result, layout) if isinstance(layout, Volume) else result)
    fusion = "sum" if settings.layers_apart else method.fusion  # layers apart: each target's own layer counts
    maps = fuse([upsample(result.raw, size) for result in results], fusion, len(size))
    return Explanation(
        maps=maps,
        targets=resolved.indices,
        scores=scores.detach().float(),
        logits=logits.detach().float() if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None,
        method=method.name,
        layer_results=tuple(results),
        counterfactual=settings.counterfactual,
        class_maps=class_maps,
    )


def _similarity_scores(
    similarity: Similarity, output: Callable[[Any], torch.Tensor] | None
) -> Callable[[Any], torch.Tensor]:
    pick = output or select_logits

    def scores(raw: Any) -> torch.Tensor:
        return similarity.scores(pick(raw))

    return scores


def _is_scores(output: Any) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 2


def _row_scores(
    select: Callable[[Any], torch.Tensor], resolved: ResolvedTargets, logits: Any
) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    passthrough = not isinstance(logits, torch.Tensor)

    def scores(output: Any, image_ids: torch.Tensor) -> torch.Tensor:
        return resolved.scores(output if passthrough else select(output), image_ids)

    return scores


def _gradients(
    scores: torch.Tensor,
    activations: list[torch.Tensor],
    names: list[str],
    second_order: bool = False,
    keep_graph: bool = False,
    columns: list[torch.Tensor] | None = None,
) -> list[list[torch.Tensor]]:
    """``d scores[:, k] / d activations`` for each target k, through the head only. Summing over the batch
    is exact: in eval mode each image's score depends on its own activations alone. With ``second_order``
    (Shapley-CAM) each gradient comes back as ``G - 0.5 * H A``, the Hessian-vector product by a double
    backward. ``columns``: callable targets' scores before they were stacked; each is differentiated on
    its own, so a target's backward pass runs through its own graph only (through the stack it would run
    through every other target's with zeros: K targets of a detector would cost K squared)."""
    connected = [a.requires_grad for a in activations]
    if not scores.requires_grad or not any(connected):
        warnings.warn(
            f"the scores do not depend on layer {names[0]!r} through autograd; its gradients are zero", stacklevel=4
        )
        return [[torch.zeros_like(a) for a in activations] for _ in range(scores.shape[1])]
    inputs = [a for a, c in zip(activations, connected, strict=True) if c]
    per_target = []
    for k in range(scores.shape[1]):
        last = k == scores.shape[1] - 1 and not keep_graph
        target = columns[k] if columns is not None else scores[:, k]
        grads = torch.autograd.grad(
            target.sum(), inputs, retain_graph=not last or second_order, allow_unused=True,
            create_graph=second_order,
        )  # fmt: skip
        if second_order:
            grads = tuple(_hessian_corrected(g, a, keep=not last) for g, a in zip(grads, inputs, strict=True))  # type: ignore[misc]
        filled = iter(grads)
        row = []
        for activation, is_connected in zip(activations, connected, strict=True):
            grad = next(filled) if is_connected else None
            row.append(torch.zeros_like(activation) if grad is None else grad)
        per_target.append(row)
    return per_target


def _hessian_corrected(gradient: torch.Tensor | None, activation: torch.Tensor, keep: bool) -> torch.Tensor | None:
    """``G - 0.5 * H A``: the Hessian-vector product of the score with the activations, by differentiating
    ``<G, A>`` with A held fixed (zero where the gradient does not depend on A: a piecewise-linear head)."""
    if gradient is None:
        return None
    if not gradient.requires_grad:
        return gradient.detach()
    (hvp,) = torch.autograd.grad(gradient, activation, grad_outputs=activation.detach(), retain_graph=keep,
                                 allow_unused=True)  # fmt: skip
    return (gradient - 0.5 * hvp).detach() if hvp is not None else gradient.detach()


def _laid_back(result: LayerResult, layout: Volume) -> LayerResult:
    """A result computed on a signal's or volume's flattened grid, laid back on its own shape."""
    weights = result.weights
    if weights is not None and weights.dim() == 5:  # element-wise weights (B, K, C, grid)
        weights = layout.unflatten(weights)
    return LayerResult(result.name, layout.unflatten(result.activations), weights, layout.unflatten(result.raw))


AUGMENTATIONS = [(flip, scale) for flip in (False, True) for scale in (1.0, 0.875, 1.125)]


def _augmented(
    model: nn.Module, images: torch.Tensor, layers: list[tuple[str, nn.Module]], plain: Explanation, settings: _Settings
) -> Explanation:
    """Test-time augmentation: each flipped/scaled copy is explained for the plain image's targets, its
    maps carried back to the original frame, and all are averaged."""
    targets: Any = plain.targets.tolist() if plain.targets is not None else None
    if targets is None:
        raise ValueError("aug_smooth needs class targets (callable targets cannot follow a flip)")
    size = tuple(images.shape[-2:])
    maps, raws = [], []
    for flip, scale in AUGMENTATIONS:
        x = images.flip(-1) if flip else images
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        ex = plain if (not flip and scale == 1.0) else _explain_once(model, x, layers, targets, settings)
        m, r = upsample(ex.maps, size), upsample(ex.layer_results[0].raw, tuple(plain.layer_results[0].raw.shape[-2:]))
        maps.append(m.flip(-1) if flip else m)
        raws.append(normalise(r.flip(-1) if flip else r))
    first = replace(plain.layer_results[0], raw=torch.stack(raws).mean(0))
    return replace(plain, maps=normalise(torch.stack(maps).mean(0)), layer_results=(first, *plain.layer_results[1:]))
