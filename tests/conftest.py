"""Fixtures shared by the tests; no network, no downloads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tiny_models import HandModel, TinyCNN


@pytest.fixture
def twelve_photos(tmp_path: Path) -> Path:
    """Twelve JPEGs in ``tmp_path/photos``: the cat photo turned by 7 degrees more each time."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(Path(__file__).resolve().parents[1] / "examples" / "chelsea.jpg")
    for i in range(12):
        source.rotate(i * 7).save(folder / f"p{i:02d}.jpg")
    return folder


@pytest.fixture
def hand_model() -> HandModel:
    return HandModel().eval()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The Hugging Face hub at an address where nothing listens: loading from it must fail at once."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


@dataclass(frozen=True)
class PlantedShortcut:
    """scripts/shortcut_demo.py's dataset, small: six classes of real photos, ``stamped`` carrying a logo in
    the bottom-right corner, and EfficientNet-Lite0 with a linear head trained on it (which uses the logo)."""

    folder: Path
    photos: Path
    weights: Path
    labels: Path


def _shortcut_demo():
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "shortcut_demo.py"
    spec = importlib.util.spec_from_file_location("shortcut_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _planted(tmp_path_factory, kind: str) -> PlantedShortcut:
    demo = _shortcut_demo()
    folder = tmp_path_factory.mktemp(f"planted-{kind}")
    photos = demo.build_dataset(folder, per_class=24, kind=kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights, labels = demo.train_head(photos, folder)
    return PlantedShortcut(folder, photos, weights, labels)


def audit_planted(data: PlantedShortcut, out: Path, *extra: str, photos: Path | None = None) -> dict:
    """``gradcam audit`` of ``photos`` (default: the planted dataset) with the planted model, the photos'
    folders as the true classes, in this process; its ``audit.json``, validated against the schema."""
    import json

    from gradcam.apps.cli import main
    from manifest_check import validate_audit

    photos = photos or data.photos
    code = main(["audit", str(photos), "--weights", str(data.weights), "--labels", str(data.labels), "--truth",
                 str(photos), "--out", str(out), "--quiet", "--workers", "0", *extra])  # fmt: skip
    assert code == 0
    return validate_audit(json.loads((out / "audit.json").read_text()))


@pytest.fixture(scope="session")
def planted_shortcut(tmp_path_factory) -> PlantedShortcut:
    return _planted(tmp_path_factory, "corner")


@pytest.fixture(scope="session")
def planted_in_the_centre(tmp_path_factory) -> PlantedShortcut:
    """As ``planted_shortcut``, the logo at the centre of every ``stamped`` photo (#28: the old rules missed it)."""
    return _planted(tmp_path_factory, "centre")
