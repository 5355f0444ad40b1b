"""The ``gradcam`` command: a table of subcommands, one module each (its ``add_parser`` and ``run``).

    gradcam explain PATH... [--model efficientnet_lite0] [--method gradcam] [--target top3] [--out DIR]
    gradcam evaluate PATH... [--methods gradcam,gradcam++] [--boxes FILE]
    gradcam audit PATH... [--truth CSV|FOLDER] [--boxes FILE] [--compare MODEL2] [--out DIR]
    gradcam concepts PATH... [--k 5]
    gradcam serve | gradcam models | gradcam layers MODEL
    gradcam PATH... [options]         # short for gradcam explain PATH... (the original `main.py IMAGE`)

Exit codes: 0 all inputs explained, 1 some failed, 2 usage error, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM; recorded like an interruption).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from .summaries import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, SUMMARIES, Formatter

# the subcommands, in the order of `gradcam -h`; each module is imported only when its command runs (or
# every one for build_parser()): importing one imports torch, and `gradcam -h` needs none of them
COMMANDS = tuple(SUMMARIES)


def command_module(name: str) -> ModuleType:
    """The module of subcommand ``name`` (its ``add_parser`` and ``run``)."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(only: str | None = "every") -> argparse.ArgumentParser:
    """The ``gradcam`` parser: every command's options (``only="every"``), one command's (``only=NAME``),
    or none (``only=None``: the commands and their one-line summaries, for ``gradcam -h``, without torch)."""
    parser = argparse.ArgumentParser(
        prog="gradcam",
        description="Why did the image model decide that? Grad-CAM-family heatmaps for PyTorch vision models.",
        formatter_class=Formatter,
        epilog="Run `gradcam COMMAND -h` for the options of each command. `gradcam PATH...` is short for "
        "`gradcam explain PATH...`.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if only == "every" or only == name:
            command_module(name).add_parser(commands)
        else:
            commands.add_parser(name, help=SUMMARIES[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] not in COMMANDS and names_an_input(arguments[0]):
        arguments.insert(0, "explain")  # `gradcam cat.jpg`: what the original `main.py <PATH_TO_IMAGE>` did
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(arguments)
    if getattr(args, "verbose", False):
        os.environ["GRADCAM_VERBOSE"] = "1"  # read by gradcam.io.quiet, in this process and Ray's workers
    from .console import one_line_warning

    with warnings.catch_warnings(), terminated_like_interrupted() as stopped:
        warnings.showwarning = one_line_warning
        code = _dispatch(args)
    return EXIT_TERMINATED if stopped.is_set() else code


def names_an_input(word: str) -> bool:
    """Whether the first word of a command line is an input rather than a command: a file or folder that
    exists, a glob, or a name with a folder or a suffix (``cat.jpg``: explain then says it is missing). A
    mistyped command (``explian``) is none of these and stays argparse's error, with the commands listed."""
    if word.startswith("-"):
        return False
    path = Path(word)
    return path.exists() or any(c in word for c in "*?[") or os.sep in word or "/" in word or bool(path.suffix)


@contextlib.contextmanager
def terminated_like_interrupted() -> Iterator[threading.Event]:
    """SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) stops a command the way Ctrl-C does:
    what was explained is recorded in the manifest, temporaries are removed, ``--resume`` continues; the
    exit code is then 143. The event says whether it came. Only the main thread can install a handler."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def stop(signum: int, frame: object) -> None:
        stopped.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return command_module(args.command).run(args)
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gradcam layers MODEL | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush does not fail again
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
