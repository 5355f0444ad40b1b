"""``gradcam serve``: try photos in the browser (the web extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...io.models import DEFAULT_MODEL
from .console import EXIT_OK, Formatter, add_labels_option, usage_error
from .summaries import SUMMARIES


def add_parser(commands: Any) -> None:
    web = commands.add_parser(
        "serve",
        help=SUMMARIES["serve"],
        description="Serve the web app: upload or paste a photo (or a video, a volume, a signal, an image array), "
        "choose methods and targets, download the maps; open an audit (--audit) or audit a zip of photos. Listens "
        "on 127.0.0.1 unless --host says otherwise.",
        formatter_class=Formatter,
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
    web.add_argument(
        "--trust-weights",
        action="store_true",
        help="also load the model files of --models whose loading runs code (an Ultralytics checkpoint "
        "yolo:FILE.pt, a whole pickled model): only files from a source you trust; uploads are never unpickled",
    )
    web.add_argument(
        "--audit",
        action="append",
        default=[],
        metavar="FOLDER",
        help="an audit folder (gradcam audit --out) to offer in the 'Audit a dataset' tab; repeat for several",
    )
    add_labels_option(web)


def run(args: argparse.Namespace) -> int:
    try:
        from ..web import serve
    except ImportError as error:
        return usage_error(f"gradcam serve needs the web extra: pip install 'gradcam[web]' ({error.name} is missing)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"gradcam: warning: listening on {args.host}: anyone who can reach this machine can use the app",
            file=sys.stderr,
        )
    from ..web import AppError, ModelShelf
    from ..web_audit import audit_folders

    try:
        audit_folders([Path(folder) for folder in args.audit])
    except AppError as error:
        return usage_error(f"--audit: {error}")

    busy = _port_taken(args.host, args.port)
    if busy:
        return usage_error(f"--port {args.port}: cannot listen on {args.host} ({busy}); choose another --port")
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if (args.weights or args.labels) and len(models) != 1:
        return usage_error("--weights and --labels apply to one model: name exactly one in --models")
    first = models[0] if models else DEFAULT_MODEL
    shelf = ModelShelf(
        models,
        weights={first: args.weights} if args.weights else None,
        labels={first: args.labels} if args.labels else None,
        trust_weights=args.trust_weights,
    )
    try:
        serve(args.host, args.port, Path(args.examples) if args.examples else None, models=shelf,
              audits=[Path(folder) for folder in args.audit])  # fmt: skip
    except AppError as error:
        return usage_error(f"--models: {error}")
    except OSError as error:  # the port was taken meanwhile
        return usage_error(f"--port {args.port}: cannot listen on {args.host} ({str(error).splitlines()[0]})")
    return EXIT_OK


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (taken, not an address here), or None when it can."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as error:
        return error.strerror or str(error)
    return None
