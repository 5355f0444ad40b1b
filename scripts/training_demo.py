"""Maps during training, shown on a run that learns something in a minute on a CPU: a small CNN learns to tell
photos with a bright square from photos without, and ``GradCAMCallback`` logs, each epoch, where its evidence
for "square" lies. Writes the README's picture (one photo's map over the epochs).

    python scripts/training_demo.py --out /tmp/training-demo --epochs 6
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradcam.integrations.lightning import GradCAMCallback

SIDE = 48


def squares(count: int, seed: int) -> TensorDataset:
    """Textured photos; class 1 holds a bright 10 x 10 square somewhere, class 0 does not."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 3, SIDE, SIDE, generator=generator) * 0.6
    y = torch.arange(count) % 2
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, SIDE - 10, (2,), generator=generator).tolist()
        x[i, :, r : r + 10, c : c + 10] = torch.tensor([1.0, 0.9, 0.2]).view(3, 1, 1)
    return TensorDataset(x, y)


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_accuracy", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/training-demo"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--picture", type=Path, default=None, help="copy the history strip of photo_1 here")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    photos = squares(4, seed=99).tensors[0]  # photos 1 and 3 hold a square
    callback = GradCAMCallback(photos, targets=[1, 1, 1, 1], labels=["plain", "square"], metrics=True)
    logger = CSVLogger(args.out, name="run")
    trainer = L.Trainer(max_epochs=args.epochs, logger=logger, callbacks=[callback], enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(Net(), DataLoader(squares(1024, 0), batch_size=64, shuffle=True), DataLoader(squares(256, 1), 64))
    strip = Path(logger.log_dir) / "gradcam" / "gradcam" / "history" / "photo_1"
    found = sorted(strip.glob("*.png"))
    print(f"history strips: {strip.parent}; scalars: {Path(logger.log_dir) / 'metrics.csv'}")
    if args.picture and found:
        shutil.copyfile(found[-1], args.picture)


if __name__ == "__main__":
    main()
