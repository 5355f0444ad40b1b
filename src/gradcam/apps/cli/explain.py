"""``gradcam explain``: every input kind, every engine, one options type.

The command line becomes one :class:`~gradcam.pipeline.options.RunOptions` here (:func:`options_from_args`,
the one place); the inputs' kind comes from the registry (:mod:`gradcam.pipeline.kinds`), which refuses an
option the kind does not honour before anything runs; then the kind's engine runs: the photo Runner, the
one-file-at-a-time runner, or Ray.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...io.images import DEFAULT_MAX_MEGAPIXELS
from ...io.models import DEFAULT_MODEL, MODEL_SOURCES, LoadedModel, ModelLoadError
from ...methods import methods
from ...pipeline.kinds import (
    KINDS,
    FoundInputs,
    InputKind,
    after_loading,
    find_inputs,
    for_model,
    refuse_unsupported,
    undecided,
)
from ...pipeline.options import RunOptions, UsageError, parse_target
from ...render.report import untrained_warning
from .console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Formatter,
    add_labels_option,
    add_preprocessing_options,
    add_ray_options,
    add_trust_option,
    load_bundle,
    print_summary,
    progress_bar,
    report_failures,
    report_missing,
    usage_error,
)
from .explain_options import MAX_BATCH_SIZE, options_from_args
from .summaries import SUMMARIES


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "explain",
        help=SUMMARIES["explain"],
        formatter_class=Formatter,
        description="Explain each photo: an overlay at the photo's resolution (JPEG by default), and a "
        "results.json manifest in --out that keeps every map (float16, at the layer's resolution) and an "
        "index.html page to look through them.",
    )
    inputs = run.add_argument_group("inputs")
    model = run.add_argument_group("model")
    method = run.add_argument_group("method")
    targets = run.add_argument_group("targets")
    outputs = run.add_argument_group("outputs")
    videos = run.add_argument_group("videos")
    preprocessing = run.add_argument_group("preprocessing (what the model was trained with; photos and videos)")
    detectors = run.add_argument_group("detectors (--model yolo:...)")
    running = run.add_argument_group("running")
    inputs.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    model.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="efficientnet_lite0 (offline), a torchvision model name, "
        + ", ".join(f"{s.spelling} ({s.what})" for s in MODEL_SOURCES)
        + ", or a whole model file MODEL.pt (with --trust-weights); `gradcam models` lists them",
    )
    model.add_argument(
        "--weights",
        default=None,
        help="a local state dict, checkpoint or .safetensors file, or 'none' for random weights (default: the "
        "pretrained weights)",
    )
    add_trust_option(model)
    add_labels_option(model)
    add_preprocessing_options(preprocessing)
    method.add_argument("--method", default="gradcam", help="the CAM method: " + ", ".join(methods()))
    method.add_argument(
        "--layer",
        default=None,
        help="layer to explain (default: a known-good layer per model family, else the last spatial layer), or "
        "several comma-separated (maps fused); see `gradcam layers MODEL`",
    )
    targets.add_argument(
        "--target",
        default=None,
        help="top-1 if omitted; a class index, an ImageNet class name, 'top3', several comma-separated, or 'all' "
        "(every class's map saved as one float16 array per photo, the top 3 drawn)",
    )
    targets.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="with an image-text model (clip:ARCH, a Hugging Face CLIP/SigLIP): explain the similarity of the photo "
        "to this text; with an OWL-ViT/OWLv2 detector: a text query, its boxes explained; repeat for several "
        "prompts (one forward pass for all)",
    )
    method.add_argument(
        "--counterfactual", action="store_true", help="show what speaks against the target (negated gradients)"
    )
    method.add_argument(
        "--eigen-smooth", action="store_true", help="first principal component of w_c * A_c (less noise)"
    )
    method.add_argument("--aug-smooth", action="store_true", help="average 6 flipped/scaled copies (6x the cost)")
    method.add_argument("--guided", action="store_true", help="also write the Guided Grad-CAM picture")
    method.add_argument(
        "--perturbation-batch",
        type=int,
        default=32,
        help="masked/ablated copies per forward pass (scorecam, ablationcam)",
    )
    method.add_argument(
        "--top-channels", type=int, default=None, metavar="N", help="scorecam: score only the N most varied channels"
    )
    method.add_argument(
        "--method-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an option of the method, repeatable: fem k=1.5, kpcacam kernel=rbf gamma=0.01, randomcam seed=3",
    )
    model.add_argument("--prefix-tokens", type=int, default=None, help="transformers: tokens before the patch grid")
    model.add_argument("--token-grid", default=None, metavar="HxW", help="transformers: the patch grid, e.g. 14x14")
    outputs.add_argument(
        "--save",
        default="overlay",
        metavar="LIST",
        help="outputs per target, comma-separated: overlay (the picture), map (float32 .npy at the model's input "
        "size), channels (the per-feature-map grid, as --per-channel), guided (as --guided); the manifest keeps "
        "every map either way",
    )
    outputs.add_argument(
        "--format", default="jpg", choices=["jpg", "png", "webp"], help="the overlays' file format (JPEG quality 90)"
    )
    outputs.add_argument(
        "--per-channel",
        type=int,
        default=0,
        metavar="N",
        help="also write a grid of the N feature maps that contribute most",
    )
    outputs.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay, 0..1")
    outputs.add_argument("--colormap", default="jet", help="any matplotlib colormap")
    model.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    running.add_argument(
        "--batch-size", type=int, default=8, help=f"images per forward pass (at most {MAX_BATCH_SIZE})"
    )
    running.add_argument(
        "--workers",
        type=int,
        default=2,
        help="background processes decoding images for a single model (0: none); replicas decode their own",
    )
    running.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="copies of the model explaining batches side by side, each on a share of the CPU threads "
        "(default: one per thread on a CPU for a model up to 512 MB, else 1)",
    )
    outputs.add_argument("--out", default="gradcam-out", help="output folder")
    outputs.add_argument("--overwrite", action="store_true", help="replace existing output files")
    running.add_argument("--resume", action="store_true", help="skip images already explained in --out's results.json")
    inputs.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="refuse larger images (a larger JPEG is decoded at a reduced scale that fits) and video frames; for "
        "volumes and signals, millions of values",
    )
    outputs.add_argument(
        "--frame",
        choices=["crop", "full", "squash"],
        default="crop",
        help="what the model sees: crop = its own preprocessing (centre crop; the rest of the photo is dimmed and "
        "the crop framed), full = the whole photo with its aspect ratio (one fixed-size models: squash), "
        "squash = the whole photo resized to the model's input size",
    )
    outputs.add_argument(
        "--tint",
        choices=["flat", "heat"],
        default="flat",
        help="flat = the heatmap at --alpha everywhere; heat = in proportion to the heat (low heat barely tints)",
    )
    outputs.add_argument(
        "--scale",
        choices=["own", "shared"],
        default="own",
        help="own = each map coloured from its own minimum to its own maximum; shared = a photo's maps (its "
        "targets) on one scale, the strongest map's maximum, so weak evidence looks weak (the legend and "
        "results.json's raw_max give the numbers)",
    )
    outputs.add_argument(
        "--legend",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a footer under each photo's overlay: what it shows (class, score, probability) and the colour scale, "
        "so that a picture shared on its own says what it is (the default for photos); --no-legend: the overlay "
        "at the photo's own size only",
    )
    outputs.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="N",
        help="overlays at most N pixels long (smaller files; default: each photo's own resolution)",
    )
    videos.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        metavar="S",
        help="videos explained frame by frame with an image model: keep S of the previous frame's map (0 to <1)",
    )
    videos.add_argument(
        "--every", type=int, default=1, metavar="N", help="videos: explain every N-th frame (the output keeps those)"
    )
    detectors.add_argument(
        "--conf", type=float, default=0.25, metavar="C",
        help="keep the boxes the detector is at least C confident of (0 to 1), after its own non-maximum "
        "suppression; a segmentation model's classes whose mean probability over their region is at least C",
    )  # fmt: skip
    detectors.add_argument("--max-boxes", type=int, default=10, metavar="N", help="explain at most N boxes a photo")
    inputs.add_argument(
        "--kind",
        default=None,
        choices=list(KINDS),
        help="what the inputs are (default: guessed from each file): photo, image (an image array at full "
        "precision: a 16-bit or float TIFF, a .npy (H, W) or (C, H, W) such as a spectrogram), video, volume, signal",
    )
    running.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    add_ray_options(running, "explain")


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        inputs = find_inputs(args.paths, exclude=[Path(args.out)], override=args.kind)
        inputs = replace(inputs, kind=for_model(inputs.kind, args.model))
        if not undecided(args.model):  # else once the model is loaded and its kind known
            refuse_unsupported(inputs.kind, options)
    except UsageError as problem:
        return usage_error(str(problem))
    if not inputs.found.paths:  # nothing to explain: one line says why
        missing = inputs.found.missing
        if missing:
            return usage_error(", ".join(missing) + ": no such file or folder; no images found")
        return usage_error("no images found in " + ", ".join(args.paths))
    report_missing(inputs.found)
    try:
        bundle = load_bundle(args, images=inputs.kind.images)
        known = after_loading(inputs.kind, bundle.is_detector)
        if known is not inputs.kind or undecided(args.model):  # a hub detector, a yolo: checkpoint that classifies
            inputs = replace(inputs, kind=known)
            refuse_unsupported(known, options)
        check_targets(bundle, inputs.kind, options)
        said = untrained_warning(bundle.name, bundle.source)
        if said:
            print(f"gradcam: warning: {said}", file=sys.stderr)
        bundle = inputs.kind.preprocessed(bundle, options)
        seen = inputs.kind.preprocessing_of(bundle)
        if seen is not None and not args.quiet:
            print(f"gradcam: preprocessing: {seen.describe()}", file=sys.stderr)
    except (ModelLoadError, UsageError) as problem:
        return usage_error(str(problem))
    except RuntimeError as problem:  # e.g. an unavailable --device
        return usage_error(f"--device {args.device}: {str(problem).splitlines()[0]}")
    if options.engine == "ray":
        return _on_ray(args, inputs, options, bundle)
    if inputs.kind.batched:
        return _photos(args, inputs, options, bundle)
    return _files(args, inputs, options, bundle)


def check_targets(bundle: LoadedModel, kind: InputKind, options: RunOptions) -> None:
    """Before anything runs: the prompts fit the model, the targets name its classes, the layer exists, and
    the kind takes the target (a video one class, volumes and signals no ``all``)."""
    image_text = bool(bundle.extra.get("image_text") or bundle.extra.get("queries"))
    if image_text and not options.prompts:
        raise UsageError(f"{bundle.name} is an image-text model: say what to look for with --prompt TEXT")
    if options.prompts and not image_text:
        raise UsageError(f"--prompt: {bundle.name} is not an image-text model; use clip:ARCH or a CLIP/SigLIP hf:")
    if options.target == "all" and not kind.batched:
        raise UsageError(f"--target all: not for {kind.plural} (every class's maps are kept for photos only)")
    if kind.name == "video":
        from ...pipeline.video import video_target

        video_target(options, bundle.labels)
    elif kind.name == "detection":  # the classes whose boxes are kept
        from ...pipeline.detect import detection_classes

        detection_classes(options.target, list(options.prompts) if bundle.extra.get("queries") else bundle.labels)
    elif options.target != "all":
        parse_target(options.target, bundle.labels, len(bundle.labels) if bundle.labels is not None else None)
    if options.layer is not None and kind.batched:
        from ...layers import resolve_layers
        from ...pipeline.options import layer_spec

        try:
            resolve_layers(bundle.model, layer_spec(options.layer))
        except ValueError as problem:
            raise UsageError(str(problem)) from None


def _photos(args: argparse.Namespace, inputs: FoundInputs, options: RunOptions, bundle: LoadedModel) -> int:
    from ...pipeline.local import Runner
    from ...pipeline.manifest import OutputError

    found = inputs.found
    runner = Runner(bundle, found, options, kind=inputs.kind.name)
    quiet = args.quiet or len(found.paths) <= 1
    try:
        with progress_bar(len(found.paths), "img", "explaining", quiet) as update:
            result = runner.run(progress=update)
    except UsageError as problem:
        return usage_error(str(problem))
    except OutputError as problem:
        print(f"gradcam: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    report_failures(result.entries)
    if not args.quiet:
        print_summary(result.entries, result.manifest_path, found.skipped)
    if result.interrupted:
        print(
            f"gradcam: interrupted; {result.manifest_path} lists what was done (continue with --resume)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed or found.missing else EXIT_OK


def _files(args: argparse.Namespace, inputs: FoundInputs, options: RunOptions, bundle: LoadedModel) -> int:
    """Videos, volumes and signals, one file at a time; a line per file explained."""
    from ...pipeline.file_runs import FileRunner

    kind = inputs.kind

    def progress(path: Path) -> Any:
        total = None
        if kind.name == "video":
            from ...io.video import VideoReadError, video_info

            try:
                total = video_info(path).frames // options.video.every or None
            except VideoReadError:
                total = None
        unit = "frame" if kind.name == "video" else "file"
        return progress_bar(total, unit, path.name, args.quiet or kind.name != "video")

    try:
        result = FileRunner(bundle, inputs.found, kind, options).run(progress)
    except UsageError as problem:
        return usage_error(str(problem))
    report_failures(result.entries)
    if not args.quiet:
        print_file_lines(result.entries)
        ok = len(result.entries) - result.failed
        print(f"{ok} explained, {result.failed} failed. Manifest: {result.manifest_path}")
    return EXIT_FAILED if result.failed or inputs.found.missing else EXIT_OK


def print_file_lines(entries: list[Any]) -> None:
    """One line per file explained: what it was and the files written."""
    for record in entries:
        if not record.ok:
            continue
        if record.kind == "detection" and not record.targets:
            print(f"{record.path}: no box kept (lower --conf to see less confident ones)")
        for target in record.targets:
            files = ", ".join(target.files.values())
            if record.frames is not None:
                print(f"{record.path}: {record.frames} frames, {target.label}: {files}")
            elif record.kind == "detection":
                print(f"{record.path}: {target.label} {target.score:.2f} at {list(target.box or ())}: {files}")
            else:
                print(f"{record.path}: a {record.kind} {tuple(record.shape or ())}, {target.label}: {files}")


def _on_ray(args: argparse.Namespace, inputs: FoundInputs, options: RunOptions, bundle: LoadedModel) -> int:
    try:
        from ...pipeline.ray import explain_dataset
    except ImportError as problem:
        return usage_error(f"--engine ray needs the ray extra: pip install 'gradcam[ray]' ({problem.name} is missing)")
    if inputs.kind.batched:
        from ...pipeline.local import resolve_frame

        options = resolve_frame(bundle, options)
    try:
        result = explain_dataset(
            args.paths if len(args.paths) > 1 else args.paths[0],
            args.out,
            model=args.model,
            weights=args.weights,
            trust_weights=args.trust_weights,
            labels=list(bundle.labels) if args.labels and bundle.labels is not None else None,
            options=replace(options, kind=inputs.kind.name),
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            address=args.address,
            preprocessing=inputs.kind.preprocessing_of(bundle),
        )
    except UsageError as problem:
        return usage_error(str(problem))
    report_failures(result.entries or [])
    print(
        f"{result.ok} explained, {result.failed} failed in {result.seconds:.1f} s on Ray. Manifest: {result.manifest}"
    )
    return EXIT_FAILED if result.failed else EXIT_OK
