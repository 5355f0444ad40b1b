"""Robust reading of image files and folders, and the preprocessing that can be carried back.

PIL is used only here, at the edge: decoding, EXIF orientation, odd modes (16-bit, CMYK, palette,
alpha). Everything after :func:`read_image` is a torch tensor.
"""

from __future__ import annotations

import glob
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .models import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
DEFAULT_MAX_MEGAPIXELS = 200.0


class ImageReadError(ValueError):
    """An image that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Geometry:
    """How a photo became the model's input: original (height, width) after EXIF orientation, the
    resized (height, width), and the crop's top-left corner and (height, width) in the resized frame."""

    original: tuple[int, int]
    resized: tuple[int, int]
    crop_origin: tuple[int, int]
    crop: tuple[int, int]


@dataclass(frozen=True)
class FoundImages:
    paths: list[Path]
    roots: list[Path]
    missing: list[str]
    skipped: int


def find_images(inputs: Iterable[str]) -> FoundImages:
    """Expand files, folders (recursive, sorted) and globs. ``roots[i]`` is the folder ``paths[i]`` is
    named relative to in the outputs. Non-image files inside folders are counted in ``skipped``."""
    paths: list[Path] = []
    roots: list[Path] = []
    missing: list[str] = []
    skipped = 0
    seen: set[Path] = set()

    def add(path: Path, root: Path) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            paths.append(path)
            roots.append(root)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    add(child, path)
                else:
                    skipped += 1
        elif path.is_file():
            add(path, path.parent)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                missing.append(item)
            for match in matches:
                add(match, match.parent)
        else:
            missing.append(item)
    return FoundImages(paths, roots, missing, skipped)


def read_image(
    path: Path | bytes,
    draft_size: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    name: str = "",
) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image.

    JPEGs larger than needed are decoded at a reduced scale (``draft_size`` is the smallest side that must
    survive), so a 20000 x 20000 photo never reaches full-size memory; other formats over
    ``max_megapixels`` are refused. Alpha is composited on white; 16-bit and float images are rescaled.
    ``path`` may also be a file's bytes (read from an object store, say), called ``name`` in messages.
    """
    source: Path | io.BytesIO
    if isinstance(path, bytes):
        source, size, path = io.BytesIO(path), len(path), Path(name or "<bytes>")
    else:
        source = path
        try:
            size = path.stat().st_size
        except OSError as error:
            raise ImageReadError(f"{path}: cannot read ({error.strerror})") from error
    if size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    bomb_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit applies after the JPEG draft has shrunk the decode
    try:
        with Image.open(source) as image:
            if image.format == "JPEG" and draft_size:
                scale = min(image.size) / draft_size
                if scale >= 2:
                    image.draft(image.mode, (math.ceil(image.size[0] / scale), math.ceil(image.size[1] / scale)))
            megapixels = image.size[0] * image.size[1] / 1e6
            if megapixels > max_megapixels:
                raise ImageReadError(
                    f"{path}: {image.size[0]}x{image.size[1]} is {megapixels:.0f} megapixels, over the limit of "
                    f"{max_megapixels:.0f}; raise --max-megapixels to read it"
                )
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"{path}: not a readable image ({reason})") from error
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: 16-bit and float rescaled, CMYK converted, alpha over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor from an RGB PIL image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def preprocess(image: Image.Image, spec: Preprocessing) -> tuple[torch.Tensor, Geometry]:
    """Resize the shorter side to ``spec.resize``, centre-crop, normalise: (3, h, w) float32 and the
    :class:`Geometry` that :func:`to_original` uses to carry a map back onto the photo."""
    width, height = image.size
    scale = spec.resize / min(width, height)
    resized = (max(1, round(height * scale)), max(1, round(width * scale)))
    resample = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    small = image.resize((resized[1], resized[0]), resample=resample, reducing_gap=3.0)
    crop_h, crop_w = spec.crop
    top = max(0, round((resized[0] - crop_h) / 2))
    left = max(0, round((resized[1] - crop_w) / 2))
    pixels = image_tensor(small)[:, top : top + crop_h, left : left + crop_w].float() / 255.0
    if pixels.shape[1:] != (crop_h, crop_w):  # the resized image is smaller than the crop: pad
        pixels = F.pad(pixels, (0, crop_w - pixels.shape[2], 0, crop_h - pixels.shape[1]))
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    geometry = Geometry((height, width), resized, (top, left), (crop_h, crop_w))
    return (pixels - mean) / std, geometry


def model_view(pixels: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """The photo as the model sees it: normalised (3, h, w) input back to (3, h, w) uint8."""
    mean = torch.tensor(spec.mean, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(3, 1, 1)
    return ((pixels.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def to_original(maps: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry (K, h, w) maps in the model's input frame back onto the original photo.

    Returns the maps at the photo's (height, width) and a coverage mask (1 where the crop saw the
    photo, 0 in the cropped-away margins), both (K, H, W).
    """
    maps = F.interpolate(maps[None].float(), size=geometry.crop, mode="bilinear", align_corners=False)[0]
    canvas = maps.new_zeros(maps.shape[0], *geometry.resized)
    coverage = maps.new_zeros(1, *geometry.resized)
    top, left = geometry.crop_origin
    height = min(geometry.crop[0], geometry.resized[0] - top)
    width = min(geometry.crop[1], geometry.resized[1] - left)
    canvas[:, top : top + height, left : left + width] = maps[:, :height, :width]
    coverage[:, top : top + height, left : left + width] = 1
    canvas = F.interpolate(canvas[None], size=geometry.original, mode="bilinear", align_corners=False)[0]
    coverage = F.interpolate(coverage[None], size=geometry.original, mode="bilinear", align_corners=False)[0]
    return canvas.clamp(0, 1), coverage.expand_as(canvas).clamp(0, 1)
