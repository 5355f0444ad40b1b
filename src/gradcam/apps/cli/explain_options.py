"""``gradcam explain``'s command line as one :class:`~gradcam.pipeline.options.RunOptions`: every check of
a value no input kind could take, in one place (a UsageError of one line naming the option)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...methods import get_method, methods
from ...pipeline.method_options import method_with_options
from ...pipeline.options import DetectionSettings, RunOptions, UsageError, VideoSettings
from ...pipeline.writer import OUTPUTS
from .console import preprocess_settings

MAX_BATCH_SIZE = 512  # bounds the decoded photos held at once; larger batches gain nothing on any device


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The one place where the command line becomes :class:`RunOptions`; a UsageError (one line naming the
    option) for a value no kind could take."""
    from ...render.viz import colormap_table

    try:
        args.method = get_method(args.method).name
    except ValueError as problem:
        raise UsageError(f"--method {args.method}: {problem}") from None

    if not 0 <= args.alpha <= 1:
        raise UsageError(f"--alpha {args.alpha}: must be between 0 and 1")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE or args.workers < 0 or args.per_channel < 0:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}; --workers and --per-channel >= 0")
    if args.replicas is not None and args.replicas < 1:
        raise UsageError(f"--replicas {args.replicas}: give at least 1")
    if args.perturbation_batch < 1:
        raise UsageError("--perturbation-batch must be >= 1")
    if not args.max_megapixels > 0 or args.max_megapixels == float("inf"):
        raise UsageError(f"--max-megapixels {args.max_megapixels}: must be a positive number")
    if args.max_side is not None and args.max_side < 16:
        raise UsageError(f"--max-side {args.max_side}: give at least 16 pixels")
    if args.every < 1 or not 0 <= args.smoothing < 1:
        raise UsageError("--every N: N >= 1; --smoothing S: 0 <= S < 1")
    if not 0 <= args.conf <= 1 or args.max_boxes < 1:
        raise UsageError(f"--conf {args.conf}: between 0 and 1; --max-boxes {args.max_boxes}: 1 or more")
    method_options = []
    for item in args.method_option or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--method-option {item!r}: write it as KEY=VALUE, e.g. k=1.5")
        method_options.append((key.strip(), value.strip()))
    if method_options:
        method_with_options(args.method, method_options)
    chosen = type(get_method(args.method))
    if args.top_channels is not None and (args.top_channels < 1 or not chosen.accepts("top_channels")):
        takers = ", ".join(m for m in methods() if type(get_method(m)).accepts("top_channels"))
        raise UsageError(f"--top-channels N: N >= 1, with --method {takers}")
    save = tuple(dict.fromkeys(part.strip() for part in args.save.split(",") if part.strip()))
    unknown = [part for part in save if part not in OUTPUTS]
    if unknown or not save:
        raise UsageError(f"--save {args.save!r}: choose from {', '.join(OUTPUTS)} (comma-separated)")
    per_channel = args.per_channel or (8 if "channels" in save else 0)
    if per_channel and not chosen.channel_weights:
        raise UsageError(
            f"--per-channel: {args.method} has no channel weights; choose a gradient or perturbation method"
        )
    grid = None
    if args.token_grid is not None:
        try:
            height, width = (int(v) for v in args.token_grid.lower().split("x"))
            grid = (height, width)
        except ValueError:
            raise UsageError(f"--token-grid {args.token_grid!r}: write it as HxW, e.g. 14x14") from None
    try:
        colormap_table(args.colormap)
    except ValueError as problem:
        raise UsageError(f"--colormap: {problem}") from None
    prompts = tuple(p.strip() for p in args.prompt or ())
    if any(not p for p in prompts):
        raise UsageError("--prompt: an empty prompt; give the text to look for")
    if prompts and args.target is not None:
        raise UsageError("--prompt and --target: the prompts are the targets; give one or the other")
    if args.engine == "ray" and (args.actors < 1 or args.cpus_per_actor < 0 or args.gpus_per_actor < 0):
        raise UsageError("--actors must be >= 1; --cpus-per-actor and --gpus-per-actor >= 0")
    return RunOptions(
        out=Path(args.out),
        method=args.method,
        layer=args.layer,
        target="all" if (args.target or "").strip().lower() == "all" else args.target,
        prompts=prompts,
        per_channel=per_channel,
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
        scale=args.scale,
        counterfactual=args.counterfactual,
        eigen_smooth=args.eigen_smooth,
        aug_smooth=args.aug_smooth,
        guided=args.guided or "guided" in save,
        perturbation_batch=args.perturbation_batch,
        method_options=tuple(method_options),
        top_channels=args.top_channels,
        prefix_tokens=args.prefix_tokens,
        token_grid=grid,
        save=tuple(part for part in save if part not in ("channels", "guided")) or ("overlay",),
        format=args.format,
        video=VideoSettings(every=args.every, smoothing=args.smoothing),
        detection=DetectionSettings(conf=args.conf, max_boxes=args.max_boxes),
        preprocess=preprocess_settings(args),
        kind=args.kind,
        engine=args.engine,
    )
