"""Explain a volume or a signal file: the map written back as an array (NIfTI in the source's space, or
``.npy``), a picture (a montage of slices for a volume, a plot for a signal) and a record in the run's
manifest.

Example:
    >>> record = explain_array(bundle, Path("scan.nii.gz"), "scan", RunOptions(out=Path("out")))  # doctest: +SKIP
    >>> record.targets[0].files
    {'map': 'out/scan.gradcam.1-tumour.map.nii.gz', 'montage': 'out/scan.gradcam.1-tumour.montage.png'}
"""

from __future__ import annotations

from pathlib import Path

from ..explain import explain
from ..io.arrays import map_path, read_array, write_map
from ..io.models import LoadedModel
from ..render.arrays import montage, signal_plot
from ..render.captions import caption
from .naming import label_of, target_stem
from .options import RunOptions, parse_target
from .records import PhotoRecord, TargetRecord
from .writer import BROKEN_SCORES, non_finite_rows, save_picture, top_predictions


def explain_array(bundle: LoadedModel, path: Path, key: str, options: RunOptions) -> PhotoRecord:
    """One volume or signal file through ``bundle``'s model, with ``options`` (method and its options,
    layer, target, counterfactual, eigen_smooth, alpha, colormap, overwrite; ``max_megapixels`` millions of
    values at most, from the header); raises ArrayReadError or ValueError in one line."""
    item = read_array(path, int(options.max_megapixels * 1_000_000))
    parameter = next(bundle.model.parameters())
    values = item.values[None].to(parameter.device, parameter.dtype)
    target = parse_target(options.target, bundle.labels)
    ex = explain(bundle.model, values, options.cam_method(), bundle.layer_for(options.layer),
                 [target] if isinstance(target, list) else target, labels=bundle.labels,
                 counterfactual=options.counterfactual, eigen_smooth=options.eigen_smooth)  # fmt: skip
    if ex.logits is None:
        raise ValueError(f"{path}: the model's output is not (B, num_classes) class scores")
    if non_finite_rows(ex.logits, ex.scores):
        raise ValueError(f"{path}: {BROKEN_SCORES}")
    predictions = top_predictions(ex.logits, bundle.labels, similarity=False)[0]
    targets = []
    for k in range(ex.maps.shape[1]):
        index = int(ex.targets[0, k]) if ex.targets is not None else k
        label = label_of(bundle.labels, index)
        stem = options.out / target_stem(key, options.method, index, label, counterfactual=options.counterfactual)
        stem.parent.mkdir(parents=True, exist_ok=True)
        heat = ex.maps[0, k].detach().float().cpu()
        kind = "montage" if item.kind == "volume" else "plot"
        map_file, picture_path = (
            map_path(stem.with_name(stem.name + ".map"), item),
            stem.with_name(f"{stem.name}.{kind}.png"),
        )
        existing = [p for p in (map_file, picture_path) if p.exists()]
        if existing and not options.overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
        text = caption(options.method, label, index, counterfactual=options.counterfactual,
                       score=float(ex.scores[0, k]), score_name="score")  # fmt: skip
        if item.kind == "volume":
            picture = montage(item, heat, text, options.alpha, options.colormap)
        else:
            picture = signal_plot(item, heat, text, options.colormap)
        write_map(heat.numpy(), map_file, item)
        save_picture(picture, picture_path, "png")
        targets.append(TargetRecord(index=index, label=label, score=float(ex.scores[0, k]),
                                    files={"map": str(map_file), kind: str(picture_path)}))  # fmt: skip
    return PhotoRecord(path=str(path), status="ok", method=options.method, layer=ex.layer,
                       predictions=tuple(predictions), targets=tuple(targets), kind=item.kind,
                       shape=item.shape)  # fmt: skip
