"""Re-run only the part of a model after a layer, fed with new values of that layer's output.

Ablation-CAM changes one channel of a layer at a time; everything before the layer stays the same, so
recomputing it for every ablated channel wastes nearly the whole forward pass (pytorch-grad-cam does so).
:class:`Tail` traces the model with ``torch.fx`` (the target layer kept as one leaf call), runs it once
recording every intermediate value, and then evaluates only the nodes downstream of the layer; values
that do not depend on the layer (a residual branch that skips it, say) are taken from the recording.

Example:
    >>> tail = Tail(model, "layer4", images)                     # doctest: +SKIP
    >>> logits = tail(new_layer4_output, image_ids=torch.tensor([0, 0, 1]))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch import nn


class TailUnavailable(RuntimeError):
    """The model cannot be split at the layer (FX cannot trace it, or the layer runs more than once)."""


class _LayerLeafTracer(torch.fx.Tracer):
    """Traces only through the target layer's ancestors; every other module (the layer included) is one
    opaque call. Code FX cannot follow (timm's same-padding convolutions, say) is then no obstacle
    unless it sits in an ancestor's own ``forward``."""

    def __init__(self, layer_name: str) -> None:
        super().__init__()
        self.layer_name = layer_name

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not self.layer_name.startswith(qualified_name + ".")


class Tail:
    """The model's computation after ``layer_name``, as a function of the layer's output."""

    def __init__(self, model: nn.Module, layer_name: str, images: torch.Tensor) -> None:
        try:
            graph = _LayerLeafTracer(layer_name).trace(model)
        except Exception as error:  # FX raises many kinds on untraceable code
            raise TailUnavailable(f"torch.fx cannot trace the model ({type(error).__name__})") from error
        self.module = torch.fx.GraphModule(model, graph)
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer_name]
        if len(calls) != 1:
            raise TailUnavailable(f"layer {layer_name!r} is called {len(calls)} times in the traced graph")
        self.layer_node = calls[0]
        self.batch = images.shape[0]
        downstream: set[torch.fx.Node] = {self.layer_node}
        for node in graph.nodes:
            if any(arg in downstream for arg in node.all_input_nodes):
                downstream.add(node)
        self.downstream = [n for n in graph.nodes if n in downstream and n is not self.layer_node]
        self.recorded = self._record(images)

    def _record(self, images: torch.Tensor) -> dict[torch.fx.Node, Any]:
        """One forward pass keeping the values the downstream nodes read from upstream; the pass's own
        output and the layer's output stay as ``output`` and ``layer_output`` (so a caller that needs them
        for these images need not run the model again)."""
        needed = {arg for node in self.downstream for arg in node.all_input_nodes if arg not in self.downstream}
        needed.discard(self.layer_node)
        values: dict[torch.fx.Node, Any] = {}
        layer_node = self.layer_node

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node: torch.fx.Node) -> Any:
                value = super().run_node(node)
                if node in needed:
                    values[node] = value
                if node is layer_node:
                    if not isinstance(value, torch.Tensor):
                        raise TailUnavailable(f"layer {node.target!r} returns a {type(value).__name__}, not a tensor")
                    layer_values.append(value)
                return value

        layer_values: list[torch.Tensor] = []
        with torch.no_grad():
            self.output = Recorder(self.module).run(images)
        self.layer_output = layer_values[0]
        return values

    def __call__(self, layer_output: torch.Tensor, image_ids: torch.Tensor) -> Any:
        """The model's output for new layer outputs; ``image_ids[n]`` says which original image row n
        stands for, so that recorded values from upstream are taken from that image."""
        env: dict[torch.fx.Node, Any] = {self.layer_node: layer_output}
        for node, value in self.recorded.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.batch:
                env[node] = value[image_ids.to(value.device)]
            else:
                env[node] = value
        interpreter = torch.fx.Interpreter(self.module)
        output = None
        for node in self.downstream:
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "output":
                output = args[0]
                break
            env[node] = getattr(interpreter, node.op)(node.target, args, kwargs)
        return output
