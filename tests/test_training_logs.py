"""Maps during training (#29 items 1-5): the Lightning callback and ``log_explanations`` log overlays, history
strips and insertion/deletion scalars to TensorBoard, MLflow, W&B (offline), CSV and folders, read back here;
and training with the callback ends with bit-identical weights to training without it."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradcam
from gradcam.integrations import FolderSink, History, fixed_photos, log_explanations, log_history, sink_for

L = pytest.importorskip("lightning")
pytest.importorskip("tensorboard")


def _data(count: int = 48, seed: int = 0) -> TensorDataset:
    """Two classes of 16 x 16 one-channel images: class 1 has a bright 4 x 4 square somewhere."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, 16, 16, generator=generator) * 0.3
    y = torch.arange(count) % 2
    for i in range(count):
        if y[i]:
            r, c = torch.randint(0, 12, (2,), generator=generator).tolist()
            x[i, 0, r : r + 4, c : c + 4] += 0.7
    return TensorDataset(x, y)


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip


class Tiny(L.LightningModule):
    """Dropout, batch norm, a shuffling loader and a random augmentation: every random draw training makes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        x = x + 0.05 * torch.randn_like(x)
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _fit(root, callbacks=(), logger=False, epochs=3):
    L.seed_everything(7, verbose=False)
    module = Tiny()
    train = DataLoader(_data(48, 1), batch_size=8, shuffle=True)
    val = DataLoader(_data(16, 2), batch_size=8, shuffle=True)
    trainer = L.Trainer(
        max_epochs=epochs, logger=logger, callbacks=list(callbacks), default_root_dir=root, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, deterministic=True,
    )  # fmt: skip
    trainer.fit(module, train, val)
    return module, trainer


def test_training_with_the_callback_ends_bit_identical(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from gradcam.integrations.lightning import GradCAMCallback

    plain, _ = _fit(tmp_path / "plain")
    # the photos come from a shuffling DataLoader: taking them must not move the data order either
    photos = DataLoader(_data(16, 3), batch_size=4, shuffle=True)
    loggers = [TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")]
    callback = GradCAMCallback(photos, targets="labels", labels=["plain", "square"], max_photos=4)
    logged, trainer = _fit(tmp_path / "logged", [callback], loggers)
    for (name, a), b in zip(plain.state_dict().items(), logged.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs: the callback changed training"
    assert logged.training and all(p.requires_grad for p in logged.parameters())
    assert len(callback.history.tiles["photo_0"]) == 3
    # TensorBoard, read back with its own event reader: one overlay per photo per epoch, at the global steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(loggers[0].log_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    steps = [event.step for event in events.Images("gradcam/photo_0")]
    assert steps == [6, 12, 18], steps  # 48 photos / 8 a batch = 6 steps an epoch
    assert {f"gradcam/photo_{i}" for i in range(4)} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("gradcam/history/photo_0")] == [18]
    insertion = events.Scalars("gradcam/insertion_auc")
    assert [e.step for e in insertion] == [6, 12, 18] and all(0 <= e.value <= 1 for e in insertion)
    # CSV: the pictures beside its metrics.csv, the scalars in it
    csv_dir = loggers[1].log_dir
    assert sorted(os.listdir(os.path.join(csv_dir, "gradcam", "gradcam", "photo_0"))) == [
        "step-000006.png", "step-000012.png", "step-000018.png",
    ]  # fmt: skip
    with open(os.path.join(csv_dir, "metrics.csv")) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("gradcam/deletion_auc")]
    assert [int(row["step"]) for row in rows] == [6, 12, 18]
    strip = Image.open(os.path.join(csv_dir, "gradcam", "gradcam", "history", "photo_0", "step-000018.png"))
    assert strip.width > 3 * 160 and strip.height > 160


def test_the_callback_logs_to_mlflow_every_n_epochs(tmp_path):
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    from gradcam.integrations.lightning import GradCAMCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3's file store refuses new runs; its database does not
    logger = MLFlowLogger(experiment_name="t", tracking_uri=uri, artifact_location=(tmp_path / "artifacts").as_uri())
    photos = _data(3, 4).tensors[0]
    _fit(tmp_path, [GradCAMCallback(photos, every_n_epochs=2, metrics=True)], logger, epochs=4)
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(logger.run_id, "gradcam/insertion_auc")
    assert [m.step for m in history] == [12, 24]  # epochs 1 and 3 (every 2nd), 6 steps each
    artifacts = [a.path for a in client.list_artifacts(logger.run_id, "images")]
    assert any("photo_0" in path for path in artifacts) and any("history" in path for path in artifacts)


def test_the_callback_without_validation_logs_at_the_epoch_end(tmp_path):
    from gradcam.integrations.lightning import GradCAMCallback

    L.seed_everything(0, verbose=False)
    callback = GradCAMCallback(_data(2).tensors[0], metrics=False)
    trainer = L.Trainer(max_epochs=2, logger=False, callbacks=[callback], default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(Tiny(), DataLoader(_data(16), batch_size=8))
    files = sorted(p.name for p in (tmp_path / "gradcam" / "gradcam" / "photo_1").iterdir())
    assert files == ["step-000002.png", "step-000004.png"]


def _unseeded(name: str) -> gradcam.CAMMethod:
    """A method that draws from torch's global generator (its noise not seeded): what must be put back."""
    return type(gradcam.get_method(name))(seed=None)


def test_log_explanations_in_a_plain_loop_leaves_the_model_and_random_state(tmp_path):
    torch.manual_seed(0)
    model = _net().train()
    model[0].weight.requires_grad_(False)
    grad = torch.ones_like(model[4].weight)
    model[4].weight.grad = grad
    torch.manual_seed(123)
    np.random.seed(5)
    expected = torch.rand(3), np.random.rand(2)
    torch.manual_seed(123)
    np.random.seed(5)
    history = History()
    logged = log_explanations(model, _data(4).tensors[0], tmp_path / "logs", step=3, epoch=0, history=history,
                              labels=["plain", "square"], method=_unseeded("sscam"))  # fmt: skip
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(2), expected[1])
    assert model.training and not model[0].weight.requires_grad and model[4].weight.grad is grad
    assert set(logged.pictures) == {f"gradcam/photo_{i}" for i in range(4)}
    assert (tmp_path / "logs" / "gradcam" / "photo_2" / "step-000003.png").exists()
    with open(tmp_path / "logs" / "scalars.csv") as handle:
        assert {row["name"] for row in csv.DictReader(handle)} == {"gradcam/insertion_auc", "gradcam/deletion_auc"}
    # the maps are explain()'s maps on the same inputs
    expected_maps = gradcam.explain(model, _data(4).tensors[0], "sscam").maps  # its default seed: other noise
    assert logged.explanation.method == "sscam" and logged.explanation.maps.shape == expected_maps.shape
    logged = log_explanations(model, _data(4).tensors[0], tmp_path / "other", step=0, method="sscam")
    torch.testing.assert_close(logged.explanation.maps, expected_maps)
    # a second call at the same step never overwrites the first picture
    log_explanations(model, _data(4).tensors[0], tmp_path / "logs", step=3, metrics=False)
    assert (tmp_path / "logs" / "gradcam" / "photo_2" / "step-000003-1.png").exists()
    strips = log_history(history, tmp_path / "logs", step=3)
    assert list(strips) == [f"gradcam/history/photo_{i}" for i in range(4)]


def test_log_explanations_restores_the_random_state_when_it_raises(tmp_path, monkeypatch):
    import gradcam.integrations.training as training

    def fails(*args, **kwargs):
        raise RuntimeError("the metric failed")

    monkeypatch.setattr(training, "deletion_insertion", fails)
    torch.manual_seed(1)
    model, photos = _net(), _data(2).tensors[0]
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="the metric failed"):  # after randomcam drew its random maps
        log_explanations(model, photos, tmp_path, step=0, method=_unseeded("randomcam"))
    assert torch.equal(torch.get_rng_state(), before)


def test_photos_from_paths_are_preprocessed_and_drawn_as_the_model_sees_them(tmp_path):
    from gradcam.io.models import Preprocessing

    for name, colour in (("red", (200, 20, 20)), ("blue", (20, 20, 200))):
        Image.new("RGB", (300, 200), colour).save(tmp_path / f"{name}.png")
    spec = Preprocessing(resize=64, crop=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    photos = fixed_photos([tmp_path / "red.png", tmp_path / "blue.png"], spec)
    assert photos.names == ("red", "blue") and photos.inputs.shape == (2, 3, 64, 64)
    assert tuple(photos.pixels[0, :, 10, 10].tolist()) == (200, 20, 20)  # un-normalised back to the photo
    # more paths than max_photos: a name for each photo kept, no more (three names for two inputs before)
    Image.new("RGB", (300, 200), (20, 200, 20)).save(tmp_path / "green.png")
    kept = fixed_photos([tmp_path / "red.png", tmp_path / "blue.png", tmp_path / "green.png"], spec, max_photos=2)
    assert kept.names == ("red", "blue") and len(kept.inputs) == len(kept.pixels) == 2


def test_sinks_are_found_for_each_tracker_and_unknown_ones_refused(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "tb")
    assert sink_for(writer).name == "tensorboard"
    assert isinstance(sink_for(tmp_path), FolderSink)
    with pytest.raises(TypeError, match="cannot log to a dict"):
        sink_for({})
    writer.close()


def test_wandb_offline_run_receives_the_pictures(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=tmp_path, project="t")
    try:
        log_explanations(_net(), _data(2).tensors[0], run, step=5, metrics=True)
    finally:
        run.finish()
    images = list(tmp_path.rglob("media/images/gradcam/photo_0*.png"))
    assert images, "no overlay in the offline run's media"
