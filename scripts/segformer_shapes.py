"""Train a small SegFormer offline on planted shapes (red squares, blue discs on textured grey; the scenes of
``yolo_shapes.py``), to show per-class maps of a segmentation model that learnt something. Writes an ``hf:``
folder (``save_pretrained`` and a processor config), a scene and the README's picture.

    python scripts/segformer_shapes.py --out /tmp/segformer-shapes --steps 600
    gradcam explain /tmp/segformer-shapes/scene.png --model hf:/tmp/segformer-shapes/model --conf 0.3

The model is built from a config with random weights (nothing is downloaded) and trained for a minute or two
on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from yolo_shapes import SIZE, scene  # noqa: E402

NAMES = {0: "background", 1: "square", 2: "disc"}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def labelled(rng: random.Random) -> tuple[Image.Image, torch.Tensor]:
    """A scene and its (SIZE, SIZE) class mask, each shape drawn again on the mask from its box."""
    photo, labels = scene(rng, rng.randint(1, 3))
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    for kind, cx, cy, w, h in labels:
        box = [round((cx - w / 2) * SIZE), round((cy - h / 2) * SIZE), round((cx + w / 2) * SIZE),
               round((cy + h / 2) * SIZE)]  # fmt: skip
        (draw.rectangle if kind == 0 else draw.ellipse)(box, fill=kind + 1)
    return photo, torch.from_numpy(np.asarray(mask).copy()).long()


def as_input(photo: Image.Image) -> torch.Tensor:
    pixels = torch.from_numpy(np.asarray(photo.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    return (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def train(steps: int, seed: int) -> torch.nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    config = SegformerConfig(num_labels=3, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                             num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=64, id2label=NAMES,
                             label2id={v: k for k, v in NAMES.items()})  # fmt: skip
    model = SegformerForSemanticSegmentation(config).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = random.Random(seed)
    for step in range(steps):
        batch = [labelled(rng) for _ in range(8)]
        x = torch.stack([as_input(photo) for photo, _ in batch])
        truth = torch.stack([mask for _, mask in batch])
        logits = F.interpolate(model(x).logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, truth)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/segformer-shapes"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, default=None, help="also write the README picture here")
    args = parser.parse_args()
    model = train(args.steps, args.seed)
    folder = args.out / "model"
    model.save_pretrained(folder)
    processor = {"size": {"height": SIZE, "width": SIZE}, "image_mean": list(MEAN), "image_std": list(STD),
                 "do_normalize": True, "image_processor_type": "SegformerImageProcessor"}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
    photo, _ = labelled(random.Random(args.seed + 1000))
    photo.save(args.out / "scene.png")
    explained = args.out / "explained"
    subprocess.run([sys.executable, "-m", "gradcam", "explain", str(args.out / "scene.png"), "--model",
                    f"hf:{folder}", "--conf", "0.3", "--out", str(explained), "--overwrite"], check=True)  # fmt: skip
    if args.picture is not None:
        pictures = [Image.open(explained / "scene.gradcam.boxes.png")]
        pictures += [Image.open(p) for p in sorted(explained.glob("scene.gradcam.*.box*.png"))]
        pictures = [p.resize((p.width * 2, p.height * 2), Image.Resampling.LANCZOS) for p in pictures]
        sheet = Image.new(
            "RGB", (sum(p.width for p in pictures) + 8 * (len(pictures) - 1), pictures[0].height), "white"
        )
        x = 0
        for picture in pictures:
            sheet.paste(picture, (x, 0))
            x += picture.width + 8
        sheet.save(args.picture)
        print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
