"""LeGrad: how sensitive each block's prediction is to its attention, for vision transformers.

LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity", ICCV 2025, arXiv:2404.03214) reads the model's prediction at every chosen block
``l``: the block's output tokens ``z^l`` are averaged, normed and classified by the model's own head,
``s^l = head(norm(mean_i z^l_i))``. The map is the positive gradient of that score with respect to the
block's attention probabilities ``A^l`` (B, heads, queries, keys), averaged over heads and queries, read at
the patch keys and averaged over the blocks:

``E = mean_l  mean_{h, q}  ReLU( dS^l / dA^l_{h, q, :} )``  (the prefix keys dropped; min-max normalised)

The attention probabilities never need to be returned by the model: the attention's output is
``o_h = A_h V_h``, so ``dS/dA_h = (dS/do_h) V_h^T``, with ``dS/do`` the gradient at the attention's output
carried back through its output projection and ``V`` the value vectors of the attention's input. One
forward pass; one backward pass per block and target, each through one block and the head.

The blocks are the ``depth`` (default 4) transformer blocks ending at the layer's block (the automatic
layer is the last block's first norm), or the blocks of the layers listed. Built-in heads: torchvision's
``VisionTransformer``, timm's ViTs and Hugging Face's ``ViTForImageClassification``, and CLIP's image
tower (open_clip, Hugging Face ``CLIPModel``: the normalised embedding of the mean token, scored against
:class:`gradcam.TextPrompt` prompts); for other models pass ``projection``, a function from a block's
output tokens (B, N, C) to what the model returns.

Example:
    >>> model = torchvision.models.vit_b_16(weights="DEFAULT").eval()                  # doctest: +SKIP
    >>> gradcam.explain(model, x, "legrad", targets="top-2").maps.shape                 # doctest: +SKIP
    torch.Size([1, 2, 224, 224])
    >>> gradcam.explain(model, x, LeGrad(depth=12))         # every block of ViT-B/16  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionError, projections
from .base import CAMMethod, register

Projection = Callable[[torch.Tensor], Any]


def _has_attention(module: nn.Module) -> bool:
    try:
        projections(module)
    except AttentionError:
        return False
    return True


def _attention_child(block: nn.Module) -> tuple[str, nn.Module] | None:
    return next(((n, c) for n, c in block.named_children() if _has_attention(c)), None)


def block_of(model: nn.Module, name: str) -> str:
    """The transformer block that holds layer ``name``: the nearest module at or above it with an
    attention child (``encoder.layers.encoder_layer_11.ln_1`` -> ``encoder.layers.encoder_layer_11``)."""
    parts = name.split(".") if name else []
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if _attention_child(model.get_submodule(candidate)) is not None:
            return candidate
    raise AttentionError(
        f"legrad explains vision transformers: layer {name!r} is not inside a transformer block with an "
        "attention module; choose a layer of a block (its first norm, the automatic layer of a ViT) or the block"
    )


def chosen_blocks(model: nn.Module, layer: Any, depth: int) -> list[str]:
    """Block names: each listed layer's block, or the ``depth`` blocks ending at one layer's block."""
    names = [layer] if isinstance(layer, str) else list(layer)
    if not all(isinstance(n, str) for n in names):
        raise ValueError("legrad: give layers by name (a block or a module inside one)")
    blocks = list(dict.fromkeys(block_of(model, n) for n in names))
    if len(names) > 1:
        return blocks
    last = blocks[0]
    parent = last.rsplit(".", 1)[0] if "." in last else ""
    siblings = model.get_submodule(parent) if parent else model
    prefix = f"{parent}." if parent else ""
    stack = [f"{prefix}{n}" for n, c in siblings.named_children() if _attention_child(c) is not None]
    end = stack.index(last) + 1
    return stack[max(0, end - depth) : end]


def head_count(attention: nn.Module) -> int:
    """The number of heads of an attention module (torch, timm or Hugging Face naming)."""
    for module in attention.modules():
        for key in ("num_heads", "num_attention_heads"):
            value = getattr(module, key, None)
            if isinstance(value, int) and value > 0:
                return value
    raise AttentionError(f"legrad: {type(attention).__name__} does not say how many heads it has")


def default_projection(model: nn.Module) -> Projection:
    """``tokens -> head(norm(mean tokens))`` with the model's own final norm and head."""
    encoder, heads = getattr(model, "encoder", None), getattr(model, "heads", None)
    if isinstance(getattr(encoder, "ln", None), nn.Module) and isinstance(heads, nn.Module):  # torchvision ViT
        return lambda z: heads(encoder.ln(z.mean(dim=1)))  # type: ignore[union-attr]
    norm, head = getattr(model, "norm", None), getattr(model, "head", None)
    if isinstance(norm, nn.Module) and isinstance(head, nn.Module) and hasattr(model, "blocks"):  # timm ViT
        fc_norm = getattr(model, "fc_norm", None) or nn.Identity()
        return lambda z: head(fc_norm(norm(z.mean(dim=1))))
    vit, classifier = getattr(model, "vit", None), getattr(model, "classifier", None)
    if isinstance(getattr(vit, "layernorm", None), nn.Module) and isinstance(classifier, nn.Module):  # HF ViT
        return lambda z: classifier(vit.layernorm(z.mean(dim=1)))  # type: ignore[union-attr]
    visual = getattr(getattr(model, "clip", None), "visual", None)  # open_clip, in gradcam's image-text wrapper
    if isinstance(getattr(visual, "ln_post", None), nn.Module) and isinstance(
        getattr(visual, "proj", None), torch.Tensor
    ):
        # the normalised image embedding, as the wrapper returns it (the LeGrad authors' CLIP score)
        return lambda z: F.normalize(visual.ln_post(z.mean(dim=1)) @ visual.proj, dim=-1)  # type: ignore[union-attr]
    hf = getattr(model, "model", None)  # a Hugging Face CLIPModel in gradcam's image-text wrapper
    vision, projection = getattr(hf, "vision_model", None), getattr(hf, "visual_projection", None)
    if isinstance(getattr(vision, "post_layernorm", None), nn.Module) and isinstance(projection, nn.Module):
        return lambda z: F.normalize(projection(vision.post_layernorm(z.mean(dim=1))), dim=-1)  # type: ignore[union-attr]
    raise AttentionError(
        f"legrad: no built-in head for {type(model).__name__} (torchvision, timm and Hugging Face ViTs and CLIP "
        "have one); pass LeGrad(projection=...) mapping a block's tokens (B, N, C) to the model's output"
    )


@register
class LeGrad(CAMMethod):
    """LeGrad (Bousselham et al., ICCV 2025): ``mean_l mean_{h,q} ReLU(dS^l/dA^l)`` at the patch keys;
    see the module's docstring. ``depth``: how many blocks, ending at the layer's; ``projection``: a
    block's tokens to the model's output, for models without a built-in head."""

    name = "legrad"
    needs_model = True
    reads_attention = True  # of each chosen block (not through explain's one-layer path: it wraps explain)
    any_dimensions = False  # the attention over an image's patches
    wraps_explain = True

    def __init__(self, depth: int = 4, projection: Projection | None = None) -> None:
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"legrad: depth must be a whole number of blocks >= 1, got {depth!r}")
        self.depth = depth
        self.projection = projection

    def layer_label(self, model: nn.Module, layer: Any) -> str:
        blocks = chosen_blocks(model, layer, self.depth)
        return blocks[0] if len(blocks) == 1 else f"{blocks[0]} ... {blocks[-1]} ({len(blocks)} blocks)"

    def wrapped_maps(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layer: Any,
        targets_of: Callable[[torch.Tensor], torch.Tensor],
        explain: Callable[..., Any],
        select: Callable[[Any], torch.Tensor],
    ) -> torch.Tensor:
        """(B, K, H, W) LeGrad maps for the classes ``targets_of`` picks from this forward pass's scores,
        normalised to [0, 1]."""
        from ..hooks import capture, run_model
        from ..result import normalise, upsample
        from ..spatial import TokenGrid, infer_layout

        blocks = chosen_blocks(model, layer, self.depth)
        project = self.projection or default_projection(model)
        attentions = []
        for block in blocks:
            child = _attention_child(model.get_submodule(block))
            assert child is not None
            attentions.append((f"{block}.{child[0]}", child[1]))
        inputs: dict[str, torch.Tensor] = {}

        def keep_input(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                first = args[0] if args else kwargs.get("hidden_states", kwargs.get("query", kwargs.get("x")))
                if isinstance(first, torch.Tensor):
                    inputs[name] = first.detach()

            return hook

        handles = [module.register_forward_pre_hook(keep_input(n), with_kwargs=True) for n, module in attentions]
        try:
            torch.set_grad_enabled(False)
            with capture([*attentions, *((b, model.get_submodule(b)) for b in blocks)]) as record:
                output = run_model(model, images)
            outputs = record.tensors()
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name, _ in attentions if name not in inputs]
        if missing:
            raise AttentionError(f"legrad: cannot read the input tokens of {missing[0]!r} (not passed by position)")
        indices = targets_of(select(output))
        attention_outputs, block_outputs = outputs[: len(blocks)], outputs[len(blocks) :]
        layout = infer_layout(block_outputs[-1], tuple(images.shape[-2:]), None, None, blocks[-1])
        if not isinstance(layout, TokenGrid):
            raise AttentionError(f"legrad: block {blocks[-1]!r} does not return a (B, tokens, C) sequence")
        relevance = torch.zeros(*indices.shape, layout.height * layout.width, device=images.device)
        with torch.enable_grad():
            for index, ((name, attention), y, z) in enumerate(
                zip(attentions, attention_outputs, block_outputs, strict=True)
            ):
                scores = select(project(z))
                for k in range(indices.shape[1]):
                    score = scores.gather(1, indices[:, k : k + 1].to(scores.device)).sum()
                    last = index == len(blocks) - 1 and k == indices.shape[1] - 1
                    (gradient,) = torch.autograd.grad(score, y, retain_graph=not last)
                    sensitivity = self._attention_gradient(inputs[name], gradient, attention)  # (B, H, N, N)
                    relevance[:, k] += sensitivity.clamp(min=0).mean(dim=(1, 2))[:, layout.prefix :]
        grid = (relevance / len(blocks)).unflatten(-1, (layout.height, layout.width))
        return normalise(upsample(normalise(grid.float()), tuple(images.shape[-2:]))).cpu()

    @staticmethod
    def _attention_gradient(tokens: torch.Tensor, output_gradient: torch.Tensor, attention: nn.Module) -> torch.Tensor:
        """``dS/dA_h = (dS/do_h) V_h^T`` (B, heads, queries, keys), from the attention's input tokens and the
        gradient at its output (after the output projection ``y = o W_o^T + b``, so ``dS/do = dS/dy W_o``)."""
        _, _, value, out = projections(attention)
        heads = head_count(attention)
        values = F.linear(tokens.float(), *value)  # (B, N, C)
        carried = output_gradient.detach().float() @ out  # (B, N, C)
        batch, count, channels = values.shape
        split = (batch, count, heads, channels // heads)
        return carried.reshape(split).transpose(1, 2) @ values.reshape(split).permute(0, 2, 3, 1)
