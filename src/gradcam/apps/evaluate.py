"""``gradcam evaluate``: every metric of :mod:`gradcam.metrics` for several methods (and layers) over a
set of photos, as a Markdown/JSON table and a PNG of the deletion/insertion curves."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import metrics
from ..explain import explain
from ..io.boxes import ANY_CLASS, read_boxes  # noqa: F401 (read_boxes: evaluate's input, importable here)
from ..io.images import FoundImages, ImageReadError, preprocess, read_image, to_original
from ..io.models import LoadedModel
from ..render.report import evaluation_page
from .recommend import recommend

METRIC_COLUMNS = [
    ("deletion_auc", "Deletion AUC", "lower"),
    ("insertion_auc", "Insertion AUC", "higher"),
    ("average_drop", "Avg Drop %", "lower"),
    ("increase_in_confidence", "Increase %", "higher"),
    ("road_combined", "ROAD (LeRF-MoRF)", "higher"),
    ("pointing", "Pointing game", "higher"),
    ("energy_pointing", "Energy pointing", "higher"),
    ("sanity_correlation", "Sanity: mean |rank corr.|", "lower"),
]
# what each column measures, written into report.md and report.html (a pip user has no docs/ folder)
READING = {
    "deletion_auc": "pixels removed most-salient-first (RISE, Petsiuk et al. 2018); the area under the class "
    "probability: low when the map found what the model needs",
    "insertion_auc": "pixels put back most-salient-first onto a blurred copy; high when the map found it",
    "average_drop": "Grad-CAM++'s mean fall of the probability on image x map, in % of the probability",
    "increase_in_confidence": "share of the photos whose probability rises on image x map",
    "road_combined": "ROAD (Rong et al. 2022): 20-80% of the pixels removed least- minus most-relevant-first, "
    "filled by noisy linear imputation; high when the map ranks pixels well",
    "pointing": "share of the photos whose map peaks inside a box of the class (15 px tolerance)",
    "energy_pointing": "share of the map's energy inside the boxes",
    "sanity_correlation": "rank correlation with the maps of the model randomised from the top (Adebayo et al. "
    "2018); a method that ignores the model stays high",
}
SHORT_TITLES = {
    "deletion_auc": "Del",
    "insertion_auc": "Ins",
    "average_drop": "Drop%",
    "increase_in_confidence": "Inc%",
    "road_combined": "ROAD",
    "pointing": "Point%",
    "energy_pointing": "Energy%",
    "sanity_correlation": "|r|",
}


@dataclass
class EvaluationOptions:
    methods: list[Any]  # names, or CAMMethod instances built with options (--method-option)
    layers: list[str | None]
    steps: int = 16
    batch_size: int = 32
    sanity: bool = False
    sanity_layers: int = 6
    boxes: dict[str, list[tuple[int, list[float]]]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Per (method, layer): mean metrics, mean curves, and the per-image rows."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    errors: list[str]
    identical: list[list[str]] = field(default_factory=list)  # groups of keys whose maps coincide
    verdict: dict[str, Any] | None = None  # which method to trust (gradcam.apps.recommend; made by evaluate())


def evaluate(
    bundle: LoadedModel,
    found: FoundImages,
    options: EvaluationOptions,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Explain every photo with every method and layer (top-1 class) and measure every metric."""
    model = bundle.model
    device = next(model.parameters()).device
    loaded, errors = [], []
    for path in found.paths:
        try:
            image = read_image(path, draft_size=bundle.preprocessing.resize)
            pixels, geometry = preprocess(image, bundle.preprocessing)
            loaded.append((path, pixels, geometry))
        except ImageReadError as error:
            errors.append(str(error))
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list[float]]] = {}
    fingerprints: dict[str, list[torch.Tensor]] = {}
    for method in options.methods:
        for layer in options.layers:
            key = ""
            deletion_sum = insertion_sum = fractions = None
            for start in range(0, len(loaded), 8):
                chunk = loaded[start : start + 8]
                x = torch.stack([pixels for _, pixels, _ in chunk]).to(device)
                try:
                    ex = explain(model, x, method, bundle.layer_for(layer), labels=bundle.labels)
                except ValueError as error:  # a method that refuses this layer (kpcacam's kernel): the rest go on
                    errors.append(str(error).splitlines()[0])
                    if progress:
                        progress(len(loaded) - start)
                    break
                assert ex.targets is not None  # top-1 class targets
                key = key or f"{ex.method} @ {ex.layer}"  # the layer used, also when it was chosen automatically
                maps, classes = ex.maps[:, 0], ex.targets[:, 0]
                fingerprints.setdefault(key, []).append(_fingerprint(maps))
                di = metrics.deletion_insertion(model, x, maps, classes, options.steps, options.batch_size)
                change = metrics.confidence_change(model, x, maps, classes, options.batch_size)
                road = metrics.road(model, x, maps, classes, batch_size=options.batch_size)
                sanity = None
                if options.sanity:
                    sanity = metrics.sanity_check(
                        model,
                        x,
                        _map_function(x, method, ex.layers[0], classes.tolist()),
                        max_layers=options.sanity_layers,
                    )
                deletion_sum = di.deletion.sum(0) if deletion_sum is None else deletion_sum + di.deletion.sum(0)
                insertion_sum = di.insertion.sum(0) if insertion_sum is None else insertion_sum + di.insertion.sum(0)
                fractions = di.fractions[0]
                for i, (path, _, geometry) in enumerate(chunk):
                    row = {
                        "method": ex.method,
                        "layer": ex.layer,
                        "key": key,
                        "image": str(path),
                        "class": int(classes[i]),
                        "label": bundle.labels[int(classes[i])] if bundle.labels else str(int(classes[i])),
                        "deletion_auc": float(di.deletion_auc[i]),
                        "insertion_auc": float(di.insertion_auc[i]),
                        "average_drop": float(
                            100
                            * (change.original[i] - change.explained[i]).clamp(min=0)
                            / change.original[i].clamp(min=1e-12)
                        ),
                        "increase_in_confidence": 100.0 * float(change.explained[i] > change.original[i]),
                        "road_combined": float(road.combined[i]),
                        "road_morf": road.most_relevant_first[i].tolist(),
                        "road_lerf": road.least_relevant_first[i].tolist(),
                    }
                    image_boxes = [b for c, b in options.boxes.get(path.name, []) if c in (ANY_CLASS, int(classes[i]))]
                    if image_boxes:
                        full, coverage = to_original(maps[i : i + 1].cpu(), geometry)
                        pointing = metrics.pointing_game(full * coverage, [torch.tensor(image_boxes)])
                        row["pointing"] = 100.0 * float(pointing.hits[0])
                        row["energy_pointing"] = 100.0 * float(pointing.energy[0])
                    if sanity is not None:
                        row["sanity_correlation"] = float(sanity.correlations[-1, i])
                        row["sanity_layers"] = list(sanity.layers)
                        row["sanity_curve"] = sanity.correlations[:, i].tolist()
                    rows.append(row)
                if progress:
                    progress(len(chunk))
            if fractions is not None and deletion_sum is not None and insertion_sum is not None:
                curves[key] = {
                    "fractions": fractions.tolist(),
                    "deletion": (deletion_sum / len(loaded)).tolist(),
                    "insertion": (insertion_sum / len(loaded)).tolist(),
                }
    summary = summarise(rows)
    return Evaluation(rows, summary, curves, errors, identical_groups(fingerprints), recommend(rows, summary))


def _fingerprint(maps: torch.Tensor) -> torch.Tensor:
    """(B, 16, 16) averages of (B, H, W) maps: enough to tell whether two methods' maps are the same."""
    return torch.nn.functional.adaptive_avg_pool2d(maps[:, None].float(), 16)[:, 0].cpu()


def identical_groups(fingerprints: dict[str, list[torch.Tensor]], tolerance: float = 1e-3) -> list[list[str]]:
    """Groups of keys whose maps coincide on every image (their curves would hide each other). On a
    global-average-pool + linear head, Grad-CAM, XGrad-CAM and HiRes-CAM give the same maps."""
    stacked = {key: torch.cat(parts) for key, parts in fingerprints.items()}
    groups: list[list[str]] = []
    for key, value in stacked.items():
        for group in groups:
            if (stacked[group[0]] - value).abs().max() <= tolerance:
                group.append(key)
                break
        else:
            groups.append([key])
    return [group for group in groups if len(group) > 1]


def _map_function(x: torch.Tensor, method: Any, layer: str, classes: list[int]) -> Callable[[Any], torch.Tensor]:
    """The (B, H, W) maps of ``method`` on ``x`` for a given model: what the sanity check re-runs."""

    def maps(model: Any) -> torch.Tensor:
        return explain(model, x, method, layer, classes).maps[:, 0]

    return maps


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of each metric per (method, layer), over the images that have it."""
    summary = []
    for key in dict.fromkeys(row["key"] for row in rows):
        group = [row for row in rows if row["key"] == key]
        entry: dict[str, Any] = {"method": group[0]["method"], "layer": group[0]["layer"], "images": len(group)}
        for column, _, _ in METRIC_COLUMNS:
            values = [row[column] for row in group if column in row]
            if column == "sanity_correlation":  # the verdict's own figure: the mean of |r|
                values = [abs(v) for v in values]
            entry[column] = sum(values) / len(values) if values else None
        correlations = [abs(row["sanity_correlation"]) for row in group if "sanity_correlation" in row]
        entry["sanity_passed"] = (
            sum(correlations) / len(correlations) < metrics.SANITY_THRESHOLD if correlations else None
        )
        summary.append(entry)
    return summary


def _best(summary: list[dict[str, Any]], column: str, better: str) -> float | None:
    values = [entry[column] for entry in summary if entry[column] is not None]
    if len(values) < 2:
        return None
    return min(values) if better == "lower" else max(values)


def present_columns(summary: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The metric columns some method has a value for (the pointing game only with boxes, ...)."""
    return [c for c in METRIC_COLUMNS if any(entry[c[0]] is not None for entry in summary)]


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The summary as Markdown; the best value of each column in bold."""
    columns = present_columns(summary)
    sanity = any(entry.get("sanity_passed") is not None for entry in summary)
    titles = [f"{title} ({better} is better)".replace("|", "\\|") for _, title, better in columns]  # "|r|": a cell
    header = "| method | layer | " + " | ".join(titles) + " |"
    header += f" Sanity check (pass: mean abs r < {metrics.SANITY_THRESHOLD}) |" if sanity else ""
    lines = [header, "|---|---|" + "---:|" * len(columns) + ("---|" if sanity else "")]
    best = {c: _best(summary, c, better) for c, _, better in columns}
    for entry in summary:
        cells = []
        for c, _, _ in columns:
            value = entry[c]
            text = f"{value:.3f}" if value is not None else ""
            cells.append(f"**{text}**" if value is not None and value == best[c] else text)
        if sanity:
            cells.append({True: "pass", False: "FAIL", None: ""}[entry.get("sanity_passed")])
        lines.append(f"| {entry['method']} | {entry['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def terminal_table(summary: list[dict[str, Any]], identical: Sequence[Sequence[str]] = ()) -> str:
    """A compact table for the terminal (arrows: which way is better), and the identical maps."""
    columns = present_columns(summary)
    names = [f"{entry['method']} @ {entry['layer']}" for entry in summary]
    width = max(len("method @ layer"), *(len(n) for n in names))
    arrows = {"lower": "v", "higher": "^"}
    titles = [f"{SHORT_TITLES[c]}{arrows[better]}" for c, _, better in columns]
    sanity = any(entry.get("sanity_passed") is not None for entry in summary)
    lines = ["method @ layer".ljust(width) + "".join(t.rjust(9) for t in titles) + ("  sanity" if sanity else "")]
    for name, entry in zip(names, summary, strict=True):
        cells = "".join((f"{entry[c]:.3f}" if entry[c] is not None else "-").rjust(9) for c, _, _ in columns)
        verdict = {True: "  pass", False: "  FAIL", None: ""}[entry.get("sanity_passed")] if sanity else ""
        lines.append(name.ljust(width) + cells + verdict)
    lines.append(
        "v lower is better, ^ higher is better"
        + (f"; sanity passes when mean |r| < {metrics.SANITY_THRESHOLD}" if sanity else "")
    )
    lines += [f"identical maps: {' = '.join(group)} (their curves coincide)" for group in identical]
    return "\n".join(lines)


def write_report(evaluation: Evaluation, out: Path, model_name: str) -> Path:
    """``report.html``, ``report.md``, ``results.json`` and ``curves.png`` in ``out``; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(evaluation.summary)
    verdict = evaluation.verdict or recommend(evaluation.rows, evaluation.summary)
    markdown = out / "report.md"
    lines = [
        f"# gradcam evaluation: {model_name}",
        "",
        f"{len({row['image'] for row in evaluation.rows})} images, top-1 class of each. "
        "Deletion/insertion: RISE protocol, softmax probability of the class; ROAD at 20/40/60/80% with noisy "
        "linear imputation; pointing game where boxes were given.",
        "",
        "## Verdict",
        "",
        verdict["text"],
        "",
        table,
        "",
        *[f"Identical maps: {' = '.join(group)} (their curves coincide)." for group in evaluation.identical],
        "",
        "![deletion and insertion curves](curves.png)",
        "",
        "## How to read it",
        "",
        *[f"- {title}: {READING[column]}." for column, title, _ in present_columns(evaluation.summary)],
    ]
    if evaluation.errors:
        lines += ["", "Skipped (photos that could not be read, methods that refused the layer):",
                  *[f"- {error}" for error in evaluation.errors]]  # fmt: skip
    markdown.write_text("\n".join(lines) + "\n")
    payload = {"model": model_name, "summary": evaluation.summary, "images": evaluation.rows,
               "curves": evaluation.curves, "errors": evaluation.errors, "identical": evaluation.identical,
               "verdict": verdict}  # fmt: skip
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    plot_curves(evaluation.curves, out / "curves.png", evaluation.identical)
    reading = [(title, READING[column]) for column, title, _ in present_columns(evaluation.summary)]
    page = evaluation_page(model_name, table, evaluation.errors, evaluation.identical, verdict["text"], reading)
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path, identical: Sequence[Sequence[str]] = ()) -> None:
    """Deletion and insertion curves, one line per method @ layer; methods with identical maps are drawn
    once, their legend entry naming all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hidden = {key for group in identical for key in group[1:]}
    names = {group[0]: " = ".join(group) for group in identical}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, curve in curves.items():
        if key in hidden:
            continue
        label = names.get(key, key)
        axes[0].plot(curve["fractions"], curve["deletion"], label=label)
        axes[1].plot(curve["fractions"], curve["insertion"], label=label)
    for axis, title in zip(axes, ("Deletion (lower area is better)", "Insertion (higher area is better)"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("fraction of pixels removed" if "Deletion" in title else "fraction of pixels inserted")
        axis.set_ylabel("class probability")
        axis.grid(alpha=0.3)
    # the legend below both plots, never over a curve (it covered the insertion curves' start)
    handles, labels = axes[1].get_legend_handles_labels()
    columns = max(1, min(4, len(labels)))
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    rows = -(-len(labels) // columns)
    figure.tight_layout(rect=(0, min(0.45, 0.05 + 0.045 * rows), 1, 1))
    figure.savefig(path)
    plt.close(figure)
