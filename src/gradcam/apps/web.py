"""``gradcam serve``: try a photo in the browser (optional extra: ``pip install gradcam[web]``).

Upload, paste or pick a photo; choose the model, one or several methods side by side, the layer and the
target; see the overlays, the per-feature-map grid and the top-5; download the PNG, the ``.npy`` and the
JSON. Errors show as a message in the page.

Bounded for a shared server (docs/security.md): only the models named at start are offered, and they are
loaded before the server listens, so no request waits for another's download; model files are never
unpickled; each request's files live in a scratch folder of which only the newest ``SCRATCH_FOLDERS`` are
kept (Gradio's own cache is swept hourly); a request explains at most ``MAX_TARGETS`` targets.

Example:
    gradcam serve                                   # http://127.0.0.1:7860, the embedded model
    gradcam serve --models efficientnet_lite0,resnet50 --host 0.0.0.0   # open to the network (a warning says so)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..explain import explain
from ..io.files import write_atomic
from ..io.images import (
    DEFAULT_MAX_MEGAPIXELS,
    ImageReadError,
    framed,
    image_tensor,
    preprocess,
    read_image,
)
from ..io.models import DEFAULT_MODEL, LoadedModel, ModelLoadError
from ..layers import list_layers
from ..pipeline.decode import DecodedPhoto
from ..pipeline.kinds import PHOTO
from ..pipeline.manifest import now, run_manifest
from ..pipeline.method_options import WEB_BOUNDS, methods_with_options
from ..pipeline.naming import label_of
from ..pipeline.options import RunOptions, UsageError, parse_target
from ..pipeline.writer import PhotoWriter, WriteOptions, top_predictions
from ..render.captions import caption
from ..render.report import untrained_warning
from ..targets import TextPrompt
from .web_any_class import AnyClass
from .web_audit import audit_folders, audit_tab
from .web_concepts import MAX_CONCEPTS, photo_concepts_picture
from .web_detect import explain_detector_photo
from .web_files import FRAMES_SHOWN, KIND_GUESSED, colour_scale_html, example_photos, explain_upload
from .web_state import (
    MAX_UPLOAD_MB,
    AppError,
    ModelShelf,
    ScratchSpace,
    as_text,
    failure,
    in_background,
    one_line,
    request_budget,
    typed_prompts,
    uploaded_photo,
)

MAX_TARGETS = 10  # per method; top1000 would write 2,000 files
MAX_OVERLAYS = 30  # methods x targets in one request
GRADIO_CACHE_SWEEP = (600, 3600)  # every 10 minutes, delete Gradio's cached files older than an hour
ANY_CLASS_LABEL = "Any class: type to search; its map appears without running the model again (first method)"
# Gradio draws a gallery caption on one line cut with "...", and an image's label over the image's top left
# (where the channel grid's first caption is): the page's overlays say their class and probability in full,
# the pictures start below their labels (passed to launch(), where Gradio 6 takes a page's CSS)
PAGE_CSS = (
    "#overlays .caption-label{white-space:normal;overflow:visible;text-overflow:clip;max-width:none}"
    "#grid img,#anyclass-map img,#concepts-map img,#upload-picture img{padding-top:30px}"
)
OVERLAYS_WIDTH = 860  # the overlays' column at a 1400-pixel-wide window, for the gallery's height
COLORMAPS = ["jet", "turbo", "inferno", "viridis", "magma", "plasma", "coolwarm"]


SHELF = ModelShelf()
_SCRATCH: ScratchSpace | None = None


def scratch() -> ScratchSpace:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = ScratchSpace()
    return _SCRATCH


def cached_model(name: str) -> LoadedModel:
    return SHELF.get(name)


def model_choices() -> list[str]:
    """The served models, the embedded default first where it is served."""
    return sorted(SHELF.names, key=lambda name: name != DEFAULT_MODEL)


def _target_count(targets: Any) -> int:
    if isinstance(targets, list):
        return len(targets)
    if isinstance(targets, str):
        return int("".join(c for c in targets if c.isdigit()) or 1)
    return 1


@lru_cache(maxsize=8)
def layer_choices(name: str) -> tuple[list[str], str]:
    bundle = cached_model(name)
    example = bundle.black_image("cpu")
    infos = list_layers(bundle.model, example)
    default = bundle.layer_for(None, example) or infos[-1].name
    names = [i.name for i in infos]
    return (names if default in names else [default, *names]), default  # several layers (a detector's scales)


@lru_cache(maxsize=8)
def method_choices(name: str) -> list[str]:
    """The methods offered for served model ``name``: every method, but those that read a transformer
    block's attention (Grad-ECLIP, LeGrad) only where the model's default layer has one beside it."""
    from ..methods import methods as registered
    from ..methods.attention import attention_beside

    names = registered()
    try:
        attention_beside(cached_model(name).model, layer_choices(name)[1])
    except Exception:  # noqa: BLE001 (no attention there, or no photo-shaped probe: those methods cannot run)
        from ..methods import get_method

        return [m for m in names if not get_method(m).reads_attention]
    return names


@dataclass
class PhotoResult:
    overlays: list[tuple[Any, str]]  # method by method, each method's targets in order
    grid: Any
    top5: dict[str, float]
    files: list[str]
    layer: str
    targets: int = 1  # per method: the overlays form a methods x targets grid
    grid_label: str = "Feature maps contributing most"
    every: AnyClass | None = None  # every class's map of the first method, for the "any class" menu
    failures: tuple[str, ...] = ()  # one line per method that could not explain this photo (the others shown)
    frame: str | None = None  # what the model saw, where the Frame choice does not apply (a detector's own resize)


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
    frame: str = "crop",
    method_options: str = "",
) -> PhotoResult:
    """Everything the page shows for one photo; every failure is an :class:`AppError` with a message."""
    file = uploaded_photo(path)
    if not methods:
        raise AppError("Choose at least one method.")
    try:
        bundle = cached_model(model_name)
        if bundle.is_detector:  # one map per box, as the command line draws them
            folder = out_dir or scratch().new_folder()
            boxes, found, files, chosen = explain_detector_photo(
                bundle, model_name, file, methods, alpha, colormap, folder, method_options, target
            )
            seen = "the whole photo, as the model's own predictor resizes it"
            return PhotoResult(boxes, None, found, files, chosen, len(boxes) // len(methods), "", frame=seen)
        names = bundle.labels
        targets: Any
        if bundle.extra.get("image_text"):
            prompts = typed_prompts(target)
            if not prompts:
                raise AppError(
                    f"{model_name} is an image-text model: type what to look for in Target (prompts separated by ;)."
                )
            targets, names = TextPrompt(prompts), prompts
            count = len(prompts)
        else:
            targets = parse_target(target or None, bundle.labels, len(bundle.labels) if bundle.labels else None)
            count = _target_count(targets)
        if count > MAX_TARGETS or count * len(methods) > MAX_OVERLAYS:
            raise AppError(
                f"{count} targets x {len(methods)} methods is more than this page draws (at most {MAX_TARGETS} "
                f"targets, {MAX_OVERLAYS} overlays); use the command line for more"
            )
        items = re.split(r"[;\s]+", method_options.strip()) if method_options.strip() else []
        built = methods_with_options(methods, items, WEB_BOUNDS)  # bounded before any work
        photo = read_image(file, max_megapixels=DEFAULT_MAX_MEGAPIXELS)  # the overlay at the photo's own size
    except (ModelLoadError, ImageReadError, UsageError) as error:
        raise AppError(str(error).replace(str(file), file.name)) from None
    pixels, geometry = preprocess(photo, framed(bundle.preprocessing, frame, photo.size))
    x = pixels[None].to(next(bundle.model.parameters()).device)
    chosen_layer = bundle.layer_for(layer)
    out_dir = out_dir or scratch().new_folder()
    decoded = DecodedPhoto(pixels, geometry, image_tensor(photo), photo.size)
    stem = Path(file.name).stem
    prompt = isinstance(targets, TextPrompt)
    overlays: list[tuple[Any, str]] = []
    records: list[Any] = []
    grid = None
    grid_label = "Feature maps contributing most"
    top5: dict[str, float] = {}
    every: AnyClass | None = None
    failures: list[str] = []
    ran: list[str] = []  # the methods that explained the photo (a failed one is in failures)
    for number, (method, configured) in enumerate(zip(methods, built, strict=True)):
        # the first method also keeps every class's map, from the same forward pass, for the any-class menu
        keep_all = number == 0 and _keeps_every_class(bundle, configured, targets)
        asked = [targets] if isinstance(targets, list) else targets
        try:
            try:
                ex = explain(bundle.model, x, configured, chosen_layer, asked, labels=bundle.labels,
                             every_class=keep_all)  # fmt: skip
            except ValueError:
                if not keep_all:
                    raise
                # the menu of every class is a bonus: without it (a layer it cannot serve), the maps asked for
                ex = explain(bundle.model, x, configured, chosen_layer, asked, labels=bundle.labels)
        except (ValueError, TypeError) as error:  # this method cannot explain it: said, the others still shown
            failures.append(f"{method}: {str(error).splitlines()[0]}")
            continue
        if ex.class_maps is not None:
            every = AnyClass(ex.class_maps.raw[0].to(torch.float16).cpu(), tuple(bundle.labels or ()), str(file),
                             geometry, ex.method, alpha, colormap)  # fmt: skip
        predictions = top_predictions(ex.logits, names, similarity=prompt)[0] if ex.logits is not None else None
        if not top5 and predictions:  # class probabilities, or the prompts' cosine similarities
            top5 = {p.label: float((p.similarity if prompt else p.probability) or 0.0) for p in predictions}
        channels = not records and per_channel > 0 and ex.layer_results[0].weights is not None
        options = WriteOptions(
            out=out_dir, method=method, save=frozenset({"overlay", "map"} | ({"channels"} if channels else set())),
            format="png", alpha=alpha, colormap=colormap, per_channel=per_channel if channels else 0,
            prompts=prompt, thumbnail=False, overwrite=True, preprocessing=bundle.preprocessing,
            untrained=untrained_warning(bundle.name, bundle.source) is not None,
        )  # fmt: skip
        pictures: list[Any] = []
        contributions = ex.channel_contributions(per_channel) if channels else None
        record = PhotoWriter(options, names).write(file.name, stem, decoded, ex, 0, predictions, contributions,
                                                   pictures=pictures)  # fmt: skip
        if not record.ok:
            raise AppError(str(record.error).replace(str(out_dir), "the scratch folder"))
        records.append(record)
        ran.append(method)
        for k, picture in enumerate(pictures):
            index = int(ex.targets[0, k]) if ex.targets is not None else k
            overlays.append((picture, _caption(ex, k, index, prompt, method, label_of(names, index))))
        if channels and "channels" in record.targets[0].files:
            first = label_of(names, int(ex.targets[0, 0])) if ex.targets is not None else "the first target"
            grid_label = f"Feature maps adding up to the {method} map for {first}"
            grid = record.targets[0].files["channels"]
    if not records:
        raise AppError("; ".join(failures))
    asked = RunOptions(
        out=out_dir,
        method=str(ran[0]),
        target=target or None,
        frame=frame,
        colormap=colormap,
        prompts=tuple(targets.prompts) if prompt else (),
        format="png",
        save=("map", "overlay"),
    )
    manifest = run_manifest("web", model_name, bundle.source, asked, records, kind="photo", layer=records[0].layer,
                            started=None, finished=now(), methods=[str(m) for m in ran],
                            preprocessing=PHOTO.preprocessing_of(bundle))  # fmt: skip
    manifest_path = out_dir / f"{stem}.json"
    text = json.dumps(manifest.to_json(), indent=1)
    write_atomic(manifest_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    files = [path for record in records for t in record.targets for kind, path in t.files.items() if kind != "channels"]
    files.append(str(manifest_path))
    return PhotoResult(overlays, grid, top5, files, records[0].layer or "", count, grid_label, every, tuple(failures))


def _keeps_every_class(bundle: LoadedModel, method: Any, targets: Any) -> bool:
    """Whether the first method's explanation also keeps every class's map (one forward pass for both):
    a classifier with class names and a method whose maps are one gradient per class (explain's own check)."""
    from ..all_classes import check_every_class
    from ..methods import get_method

    if bundle.labels is None or isinstance(targets, TextPrompt):
        return False
    try:
        check_every_class(get_method(method))
    except ValueError:
        return False
    return True


def _caption(ex: Any, k: int, index: int, prompt: bool, method: str, label: str) -> str:
    """The overlay's caption (:func:`gradcam.render.captions.caption`): the logit and its probability, or
    the cosine similarity of a prompt."""
    score = float(ex.scores[0, k])
    if prompt:
        return caption(method, label, similarity=True, score=score)
    if ex.logits is None or index >= ex.logits.shape[-1]:  # the page names the class (its index is in the files)
        return caption(method, label, score=score, score_name="score")
    return caption(method, label, score=score, probability=float(ex.logits[0].softmax(-1)[index]))


def build_app(
    examples: Path | None = None, models: Sequence[str] | ModelShelf | None = None, audits: Sequence[Path] = ()
) -> Any:
    """The Gradio page, offering ``models`` (names, or a :class:`ModelShelf`; default: the embedded one),
    all loaded before it returns, and the audit folders ``audits`` in its "Audit a dataset" tab."""
    import gradio as gr

    global SHELF
    if models is not None:
        SHELF = models if isinstance(models, ModelShelf) else ModelShelf(models)
    try:
        SHELF.load_all()
    except ModelLoadError as error:
        raise AppError(str(error)) from None
    choices = model_choices()
    layers, default_layer = layer_choices(choices[0])
    example_files = example_photos(examples)

    def run(path, model_name, chosen_methods, layer, target, alpha, colormap, frame, method_options):
        """Every user error becomes the status line (no exception, so no traceback in the server log)."""
        try:
            result = yield from in_background(
                lambda: explain_photo(path, model_name, chosen_methods, layer, target, alpha, colormap, frame=frame,
                                      method_options=method_options or ""), (gr.skip(),) * 7)  # fmt: skip
        except Exception as error:  # noqa: BLE001 (an AppError is the user's; anything else is said the same way)
            yield (gr.update(value=None), gr.update(value=None), gr.update(value=None), gr.update(value=None),
                   failure(error), None, gr.update(choices=[], value=None))  # fmt: skip
            return
        shown = len(chosen_methods) - len(result.failures)
        layout = f"{shown} method(s) by row, {result.targets} target(s) by column" if result.targets > 1 else (
            f"{shown} method(s), one target: side by side")  # fmt: skip
        status = f"{layout}; layer `{result.layer}`; frame: {result.frame or FRAMES_SHOWN[frame]}" + "".join(
            f"  \n**Not shown:** {as_text(failure)}" for failure in result.failures
        )
        menu = gr.update(choices=list(result.every.labels), value=None, interactive=True) if result.every else \
            gr.update(choices=[], value=None, interactive=False)  # fmt: skip
        # at least two columns (one overlay fills half the width, not the whole column blown up), and the
        # gallery as tall as its rows and their captions: every overlay in view, none in a scroll box
        columns = max(2, result.targets)
        rows = -(-len(result.overlays) // columns)
        height = rows * (OVERLAYS_WIDTH // columns + 56) + 24
        yield (gr.update(value=result.overlays, columns=columns, height=height, selected_index=None),
               gr.update(value=result.grid, label=result.grid_label, visible=result.grid is not None), result.top5,
               result.files, status,
               result.every, menu)  # fmt: skip

    def on_class(every, name):
        if every is None or not name:
            return gr.update(value=None, visible=False)
        try:
            return gr.update(value=every.draw(name), label=f"{every.method} for {name} (no model run)", visible=True)
        except Exception as error:  # noqa: BLE001
            return gr.update(value=None, label=f"Could not draw: {one_line(error)}", visible=True)

    def on_concepts(path, model_name, k, layer, frame):
        try:
            with request_budget():
                picture, caption = photo_concepts_picture(path, model_name, k, layer, frame, load=cached_model)
        except Exception as error:  # noqa: BLE001
            return gr.update(value=None, label=f"Could not find concepts: {one_line(error)}")
        return gr.update(value=picture, label=caption)

    def on_upload(path, model_name, chosen_methods, target, alpha, colormap, kind):
        """A video, volume, signal or image array, through its kind's own run; errors are the status line."""
        try:
            if not path:
                raise AppError("choose a file first")
            method = (chosen_methods or ["gradcam"])[0]
            guessed = None if kind == KIND_GUESSED else kind
            bundle, folder = SHELF.get(model_name), scratch().new_folder()
            result = yield from in_background(
                lambda: explain_upload(path, bundle, method, target or "", alpha, colormap, folder, guessed),
                (gr.skip(),) * 3,
            )
        except Exception as error:  # noqa: BLE001
            yield gr.update(value=None), None, failure(error)
            return
        yield gr.update(value=result.picture, visible=True), result.files, as_text(result.status)

    def on_model(model_name, asked):
        usable = method_choices(model_name)
        methods_shown = gr.update(choices=usable, value=[m for m in asked or [] if m in usable] or ["gradcam"])
        try:
            names, default = layer_choices(model_name)  # every served model was loaded at start
        except Exception:  # noqa: BLE001 (a model of signals or volumes: no photo-shaped probe; the run picks)
            return gr.update(choices=[], value=None), methods_shown
        return gr.update(choices=names, value=default), methods_shown

    with gr.Blocks(title="gradcam", delete_cache=GRADIO_CACHE_SWEEP) as app:
        gr.Markdown("# gradcam\nWhy did the model decide that? Upload or paste a photo, or pick an example.")
        with gr.Tab("Explain a photo", elem_id="explain-tab"), gr.Row():
            with gr.Column(scale=1):
                # image_mode=None: Gradio hands over the uploaded file untouched (any other mode makes it decode and
                # convert the whole image first, before our own size check: a 164 KB 13000 x 13000 PNG took 0.8 GB)
                photo = gr.Image(type="filepath", label="Photo", sources=["upload", "clipboard"], elem_id="photo",
                                 image_mode=None, height=300)  # fmt: skip
                if example_files:
                    gr.Examples(example_files, inputs=[photo], label="Examples")
                model = gr.Dropdown(choices, value=choices[0], label="Model", elem_id="model")
                chosen = gr.Dropdown(method_choices(choices[0]), value=["gradcam"], multiselect=True, elem_id="methods",
                                     label="Methods (side by side; those this model runs)")  # fmt: skip
                target = gr.Textbox(label="Target: empty for the top-1, a class name or index, top3; a detector: "
                                    "classes to keep; CLIP, OWL-ViT: prompts split by ;", elem_id="target")  # fmt: skip
                button = gr.Button("Explain", variant="primary", elem_id="explain")
                layer = gr.Dropdown(layers, value=default_layer, label="Layer (default selected)", elem_id="layer")
                method_options = gr.Textbox(label="Method options: KEY=VALUE or METHOD:KEY=VALUE, separated by ; "
                                            "(dff:k=3; sscam:samples=8)", elem_id="method-options")  # fmt: skip
                frame = gr.Radio([(label, key) for key, label in FRAMES_SHOWN.items()], value="crop",
                                 label="Frame: what the model sees", elem_id="frame")  # fmt: skip
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Heatmap opacity")
                colormap = gr.Dropdown(COLORMAPS, value="jet", label="Colormap", allow_custom_value=True)
                with gr.Accordion("Other inputs: a video, a volume or signal (.npy, NIfTI), a 16-bit TIFF", open=False):
                    upload = gr.File(label="File (the first chosen method; model, target and opacity as above)",
                                     type="filepath", elem_id="upload")  # fmt: skip
                    upload_kind = gr.Dropdown([KIND_GUESSED, "image", "video", "volume", "signal"], value=KIND_GUESSED,
                                              label="Kind", elem_id="upload-kind")  # fmt: skip
                    upload_button = gr.Button("Explain the file", elem_id="explain-file")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                top5 = gr.Label(num_top_classes=5, label="Top-5 predictions (for CLIP: cosine similarities)",
                                elem_id="top5")  # fmt: skip
                gallery = gr.Gallery(label="Overlays: methods by row, targets by column", columns=2, height="auto",
                                     object_fit="contain", preview=False, fit_columns=False,
                                     elem_id="overlays")  # fmt: skip
                upload_picture = gr.Image(label="The file's picture (Other inputs)", elem_id="upload-picture",
                                          visible=False)  # fmt: skip
                gr.HTML(colour_scale_html(), elem_id="scale")
                grid = gr.Image(label="Feature maps contributing most (first method, first target)", elem_id="grid")
                every = gr.State(None)
                any_class = gr.Dropdown([], label=ANY_CLASS_LABEL, filterable=True, interactive=False,
                                        elem_id="anyclass")  # fmt: skip
                any_map = gr.Image(label="The chosen class's map", elem_id="anyclass-map", visible=False)
                files = gr.File(label="Downloads: PNG, .npy, JSON", file_count="multiple", elem_id="files")
                with gr.Accordion("Concepts: what the model sees (Deep Feature Factorization)", open=False):
                    concept_count = gr.Slider(1, MAX_CONCEPTS, value=4, step=1, label="Concepts", elem_id="concept-k")
                    concept_button = gr.Button("Find concepts", elem_id="concepts")
                    concept_map = gr.Image(label="Each place coloured by its strongest concept", elem_id="concepts-map")
        with gr.Tab("Audit a dataset", elem_id="audit-tab"):
            audit_tab(SHELF, choices, lambda: scratch().new_folder(), audit_folders(audits))
        model.change(on_model, inputs=[model, chosen], outputs=[layer, chosen])
        button.click(run, inputs=[photo, model, chosen, layer, target, alpha, colormap, frame, method_options],
                     outputs=[gallery, grid, top5, files, status, every, any_class])  # fmt: skip
        any_class.change(on_class, inputs=[every, any_class], outputs=[any_map])
        upload_button.click(on_upload, inputs=[upload, model, chosen, target, alpha, colormap, upload_kind],
                            outputs=[upload_picture, files, status])  # fmt: skip
        concept_button.click(on_concepts, inputs=[photo, model, concept_count, layer, frame], outputs=[concept_map])
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    examples: Path | None = None,
    block: bool = True,
    models: Sequence[str] | ModelShelf | None = None,
    audits: Sequence[Path] = (),
) -> Any:
    """Start the app; returns Gradio's ``(app, local_url, share_url)`` when ``block`` is False."""
    app = build_app(examples, models, audits)
    return app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block, css=PAGE_CSS,
                      max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=False)  # fmt: skip
