"""What logging maps during training costs: one ``log_explanations`` call (8 photos, with and without the
insertion/deletion scalars) against the validation epoch it follows, measured interleaved in one run.

    python bench/bench_training.py --model resnet18 --size 112 --val-images 512 --repeats 5

The model has random weights (offline); the cost does not depend on what it learnt. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torchvision

from bench_core import interleaved_medians
from gradcam.integrations import fixed_photos, log_explanations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--val-images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, num_classes=10).eval()
    val = torch.randn(args.val_images, 3, args.size, args.size)
    photos = fixed_photos(val[: args.photos])
    folder = tempfile.mkdtemp()

    def validation_epoch() -> None:
        with torch.inference_mode():
            for start in range(0, len(val), args.batch):
                model(val[start : start + args.batch]).softmax(-1)

    step = iter(range(10**9))
    runs = {
        f"validation epoch ({args.val_images} images)": validation_epoch,
        f"log_explanations, {args.photos} photos, with scalars": lambda: log_explanations(
            model, photos, folder, next(step), metrics=True
        ),
        f"log_explanations, {args.photos} photos, pictures only": lambda: log_explanations(
            model, photos, folder, next(step), metrics=False
        ),
    }
    medians = interleaved_medians(runs, args.repeats)
    base = next(iter(medians.values()))
    print(f"| run ({args.model}, {args.size} px, {torch.get_num_threads()} threads) | s | x validation epoch |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
