"""Weights files, read without running their code unless the user vouches for them (``--trust-weights``):
plain state dicts and checkpoints through ``torch.load(weights_only=True)``, ``.safetensors``, and, trusted
only, whole pickled models and TorchScript files. A fine-tuned checkpoint's head size is read from it.

Example:
    >>> file = WeightsFile("finetuned.pth")                                     # doctest: +SKIP
    >>> file.head_classes(torchvision.models.resnet18())
    7
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn


class ModelLoadError(RuntimeError):
    """A model or its weights cannot be had; the message says what is missing and how to supply it."""


MAX_CLASSES = 1_000_000  # the largest head built or named (a 1,280-feature head of a million classes: 5 GB)


def _stored_bytes(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return tensor.numel() * tensor.element_size()


class WeightsFile:
    """A local weights file and whether the user vouched for it (``--trust-weights``); read once."""

    def __init__(self, path: str, trusted: bool = False) -> None:
        self.path, self.trusted = path, trusted
        self._state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            self._state = _read_state_dict(self.path, self.trusted)
        return self._state

    def head_classes(self, model: nn.Module) -> int | None:
        """The number of classes of the file's head where it differs from ``model``'s (a fine-tuned
        checkpoint), else None: the only tensors of another shape are the last layer's, and they agree
        on their first dimension."""
        ours = model.state_dict()
        state = self.state_dict()
        mismatched = [k for k in state if k in ours and state[k].shape != ours[k].shape]
        if not mismatched:
            return None
        head = next(reversed([k.rsplit(".", 1)[0] for k in ours if k.endswith(".weight")]), None)
        sizes = {state[k].shape[0] for k in mismatched}
        if head is None or len(sizes) != 1 or any(k.rsplit(".", 1)[0] != head for k in mismatched):
            return None
        classes = sizes.pop()
        stretched = [k for k in mismatched if _stored_bytes(state[k]) < state[k].numel() * state[k].element_size()]
        if stretched:  # a 13 MB file whose head claims 10^7 classes: building it would ask tens of GB
            raise ModelLoadError(
                f"--weights {self.path}: {stretched[0]} {tuple(state[stretched[0]].shape)} holds fewer values than "
                "its shape (an expanded tensor); not a trained head, refused"
            )
        if classes > MAX_CLASSES:
            raise ModelLoadError(
                f"--weights {self.path}: a head of {classes:,} classes; at most {MAX_CLASSES:,} are built"
            )
        return classes

    def load_into(self, model: nn.Module) -> None:
        try:
            model.load_state_dict(self.state_dict())
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise ModelLoadError(f"--weights {self.path}: does not fit this model ({first[:160]})") from error


def _sized_to(file: WeightsFile | None, build: Callable[..., nn.Module], name: str) -> tuple[nn.Module, bool]:
    """``build()``, or ``build(num_classes=N)`` when ``file`` is a fine-tuned checkpoint with an N-class
    head (said in one line); and whether the head was resized (the model's class names no longer apply)."""
    model = build()
    classes = file.head_classes(model) if file is not None else None
    if file is None or classes is None:
        return model, False
    warnings.warn(f"--weights {file.path}: a {classes}-class head, so {name} has {classes} classes", stacklevel=4)
    return build(num_classes=classes), True


def _is_torchscript(path: str) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


TRUST_HINT = (
    "pass --trust-weights only if you trust where the file comes from, or save a plain state dict "
    "(torch.save(model.state_dict(), path))"
)


def _read_state_dict(path: str, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a file: a state dict, or a checkpoint holding one.

    Untrusted (the default), the file is read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a crafted pickle cannot run code. ``trusted`` also accepts a whole pickled model,
    checkpoints with custom classes and TorchScript files (their weights only: hooks need the eager
    architecture); loading those runs code that the file contains.
    """
    import pickle

    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return {k.removeprefix("module."): v for k, v in load_file(path).items()}
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(f"--weights {path}: not a safetensors file ({str(error)[:120]})") from None
    scripted = _is_torchscript(path)
    if scripted and not trusted:
        raise ModelLoadError(
            f"--weights {path}: a TorchScript file is a program and loading it runs its code, refused; {TRUST_HINT}"
        )
    if trusted:
        warnings.warn(f"--trust-weights: loading {path} may run code that the file contains", stacklevel=3)
    try:
        if scripted:
            loaded = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        if trusted or "weights only load failed" not in str(error).lower():
            raise ModelLoadError(f"--weights {path}: not a PyTorch file ({type(error).__name__})") from error
        raise ModelLoadError(
            f"--weights {path}: holds Python objects whose loading would run code (a whole pickled model, or "
            f"a checkpoint with custom classes), refused; {TRUST_HINT}"
        ) from error
    except Exception as error:
        raise ModelLoadError(f"--weights {path}: not a PyTorch file ({type(error).__name__})") from error
    if isinstance(loaded, (nn.Module, torch.jit.ScriptModule)):
        loaded = loaded.state_dict()
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
            if isinstance(loaded.get(key), nn.Module):
                loaded = loaded[key].state_dict()
                break
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"--weights {path}: holds a {type(loaded).__name__}, not a state dict or model")
    return {k.removeprefix("module."): v for k, v in loaded.items()}
