"""``gradcam concepts``: Deep Feature Factorization of photos from the command line.

The photos' activations at the layer are factorised together into k concepts shared by all of them; each
photo gets a picture (``NAME.concepts.png``: every place coloured by its strongest concept, a legend of
what each concept votes for and how much of the photo it holds) and ``concepts.json`` lists the concepts,
their classes and each photo's shares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ...io.images import DEFAULT_MAX_MEGAPIXELS
from .console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Formatter,
    add_photos_and_model,
    add_preprocessing_options,
    with_preprocessing,
)
from .summaries import SUMMARIES

DEFAULT_MAX_PHOTOS = 256


def add_parser(commands: Any) -> None:
    """The ``concepts`` subcommand."""
    parser = commands.add_parser(
        "concepts",
        help=SUMMARIES["concepts"],
        formatter_class=Formatter,
        description="Factorise the layer's activations of all the photos together into k concepts (non-negative "
        "matrix factorisation, Collins et al. 2018). Writes NAME.concepts.png per photo (each place coloured by its "
        "strongest concept, a legend of the classes each concept votes for), concepts.json and concepts.html into "
        "--out.",
    )
    add_photos_and_model(parser)
    parser.add_argument("--k", type=int, default=5, help="how many concepts")
    parser.add_argument("--layer", default=None, help="layer to factorise (default: as for explain)")
    parser.add_argument("--top", type=int, default=2, help="classes shown per concept")
    parser.add_argument("--out", default="gradcam-concepts", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier pictures and concepts.json")
    parser.add_argument("--batch-size", type=int, default=16, help="photos per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument(
        "--max-photos",
        type=int,
        default=DEFAULT_MAX_PHOTOS,
        help="refuse more photos than this (they are factorised together: the layer's activations of all are kept)",
    )
    parser.add_argument(
        "--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS, help="refuse photos larger than this"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_preprocessing_options(parser.add_argument_group("preprocessing (as the model was trained; as for explain)"))


def run(args: argparse.Namespace) -> int:
    from ...dff import concepts
    from ...io.images import ImageReadError, find_images, preprocess, read_image
    from ...io.models import ModelLoadError, load_bundle
    from ...pipeline.manifest import write_json_atomic
    from ...pipeline.naming import output_keys
    from ...pipeline.writer import save_picture
    from ...render.concepts import classes_text, colour_of, photo_concepts
    from ...render.report import write_concepts_page

    if args.k < 1 or args.top < 1 or args.batch_size < 1 or args.max_photos < 1:
        return _error("--k, --top, --batch-size and --max-photos must be >= 1")
    found = find_images(args.paths, [Path(args.out)])
    for missing in found.missing:
        print(f"gradcam: error: {missing}: no such file or folder", file=sys.stderr)
    if not found.paths:
        return _error("no photos found under " + ", ".join(args.paths))
    if len(found.paths) > args.max_photos:
        return _error(
            f"{len(found.paths)} photos: more than --max-photos {args.max_photos} (they are factorised together); "
            "give fewer photos or raise --max-photos"
        )
    out = Path(args.out)
    keys = output_keys(found)
    pictures = [out / f"{key}.concepts.png" for key in keys]
    existing = [p for p in [out / "concepts.json", out / "concepts.html", *pictures] if p.exists()]
    if existing and not args.overwrite:
        return _error(f"{existing[0]} exists; pass --overwrite to replace it, or choose another --out")
    try:
        bundle = load_bundle(args.model, args.weights, args.device, trust_weights=args.trust_weights,
                             labels=args.labels)  # fmt: skip
        bundle = with_preprocessing(bundle, args)
    except (ModelLoadError, ValueError, OSError) as error:  # UsageError is a ValueError
        return _error(str(error))

    inputs, kept, failed = [], [], []
    bar = _progress(len(found.paths), "reading", args.quiet)
    for index, path in enumerate(found.paths):
        try:
            tensor, geometry = preprocess(read_image(path, max_megapixels=args.max_megapixels), bundle.preprocessing)
        except (ImageReadError, OSError, ValueError) as error:
            print(f"gradcam: error: {path}: {str(error).splitlines()[0]}", file=sys.stderr)
            failed.append({"image": str(path), "error": str(error).splitlines()[0]})
        else:
            inputs.append(tensor)
            kept.append((index, geometry))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not inputs:
        return _error("no photo could be read") if failed else EXIT_USAGE
    images = torch.stack(inputs).to(args.device)
    try:
        layer = bundle.layer_for(args.layer, images[:1])
        found_concepts = concepts(bundle.model, images, args.k, layer, labels=bundle.labels,
                                  batch_size=args.batch_size)  # fmt: skip
    except ValueError as error:
        return _error(str(error).splitlines()[0])
    tops = found_concepts.top_classes(args.top)
    shares = found_concepts.shares()
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    bar = _progress(len(kept), "drawing", args.quiet)
    for row, (index, geometry) in enumerate(kept):
        path = found.paths[index]
        photo = read_image(path, max_megapixels=args.max_megapixels)
        picture = photo_concepts(photo, found_concepts.maps[row], geometry, tops, shares[row].tolist())
        pictures[index].parent.mkdir(parents=True, exist_ok=True)
        save_picture(picture, pictures[index])
        photos.append(
            {"image": str(path), "picture": str(pictures[index]), "shares": [round(float(s), 6) for s in shares[row]]}
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    found_json = {
        "version": 1,
        "model": bundle.name,
        "layer": found_concepts.layer,
        "k": args.k,
        "concepts": [
            {
                "concept": j + 1,
                "colour": "#{:02x}{:02x}{:02x}".format(*colour_of(j)),
                "classes": [{"class": name, "probability": round(p, 6)} for name, p in top],
            }
            for j, top in enumerate(tops)
        ],
        "photos": photos,
        "failed": failed,
    }
    write_json_atomic(found_json, out / "concepts.json")
    page = write_concepts_page(found_json, out)
    if not args.quiet:
        print(f"{len(photos)} photos, {args.k} concepts at {found_concepts.layer}:")
        for j, top in enumerate(tops):
            print(f"  {j + 1}. {classes_text(top) or '(no class scores for this layer)'}")
        print(
            f"Pictures and concepts.json in {out}; open {page}" + (f" ({len(failed)} photos failed)" if failed else "")
        )
    return EXIT_FAILED if failed else EXIT_OK


def _progress(total: int, verb: str, quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=verb, file=sys.stderr)


def _error(message: str) -> int:
    print(f"gradcam: error: {message}", file=sys.stderr)
    return EXIT_USAGE
