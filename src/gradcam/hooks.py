"""Call-scoped hooks and a guard that leaves the user's model exactly as it was found.

The graph starts at the target layer (see docs/methods.md): the part of the network before the first
target layer runs without autograd, the layer's output is replaced by a fresh leaf that requires grad, and
gradients are taken with ``torch.autograd.grad`` to that leaf only. No parameter ``.grad`` is written.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


@contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    """Hold ``model``'s own re-entrant lock for a block.

    ``explain()`` switches modes and registers hooks on the user's module object; two threads doing so
    at once would see each other's hooks and modes. So every call of this library that runs or changes a
    model holds that model's lock: concurrent calls on one model run one after the other and give the
    same maps as sequential ones; calls on different models (or copies) run in parallel.
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
    with lock:
        yield


@contextmanager
def preserved_state(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Run a block with ``model`` in eval mode; restore every module's mode, ``requires_grad``, parameter
    ``.grad`` and the global grad mode afterwards, also when the block raises. Holds :func:`model_lock`.

    Example:
        >>> with preserved_state(model):   # doctest: +SKIP
        ...     model(x)
    """
    with model_lock(model), _restored(model, eval_mode):
        yield


def modules_of(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` once, ``model`` first (the set ``model.modules()`` gives, in another
    order): one loop over ``_modules``, a tenth of the cost of torch's recursive generators, which
    explain() would otherwise pay several times per call on a network of hundreds of modules."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        stack.extend(child for child in module._modules.values() if child is not None)
    return found


def _parameters_of(modules: list[nn.Module]) -> list[nn.Parameter]:
    found: dict[int, nn.Parameter] = {}
    for module in modules:
        for parameter in module._parameters.values():
            if parameter is not None:
                found.setdefault(id(parameter), parameter)
    return list(found.values())


@contextmanager
def _restored(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    modules = modules_of(model)
    modes = [(module, module.training) for module in modules]
    params = [(p, p.requires_grad, p.grad) for p in _parameters_of(modules)]
    grad_enabled = torch.is_grad_enabled()
    try:
        if eval_mode and any(training for _, training in modes):  # a model already in eval mode is left be
            model.eval()
        yield
    finally:
        torch.set_grad_enabled(grad_enabled)
        for module, training in modes:
            if module.training != training:  # nn.Module.__setattr__ is slow: touch only what changed
                module.training = training
        for p, requires_grad, grad in params:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad


@dataclass
class Capture:
    """What the hooks recorded in one forward pass: each target layer's output, in the order asked for."""

    names: list[str]
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        missing = [name for name in self.names if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layer {missing[0]!r} did not run in the forward pass; choose a layer the model uses")
        return [self.outputs[name] for name in self.names]


def first_tensor(output: object) -> torch.Tensor | None:
    """The hidden state in a layer's output: the tensor itself, or the first element of a tuple/list or
    of a Hugging Face ``ModelOutput`` (a dict subclass whose first entry is the hidden state)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = next(iter(output.values()), None)
        return output if isinstance(output, torch.Tensor) else None
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def with_first(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its hidden state (see :func:`first_tensor`) replaced by ``tensor``."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, dict):
        output[next(iter(output))] = tensor  # a ModelOutput keeps its attribute in step
        return output
    if isinstance(output, list):
        return [tensor, *output[1:]]
    if type(output) is tuple:
        return (tensor, *output[1:])
    named: Any = output  # a named tuple
    return named.__class__(tensor, *named[1:])


def _spatial_output(name: str, output: object) -> torch.Tensor:
    tensor = first_tensor(output)
    if tensor is None:
        raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
    return tensor


class ForwardError(ValueError, RuntimeError):
    """The model's own forward pass failed on the input; a ``ValueError`` (the input does not fit) that is
    also the ``RuntimeError`` torch raised before, for callers that catch that."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is running out of memory: ``MemoryError``, CUDA's ``OutOfMemoryError``, or the
    ``RuntimeError`` torch's CPU allocator raises."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_model(model: nn.Module, images: torch.Tensor) -> object:
    """``model(images)``; an error of the model's own forward pass on these images (a wrong channel
    count, an input too small for its poolings, another device) becomes a one-line :class:`ForwardError`
    that names the input's shape. Running out of memory stays what it is."""
    try:
        return model(images)
    except RuntimeError as error:
        if is_out_of_memory(error):
            raise
        raise forward_error(images, error) from error


def forward_error(
    images: torch.Tensor, error: BaseException, failed: str = "the model's forward pass failed"
) -> ForwardError:
    """The one-line :class:`ForwardError` for ``error``, raised by the model on ``images``: their shape,
    dtype and device, what ``failed``, and the error's first line."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return ForwardError(
        f"images {tuple(images.shape)} {str(images.dtype).removeprefix('torch.')} on {images.device}: "
        f"{failed} ({first[:200]}); check the input's shape, dtype and device"
    )


@contextmanager
def capture(
    layers: list[tuple[str, nn.Module]], graph_from_layer: bool = True, layers_apart: bool = False
) -> Iterator[Capture]:
    """Hook ``layers`` for one forward pass; the hooks are removed when the block ends, also on error.

    With ``graph_from_layer`` the forward must start with grad disabled: the first target layer that runs
    turns autograd on and hands the rest of the network a leaf tensor, so nothing before it is recorded.
    The recorded and the handed-on tensors are never the same object, so an in-place module after the
    layer (VGG's ReLUs) cannot overwrite the activations or break the graph. With ``layers_apart`` every
    layer hands on a leaf of its own: a score's gradient reaches each layer only by paths that pass no other
    captured layer (a detector's scales: a box's gradient stops at the feature map its head reads).
    """
    record = Capture(names=[name for name, _ in layers])
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> object:
            tensor = _spatial_output(name, output)
            record.calls[name] = record.calls.get(name, 0) + 1
            if graph_from_layer and (layers_apart or not torch.is_grad_enabled()):
                torch.set_grad_enabled(True)
                tensor = tensor.detach().requires_grad_()
            if tensor.requires_grad:
                record.outputs[name] = tensor
                return with_first(output, tensor.clone())
            record.outputs[name] = tensor.detach().clone()
            return output

        return hook

    try:
        for name, module in layers:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield record
    finally:
        for handle in handles:
            handle.remove()
        repeated = [name for name, count in record.calls.items() if count > 1]
        if repeated:
            warnings.warn(
                f"layer {repeated[0]!r} ran {record.calls[repeated[0]]} times in one forward pass; "
                "its last output was explained (pick a layer that runs once for an unambiguous map)",
                stacklevel=3,
            )


def captured_forward(
    model: nn.Module,
    images: Any,
    layers: list[tuple[str, nn.Module]],
    graph_from_layer: bool = True,
    layers_apart: bool = False,
) -> tuple[object, list[torch.Tensor]]:
    """One forward pass of ``model`` on ``images`` (:func:`run_model`) recording each of ``layers``'
    outputs (:func:`capture`): the model's raw output and the recorded tensors, in ``layers``' order. The
    one "forward pass with capture" of explain(), every class's maps and the concepts' factorisation."""
    with capture(layers, graph_from_layer=graph_from_layer, layers_apart=layers_apart) as record:
        output = run_model(model, images)
    return output, record.tensors()


def check_dimensions(model: nn.Module, images: torch.Tensor) -> None:
    """A model whose convolutions are all 2-D given a (C, H, W) image without its batch dimension (or a
    1-D model given an image) is told so in one line, before its own error about channels."""
    kinds = {len(m.kernel_size) for m in modules_of(model) if isinstance(m, nn.modules.conv._ConvNd)}
    spatial = images.dim() - 2
    if kinds and spatial not in kinds:
        expected = {1: "(B, C, L)", 2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}
        wanted = " or ".join(expected[k] for k in sorted(kinds) if k in expected)
        hint = "; a single image needs its batch dimension: images[None]" if spatial == 1 and 2 in kinds else ""
        raise ValueError(
            f"images {tuple(images.shape)}: this model's convolutions take float tensor {wanted}, "
            f"not {spatial}-D inputs{hint}"
        )


def twice_differentiable(needed: bool) -> Any:
    """For a second-order method (Shapley-CAM's Hessian-vector product): attention through PyTorch's math
    kernel, whose backward can itself be differentiated (the fused CPU and GPU kernels' cannot: "derivative
    for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"). The maps are the
    same; the math kernel is slower and holds the attention matrix."""
    if not needed:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
