"""Every method against its peer (pytorch-grad-cam or torchcam), ms per image, in one run (#30 item 3).

    python bench/bench_methods.py --model resnet50 --layer layer4 --size 224 --batch 2 --repeats 3
    python bench/bench_methods.py --model efficientnet_lite0 --layer bn2 --size 224 --batch 2 --repeats 3
    python bench/bench_methods.py --model resnet18 --layer layer4 --size 112 --batch 1 --repeats 3 --masking

Gradient and activation methods by default; ``--masking`` times the methods that re-run the network per
channel (Score-CAM, Ablation-CAM, ...), which cost seconds per image. Random weights (offline); the embedded
EfficientNet-Lite0 has its ImageNet weights. Runs take turns (interleaved medians). Every row compares the
same output: maps at the input's size, each scaled to [0, 1] (torchcam's layer-resolution maps are upsampled
for it; ``--raw-peer-maps`` not). Prints a Markdown table: ours and the peer in ms per image, their ratio,
and ours as a multiple of a plain forward pass.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable

import torch
import torchvision

import gradcam
from bench_core import interleaved_medians

FAST = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcam-elementwise", "eigencam",
        "eigengradcam", "segeigencam", "fem", "kpcacam", "shapleycam", "finercam", "cam", "fullgrad"]  # fmt: skip
MASKING = ["scorecam", "ablationcam", "smoothgradcam++", "sscam", "iscam"]
PEERS = {  # ours -> (library, class name)
    "gradcam": ("pytorch_grad_cam", "GradCAM"), "gradcam++": ("pytorch_grad_cam", "GradCAMPlusPlus"),
    "xgradcam": ("pytorch_grad_cam", "XGradCAM"), "hirescam": ("pytorch_grad_cam", "HiResCAM"),
    "layercam": ("pytorch_grad_cam", "LayerCAM"), "gradcam-elementwise": ("pytorch_grad_cam", "GradCAMElementWise"),
    "eigencam": ("pytorch_grad_cam", "EigenCAM"), "eigengradcam": ("pytorch_grad_cam", "EigenGradCAM"),
    "segeigencam": ("pytorch_grad_cam", "SegEigenCAM"), "fem": ("pytorch_grad_cam", "FEM"),
    "kpcacam": ("pytorch_grad_cam", "KPCA_CAM"), "shapleycam": ("pytorch_grad_cam", "ShapleyCAM"),
    "finercam": ("pytorch_grad_cam", "FinerCAM"), "fullgrad": ("pytorch_grad_cam", "FullGrad"),
    "scorecam": ("pytorch_grad_cam", "ScoreCAM"), "ablationcam": ("pytorch_grad_cam", "AblationCAM"),
    "cam": ("torchcam", "CAM"), "smoothgradcam++": ("torchcam", "SmoothGradCAMpp"), "sscam": ("torchcam", "SSCAM"),
    "iscam": ("torchcam", "ISCAM"),
}  # fmt: skip


def build(name: str) -> tuple[torch.nn.Module, str | None]:
    if name == "efficientnet_lite0":
        bundle = gradcam.load_model()
        return bundle.model.eval(), "classifier"
    model = torchvision.models.get_model(name, weights=None).eval()
    return model, "fc" if hasattr(model, "fc") else None


def peer_run(
    method: str, model: torch.nn.Module, layer: str, fc: str | None, x: torch.Tensor, raw_maps: bool = False
) -> Callable | None:
    library, name = PEERS[method]
    reference = copy.deepcopy(model)
    with torch.no_grad():
        top = reference(x).argmax(1).tolist()
    if library == "pytorch_grad_cam":
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if method == "fullgrad":
            cam = pytorch_grad_cam.FullGrad(model=reference, target_layers=[])
        else:
            cam = getattr(pytorch_grad_cam, name)(model=reference, target_layers=[reference.get_submodule(layer)])
        if method == "finercam":
            return lambda: cam(input_tensor=x)
        targets = [ClassifierOutputTarget(t) for t in top]
        return lambda: cam(input_tensor=x, targets=targets)
    import torchcam.methods as tc

    options: dict = {"fc_layer": fc} if method == "cam" else {}
    if method == "cam" and fc is None:
        return None
    if method in ("sscam", "iscam"):
        options["input_shape"] = tuple(x.shape[1:])

    def run() -> object:
        with getattr(tc, name)(reference, target_layer=layer, **options) as extractor:
            if method == "cam":
                with torch.no_grad():
                    out = reference(x)
            else:
                out = reference(x)
            maps = extractor(top, out)
        return maps if raw_maps else at_input_size(maps[0], x)

    return run


def at_input_size(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torchcam's layer-resolution maps as ours and pytorch-grad-cam's are: bilinear at the input's size, each
    scaled to [0, 1] (what a torchcam user does before drawing: its ``overlay_mask`` resizes too)."""
    up = torch.nn.functional.interpolate(maps[:, None].float(), size=x.shape[2:], mode="bilinear", align_corners=False)
    low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    return (up - low) / (high - low).clamp(min=1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--masking", action="store_true", help="time the masking methods instead")
    parser.add_argument("--methods", default=None, help="comma-separated, instead of the default set")
    parser.add_argument(
        "--raw-peer-maps", action="store_true", help="time torchcam without upsampling its maps to the input's size"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model, fc = build(args.model)
    x = torch.randn(args.batch, 3, args.size, args.size)
    chosen = args.methods.split(",") if args.methods else (MASKING if args.masking else FAST)

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    rows = []
    for method in chosen:
        runs: dict[str, Callable[[], object]] = {"forward": forward}
        runs["ours"] = lambda m=method: gradcam.explain(model, x, m, args.layer)
        if method == "cam" and fc is None:
            runs.pop("ours")
        peer = peer_run(method, model, args.layer, fc, x, args.raw_peer_maps) if method in PEERS else None
        if peer is not None:
            runs["peer"] = peer
        try:
            medians = interleaved_medians(runs, args.repeats)
        except Exception as error:  # a peer that cannot run this model: said in the table
            runs.pop("peer", None)
            medians = interleaved_medians(runs, args.repeats)
            print(f"<!-- {method}: peer failed: {type(error).__name__}: {str(error)[:80]} -->")
        ours, theirs = medians.get("ours"), medians.get("peer")
        library = PEERS.get(method, ("-", "-"))[0].replace("_", "-")
        rows.append((method, library, ours, theirs, medians["forward"]))
    plain = min(row[4] for row in rows)
    print(f"{args.model}, layer {args.layer}, {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, each method interleaved with a plain forward pass "
          f"({1000 * plain / args.batch:.1f} ms per image at best)")  # fmt: skip
    print("| method | peer | ours ms/image | peer ms/image | ours / peer | ours x forward |")
    print("|---|---|---|---|---|---|")
    for method, library, ours, theirs, base in rows:
        mine = f"{1000 * ours / args.batch:.1f}" if ours else "-"
        peer = f"{1000 * theirs / args.batch:.1f}" if theirs else "failed"
        ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
        times = f"{ours / base:.2f}" if ours else "-"
        print(f"| {method} | {library} | {mine} | {peer} | {ratio} | {times} |")


if __name__ == "__main__":
    main()
