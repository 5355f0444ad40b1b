"""Train a small YOLOv8n offline on planted shapes (red squares, blue discs on textured grey), to show per-box
maps of a detector that learnt something (random weights draw maps of nothing). Writes the checkpoint and the
README's picture.

    python scripts/yolo_shapes.py --out /tmp/yolo-shapes --epochs 40
    gradcam explain /tmp/yolo-shapes/scene.png --model yolo:/tmp/yolo-shapes/train/weights/best.pt --trust-weights

Ultralytics (AGPL-3.0) trains it; nothing is downloaded (plots and the AMP check are off).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 192
CLASSES = ("square", "disc")


def scene(rng: random.Random, count: int) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """A textured grey photo with ``count`` shapes that do not overlap; YOLO labels (class, cx, cy, w, h)."""
    photo = Image.effect_noise((SIZE, SIZE), 40).convert("RGB").filter(ImageFilter.GaussianBlur(1))
    draw = ImageDraw.Draw(photo)
    labels: list[tuple[int, float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    while len(labels) < count:
        side = rng.randint(28, 56)
        x, y = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
        box = (x, y, x + side, y + side)
        if any(not (box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1]) for b in boxes):
            continue
        kind = rng.randrange(2)
        if kind == 0:
            draw.rectangle(box, fill=(200 + rng.randint(0, 55), rng.randint(0, 60), rng.randint(0, 60)))
        else:
            draw.ellipse(box, fill=(rng.randint(0, 60), rng.randint(0, 80), 190 + rng.randint(0, 65)))
        boxes.append(box)
        labels.append((kind, (x + side / 2) / SIZE, (y + side / 2) / SIZE, side / SIZE, side / SIZE))
    return photo, labels


def write_dataset(root: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    for split, n in (("train", count), ("val", max(8, count // 8))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo, labels = scene(rng, rng.randint(1, 3))
            photo.save(root / "images" / split / f"{i:04d}.png")
            lines = [f"{k} {cx:.5f} {cy:.5f} {w:.5f} {h:.5f}" for k, cx, cy, w, h in labels]
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "shapes.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=lambda p: Path(p).resolve(), default=Path("/tmp/yolo-shapes"))
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    from ultralytics import YOLO

    data = write_dataset(args.out, args.images, seed=0)
    os.chdir(args.out)  # Ultralytics' own loggers (MLflow when installed) write beside it, not in the checkout
    model = YOLO("yolov8n.yaml")
    model.train(data=str(data), epochs=args.epochs, imgsz=SIZE, batch=16, workers=0, device="cpu", plots=False,
                amp=False, project=str(args.out), name="train", exist_ok=True, verbose=False, seed=0)  # fmt: skip
    photo, _ = scene(random.Random(12345), 3)
    photo.save(args.out / "scene.png")
    print(f"checkpoint: {args.out / 'train' / 'weights' / 'best.pt'}; a new scene: {args.out / 'scene.png'}")
    print("the README's picture: gradcam explain SCENE --model yolo:CHECKPOINT --trust-weights (all boxes, two boxes)")


if __name__ == "__main__":
    main()
