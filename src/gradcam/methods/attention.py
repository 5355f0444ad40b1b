"""Grad-ECLIP: a gradient explanation of a vision transformer's last attention, made for CLIP.

Grad-CAM on CLIP's ViTs is known to light up the background (CLIP Surgery, Li et al. 2023, call it the
"opposite visualisation"): the class token of the last block gathers its evidence through attention, and
the norm's activations carry much that the attention then ignores. Grad-ECLIP (Zhao et al., ICML 2024,
"Gradient-based Visual Explanation for Transformer-based CLIP", arXiv:2502.18816) decomposes the class
token's attention output instead:

``H_i = ReLU( sum_c w_c * v_i,c * lambda_i )``

- ``w = dS/do_cls``: the gradient of the score at the class token's attention output, before the output
  projection (``dS/do = dS/dy @ W_o`` for ``y = o W_o^T + b``);
- ``v_i = x_i W_v^T + b_v``: the value vector of patch i, ``x`` the input of the attention (the output of
  the block's first norm, the layer explained);
- ``lambda_i``: the "loosened" spatial weight, the cosine of the class token's query and patch i's key,
  min-max normalised over the patches (the softmax of the real attention is too peaked to localise).

All K targets of one image come from one forward pass and K backward passes to the attention output.
Works where the layer is the first norm of a block with a class token (CLIP and timm/torchvision/Hugging
Face ViTs); the block's attention is found beside the norm.

Example:
    >>> ex = gradcam.explain(bundle.model, x, "gradeclip", targets=gradcam.TextPrompt(["a cat"]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import CAMMethod, LayerContext, register, weighted_result


class AttentionError(ValueError):
    """The layer is not the input norm of an attention block that this method can read."""


@register
class GradECLIP(CAMMethod):
    """Grad-ECLIP (Zhao et al., ICML 2024): ``H_i = ReLU(sum_c (dS/do_cls)_c v_i,c lambda_i)``; see the
    module's docstring for the terms. The "activations" of the result are the value vectors ``v``."""

    name = "gradeclip"
    reads_attention: ClassVar[bool] = True

    def combine(
        self, activations: torch.Tensor, gradients: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise AttentionError("gradeclip reads the attention of a block: call it through gradcam.explain")

    def layer_result(self, context: LayerContext) -> Any:
        """The values and weights of :meth:`value_weights` laid on the patch grid, then the shared weighted
        sum ``ReLU(sum_c w_c v_c)``."""
        from ..spatial import TokenGrid

        layout = context.layout
        if not isinstance(layout, TokenGrid) or context.tokens is None or context.output_gradients is None:
            raise ValueError(f"{self.name}: layer {context.name!r} is not a token sequence with a class token")
        values, weights = self.value_weights(context.tokens, context.output_gradients, context.attention,
                                             layout.prefix)  # fmt: skip
        grid = (layout.height, layout.width)
        return weighted_result(context.name, values.unflatten(-1, grid), weights.unflatten(-1, grid),
                               context.eigen_smooth)  # fmt: skip

    def value_weights(
        self, tokens: torch.Tensor, output_gradients: list[torch.Tensor], attention: nn.Module, prefix: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values (B, C, N), weights (B, K, C, N))`` over the N patch tokens, from the attention's input
        ``tokens`` (B, prefix + N, C) and the gradients of the K scores at its output."""
        if prefix < 1:
            raise AttentionError("gradeclip needs a class token in front of the patch tokens (this layer has none)")
        query, key, value, out = projections(attention)
        x = tokens.float()
        q_cls = F.linear(x[:, 0], *query)  # (B, C)
        keys = F.linear(x[:, prefix:], *key)  # (B, N, C)
        values = F.linear(x[:, prefix:], *value)  # (B, N, C)
        cosine = F.cosine_similarity(q_cls[:, None], keys, dim=-1)  # (B, N)
        low, high = cosine.amin(dim=1, keepdim=True), cosine.amax(dim=1, keepdim=True)
        loosened = (cosine - low) / (high - low).clamp(min=torch.finfo(cosine.dtype).tiny)
        w = torch.stack([g[:, 0].float() @ out for g in output_gradients], dim=1)  # (B, K, C)
        weights = w[..., None] * loosened[:, None, None, :]  # (B, K, C, N)
        return values.transpose(1, 2), weights


Linear = tuple[torch.Tensor, torch.Tensor | None]


def projections(attention: nn.Module) -> tuple[Linear, Linear, Linear, torch.Tensor]:
    """Query, key and value ``(weight, bias)`` and the output projection's weight of an attention module:
    ``nn.MultiheadAttention`` (open_clip, torchvision), timm's ``qkv``/``proj``, or Hugging Face's
    ``q_proj``/``k_proj``/``v_proj`` with ``out_proj``/``o_proj`` (or ``query``/``key``/``value``)."""
    if isinstance(attention, nn.MultiheadAttention):
        parts: list[torch.Tensor] = (
            [attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight]
            if attention.in_proj_weight is None
            else list(attention.in_proj_weight.chunk(3))
        )
        biases = list(attention.in_proj_bias.chunk(3)) if attention.in_proj_bias is not None else [None] * 3
        qkv = [
            (w.detach().float(), None if b is None else b.detach().float()) for w, b in zip(parts, biases, strict=True)
        ]
        return qkv[0], qkv[1], qkv[2], attention.out_proj.weight.detach().float()
    named = dict(attention.named_modules())
    fused = named.get("qkv")
    out = next((named[n] for n in ("out_proj", "o_proj", "proj", "output.dense", "dense") if n in named), None)
    if isinstance(fused, nn.Linear) and isinstance(out, nn.Linear):
        split = fused.weight.detach().float().chunk(3)
        shifts = fused.bias.detach().float().chunk(3) if fused.bias is not None else (None, None, None)
        return (split[0], shifts[0]), (split[1], shifts[1]), (split[2], shifts[2]), out.weight.detach().float()
    found = []
    for names in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        module = next((m for n, m in named.items() if n.rsplit(".", 1)[-1] in names and isinstance(m, nn.Linear)), None)
        found.append(module)
    if any(m is None for m in found) or not isinstance(out, nn.Linear):
        raise AttentionError(f"{type(attention).__name__}: cannot find its query, key, value and output projections")
    linears = [(m.weight.detach().float(), None if m.bias is None else m.bias.detach().float()) for m in found]  # type: ignore[union-attr]
    return linears[0], linears[1], linears[2], out.weight.detach().float()


def attention_beside(model: nn.Module, norm_name: str) -> tuple[str, nn.Module]:
    """The attention module of the block whose input norm is ``norm_name`` (its sibling)."""
    parent_name = norm_name.rsplit(".", 1)[0] if "." in norm_name else ""
    parent = model.get_submodule(parent_name) if parent_name else model
    for child_name, child in parent.named_children():
        try:
            projections(child)
        except AttentionError:
            continue
        return (f"{parent_name}.{child_name}" if parent_name else child_name), child
    raise AttentionError(
        f"gradeclip: layer {norm_name!r} has no attention module beside it; choose the first norm of a "
        "transformer block (the automatic layer of a ViT)"
    )
