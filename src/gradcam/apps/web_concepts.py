"""The web app's "Concepts" tab: Deep Feature Factorization of one photo (:mod:`gradcam.dff`), each place
of the photo coloured by its strongest concept, with a legend of each concept's classes.

Example:
    >>> picture, caption = photo_concepts_picture("coffee.jpg", "efficientnet_lite0", 4, None,  # doctest: +SKIP
    ...                                           load=SHELF.get)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..io.images import DEFAULT_MAX_MEGAPIXELS, ImageReadError, framed, preprocess, read_image
from ..io.models import LoadedModel, ModelLoadError
from .web_state import AppError, uploaded_photo

MAX_CONCEPTS = 8


def photo_concepts_picture(
    path: str | None,
    model_name: str,
    k: int,
    layer: str | None,
    frame: str = "crop",
    *,
    load: Callable[[str], LoadedModel],
) -> tuple[Any, str]:
    """Deep Feature Factorization of one photo: its picture (each place coloured by its strongest of ``k``
    concepts, a legend of each concept's classes and share) and a one-line caption; ``load`` gives the served
    model of a name; errors are :class:`AppError` messages."""
    from ..dff import concepts
    from ..render.concepts import photo_concepts

    file = uploaded_photo(path)
    if not 1 <= int(k) <= MAX_CONCEPTS:
        raise AppError(f"Concepts: choose between 1 and {MAX_CONCEPTS}.")
    try:
        bundle = load(model_name)
        photo = read_image(file, max_megapixels=DEFAULT_MAX_MEGAPIXELS)
    except (ModelLoadError, ImageReadError) as error:
        raise AppError(str(error).replace(str(file), file.name)) from None
    if bundle.extra.get("image_text"):
        raise AppError(f"{model_name} is an image-text model: concepts need a classifier's head to name them.")
    pixels, geometry = preprocess(photo, framed(bundle.preprocessing, frame, photo.size))
    x = pixels[None].to(next(bundle.model.parameters()).device)
    try:
        found = concepts(bundle.model, x, int(k), bundle.layer_for(layer, x), labels=bundle.labels)
    except ValueError as error:
        raise AppError(str(error).splitlines()[0]) from None
    picture = photo_concepts(photo, found.maps[0], geometry, found.top_classes(2), found.shares()[0].tolist())
    return picture, f"{int(k)} concepts of this photo at layer {found.layer} (Deep Feature Factorization)"
