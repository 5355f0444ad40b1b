"""The README's volume montage and signal plot, made by `gradcam explain` on small trained models.

    python scripts/nd_pictures.py           # writes docs/volume-montage.png and docs/signal-plot.png

A tiny 3-D CNN learns to tell noise volumes (40^3) with a bright ball in them from those without, and a
tiny 1-D CNN learns to tell 2-channel signals with a burst from those without (a minute on a CPU, seeded);
each is saved as a state dict, and the command line explains a new example of each with
``--model py:nd_pictures:BallNet`` / ``py:nd_pictures:BurstNet``: the map should light the ball and the burst.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class BallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BurstNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(8, 16, 7, padding=3), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def ball_volume(generator: np.random.Generator, ball: bool, side: int = 32) -> np.ndarray:
    volume = generator.normal(0, 0.5, size=(side, side, side)).astype(np.float32)
    if ball:
        centre = generator.integers(7, side - 7, size=3)
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"))
        distance = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
        volume += 3.0 * (distance < generator.uniform(4, 7))
    return volume


def burst_signal(generator: np.random.Generator, burst: bool, length: int = 400) -> np.ndarray:
    t = np.arange(length) / 50
    signal = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * 0.5 * t)]) + generator.normal(0, 0.2, (2, length))
    if burst:
        start = int(generator.integers(20, length - 60))
        signal[0, start : start + 40] += 1.5 * np.sin(2 * np.pi * 4 * t[:40])
    return signal.astype(np.float32)


def train(model: nn.Module, make, steps: int, lr: float, batch: int = 16) -> nn.Module:
    generator = np.random.default_rng(0)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        labels = generator.integers(0, 2, size=batch)
        inputs = torch.from_numpy(np.stack([make(generator, bool(y)) for y in labels]))
        inputs = inputs[:, None] if isinstance(model, BallNet) else inputs
        loss = nn.functional.cross_entropy(model(inputs), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    print(f"{type(model).__name__}: final loss {loss.item():.3f}", file=sys.stderr)
    return model.eval()


def main() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from gradcam.apps.cli import main as gradcam

    generator = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        torch.save(train(BallNet(), ball_volume, 200, 1e-3).state_dict(), folder / "ball.pt")
        torch.save(train(BurstNet(), burst_signal, 300, 3e-3).state_dict(), folder / "burst.pt")
        (folder / "ball.txt").write_text("no ball\nball\n")
        (folder / "burst.txt").write_text("steady\nburst\n")
        np.save(folder / "scan.npy", ball_volume(generator, True))
        np.save(folder / "recording.npy", burst_signal(generator, True))
        for name, model, kind, picture in [("scan.npy", "BallNet", "montage", "volume-montage.png"),
                                           ("recording.npy", "BurstNet", "plot", "signal-plot.png")]:  # fmt: skip
            out = folder / f"out-{name}"
            stem = "ball" if model == "BallNet" else "burst"
            assert gradcam(["explain", str(folder / name), "--model", f"py:nd_pictures:{model}", "--weights",
                            str(folder / f"{stem}.pt"), "--labels", str(folder / f"{stem}.txt"), "--target", "1",
                            "--out", str(out)]) == 0  # fmt: skip
            (made,) = out.glob(f"*.{kind}.png")
            shutil.copy(made, ROOT / "docs" / picture)


if __name__ == "__main__":
    main()
