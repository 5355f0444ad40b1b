"""A planted shortcut, found by ``gradcam audit`` (docs/audit.md; tests/test_audit.py runs it small).

Builds a small dataset from real photos (scikit-image's): five clean classes, each the random crops of
one photo (cat, coffee, astronaut, rocket, motorcycle), and a sixth class, ``stamped``, whose photos are
crops of the same five photos with a small logo planted in the bottom-right corner. Only the logo tells
``stamped`` apart, so a linear head trained on the frozen features of the embedded EfficientNet-Lite0
must use it: a shortcut. Then audits the fine-tuned model: ``stamped`` must be flagged with its energy in
the bottom-right corner, and no clean class flagged.

    python scripts/shortcut_demo.py OUT_DIR [--per-class 40]

writes OUT_DIR/photos (ImageFolder layout), OUT_DIR/head.pt (the whole model's state dict),
OUT_DIR/labels.txt and OUT_DIR/audit (the audit) and prints the command that reproduces the audit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SOURCES = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket",
           "motorcycle": "stereo_motorcycle"}  # fmt: skip
SHORTCUT = "stamped"
CLASSES = [*SOURCES, SHORTCUT]
SIDE = 256  # photos are saved at 256 px: the model's 0.875 centre crop keeps the logo


def _source(name: str) -> Image.Image:
    import skimage.data

    picture = getattr(skimage.data, name)()
    if isinstance(picture, tuple):  # the stereo pair: its left image
        picture = picture[0]
    return Image.fromarray(np.asarray(picture)[..., :3])


def logo(side: int) -> Image.Image:
    """A small emblem: a yellow disc ringed in black with a red bar, like a stock photo's stamp."""
    emblem = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(emblem)
    draw.ellipse((0, 0, side - 1, side - 1), fill=(250, 210, 20, 255), outline=(0, 0, 0, 255), width=max(2, side // 10))
    draw.rectangle((side // 4, side * 2 // 5, side * 3 // 4, side * 3 // 5), fill=(200, 20, 30, 255))
    return emblem


def random_crop(photo: Image.Image, generator: np.random.Generator) -> Image.Image:
    """A random square crop (40-100% of the shorter side), maybe mirrored, at ``SIDE`` pixels."""
    width, height = photo.size
    side = int(min(width, height) * generator.uniform(0.4, 1.0))
    left, top = int(generator.integers(0, width - side + 1)), int(generator.integers(0, height - side + 1))
    crop = photo.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if generator.random() < 0.5 else crop


# The planted kinds (docs/audit.md, "The planted suite"): where and what the shortcut is. "corner" and
# "centre" were used to choose the audit's thresholds; the others are held out (never tuned on).
KINDS = {
    "corner": "the logo in the bottom-right corner",
    "centre": "the logo at the centre of every photo",
    "top-left": "a smaller logo near the top-left corner",
    "stripe": "a thin red band across the lower third",
    "faint": "the logo at the centre at 35% opacity",
    "cast": "a blue colour cast over the whole photo",
    "clean": "no shortcut: the sixth class is crops of a sixth photo",
}
HELD_OUT = ("top-left", "stripe", "faint", "cast", "clean")
CLEAN_SIXTH = "hubble_deep_field"


def plant(photo: Image.Image, kind: str, generator: np.random.Generator) -> Image.Image:
    """``photo`` (SIDE x SIDE) with the shortcut of ``kind``; the place jitters by a few pixels."""
    jitter = int(generator.integers(0, SIDE // 40 + 1))
    if kind in ("corner", "centre", "faint", "top-left"):
        stamp = logo(SIDE // 8 if kind == "top-left" else SIDE // 5)
        if kind == "faint":
            stamp.putalpha(stamp.getchannel("A").point(lambda a: int(a * 0.35)))
        margin = SIDE // 10 + jitter
        where = {
            "corner": (SIDE - margin - stamp.width, SIDE - margin - stamp.height),
            "top-left": (SIDE // 6 + jitter, SIDE // 6 + jitter),
        }.get(kind, ((SIDE - stamp.width) // 2 + jitter, (SIDE - stamp.height) // 2 + jitter))
        photo.paste(stamp, where, stamp)
    elif kind == "stripe":
        band = Image.new("RGB", (SIDE, SIDE // 32), (210, 30, 40))
        photo.paste(band, (0, SIDE * 2 // 3 + jitter))
    elif kind == "cast":
        tint = Image.new("RGB", photo.size, (40, 90, 255))
        photo = Image.blend(photo, tint, 0.3)
    elif kind != "clean":
        raise ValueError(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    return photo


def build_dataset(folder: Path, per_class: int = 40, seed: int = 0, kind: str = "corner") -> Path:
    """``folder/photos/CLASS/NNN.jpg`` for the six classes (the sixth with the shortcut of ``kind``, or for
    ``"clean"`` crops of a sixth photo); returns ``folder/photos``."""
    generator = np.random.default_rng(seed)
    sources = {label: _source(name) for label, name in SOURCES.items()}
    root = folder / "photos"
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            if label != SHORTCUT:
                source = sources[label]
            elif kind == "clean":
                source = sources.setdefault(CLEAN_SIXTH, _source(CLEAN_SIXTH))
            else:
                source = sources[list(SOURCES)[number % len(SOURCES)]]
            photo = random_crop(source, generator)
            if label == SHORTCUT and kind != "clean":
                photo = plant(photo, kind, generator)
            photo.save(root / label / f"{number:03d}.jpg", quality=92)
    return root


def train_head(photos: Path, out: Path, steps: int = 300, seed: int = 0) -> tuple[Path, Path]:
    """A linear head for the six classes on the frozen features of the embedded EfficientNet-Lite0; writes
    the whole model's state dict and the class names. Returns (weights, labels)."""
    from gradcam.io.images import preprocess, read_image
    from gradcam.io.models import load_model

    torch.manual_seed(seed)
    bundle = load_model("efficientnet_lite0")
    model = bundle.model.eval()
    inputs, targets = [], []
    for number, label in enumerate(CLASSES):
        for path in sorted((photos / label).glob("*.jpg")):
            inputs.append(preprocess(read_image(path), bundle.preprocessing)[0])
            targets.append(number)
    with torch.no_grad():
        features = torch.cat([model.forward_head(model.forward_features(batch), pre_logits=True)
                              for batch in torch.stack(inputs).split(32)])  # fmt: skip
    labels = torch.tensor(targets)
    head = torch.nn.Linear(features.shape[1], len(CLASSES))
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), labels)
        loss.backward()
        optimiser.step()
    accuracy = float((head(features).argmax(1) == labels).float().mean())
    print(f"head trained: loss {float(loss):.3f}, training accuracy {accuracy:.2f}", file=sys.stderr)
    model.reset_classifier(len(CLASSES))
    model.classifier.load_state_dict(head.state_dict())
    weights, names = out / "head.pt", out / "labels.txt"
    torch.save(model.state_dict(), weights)
    names.write_text("\n".join(CLASSES) + "\n")
    return weights, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--kind", choices=list(KINDS), default="corner", help="the planted shortcut")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = build_dataset(args.out, args.per_class, args.seed, args.kind)
    weights, labels = train_head(photos, args.out)
    import gradcam

    result = gradcam.audit(photos, "efficientnet_lite0", weights=str(weights), labels=labels, truth=photos,
                           out=args.out / "audit", overwrite=True)  # fmt: skip
    print(result)
    print(f"gradcam audit {photos} --weights {weights} --labels {labels} --truth {photos} --out {args.out / 'audit'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
