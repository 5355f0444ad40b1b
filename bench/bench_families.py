"""Grad-CAM on each model family users bring, as a ratio to that model's plain forward pass, in one run.

    python bench/bench_families.py --batch 8 --repeats 5
    python bench/bench_families.py --batch 64 --repeats 10 --device cuda

Families (random weights, built from configs; the cost does not depend on the weights): Hugging Face
ViT-B/16, Swin-T and ConvNeXt-T classifiers (``hf:``), open_clip ViT-B/32 with 3 text prompts
(``clip:``; Grad-CAM and Grad-ECLIP), a Hugging Face CLIP ViT-B/32 against 3 reference embeddings, a
fine-tuned 7-class ResNet-50, and a ResNet-50 + metadata model with two inputs. The automatic layer is
used throughout (its one-time probe is outside the timing, in the warm-up). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import gradcam  # noqa: E402
from bench_core import interleaved_medians  # noqa: E402


class WithMetadata(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torchvision.models.resnet50()
        self.backbone.fc = nn.Identity()
        self.meta = nn.Sequential(nn.Linear(16, 64), nn.ReLU())
        self.head = nn.Linear(2048 + 64, 10)

    def forward(self, image: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.backbone(image), self.meta(metadata)], dim=1))


def families(batch: int, device: torch.device) -> dict[str, tuple[nn.Module, object, dict]]:
    """name -> (model, input, explain keyword arguments)."""
    import open_clip
    import transformers as t

    from gradcam.io.image_text import HfImageTextModel, OpenClipModel

    torch.manual_seed(0)
    image = torch.randn(batch, 3, 224, 224, device=device)
    out: dict[str, tuple[nn.Module, object, dict]] = {}
    for name, model in [
        ("hf ViT-B/16", t.ViTForImageClassification(t.ViTConfig(num_labels=1000))),
        ("hf Swin-T", t.SwinForImageClassification(t.SwinConfig(num_labels=1000))),
        ("hf ConvNeXt-T", t.ConvNextForImageClassification(t.ConvNextConfig(num_labels=1000))),
    ]:
        out[name] = (model, image, {})
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    open_clip_model = OpenClipModel(clip, open_clip.get_tokenizer("ViT-B-32"))
    out["open_clip ViT-B/32, 1 prompt"] = (open_clip_model, image, {"targets": gradcam.TextPrompt("a cat")})
    prompts = gradcam.TextPrompt(["a cat", "a cup of coffee", "a tree"])
    out["open_clip ViT-B/32, 3 prompts"] = (open_clip_model, image, {"targets": prompts})
    out["open_clip ViT-B/32, 3 prompts, gradeclip"] = (
        open_clip_model,
        image,
        {"targets": prompts, "method": "gradeclip"},
    )
    hf_clip = HfImageTextModel(t.CLIPModel(t.CLIPConfig()), tokenizer=None)
    references = gradcam.Similarity(torch.randn(3, 512), ["a", "b", "c"])
    out["hf CLIP ViT-B/32, 3 references"] = (hf_clip, image, {"targets": references})
    out["resnet50 fine-tuned, 7 classes"] = (torchvision.models.resnet50(num_classes=7), image, {})
    out["resnet50 + metadata (two inputs)"] = (WithMetadata(), (image, torch.randn(batch, 16, device=device)), {})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None, help="run the families whose name contains this text")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"batch {args.batch}, 224 px, {where}, torch {torch.__version__}, median of {args.repeats}, random weights")
    print("| family | forward s | Grad-CAM s | x forward |")
    print("|---|---:|---:|---:|")
    for name, (model, inputs, options) in families(args.batch, device).items():
        if args.only and args.only not in name:
            continue
        model = model.eval().to(device)
        similarity = options.get("targets") if isinstance(options.get("targets"), gradcam.Similarity) else None

        def forward(model: nn.Module = model, inputs: object = inputs, similarity: object = similarity) -> object:
            with torch.inference_mode():
                output = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
                return similarity.scores(output) if similarity is not None else output  # type: ignore[attr-defined]

        runs: dict[str, Callable[[], object]] = {
            "forward": forward,
            "explain": lambda model=model, inputs=inputs, options=options: gradcam.explain(model, inputs, **options),
        }
        times = interleaved_medians(runs, args.repeats, sync)
        ratio = times["explain"] / times["forward"]
        print(f"| {name} | {times['forward']:.3f} | {times['explain']:.3f} | {ratio:.2f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
