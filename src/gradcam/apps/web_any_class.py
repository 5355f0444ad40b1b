"""The web app's "any class" menu: every class's map of a photo, kept from the first method's forward pass,
drawn on the photo on demand without running the model again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io.images import DEFAULT_MAX_MEGAPIXELS, read_image
from ..render.viz import overlay_image, smooth_for_drawing
from ..targets import class_index
from .web_state import AppError


@dataclass(frozen=True)
class AnyClass:
    """Every class's raw map of one photo (float16, the layer's resolution) and what is needed to draw one
    on the photo again without running the model: the photo's file, its geometry and the drawing options."""

    raw: torch.Tensor  # (K, h, w)
    labels: tuple[str, ...]
    path: str
    geometry: Any
    method: str
    alpha: float
    colormap: str

    def draw(self, name: str) -> Any:
        """The overlay of class ``name`` (a label or an index) on the photo, at its own resolution."""
        from ..result import normalise, upsample

        index = class_index(name, self.labels) if not name.strip().isdigit() else int(name)
        if not 0 <= index < len(self.raw):
            raise AppError(f"class {index} is out of range for a model with {len(self.raw)} classes")
        grid = (int(self.raw.shape[-2]), int(self.raw.shape[-1]))
        heat = normalise(upsample(self.raw[index][None, None].float(), self.geometry.crop))
        heat = smooth_for_drawing(heat, grid)[0, 0]  # drawn as the overlays are (render.viz)
        photo = read_image(Path(self.path), max_megapixels=DEFAULT_MAX_MEGAPIXELS)
        return overlay_image(photo, heat, self.geometry, self.alpha, self.colormap)
