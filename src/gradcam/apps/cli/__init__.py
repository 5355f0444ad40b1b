"""The ``gradcam`` command: a table of subcommands, one module each (its ``add_parser`` and ``run``).

    gradcam explain PATH... [--model efficientnet_lite0] [--method gradcam] [--target top3] [--out DIR]
    gradcam evaluate PATH... [--methods gradcam,gradcam++] [--boxes FILE]
    gradcam audit PATH... [--truth CSV|FOLDER] [--boxes FILE] [--compare MODEL2] [--out DIR]
    gradcam concepts PATH... [--k 5]
    gradcam serve | gradcam models | gradcam layers MODEL

Exit codes: 0 all inputs explained, 1 some failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from . import audit, concepts, evaluate, explain, layers, models, serve
from .console import EXIT_INTERRUPTED, EXIT_OK, Formatter, one_line_warning

# name -> module; the order is the order of `gradcam -h`
COMMANDS = {"explain": explain, "evaluate": evaluate, "audit": audit, "concepts": concepts, "serve": serve,
            "models": models, "layers": layers}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam",
        description="Why did the image model decide that? Grad-CAM-family heatmaps for PyTorch vision models.",
        formatter_class=Formatter,
        epilog="Run `gradcam COMMAND -h` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gradcam layers MODEL | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush does not fail again
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
