"""Grad-CAM cost against a plain forward pass and the peer libraries, measured in one run.

    python bench/bench_core.py --model resnet50 --batch 8 --repeats 5
    python bench/bench_core.py --model resnet50 --batch 64 --repeats 20 --device cuda

Prints a Markdown table of median seconds per batch and the ratio to a plain forward pass under
``torch.inference_mode()``. Peer libraries that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

import gradcam
from gradcam.methods.perturbation import PerturbationMethod


def interleaved_medians(
    runs: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], object] = lambda: None
) -> dict[str, float]:
    """Median seconds of each run; the runs take turns, so drifts in machine speed hit them all alike.
    ``sync`` waits for queued device work (``torch.cuda.synchronize`` on a GPU) before a clock is read."""
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peer_runs(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    runs: dict[str, Callable[[], object]] = {}
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = GradCAM(model=model, target_layers=[layer])
        with torch.no_grad():
            top = model(x).argmax(1).tolist()
        targets = [ClassifierOutputTarget(t) for t in top]
        runs["pytorch-grad-cam GradCAM"] = lambda: cam(input_tensor=x, targets=targets)
    except ImportError:
        pass
    try:
        from captum.attr import LayerGradCam

        captum_cam = LayerGradCam(model, layer)
        with torch.no_grad():
            top_t = model(x).argmax(1)
        runs["captum LayerGradCam"] = lambda: captum_cam.attribute(x, target=top_t, relu_attributions=True)
    except ImportError:
        pass
    try:
        from torchcam.methods import GradCAM as TorchcamGradCAM

        def torchcam_run() -> object:
            with TorchcamGradCAM(model, target_layer=layer) as extractor:
                out = model(x)
                return extractor(out.argmax(1).tolist(), out)

        runs["torchcam GradCAM"] = torchcam_run
    except ImportError:
        pass
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument(
        "--methods", default=None, help="comma-separated methods to time (default: every gradient and activation one)"
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.get_model(args.model, weights=None).eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    layer = model.get_submodule(args.layer)

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    runs: dict[str, Callable[[], object]] = {"plain forward (inference_mode)": forward}
    for method in args.methods.split(",") if args.methods else gradcam.methods():
        chosen = gradcam.get_method(method)
        if isinstance(chosen, PerturbationMethod) or getattr(chosen, "reads_attention", False):
            continue  # one forward pass per channel: see bench_perturbation.py; gradeclip needs a ViT
        runs[f"gradcam {method}"] = lambda m=method: gradcam.explain(model, x, m, args.layer)
    runs["gradcam gradcam, 5 targets/image"] = lambda: gradcam.explain(model, x, "gradcam", args.layer, "top-5")
    runs["gradcam gradcam, layer=None (auto)"] = lambda: gradcam.explain(model, x, "gradcam")
    if not args.no_peers:
        runs.update(peer_runs(model, layer, x))
    rows = list(interleaved_medians(runs, args.repeats, sync).items())
    base = rows[0][1]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"{args.model}, layer {args.layer}, batch {args.batch}, {args.size} px, {where}, "
        f"torch {torch.__version__}, median of {args.repeats}"
    )
    print("| run | s / batch | x forward |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
