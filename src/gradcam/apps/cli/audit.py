"""``gradcam audit``: the command-line face of :func:`gradcam.audit` (parsing, progress, the summary)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...io.images import DEFAULT_MAX_MEGAPIXELS, FRAMES
from ...io.models import ModelLoadError
from ...methods import methods
from ...pipeline.options import UsageError
from .console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Formatter,
    add_photos_and_model,
    add_preprocessing_options,
    add_ray_options,
    preprocess_settings,
)
from .summaries import SUMMARIES


def add_parser(commands: Any) -> None:
    """The ``audit`` subcommand."""
    audit = commands.add_parser(
        "audit",
        help=SUMMARIES["audit"],
        formatter_class=Formatter,
        description="Explain every photo, measure where each map's energy sits (border, corners, object boxes), "
        "cluster each class's maps (spectral relevance analysis), flag classes whose maps agree across different "
        "photos far more than another class's maps on the same photos, and clusters that look at a corner, the "
        "border, away from the object or at one fixed place; test each flag by experiment (remove the region, "
        "paste it elsewhere). Writes audit.html, audit.json and the maps into --out.",
    )
    add_photos_and_model(audit)
    audit.add_argument(
        "--truth",
        default=None,
        metavar="CSV|FOLDER",
        help="the true classes: a CSV image,class, or a folder with one sub-folder per class (ImageFolder); "
        "without it each photo's predicted class is audited",
    )
    audit.add_argument(
        "--boxes",
        default=None,
        metavar="FILE",
        help='object boxes: JSON {"photo": [[x1, y1, x2, y2], ...]} in photo pixels, or COCO JSON / CSV as evaluate',
    )
    audit.add_argument("--compare", default=None, metavar="MODEL2", help="a second model to compare maps with")
    audit.add_argument("--compare-weights", default=None, metavar="FILE", help="weights of --compare")
    audit.add_argument("--compare-labels", default=None, metavar="FILE", help="class names of --compare")
    audit.add_argument("--method", default="gradcam", choices=methods(), help="the CAM method")
    audit.add_argument("--layer", default=None, help="layer to explain (default: as for explain)")
    audit.add_argument("--out", default="gradcam-audit", help="output folder")
    audit.add_argument("--overwrite", action="store_true", help="replace an earlier audit in --out")
    audit.add_argument("--batch-size", type=int, default=16, help="photos per forward pass")
    audit.add_argument("--workers", type=int, default=2, help="decoding processes")
    audit.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    audit.add_argument(
        "--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS, help="refuse photos larger than this"
    )
    audit.add_argument(
        "--prove",
        default=None,
        metavar="CLASS[,CLASS...]",
        help="also run the experiments (occlusion and transplant of the suspected region) for these classes, "
        "flagged or not (flagged classes always get them)",
    )
    audit.add_argument(
        "--classes",
        default=None,
        metavar="CLASS[,CLASS...]|all",
        help="follow these classes over every photo, other classes' photos included: where does the model find "
        "evidence for them in photos that do not show them? (all: the classes of --truth, else every class of the "
        "model, within a time and memory budget; each costs one more backward pass per batch)",
    )
    seen = audit.add_argument_group("how the model sees the photos (as it was trained)")
    seen.add_argument(
        "--frame",
        choices=list(FRAMES),
        default="crop",
        help="crop = the model's own preprocessing (centre crop); full = the whole photo with its aspect ratio; "
        "squash = the whole photo resized to the model's input size",
    )
    add_preprocessing_options(seen)
    audit.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_ray_options(audit, "audit")


def run(args: argparse.Namespace) -> int:
    from ...audits import AuditError, audit

    if args.batch_size < 1 or args.workers < 0 or args.actors < 1 or min(args.cpus_per_actor, args.gpus_per_actor) < 0:
        return _error("--batch-size and --actors must be >= 1; --workers, --cpus-per-actor, --gpus-per-actor >= 0")
    bar: Any = None

    def start(total: int) -> None:
        nonlocal bar
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc="auditing", file=sys.stderr)

    try:
        preprocessing = preprocess_settings(args)
    except UsageError as problem:
        return _error(str(problem))
    prove = [part.strip() for part in (args.prove or "").split(",") if part.strip()]
    followed = None if args.classes is None else [part.strip() for part in args.classes.split(",") if part.strip()]
    try:
        result = audit(
            args.paths, args.model, weights=args.weights, labels=args.labels, truth=args.truth, boxes=args.boxes,
            compare=args.compare, compare_weights=args.compare_weights, compare_labels=args.compare_labels,
            method=args.method, layer=args.layer, out=args.out, engine=args.engine, batch_size=args.batch_size,
            workers=args.workers, device=args.device, overwrite=args.overwrite, trust_weights=args.trust_weights,
            max_megapixels=args.max_megapixels, actors=args.actors, address=args.address,
            cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, on_start=start,
            progress=lambda n: bar.update(n) if bar else None, frame=args.frame, preprocessing=preprocessing,
            prove=prove, classes=followed,
        )  # fmt: skip
    except (AuditError, ModelLoadError) as error:
        return _error(str(error))
    finally:
        if bar is not None:
            bar.close()
    report = result.findings.head  # audit.json without its per-photo lists
    for failed in report["failed"]:
        print(f"gradcam: {failed['error']}", file=sys.stderr)
    if not args.quiet:
        _print_summary(report, result.out)
    return EXIT_FAILED if report["failed"] else EXIT_OK


def _print_summary(report: dict[str, Any], out: Path) -> None:
    summary = report["summary"]
    accuracy = "" if summary["accuracy"] is None else f", accuracy {summary['accuracy']:.1%}"
    print(
        f"{summary['audited']} photos, {summary['classes']} classes{accuracy}; {report['method']} on {report['layer']}"
    )
    flagged = [c for c in report["classes"] if c["flagged"]]
    if flagged:
        print(f"possible shortcuts in {len(flagged)} class{'es' if len(flagged) != 1 else ''}:")
        for entry in flagged:
            for reason in entry["reasons"]:
                print(f"  {entry['name']}: {reason}")
    else:
        print("no class flagged")
    for entry in report["classes"]:
        if entry.get("evidence") is not None:
            print(f"  experiment, {entry['name']}: {entry['evidence']['verdict']}")
    for entry in report.get("followed", []):
        print(
            f"followed {entry['name']}: on {entry['other_photos']} photos of other classes, mean probability "
            f"{_share(entry['probability_on_others'])}, predicted on {entry['predicted_on_others']}"
            + ("" if entry["flagged"] else "; not flagged")
        )
        for reason in entry["reasons"]:
            print(f"  {entry['name']}: {reason}")
        if entry.get("evidence") is not None:
            print(f"  experiment, {entry['name']}: {entry['evidence']['verdict']}")
    for hint in report.get("hints", []):
        print(f"hint: {hint}")
    if summary["right_for_wrong_reason"]:
        print(f"{summary['right_for_wrong_reason']} photos right for the wrong reason (energy outside their boxes)")
    comparison = report.get("comparison")
    if comparison is not None:
        print(
            f"compared with {report['compared_model']}: rank correlation {comparison['rank_correlation']}, "
            f"top-20% IoU {comparison['top20_iou']}, {comparison['prediction_changes']} predictions changed"
        )
    print(f"report: {out / 'audit.html'}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _error(message: str) -> int:
    print(f"gradcam: error: {message}", file=sys.stderr)
    return EXIT_USAGE
