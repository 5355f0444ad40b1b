"""The one decoder of the inputs that are explained as images: photos and image arrays.

:func:`decode` turns one file into a :class:`DecodedPhoto` (the model's input, the picture to draw on and
the :class:`Geometry` between them), for the local engine, its replicas, the Ray actors and the audit; a bad
file becomes a :class:`DecodedPhoto` with only ``error`` (one line), never an exception, so one unreadable
file in a folder of thousands costs that file only.

Example:
    >>> item = decode(Path("examples/coffee.jpg"), bundle.preprocessing, max_megapixels=40)   # doctest: +SKIP
    >>> tuple(item.input.shape), item.size
    ((3, 224, 224), (600, 400))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..io.arrays import ArrayReadError
from ..io.image_arrays import read_image_array
from ..io.images import Geometry, ImageReadError, framed, image_tensor, preprocess, preprocess_tensor, read_image
from ..io.models import Preprocessing


@dataclass(frozen=True)
class DecodedPhoto:
    """One input ready to explain: the model's ``input`` (C, h, w), its :class:`Geometry` onto ``photo``
    (3, H, W) uint8, the picture drawn on (its own resolution, or smaller with ``--max-side``), and the
    file's own (width, height). An image array also has its ``kind`` (``"image"``) and its own ``shape``.
    A file that could not be read has only ``error`` (one line)."""

    input: torch.Tensor | None = None
    geometry: Geometry | None = None
    photo: torch.Tensor | None = None
    size: tuple[int, int] | None = None
    error: str | None = None
    index: int = 0  # its position among the inputs being run
    kind: str | None = None  # None: a photo; "image": an image array
    shape: tuple[int, ...] | None = None


def decode(
    source: Path | bytes,
    spec: Preprocessing,
    max_megapixels: float,
    name: str = "",
    max_side: int | None = None,
    frame: str = "crop",
    index: int = 0,
    kind: str = "photo",
    picture: bool = True,
) -> DecodedPhoto:
    """One photo (a path, or the bytes of a file called ``name``) or, with ``kind="image"``, one image
    array, as the model's input in ``frame`` (see :func:`gradcam.io.images.framed`), the picture to draw on
    (its own resolution, or at most ``max_side`` pixels long; none with ``picture=False``, where a JPEG is
    decoded no larger than the model needs), and its :class:`Geometry` onto that picture."""
    label = name or str(source)
    try:
        if kind == "image":
            if isinstance(source, bytes):
                raise ArrayReadError(f"{label}: image arrays are read from files")
            return _decode_image_array(source, spec, max_megapixels, max_side, frame, index)
        draft = spec.resize if (max_side or not picture) else None  # the decoder may shrink a JPEG
        image = read_image(source, draft_size=draft, max_megapixels=max_megapixels, name=name, max_side=max_side)
        pixels, geometry = preprocess(image, framed(spec, frame, image.size))
        size = tuple(image.info.get("original_size", image.size))
        if not picture:
            return DecodedPhoto(pixels, geometry, size=(int(size[0]), int(size[1])), index=index)
        photo = image
        if max_side and max(image.size) > max_side:
            photo = image.copy()
            photo.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0)
            geometry = replace(geometry, original=(photo.height, photo.width))
        return DecodedPhoto(pixels, geometry, image_tensor(photo), (int(size[0]), int(size[1])), index=index)
    except (ImageReadError, ArrayReadError) as error:
        return DecodedPhoto(error=str(error), index=index)
    except Exception as error:  # a decoder crash must not end the run
        return DecodedPhoto(error=f"{label}: cannot decode ({type(error).__name__}: {error})", index=index)


def _decode_image_array(
    path: Path, spec: Preprocessing, max_megapixels: float, max_side: int | None, frame: str, index: int
) -> DecodedPhoto:
    item = read_image_array(Path(path), max_megapixels)
    values = item.values
    height, width = values.shape[-2:]
    pixels, geometry = preprocess_tensor(values, framed(spec, frame, (width, height)))
    photo = picture_of(values, max_side)
    geometry = replace(geometry, original=(photo.shape[1], photo.shape[2]))
    return DecodedPhoto(pixels, geometry, photo, (width, height), index=index, kind="image", shape=item.shape)


def picture_of(values: torch.Tensor, max_side: int | None = None) -> torch.Tensor:
    """An image array as a (3, H, W) uint8 picture to draw on: three channels as colour, else the first as
    grey, each windowed to its 1st-99th percentile (a 16-bit image rarely spans its whole range); at
    most ``max_side`` pixels long."""
    shown = values[:3] if values.shape[0] == 3 else values[:1]
    if max_side and max(shown.shape[-2:]) > max_side:
        scale = max_side / max(shown.shape[-2:])
        size = (max(1, round(shown.shape[1] * scale)), max(1, round(shown.shape[2] * scale)))
        shown = F.interpolate(shown[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    sample = shown.flatten()[:: max(1, shown.numel() // 1_000_000)]
    low, high = torch.quantile(sample, torch.tensor([0.01, 0.99])).tolist()
    span = high - low if high > low else 1.0
    grey = ((shown - low) / span).clamp(0, 1).mul(255).round().to(torch.uint8)
    return grey.expand(3, -1, -1).contiguous() if grey.shape[0] == 1 else grey.contiguous()


class PhotoDataset(Dataset):
    """Decodes one input per item (in DataLoader workers, or the replicas' threads); a bad file becomes an
    error item."""

    def __init__(
        self,
        paths: Sequence[Path],
        spec: Preprocessing,
        max_megapixels: float,
        max_side: int | None,
        frame: str,
        kind: str = "photo",
    ) -> None:
        self.paths, self.spec, self.kind = list(paths), spec, kind
        self.max_megapixels, self.max_side, self.frame = max_megapixels, max_side, frame

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> DecodedPhoto:
        return decode(
            self.paths[index], self.spec, self.max_megapixels, "", self.max_side, self.frame, index, self.kind
        )


def collate(items: list[DecodedPhoto]) -> list[DecodedPhoto]:
    return items
