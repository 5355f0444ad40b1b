"""What every subcommand shares: exit codes, one-line errors and warnings, the help formatter, the model
options, progress bars and the summary table."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ...io.images import FoundImages, find_images
from ...io.models import DEFAULT_MODEL, LoadedModel
from ...io.models import load_bundle as load_model_and_labels
from ...pipeline.options import INTERPOLATIONS, PreprocessSettings, UsageError
from ...pipeline.records import PhotoRecord
from .summaries import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, Formatter

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED", "EXIT_USAGE", "Formatter"]


def usage_error(message: str) -> int:
    """Say ``message`` in one line on stderr; the usage error's exit code."""
    print(f"gradcam: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"gradcam: warning: {message}", file=sys.stderr)


def add_labels_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="class names: one per line, or JSON {index: name}, or 'imagenet' for ImageNet's 1,000; for a "
        "fine-tuned model or your own (default: the model's own, else class indices)",
    )


def add_trust_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--trust-weights",
        action="store_true",
        help="WARNING: lets --weights run code in the file (a whole pickled model, custom classes, TorchScript); "
        "only for files from a source you trust. Without it, only tensors are read",
    )


def add_photos_and_model(parser: argparse.ArgumentParser) -> None:
    """PATH..., --model, --weights, --trust-weights and --labels, as ``explain`` takes them."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as for explain")
    parser.add_argument("--weights", default=None, help="as for explain (a fine-tuned checkpoint, ...)")
    add_trust_option(parser)
    add_labels_option(parser)


def add_preprocessing_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--resize, --crop, --mean, --std and --interpolation: the preprocessing the model was trained with."""
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        metavar="N",
        help="resize the photo's shorter side to N pixels (default: the model's own)",
    )
    parser.add_argument(
        "--crop",
        default=None,
        metavar="N|HxW",
        help="centre-crop N x N or H x W pixels (default: the model's own; --crop alone keeps the "
        "model's resize-to-crop ratio)",
    )
    parser.add_argument(
        "--mean",
        default=None,
        metavar="M[,M,M]",
        help="per-channel mean subtracted after scaling to [0, 1], e.g. 0.5 or 0.485,0.456,0.406",
    )
    parser.add_argument("--std", default=None, metavar="S[,S,S]", help="per-channel standard deviation divided by")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                        help="how the photo is resized (default: the model's own)")  # fmt: skip


def preprocess_settings(args: argparse.Namespace) -> PreprocessSettings:
    """The preprocessing options given (a UsageError naming the option for a value that is not one)."""
    crop = None
    if args.crop is not None:
        parts = args.crop.lower().split("x")
        try:
            sides = [int(part) for part in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2) or min(sides) < 16:
            raise UsageError(f"--crop {args.crop!r}: give N or HxW, at least 16 pixels, e.g. 240 or 224x288")
        crop = (sides[0], sides[-1])
    if args.resize is not None and args.resize < 16:
        raise UsageError(f"--resize {args.resize}: give at least 16 pixels")
    return PreprocessSettings(resize=args.resize, crop=crop, mean=_numbers("--mean", args.mean),
                              std=_numbers("--std", args.std, positive=True),
                              interpolation=args.interpolation)  # fmt: skip


def with_preprocessing(bundle: LoadedModel, args: argparse.Namespace) -> LoadedModel:
    """``bundle`` with the --resize, --crop, --mean, --std and --interpolation given (a UsageError naming the
    option for a value that is not one or does not fit the model), for the commands other than explain."""
    return replace(bundle, preprocessing=preprocess_settings(args).applied_to(bundle.preprocessing))


def _numbers(flag: str, text: str | None, positive: bool = False) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406") from None
    if not all(math.isfinite(v) for v in values) or (positive and min(values) <= 0):
        raise UsageError(f"{flag} {text!r}: give finite numbers{', each above 0' if positive else ''}")
    return values


def add_ray_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, verb: str) -> None:
    """--engine, --address, --actors, --cpus-per-actor and --gpus-per-actor, for ``verb`` on a Ray cluster."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help=f"ray: {verb} on a Ray cluster")
    parser.add_argument("--address", default=None, help="ray: 'auto' or ray://HOST:PORT (default: a local instance)")
    parser.add_argument("--actors", type=int, default=2, help="ray: model replicas")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="ray: CPUs reserved by each actor")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, help="ray: GPUs given to each actor")
    parser.add_argument(
        "--verbose", action="store_true", help="also show Ray's and transformers' own logs and loading bars"
    )


def load_bundle(args: argparse.Namespace, images: bool = True) -> LoadedModel:
    """The model of ``--model``/``--weights``/``--trust-weights``/``--device``, named by ``--labels`` (checked
    on a black image where the inputs are ``images``, else on the first real output)."""
    return load_model_and_labels(args.model, args.weights, args.device, trust_weights=args.trust_weights,
                                 labels=args.labels, images=images)  # fmt: skip


def find_reporting_missing(paths: list[str], exclude: Sequence[Path] = ()) -> FoundImages:
    """The photos under ``paths`` (none from the ``exclude`` folders: a run's own outputs); each missing
    path gets one line on stderr (and the run goes on)."""
    found = find_images(paths, exclude)
    report_missing(found)
    return found


def report_missing(found: FoundImages) -> None:
    for missing in found.missing:
        print(f"gradcam: error: {missing}: no such file or folder", file=sys.stderr)


def progress_bar(total: int | None, unit: str, desc: str, quiet: bool) -> contextlib.AbstractContextManager:
    """A tqdm bar on stderr (nothing with ``quiet``): a context manager giving ``update(n)`` or None."""

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[int], object] | None]:
        if quiet:
            yield None
            return
        from tqdm import tqdm

        with tqdm(total=total, unit=unit, desc=desc, file=sys.stderr) as shown:
            yield shown.update

    return bar()


def report_failures(entries: Sequence[PhotoRecord]) -> None:
    for entry in entries:
        if not entry.ok:
            print(f"gradcam: {entry.error}", file=sys.stderr)


def print_summary(entries: list[PhotoRecord], manifest: object, skipped: int, limit: int = 20) -> None:
    """A table of the first ``limit`` inputs (prediction and files), the counts and where the page is."""
    rows = []
    for entry in entries[:limit]:
        if entry.ok:
            best = entry.predictions[0] if entry.predictions else None
            shown = [Path(t.files["overlay"]).name for t in entry.targets if "overlay" in t.files]
            value = (best.probability if best.probability is not None else best.similarity or 0.0) if best else 0.0
            prediction = f"{best.label} ({value:.2f})" if best else "-"
            rows.append((entry.path, prediction, ", ".join(shown) or "(kept in the manifest)"))
        else:
            rows.append((entry.path, "FAILED", (entry.error or "").split(": ", 1)[-1]))
    header = ("image", "prediction", "overlay")
    widths = [min(60, max(len(r[i]) for r in [*rows, header])) for i in range(2)]

    def fit(cell: str, width: int) -> str:  # a long path keeps its end, where the file name is
        return cell.ljust(width) if len(cell) <= width else "..." + cell[-(width - 3) :]

    print("  ".join([*(fit(h, w) for h, w in zip(header, widths, strict=False)), header[2]]))
    for row in rows:
        print("  ".join([fit(row[0], widths[0]), fit(row[1], widths[1]), row[2]]))  # the files in full
    if len(entries) > limit:
        print(f"... and {len(entries) - limit} more")
    ok = sum(1 for e in entries if e.ok)
    note = f"; {skipped} non-image files skipped" if skipped else ""
    print(f"{ok} explained, {len(entries) - ok} failed{note}. Manifest: {manifest}")
    page = Path(str(manifest)).with_name("index.html")
    if page.exists():
        print(f"Open {page} to see every overlay.")
