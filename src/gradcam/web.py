"""``gradcam serve``: try a photo in the browser (optional extra: ``pip install gradcam[web]``).

Upload, paste or pick a photo; choose the model (offline-ready ones first), one or several methods side
by side, the layer and the target; see the overlays, the per-feature-map grid and the top-5; download the
PNG, the ``.npy`` and the JSON. Models are loaded once and cached; errors show as a message in the page.

Example:
    gradcam serve                      # http://127.0.0.1:7860
    gradcam serve --host 0.0.0.0       # open to the network (a warning says so)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .explain import explain
from .images import ImageReadError, image_tensor, model_view, preprocess, read_image, to_original
from .layers import list_layers
from .models import DEFAULT_MODEL, LoadedModel, ModelLoadError, cached_weights_path, load_model, torchvision_classifiers
from .runner import UsageError, parse_target, slug
from .viz import channel_grid, overlay, to_pil

MAX_UPLOAD_MB = 20
MAX_MEGAPIXELS = 50.0
COLORMAPS = ["jet", "turbo", "inferno", "viridis", "magma", "plasma", "coolwarm"]


class AppError(ValueError):
    """A message for the page."""


@lru_cache(maxsize=4)
def cached_model(name: str) -> LoadedModel:
    return load_model(name)


def model_choices() -> list[str]:
    """Offline-ready models first: the embedded default, then torchvision models with cached weights,
    then the common ones that need a download."""
    ready = [DEFAULT_MODEL]
    others: list[str] = []
    for name in torchvision_classifiers():
        path = cached_weights_path(name)
        (ready if path is not None and path.exists() else others).append(name)
    common = [n for n in ("resnet50", "vgg19", "convnext_tiny", "vit_b_16", "swin_t") if n in others]
    return ready + common


@lru_cache(maxsize=8)
def layer_choices(name: str) -> tuple[list[str], str]:
    bundle = cached_model(name)
    infos = list_layers(bundle.model, torch.zeros(1, 3, *bundle.preprocessing.crop))
    default = bundle.default_layer or next((i.name for i in infos if i.default), infos[-1].name)
    return [i.name for i in infos], default


@dataclass
class PhotoResult:
    overlays: list[tuple[Any, str]]
    grid: Any
    top5: dict[str, float]
    files: list[str]
    layer: str


def explain_photo(
    path: str | None,
    model_name: str,
    methods: list[str],
    layer: str | None,
    target: str,
    alpha: float,
    colormap: str,
    per_channel: int = 8,
    out_dir: Path | None = None,
) -> PhotoResult:
    """Everything the page shows for one photo; every failure is an :class:`AppError` with a message."""
    if not path:
        raise AppError("Upload, paste or pick a photo first.")
    if not methods:
        raise AppError("Choose at least one method.")
    file = Path(path)
    if file.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024:
        raise AppError(f"{file.name} is over {MAX_UPLOAD_MB} MB; use the command line for large files.")
    try:
        bundle = cached_model(model_name)
        photo = read_image(file, draft_size=bundle.preprocessing.resize, max_megapixels=MAX_MEGAPIXELS)
        targets = parse_target(target or None, bundle.labels)
    except (ModelLoadError, ImageReadError, UsageError) as error:
        raise AppError(str(error).replace(str(file), file.name)) from None
    pixels, geometry = preprocess(photo, bundle.preprocessing)
    x = pixels[None].to(next(bundle.model.parameters()).device)
    chosen_layer = layer or bundle.default_layer
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="gradcam-web-"))
    picture = image_tensor(photo)
    overlays: list[tuple[Any, str]] = []
    files: list[str] = []
    per_method: dict[str, Any] = {}
    record: dict[str, Any] = {"model": model_name, "image": file.name, "methods": per_method}
    grid = None
    top5: dict[str, float] = {}
    for method in methods:
        try:
            ex = explain(bundle.model, x, method, chosen_layer, [targets] if isinstance(targets, list) else targets,
                         labels=bundle.labels)  # fmt: skip
        except (ValueError, TypeError) as error:
            raise AppError(str(error)) from None
        if not top5 and ex.logits is not None:
            probabilities = ex.logits.softmax(-1)[0]
            values, indices = probabilities.topk(5)
            top5 = {_label(bundle, int(i)): float(v) for v, i in zip(values, indices, strict=True)}
        full, coverage = to_original(ex.maps[0], geometry)
        entries = []
        for k in range(ex.maps.shape[1]):
            index = int(ex.targets[0, k]) if ex.targets is not None else k
            label = _label(bundle, index)
            image = to_pil(overlay(picture, full[k], alpha, colormap, coverage[k]))
            stem = f"{Path(file.name).stem}.{method}.{index}-{slug(label)}"
            image.save(out_dir / f"{stem}.png")
            np.save(out_dir / f"{stem}.npy", ex.maps[0, k].cpu().numpy().astype(np.float32))
            files += [str(out_dir / f"{stem}.png"), str(out_dir / f"{stem}.npy")]
            overlays.append((image, f"{method}: {label} ({float(ex.scores[0, k]):.2f})"))
            entries.append({"class": index, "label": label, "score": float(ex.scores[0, k]), "png": f"{stem}.png"})
        per_method[method] = {"layer": ex.layer, "targets": entries}
        if grid is None and per_channel and ex.layer_results[0].weights is not None:
            contributions = ex.channel_contributions(per_channel)
            view = model_view(pixels, bundle.preprocessing)
            grid = channel_grid(
                view,
                contributions.maps[0, 0],
                contributions.channels[0, 0].tolist(),
                contributions.totals[0, 0].tolist(),
                ex.maps[0, 0],
                float(contributions.grand_total[0, 0]),
                colormap=colormap,
                alpha=alpha,
            )
    record["top5"] = top5
    manifest = out_dir / f"{Path(file.name).stem}.json"
    manifest.write_text(json.dumps(record, indent=1))
    files.append(str(manifest))
    return PhotoResult(overlays, grid, top5, files, chosen_layer or "")


def _label(bundle: LoadedModel, index: int) -> str:
    return bundle.labels[index] if bundle.labels is not None and index < len(bundle.labels) else str(index)


def build_app(examples: Path | None = None) -> Any:
    """The Gradio page."""
    import gradio as gr

    from .methods import methods as registered

    choices = model_choices()
    layers, default_layer = layer_choices(DEFAULT_MODEL)
    example_files = sorted(str(p) for p in examples.glob("*.jpg")) if examples and examples.is_dir() else []

    def run(path, model_name, chosen_methods, layer, target, alpha, colormap):
        try:
            result = explain_photo(path, model_name, chosen_methods, layer, target, alpha, colormap)
        except AppError as error:
            raise gr.Error(str(error)) from None
        return result.overlays, result.grid, result.top5, result.files

    def on_model(model_name):
        try:
            names, default = layer_choices(model_name)
        except (ModelLoadError, ValueError) as error:
            raise gr.Error(str(error)) from None
        return gr.update(choices=names, value=default)

    with gr.Blocks(title="gradcam") as app:
        gr.Markdown("# gradcam\nWhy did the model decide that? Upload or paste a photo, or pick an example.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(type="filepath", label="Photo", sources=["upload", "clipboard"], elem_id="photo")
                if example_files:
                    gr.Examples(example_files, inputs=[photo], label="Examples")
                model = gr.Dropdown(choices, value=DEFAULT_MODEL, label="Model (offline-ready first)",
                                    allow_custom_value=True, elem_id="model")  # fmt: skip
                chosen = gr.CheckboxGroup(registered(), value=["gradcam"], label="Methods (side by side)",
                                          elem_id="methods")  # fmt: skip
                layer = gr.Dropdown(layers, value=default_layer, label="Layer (default selected)", elem_id="layer")
                target = gr.Textbox(label="Target: empty for the top-1, a class name or index, top3",
                                    elem_id="target")  # fmt: skip
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Heatmap opacity")
                colormap = gr.Dropdown(COLORMAPS, value="jet", label="Colormap", allow_custom_value=True)
                button = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column(scale=2):
                top5 = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="top5")
                gallery = gr.Gallery(label="Overlays", columns=2, height="auto", elem_id="overlays")
                grid = gr.Image(label="Feature maps contributing most (first method)", elem_id="grid")
                files = gr.File(label="Downloads: PNG, .npy, JSON", file_count="multiple", elem_id="files")
        model.change(on_model, inputs=[model], outputs=[layer])
        button.click(
            run, inputs=[photo, model, chosen, layer, target, alpha, colormap], outputs=[gallery, grid, top5, files]
        )
    return app


def serve(host: str = "127.0.0.1", port: int = 7860, examples: Path | None = None, block: bool = True) -> Any:
    """Start the app; returns Gradio's ``(app, local_url, share_url)`` when ``block`` is False."""
    app = build_app(examples)
    return app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                      max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=False)  # fmt: skip
