"""``gradcam layers``: a model's candidate layers with their output shapes, the default marked."""

from __future__ import annotations

import argparse
from typing import Any

from ...io.models import DEFAULT_MODEL, ModelLoadError, load_model
from .console import EXIT_OK, Formatter, add_trust_option, usage_error
from .summaries import SUMMARIES


def add_parser(commands: Any) -> None:
    layers = commands.add_parser(
        "layers",
        help=SUMMARIES["layers"],
        description="A model's layers with a spatial output (the ones --layer can explain), their output shapes, "
        "and the default marked.",
        formatter_class=Formatter,
    )
    layers.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="a model name as for explain --model")
    layers.add_argument("--weights", default="none", help="weights do not change shapes, so random by default")
    add_trust_option(layers)


def run(args: argparse.Namespace) -> int:

    from ...layers import list_layers

    try:
        bundle = load_model(args.model, args.weights, trust_weights=args.trust_weights)
    except ModelLoadError as error:
        return usage_error(str(error))
    example = bundle.black_image()
    try:
        infos = list_layers(bundle.model, example)
    except ValueError as error:
        return usage_error(str(error))
    default = bundle.layer_for(None, example)
    width = max(len(i.name) for i in infos)
    print(f"{'layer'.ljust(width)}  {'output (C, h, w)'.ljust(18)}  module")
    for info in infos:
        mark = "  <- default" if info.name == default else ""
        print(f"{info.name.ljust(width)}  {str(info.shape).ljust(18)}  {info.kind}{mark}")
    return EXIT_OK
