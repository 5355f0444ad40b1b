"""``gradcam evaluate``: how faithful and well-localised the maps of several methods are."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from ...io.models import ModelLoadError
from ...methods import get_method, methods
from .console import (
    EXIT_FAILED,
    EXIT_OK,
    Formatter,
    add_photos_and_model,
    add_preprocessing_options,
    find_reporting_missing,
    load_bundle,
    usage_error,
    with_preprocessing,
)
from .summaries import SUMMARIES

EVALUATED = [m for m in methods() if get_method(m).evaluated_by_default]  # evaluate's default list


def add_parser(commands: Any) -> None:
    judge = commands.add_parser(
        "evaluate",
        help=SUMMARIES["evaluate"],
        formatter_class=Formatter,
        description="Deletion/insertion, Average Drop/Increase, ROAD, pointing game (with --boxes) and, with "
        "--sanity, the model-randomisation check, for each method and layer; writes report.md, results.json "
        "and curves.png into --out.",
    )
    add_photos_and_model(judge)
    judge.add_argument(
        "--methods",
        default=",".join(EVALUATED),
        help=f"comma-separated methods (default: {', '.join(EVALUATED)}; scorecam, sscam, iscam and ablationcam "
        "are slower, gradeclip needs a ViT, cam a pooled linear head: add them by name)",
    )  # fmt: skip
    judge.add_argument(
        "--method-option",
        action="append",
        default=None,
        metavar="[METHOD:]KEY=VALUE",
        help="an option of the methods that take it (or of METHOD only), repeatable: k=3, dff:k=3, sscam:samples=8",
    )
    judge.add_argument(
        "--layers", default=None, help="comma-separated layers to compare (default: the model's default)"
    )
    judge.add_argument("--boxes", default=None, help="COCO-style JSON or CSV (image,class,x1,y1,x2,y2) of object boxes")
    judge.add_argument("--steps", type=int, default=16, help="points on the deletion and insertion curves")
    judge.add_argument("--batch-size", type=int, default=32, help="perturbed images per forward pass")
    judge.add_argument("--sanity", action="store_true", help="also run the cascading model-randomisation check")
    judge.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    judge.add_argument("--out", default="gradcam-eval", help="report folder")
    add_preprocessing_options(judge.add_argument_group("preprocessing (as the model was trained; as for explain)"))


def run(args: argparse.Namespace) -> int:

    from ...explain import explain
    from ...hooks import is_out_of_memory
    from ...pipeline.method_options import methods_with_options
    from ...pipeline.options import UsageError
    from ..evaluate import EvaluationOptions, evaluate, read_boxes, terminal_table, write_report

    try:
        chosen = [get_method(m).name for m in args.methods.split(",") if m.strip()]
    except ValueError as error:
        return usage_error(f"--methods: {error}")
    if not chosen or args.steps < 1 or args.batch_size < 1:
        return usage_error("--methods needs at least one method; --steps and --batch-size must be >= 1")
    try:
        built = methods_with_options(chosen, args.method_option or ())
    except UsageError as error:
        return usage_error(str(error))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return usage_error(f"--out {out}: is a file; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return usage_error(f"--out {out}: cannot write there ({error.strerror}); choose another folder")
    found = find_reporting_missing(args.paths, exclude=[out])
    if not found.paths:
        return usage_error("no images found in " + ", ".join(args.paths))
    try:
        bundle = with_preprocessing(load_bundle(args), args)
    except (ModelLoadError, UsageError) as error:
        return usage_error(str(error))
    if bundle.extra.get("image_text"):
        return usage_error(
            f"{bundle.name} is an image-text model; gradcam evaluate measures classifiers (prompts: not yet)"
        )
    layers: list[str | None] = [name.strip() for name in args.layers.split(",")] if args.layers else [None]
    probe = bundle.black_image(args.device)
    try:
        for name in layers:
            if name is not None:
                try:  # one forward pass per layer: a layer without a spatial map fails here, not at the end
                    explain(bundle.model, probe, "gradcam", name)
                except (ValueError, TypeError) as error:
                    raise ValueError(f"--layers {name}: cannot be explained ({str(error).splitlines()[0]})") from None
        boxes = read_boxes(Path(args.boxes), bundle.labels) if args.boxes else {}
    except ValueError as error:
        return usage_error(str(error))
    options = EvaluationOptions(built, layers, args.steps, args.batch_size, args.sanity, boxes=boxes)
    print(_estimate(bundle, probe, len(found.paths), chosen, len(layers), args), flush=True)
    from tqdm import tqdm

    try:
        with tqdm(
            total=len(found.paths) * len(chosen) * len(layers), unit="map", desc="evaluating", file=sys.stderr
        ) as bar:
            evaluation = evaluate(bundle, found, options, progress=bar.update)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"gradcam: error: out of memory; lower --batch-size (now {args.batch_size})", file=sys.stderr)
        return EXIT_FAILED
    for message in evaluation.errors:
        print(f"gradcam: {message}", file=sys.stderr)
    if not evaluation.rows:
        return usage_error("nothing was measured: no image could be read, or every method refused (above)")
    try:
        report = write_report(evaluation, out, bundle.name)
    except OSError as error:
        print(f"gradcam: error: --out {out}: cannot write the report ({error.strerror})", file=sys.stderr)
        return EXIT_FAILED
    print(terminal_table(evaluation.summary, evaluation.identical))
    print(textwrap.fill((evaluation.verdict or {}).get("text", ""), width=96))
    print(f"Report: {report} (also report.md, results.json, curves.png)")
    return EXIT_FAILED if evaluation.errors or found.missing else EXIT_OK


def _estimate(bundle: Any, probe: Any, photos: int, methods: list[str], layers: int, args: argparse.Namespace) -> str:
    """One line before the run: the forward passes it needs and about how long they take here (one batch
    of ``--batch-size`` timed now). Perturbation methods need more (their own forward passes per channel)."""
    import time

    import torch

    from ...hooks import preserved_state, run_model

    batch = probe.expand(min(args.batch_size, 32), -1, -1, -1).contiguous()
    with preserved_state(bundle.model), torch.inference_mode():
        run_model(bundle.model, batch[:1])  # warm-up
        started = time.perf_counter()
        run_model(bundle.model, batch)
        per_image = (time.perf_counter() - started) / len(batch)
    # per map: deletion + insertion (2 x steps), ROAD (8), Average Drop/Increase (2), the map itself (~3)
    per_map = 2 * args.steps + 8 + 2 + 3 + (6 * 6 if args.sanity else 0)
    slow = [m for m in methods if getattr(get_method(m), "needs_model", False)]
    seconds = photos * len(methods) * layers * per_map * per_image
    more = f" (more: {', '.join(slow)} re-run the model per channel)" if slow else ""
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"  # noqa: E731
    return (f"about {max(1, round(seconds))} s: {plural(photos, 'photo')} x {plural(len(methods), 'method')} x "
            f"{plural(layers, 'layer')}, {per_map} passes a map, {per_image * 1000:.0f} ms an image{more}")  # fmt: skip
