"""Robust reading of image files and folders, and the preprocessing that can be carried back.

PIL is used only here, at the edge: decoding, EXIF orientation, odd modes (16-bit, CMYK, palette,
alpha). Everything after :func:`read_image` is a torch tensor.
"""

from __future__ import annotations

import glob
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .models import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
# The working size bounds the memory a photo can cost, whatever its size on disk (docs/security.md): the
# decode, the model's input and the overlay at the photo's resolution are all proportional to it.
DEFAULT_MAX_MEGAPIXELS = 40.0
MAX_ASPECT_RATIO = 50.0
STRIP_PIXELS = 1 << 20  # maps are carried onto the photo in strips of about this many pixels
ORIENTATION = 0x0112  # the EXIF tag; photos without a rotation are not copied to be "transposed"


def open_image(source: object) -> Image.Image:
    """PIL's own ``Image.open``, also when a library has patched it: importing Ultralytics (a ``yolo:`` model)
    replaces ``Image.open`` by a wrapper that, on a file PIL cannot read, tries to pip-install a HEIF plugin;
    a stranger's broken file must get our one-line message, never an install."""
    opener = Image.open
    module = getattr(opener, "__module__", "") or ""
    if module.startswith("ultralytics"):
        import sys

        opener = getattr(sys.modules.get(module), "_image_open", opener)
    return opener(source)  # type: ignore[arg-type]


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


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(
    inputs: Iterable[str], exclude: Iterable[Path] = (), accept: Callable[[Path], bool] = is_image_file
) -> FoundImages:
    """Expand files, folders (recursive, sorted) and globs. ``roots[i]`` is the folder ``paths[i]`` is
    named relative to in the outputs. Files inside folders that ``accept`` refuses (non-images by default)
    are counted in ``skipped``, and so are files that folders and globs find under an ``exclude`` folder
    (a run's own output folder)."""
    paths: list[Path] = []
    roots: list[Path] = []
    missing: list[str] = []
    skipped = 0
    seen: set[Path] = set()
    excluded = [Path(os.path.abspath(folder)) for folder in exclude]

    def add(path: Path, root: Path, found_by_pattern: bool = True) -> None:
        nonlocal skipped
        absolute = Path(os.path.abspath(path))
        if found_by_pattern and any(absolute.is_relative_to(folder) for folder in excluded):
            skipped += 1
            return
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            paths.append(path)
            roots.append(root)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if accept(child):
                    add(child, path)
                else:
                    skipped += 1
        elif path.is_file():
            add(path, path.parent, found_by_pattern=False)
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
    path: Path | str | bytes,
    draft_size: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    name: str = "",
    max_side: int | None = None,
) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image, at its own resolution unless told otherwise.

    A JPEG may be decoded at a reduced scale (1/2, 1/4, 1/8, by the decoder itself, never reaching full-size
    memory): as much as ``draft_size`` (the shorter side that must survive: callers that need only the
    model's input) and ``max_side`` (the longer side that must survive: a smaller overlay) allow, and as
    much as needed to fit ``max_megapixels``. The size the decode would have is checked before any pixel
    is allocated: over ``max_megapixels``, or longer than ``MAX_ASPECT_RATIO`` times its width, it is
    refused with one line naming the file. Alpha is composited on white; 16-bit and float images are
    rescaled. ``path`` may also be a file's bytes, called ``name`` in messages. The photo's own upright
    (width, height) is ``image.info["original_size"]``, whatever the decode's.
    """
    source: Path | io.BytesIO
    if isinstance(path, bytes):
        source, size, path = io.BytesIO(path), len(path), Path(name or "<bytes>")
    else:
        path = Path(path)  # a str names a file too
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
        with open_image(source) as image:
            header = image.size
            if image.format == "JPEG":
                scale = draft_scale(header, max_megapixels, draft_size, max_side)
                if scale > 1:
                    image.draft(image.mode, (math.ceil(header[0] / scale), math.ceil(header[1] / scale)))
            check_working_size(image.size, max_megapixels, str(path))
            image.load()
            turned = image.getexif().get(ORIENTATION, 1)
            upright = ImageOps.exif_transpose(image) if turned != 1 else image
            rgb = to_rgb(upright, name=str(path))
            rgb.info["original_size"] = header[::-1] if turned in (5, 6, 7, 8) else header
            return rgb
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"{path}: not a readable image ({reason})") from error
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit


def draft_scale(
    size: tuple[int, int], max_megapixels: float, draft_size: int | None = None, max_side: int | None = None
) -> int:
    """The JPEG decoder's reduction (1, 2, 4 or 8) for a (width, height) photo: the largest that keeps the
    shorter side >= ``draft_size`` and the longer side >= ``max_side`` (1 when neither is given), and at
    least the smallest that fits ``max_megapixels``."""
    scales = (1, 2, 4, 8)
    width, height = size
    fits = next((s for s in scales if (width / s) * (height / s) / 1e6 <= max_megapixels), scales[-1])
    if draft_size is None and max_side is None:
        return fits
    kept = [
        s for s in scales if min(width, height) / s >= (draft_size or 0) and max(width, height) / s >= (max_side or 0)
    ]
    return max(fits, max(kept, default=1))


def check_working_size(size: tuple[int, int], max_megapixels: float, name: str) -> None:
    """Refuse a (width, height) whose decode or resize would cost more than the limits allow."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageReadError(f"{name}: declares a size of {width}x{height}")
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageReadError(
            f"{name}: {width}x{height} is {megapixels:.0f} megapixels, over the limit of {max_megapixels:.0f}; "
            "raise --max-megapixels to read it (each megapixel costs about 10 MB of memory)"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT_RATIO:
        raise ImageReadError(
            f"{name}: {width}x{height} has an aspect ratio of {aspect:.0f}:1, over the limit of "
            f"{MAX_ASPECT_RATIO:.0f}:1; crop it into parts first"
        )


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """8-bit RGB from any PIL mode: 16-bit and float rescaled (float images in [0, 1] as such), CMYK
    converted, alpha over white. NaN and infinite pixels become 0, with a warning naming ``name``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            warnings.warn(
                f"{name}: {int((~finite).sum())} pixels are NaN or infinite; they are read as 0", stacklevel=3
            )
            values = np.where(finite, values, 0).astype(np.float32)
        high = float(values.max()) if values.size else 0.0
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "F" and high <= 1.0:
            top = 1.0
        elif high <= 255:
            top = 255.0
        else:
            top = high if image.mode == "F" else 65535.0
        image = Image.fromarray(np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def image_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor from an RGB PIL image: a channels-last view of one copy of the pixels (a
    large photo is not copied twice; pictures made with ``empty_like`` keep that layout for PNG writing)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def reduced_like_a_draft(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` box-reduced by the largest power of two that keeps it at least ``size`` (height, width):
    what a JPEG decoder's reduced decode (``draft``) gives, for a photo decoded at full size to be drawn
    on. The resize after it then costs about a tenth (a 1-megapixel photo to 256 px: 11 ms -> 3 ms)."""
    factor = 1
    while image.width // (2 * factor) >= size[1] and image.height // (2 * factor) >= size[0] and factor < 64:
        factor *= 2
    return image.reduce(factor) if factor > 1 else image


def preprocess(image: Image.Image, spec: Preprocessing) -> tuple[torch.Tensor, Geometry]:
    """Resize the shorter side to ``spec.resize`` and centre-crop (or, with ``spec.squash``, resize to the
    crop's size), normalise: (3, h, w) float32 and the
    :class:`Geometry` that :func:`to_original` uses to carry a map back onto the photo."""
    geometry = _geometry(image.height, image.width, spec)
    resized = geometry.resized
    resample = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    small = reduced_like_a_draft(image, resized).resize((resized[1], resized[0]), resample=resample)
    if len(spec.mean) == 1:  # a grey model (MNIST's): the photo's luminance, one channel
        pixels = _cropped(torch.from_numpy(np.array(small.convert("L"), dtype=np.uint8))[None], geometry)
    else:
        pixels = _cropped(image_tensor(small), geometry)
    return _normalised(pixels.float() / 255.0, spec), geometry


def preprocess_tensor(values: torch.Tensor, spec: Preprocessing) -> tuple[torch.Tensor, Geometry]:
    """:func:`preprocess` for a (C, H, W) float image array at full precision (antialiased resize in torch):
    normalised with ``spec.mean``/``spec.std`` where they have one value per channel (a single channel is
    first repeated to the three a model with ImageNet-like statistics takes); other channel counts are
    given as they are."""
    height, width = values.shape[-2:]
    geometry = _geometry(height, width, spec)
    mode = "bicubic" if spec.interpolation == "bicubic" else "bilinear"
    small = F.interpolate(values[None].float(), size=geometry.resized, mode=mode, antialias=True, align_corners=False)
    pixels = _cropped(small[0], geometry)
    if pixels.shape[0] == 1 and len(spec.mean) == 3:
        pixels = pixels.expand(3, -1, -1)
    return (_normalised(pixels, spec) if pixels.shape[0] == len(spec.mean) else pixels), geometry


def _geometry(height: int, width: int, spec: Preprocessing) -> Geometry:
    scale = spec.resize / min(width, height)
    resized = spec.crop if spec.squash else (max(1, round(height * scale)), max(1, round(width * scale)))
    crop_h, crop_w = spec.crop
    top = max(0, round((resized[0] - crop_h) / 2))
    left = max(0, round((resized[1] - crop_w) / 2))
    return Geometry((height, width), (int(resized[0]), int(resized[1])), (top, left), (crop_h, crop_w))


def _cropped(pixels: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    (top, left), (crop_h, crop_w) = geometry.crop_origin, geometry.crop
    pixels = pixels[:, top : top + crop_h, left : left + crop_w]
    if pixels.shape[1:] != (crop_h, crop_w):  # the resized image is smaller than the crop: pad
        pixels = F.pad(pixels, (0, crop_w - pixels.shape[2], 0, crop_h - pixels.shape[1]))
    return pixels


def _normalised(pixels: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=pixels.dtype).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=pixels.dtype).view(-1, 1, 1)
    return (pixels - mean) / std


FRAMES = ("crop", "full", "squash")


def framed(spec: Preprocessing, frame: str, size: tuple[int, int], multiple: int = 32) -> Preprocessing:
    """The preprocessing of a (width, height) photo for a frame: ``"crop"`` the model's own (shorter side
    resized, centre crop); ``"squash"`` the whole photo resized to the crop's size; ``"full"`` the whole
    photo with its aspect ratio, the shorter side at the crop's shorter side, both sides rounded to a
    ``multiple`` of 32 (the stride of most networks), so the map covers every pixel.

    Example:
        >>> framed(spec, "full", (640, 480)).crop                    # doctest: +SKIP
        (224, 288)
    """
    if frame == "crop":
        return spec
    if frame == "squash":
        return replace(spec, squash=True)
    if frame != "full":
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    width, height = size
    scale = min(spec.crop) / min(width, height)
    crop = tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))
    return replace(spec, resize=max(crop), crop=(crop[0], crop[1]), squash=True)


def model_view(pixels: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """The photo as the model sees it: normalised (3, h, w) input back to (3, h, w) uint8 (a grey model's
    one channel repeated)."""
    mean = torch.tensor(spec.mean, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(-1, 1, 1)
    view = ((pixels.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return view.expand(3, -1, -1) if view.shape[0] == 1 else view


def to_original(maps: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry (K, h, w) maps in the model's input frame back onto the original photo.

    Returns the maps at the photo's (height, width) and a coverage mask (1 where the crop saw the
    photo, 0 in the cropped-away margins), both (K, H, W). For large photos prefer
    :func:`original_strips`, which never holds a whole float map at the photo's size.
    """
    strips = list(original_strips(maps, geometry))
    full = torch.cat([m for _, m, _ in strips], dim=1)
    coverage = torch.cat([c for _, _, c in strips], dim=1)
    return full, coverage.expand_as(full)


def original_strips(
    maps: torch.Tensor, geometry: Geometry, strip_pixels: int = STRIP_PIXELS
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """:func:`to_original` in horizontal strips of about ``strip_pixels`` pixels: ``(rows, maps (K, S, W),
    coverage (1, S, W))`` each, so the memory needed does not grow with the photo.

    The same bilinear resampling as ``F.interpolate(..., align_corners=False)`` over the whole photo:
    the rows of a strip are interpolated by hand (source row ``(y + 0.5) * scale - 0.5``), then the
    columns by ``F.interpolate`` at an unchanged height, which leaves rows as they are.
    """
    maps = F.interpolate(maps[None].float(), size=geometry.crop, mode="bilinear", align_corners=False)[0]
    canvas = maps.new_zeros(maps.shape[0] + 1, *geometry.resized)  # the last plane is the coverage
    top, left = geometry.crop_origin
    height = min(geometry.crop[0], geometry.resized[0] - top)
    width = min(geometry.crop[1], geometry.resized[1] - left)
    canvas[:-1, top : top + height, left : left + width] = maps[:, :height, :width]
    canvas[-1, top : top + height, left : left + width] = 1
    rows_in, (rows_out, columns_out) = geometry.resized[0], geometry.original
    step = max(1, strip_pixels // columns_out)
    for start in range(0, rows_out, step):
        stop = min(rows_out, start + step)
        source = ((torch.arange(start, stop, dtype=torch.float32) + 0.5) * (rows_in / rows_out) - 0.5).clamp(min=0)
        below = source.floor().long().clamp(max=rows_in - 1)
        above = (below + 1).clamp(max=rows_in - 1)
        weight = (source - below)[:, None]
        rows = canvas[:, below] * (1 - weight) + canvas[:, above] * weight
        strip = F.interpolate(rows[None], size=(stop - start, columns_out), mode="bilinear", align_corners=False)[0]
        strip = strip.clamp(0, 1)
        yield slice(start, stop), strip[:-1], strip[-1:]
