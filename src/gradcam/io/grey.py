"""Models whose images have one channel (MNIST's digits, X-ray and microscopy models): they are given the
photos' luminance instead of three colour channels.

Example:
    >>> bundle = grey_if_one_channel(load_bundle("py:mnist_net:Net", "mnist.pt"))   # doctest: +SKIP
    >>> bundle.preprocessing.mean
    (0.449,)
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .models import LoadedModel


def image_channels(model: nn.Module) -> int | None:
    """The channels the model's images have: its first 2-D convolution's input channels (None without one)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else int(first.in_channels)


def grey_if_one_channel(bundle: LoadedModel) -> LoadedModel:
    """A model whose images have one channel (MNIST's, an X-ray model's) is given the photos' luminance, with
    the mean and std of its three-channel preprocessing averaged, unless ``--mean``/``--std`` say otherwise;
    photos went in as three channels and its first convolution failed."""
    spec = bundle.preprocessing
    if len(spec.mean) != 3 or image_channels(bundle.model) != 1:
        return bundle
    grey = replace(spec, mean=(round(sum(spec.mean) / 3, 4),), std=(round(sum(spec.std) / 3, 4),))
    return replace(bundle, preprocessing=grey)
