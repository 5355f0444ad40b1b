"""``gradcam audit``: what a model relies on across a whole dataset, and how two models differ.

One heatmap answers "why this photo?"; an audit answers "what does this model look at for each class?":
every photo's map is measured (energy on the border, in the corners, inside the object's boxes) and each
class's maps are clustered (spectral relevance analysis, Lapuschkin et al. 2019) into the few strategies
the model uses; clusters whose energy sits away from the object or in one fixed place are flagged as
possible shortcuts, with the reason. With a second model, each photo's two maps are compared (rank
correlation, IoU of their top 20%).

Outputs in ``out``: ``audit.html`` (self-contained), ``audit.json`` (``docs/audit.md``; schema
``audit.schema.json``), ``maps.npy`` (each photo's map on the grid, float16), and PNGs of the class and
cluster mean maps in ``maps/``.

Example:
    >>> import gradcam
    >>> result = gradcam.audit("photos/", truth="photos/", out="audit")     # doctest: +SKIP
    >>> [c["name"] for c in result.report["classes"] if c["flagged"]]
    ['ship']
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..io.images import DEFAULT_MAX_MEGAPIXELS, FRAMES, find_images
from ..io.models import LoadedModel, Preprocessing, load_bundle, probe_output, read_labels, with_labels
from ..pipeline.options import PreprocessSettings, UsageError, parse_target
from .dataset import AuditInputError, read_object_boxes, read_truth
from .engine import AuditExplainer, AuditItem, collect, run_local
from .findings import Findings, summarise
from .follow import follow_budget, followed_entries

AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
MAPS = "maps.npy"


class AuditError(ValueError):
    """A bad argument or input to an audit: one line, naming it."""


@dataclass
class AuditResult:
    """Where an audit was written and its findings: ``summary`` and ``classes`` at hand, ``report`` (all of
    ``audit.json``, per-photo lists included) read from the file when first asked for, and the arrays
    (``findings.maps``, ``findings.predicted_maps``, ``findings.compared_maps``)."""

    out: Path
    findings: Findings

    @property
    def summary(self) -> dict[str, Any]:
        return self.findings.head["summary"]

    @property
    def classes(self) -> list[dict[str, Any]]:
        return self.findings.head["classes"]

    @cached_property
    def report(self) -> dict[str, Any]:
        return json.loads((self.out / AUDIT_JSON).read_text())

    @property
    def html(self) -> Path:
        return self.out / AUDIT_HTML

    @property
    def flagged(self) -> list[str]:
        """Names of the classes with a possible shortcut."""
        return [c["name"] for c in self.classes if c["flagged"]]

    def __repr__(self) -> str:
        summary = self.summary
        return (
            f"AuditResult({summary['audited']} photos, {summary['classes']} classes, "
            f"flagged: {self.flagged or 'none'}, {self.out / AUDIT_HTML})"
        )


def _bundle(model: str | LoadedModel, weights: str | None, labels: Any, device: str, trust: bool) -> LoadedModel:
    if not isinstance(model, LoadedModel):
        return load_bundle(model, weights, device, trust_weights=trust, labels=labels)
    if labels is None:
        return model
    return with_labels(model, read_labels(labels) if isinstance(labels, (str, Path)) else list(labels))


def _check_same_classes(first: LoadedModel, second: LoadedModel) -> None:
    """An AuditError (one line) when the two models do not explain the same classes: comparing class 5 of a
    1,000-class model with class 5 of a 10-class one would compare maps of different things."""
    counts = []
    for bundle in (first, second):
        output = probe_output(bundle)
        counts.append(output.shape[-1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None)
    if None not in counts and counts[0] != counts[1]:
        raise AuditError(
            f"--compare: {second.name} has {counts[1]} classes and {first.name} {counts[0]}; compare models of the "
            "same classes (or give --compare-labels naming the same classes in the same order)"
        )
    if first.labels is not None and second.labels is not None and list(first.labels) != list(second.labels):
        raise AuditError(
            f"--compare: {second.name} names its classes differently from {first.name}; give --compare-labels "
            "in the first model's order"
        )


def audit(
    paths: str | Path | Sequence[str | Path],
    model: str | LoadedModel = "efficientnet_lite0",
    *,
    weights: str | None = None,
    labels: str | Path | Sequence[str] | None = None,
    truth: str | Path | None = None,
    boxes: str | Path | None = None,
    compare: str | LoadedModel | None = None,
    compare_weights: str | None = None,
    compare_labels: str | Path | Sequence[str] | None = None,
    method: Any = "gradcam",
    layer: str | None = None,
    out: str | Path = "gradcam-audit",
    engine: str = "local",
    batch_size: int = 16,
    workers: int = 2,
    device: str = "cpu",
    overwrite: bool = False,
    trust_weights: bool = False,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    actors: int = 2,
    address: str | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    frame: str = "crop",
    preprocessing: Preprocessing | PreprocessSettings | None = None,
    prove: Sequence[str | int] = (),
    classes: str | Sequence[str | int] | None = None,
) -> AuditResult:
    """Audit ``model`` on the photos under ``paths``; see the module's docstring.

    ``model``/``compare``: a name as for ``gradcam explain --model`` or a :class:`LoadedModel`.
    ``truth``: a CSV ``image,class`` or an ``ImageFolder`` root (without it, the predicted class is
    audited); ``boxes``: JSON ``{path: [[x1, y1, x2, y2], ...]}`` (or COCO/CSV as ``evaluate``).
    ``engine``: ``"local"`` or ``"ray"`` (same findings). Never replaces an earlier audit in ``out``
    unless ``overwrite``. ``on_start(n)`` hears the number of photos, ``progress(k)`` each batch done.
    ``frame`` (``crop``, ``full``, ``squash``) and ``preprocessing`` (a :class:`Preprocessing`, or the
    ``--resize``/``--crop``/``--mean``/``--std`` choices as :class:`PreprocessSettings`): how the audited
    model sees the photos, as it was trained. ``prove``: classes (names or indices) whose experiments run
    even when they are not flagged (flagged ones always get them: ``classes[*].evidence``). ``classes``:
    classes (names or indices, or ``"all"``: the classes of ``truth``, else every class of the model) whose
    maps are taken on every photo, other classes' included (``followed`` in ``audit.json``, see
    :mod:`gradcam.audits.follow`), within :func:`~gradcam.audits.follow.follow_budget`.
    """
    started = time.perf_counter()
    out = Path(out)
    if engine not in ("local", "ray"):
        raise AuditError(f"engine {engine!r}: choose local or ray")
    if (out / AUDIT_JSON).exists() and not overwrite:
        raise AuditError(f"{out / AUDIT_JSON} exists: choose another --out or pass --overwrite to replace it")
    locations = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    found = find_images(locations, exclude=[out])
    if found.missing:
        raise AuditError(f"{found.missing[0]}: no such file or folder")
    if not found.paths:
        raise AuditError("no images found in " + ", ".join(locations))
    if frame not in FRAMES:
        raise AuditError(f"frame {frame!r}: choose one of {', '.join(FRAMES)}")
    bundle = _bundle(model, weights, labels, device, trust_weights)
    try:
        bundle = _preprocessed(bundle, preprocessing)
    except UsageError as error:
        raise AuditError(str(error)) from None
    asked = _classes_to_prove(bundle, prove)
    second = _bundle(compare, compare_weights, compare_labels, device, trust_weights) if compare is not None else None
    if second is not None:
        _check_same_classes(bundle, second)
    if layer is not None:
        from ..layers import resolve_layers

        try:
            resolve_layers(bundle.model, layer)
        except ValueError as error:
            raise AuditError(f"--layer {layer}: {error}") from None
    items = _items(found.paths, found.roots, bundle, truth, boxes)
    followed = _classes_to_follow(bundle, classes, items)
    explainers = [AuditExplainer(bundle, method, layer, frame, followed)]
    if second is not None:  # the same method, at the second model's own default layer
        explainers.append(AuditExplainer(second, method, frame=frame))
    if on_start is not None:
        on_start(len(items))
    if engine == "ray":
        from .ray import run_ray

        measured, layers = run_ray(
            items, explainers, batch_size, actors, address, max_megapixels, progress, cpus_per_actor, gpus_per_actor
        )
    else:
        batches = run_local(items, explainers, batch_size, workers, max_megapixels, progress)
        try:
            measured = collect(batches, items, len(explainers), len(followed))
        except (ValueError, TypeError) as error:  # the method, layer or model cannot be explained this way
            raise AuditError(str(error).splitlines()[0]) from None
        layers = [e.layer for e in explainers]
    run = {
        "model": _model_name(model, bundle), "method": _method_name(method), "layer": layers[0],
        "engine": engine, "truth": None if truth is None else str(truth),
        "boxes": None if boxes is None else str(boxes),
        "compared_model": None if second is None else _model_name(compare, second),
        "compared_layer": layers[1] if second is not None else None,
        "input_size": list(bundle.preprocessing.crop), "frame": frame,
        "preprocessing": bundle.preprocessing.to_json(),
    }  # fmt: skip
    findings = summarise(measured, bundle.labels, run, second.labels if second is not None else None)
    findings.head["hints"] = accuracy_hints(findings.head["classes"], frame, bundle.preprocessing)
    findings.head["followed"] = followed_entries(measured, followed, bundle.labels)
    from .experiments import prove_classes, prove_followed

    pictures = prove_classes(findings, bundle, frame, max_megapixels, asked)
    followed_pictures = prove_followed(findings, bundle, frame, max_megapixels, asked)
    findings.head["seconds"] = round(time.perf_counter() - started, 2)
    from .output import write_outputs

    write_outputs(findings, out, [bundle] + ([second] if second else []), pictures, frame, followed_pictures)
    return AuditResult(out, findings)


def _preprocessed(bundle: LoadedModel, preprocessing: Preprocessing | PreprocessSettings | None) -> LoadedModel:
    if preprocessing is None:
        return bundle
    if isinstance(preprocessing, PreprocessSettings):
        preprocessing = preprocessing.applied_to(bundle.preprocessing)
    return replace(bundle, preprocessing=preprocessing)


def _classes_to_prove(bundle: LoadedModel, names: Sequence[str | int]) -> list[int]:
    """``prove``'s classes: indices or names of the model's classes, read as ``--target`` reads them (one
    line naming ``--prove`` for one that is neither)."""
    chosen: list[int] = []
    for name in names:
        try:
            classes = parse_target(str(name), bundle.labels, flag="--prove")
        except UsageError as error:
            raise AuditError(str(error)) from None
        if not isinstance(classes, list):  # "top3" and the like: not a class
            raise AuditError(f"--prove {name!r}: name a class or give its index")
        chosen += [c for c in classes if c not in chosen]
    return chosen


def _classes_to_follow(
    bundle: LoadedModel, names: str | Sequence[str | int] | None, items: Sequence[AuditItem]
) -> list[int]:
    """``classes``' indices: ``"all"`` is the classes of the true classes given, else every class of the
    model's head; names and indices are read as ``--target`` reads them. Refused in one line beyond the
    budget (:func:`~gradcam.audits.follow.follow_budget`)."""
    if names is None:
        return []
    asked = [names] if isinstance(names, (str, int)) else list(names)
    head = len(bundle.labels) if bundle.labels is not None else _outputs(bundle)
    if [str(a).strip().lower() for a in asked] == ["all"]:
        known = sorted({item.truth for item in items if item.truth is not None})
        chosen = known or list(range(head))
    else:
        chosen = []
        for name in asked:
            try:
                found = parse_target(str(name), bundle.labels, head, flag="--classes")
            except UsageError as error:
                raise AuditError(str(error)) from None
            if not isinstance(found, list):  # "top3" and the like: not a class
                raise AuditError(f"--classes {name!r}: name a class, give its index, or say all")
            chosen += [c for c in found if c not in chosen]
    refused = follow_budget(len(items), len(chosen))
    if refused is not None:
        raise AuditError(f"--classes: {refused}")
    return chosen


ACCURACY_GAP = 0.5  # a class below half the median accuracy of the others gets a hint


def accuracy_hints(classes: Sequence[dict[str, Any]], frame: str, spec: Preprocessing) -> list[str]:
    """One line per class whose accuracy is far below the others' (under ``ACCURACY_GAP`` times their
    median): the preprocessing the audit used may not be the one the model was trained with."""
    import statistics

    hints = []
    for entry in classes:
        accuracy = entry["accuracy"]
        others = [c["accuracy"] for c in classes if c is not entry and c["accuracy"] is not None]
        if accuracy is None or len(others) < 2 or entry["photos_with_truth"] < 3:
            continue
        typical = statistics.median(others)
        if accuracy < ACCURACY_GAP * typical:
            hints.append(
                f"{entry['name']}: accuracy {accuracy:.0%} against {typical:.0%} for the other classes; the photos "
                f"were seen as frame {frame}, {spec.describe()}: if the model was trained on photos prepared "
                "otherwise, audit with that (--frame, --resize, --crop, --mean, --std)"
            )
    return hints


def _model_name(model: Any, bundle: LoadedModel) -> str:
    return model if isinstance(model, str) else bundle.name


def _method_name(method: Any) -> str:
    return method if isinstance(method, str) else getattr(method, "name", type(method).__name__)


def _items(
    paths: Sequence[Path], roots: Sequence[Path], bundle: LoadedModel, truth: Any, boxes: Any
) -> list[AuditItem]:
    from ..io.images import FoundImages
    from ..pipeline.naming import output_keys

    keys = output_keys(FoundImages(list(paths), list(roots), [], 0))
    num_classes = len(bundle.labels) if bundle.labels is not None else _outputs(bundle)
    unique_roots = list(dict.fromkeys(roots))
    try:
        truth_table = read_truth(Path(truth), bundle.labels, num_classes, unique_roots) if truth is not None else None
        box_table = read_object_boxes(Path(boxes), unique_roots) if boxes is not None else None
    except AuditInputError as error:
        raise AuditError(str(error)) from None
    items = []
    for path, key in zip(paths, keys, strict=True):
        known: Any = truth_table.lookup(path) if truth_table is not None else None
        found_boxes: Any = box_table.lookup(path) if box_table is not None else None
        items.append(AuditItem(str(path), key, known, tuple(tuple(b) for b in found_boxes or ())))
    return items


def _outputs(bundle: LoadedModel) -> int:
    from ..targets import select_logits

    output = probe_output(bundle)
    if output is None:
        raise AuditError(f"{bundle.name}: an audit explains photos; this model does not take a photo")
    return int(select_logits(output).shape[-1])


__all__ = ["audit", "AuditResult", "AuditError"]
