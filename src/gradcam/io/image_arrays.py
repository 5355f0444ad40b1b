"""Image arrays: pictures that are not 8-bit photos, read at their full precision and explained as images.

A 16-bit microscopy TIFF, a float TIFF, or a ``.npy`` spectrogram (H, W) or multi-channel image
(C, H, W) becomes (C, H, W) float32: unsigned and signed integers divided by their type's largest value
(so 16-bit data keeps all of its 65,536 levels, where a photo decoder keeps 256), booleans as 0/1,
floats as stored. The size is checked from the header before anything is read: at most
``max_megapixels`` pixels and ``MAX_ELEMENTS`` values. ``.npy`` files are read without unpickling.

Layouts: ``.npy`` with 2 dimensions is (H, W), with 3 dimensions (C, H, W), channels first as the
model takes them; a TIFF is what PIL reads (one channel for 16-bit and float, three for RGB).

Example:
    >>> item = read_image_array(Path("cells.tif"), max_megapixels=40)          # doctest: +SKIP
    >>> tuple(item.values.shape), item.shape
    ((1, 1024, 1360), (1024, 1360))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .arrays import MAX_ELEMENTS, ArrayReadError, npy_header
from .images import open_image

IMAGE_ARRAY_SUFFIXES = (".npy", ".tif", ".tiff", ".png")
HIGH_PRECISION_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
MAX_CHANNELS = 64


@dataclass(frozen=True)
class ImageArray:
    """(C, H, W) float32 ``values`` and the file's own ``shape``."""

    values: torch.Tensor
    shape: tuple[int, ...]


def is_high_precision_tiff(path: Path) -> bool:
    """A TIFF whose pixels are 16-bit or 32-bit integers or floats: an image array, not an 8-bit photo
    (the header only is read)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with open_image(path) as image:
            return image.mode in HIGH_PRECISION_MODES
    except (OSError, SyntaxError, ValueError):
        return False


def read_image_array(path: Path, max_megapixels: float, max_elements: int = MAX_ELEMENTS) -> ImageArray:
    """Read one image array (see the module's docstring); errors are one line naming the file."""
    if path.suffix.lower() == ".npy":
        return _read_npy(path, max_megapixels, max_elements)
    return _read_with_pil(path, max_megapixels)


def _read_npy(path: Path, max_megapixels: float, max_elements: int) -> ImageArray:
    shape, dtype = npy_header(path)
    if dtype.hasobject:
        raise ArrayReadError(f"{path}: an array of Python objects; object arrays are never unpickled, save numbers")
    if len(shape) not in (2, 3):
        raise ArrayReadError(f"{path}: {len(shape)} dimensions; an image array is (H, W) or (C, H, W)")
    if len(shape) == 3 and shape[0] > MAX_CHANNELS:
        raise ArrayReadError(
            f"{path}: {shape[0]} channels in (C, H, W) {shape}; store the channels first (at most {MAX_CHANNELS})"
        )
    _check_size(path, shape[-2:], math.prod(shape), dtype, max_megapixels, max_elements)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ArrayReadError(f"{path}: not a readable .npy file ({str(error).splitlines()[0]})") from None
    values = _scaled(np.asarray(array), path)
    return ImageArray(values if values.dim() == 3 else values[None], tuple(int(s) for s in shape))


def _read_with_pil(path: Path, max_megapixels: float) -> ImageArray:
    bomb_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit, from the header
    try:
        with open_image(path) as image:
            width, height = image.size
            _check_size(path, (height, width), height * width * len(image.getbands()), None, max_megapixels)
            image.load()
            converted = image.convert("RGB") if image.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV") else image
            array = np.asarray(converted)
    except ArrayReadError:
        raise
    except FileNotFoundError:
        raise ArrayReadError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ArrayReadError(f"{path}: not a readable image ({reason})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    values = _scaled(array, path)
    values = values[None] if values.dim() == 2 else values.permute(2, 0, 1)
    return ImageArray(values.contiguous(), tuple(int(s) for s in array.shape))


def _check_size(
    path: Path,
    plane: tuple[int, ...],
    count: int,
    dtype: np.dtype | None,
    max_megapixels: float,
    max_elements: int = MAX_ELEMENTS,
) -> None:
    if dtype is not None and dtype.kind not in "biuf":
        raise ArrayReadError(f"{path}: values of type {dtype}; expected numbers")
    if count == 0:
        raise ArrayReadError(f"{path}: an empty image")
    pixels = math.prod(plane)
    if pixels > max_megapixels * 1e6 or count > max_elements:
        raise ArrayReadError(
            f"{path}: {plane[-1]} x {plane[0]} pixels ({count:,} values) is more than the {max_megapixels:g} "
            "megapixels allowed; raise --max-megapixels or downsample it"
        )


def _scaled(array: np.ndarray, path: Path) -> torch.Tensor:
    """float32 values: integers over their type's largest value, booleans 0/1, floats as they are (NaN
    and infinities refused: a map of them would mean nothing)."""
    if array.dtype.kind in "ui":
        values = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    else:
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ArrayReadError(f"{path}: holds NaN or infinite values; replace them before explaining it")
    return torch.from_numpy(np.ascontiguousarray(values))
