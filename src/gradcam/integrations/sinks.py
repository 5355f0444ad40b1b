"""Where pictures and numbers logged during training go: one small adapter per experiment tracker.

:func:`sink_for` takes what the user (or Lightning) has and returns a :class:`Sink` with two calls,
``image(tag, picture, step)`` and ``scalars(values, step)``. Known without importing any tracker:
TensorBoard's ``SummaryWriter``, an MLflow ``MlflowClient`` with a run id or the ``mlflow`` module (its
active run), a W&B run, Lightning's TensorBoard, MLflow, W&B and CSV loggers, and a folder (PNG files
and a ``scalars.csv``).

Example:
    >>> sink = sink_for(SummaryWriter("runs/a"))                            # doctest: +SKIP
    >>> sink.image("gradcam/photo_0", picture, step=120)
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..io.files import write_atomic


class Sink(Protocol):
    name: str

    def image(self, tag: str, picture: Image.Image, step: int) -> None: ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...


@dataclass
class TensorBoardSink:
    """A ``torch.utils.tensorboard.SummaryWriter`` (or Lightning's ``TensorBoardLogger.experiment``)."""

    writer: Any
    name: str = "tensorboard"

    def image(self, tag: str, picture: Image.Image, step: int) -> None:
        self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()


@dataclass
class MLflowSink:
    """An ``MlflowClient`` and a run id (Lightning's ``MLFlowLogger``), or the ``mlflow`` module itself
    (``run_id`` None: the active run). Pictures go to the run's images (``log_image(key=, step=)``)."""

    client: Any
    run_id: str | None
    name: str = "mlflow"

    def image(self, tag: str, picture: Image.Image, step: int) -> None:
        key = _mlflow_key(tag)
        if self.run_id is None:
            self.client.log_image(picture, key=key, step=step)
        else:
            self.client.log_image(self.run_id, picture, key=key, step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            if self.run_id is None:
                self.client.log_metric(_mlflow_key(key), value, step=step)
            else:
                self.client.log_metric(self.run_id, _mlflow_key(key), value, step=step)


@dataclass
class WandbSink:
    """A W&B run (``wandb.init(...)``, Lightning's ``WandbLogger.experiment``; offline mode works). The
    step goes in as ``trainer/global_step`` beside the values, as Lightning logs its own metrics, so W&B's
    own step counter is never asked to go back."""

    run: Any
    name: str = "wandb"

    def image(self, tag: str, picture: Image.Image, step: int) -> None:
        import wandb

        self.run.log({tag: wandb.Image(picture), "trainer/global_step": step})

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "trainer/global_step": step})


@dataclass
class FolderSink:
    """PNG files ``FOLDER/TAG/step-000120.png`` and a ``scalars.csv`` (step, name, value). An existing
    file is never overwritten: a second picture for the same tag and step gets ``-1``, ``-2``, ..."""

    folder: Path
    metrics_logger: Any = None  # Lightning's CSVLogger: the scalars go to its metrics.csv instead
    name: str = "folder"

    def image(self, tag: str, picture: Image.Image, step: int) -> None:
        where = self.folder.joinpath(*[_safe_part(part) for part in tag.split("/") if part])
        where.mkdir(parents=True, exist_ok=True)
        path, copy = where / f"step-{step:06d}.png", 0
        while path.exists():
            copy += 1
            path = where / f"step-{step:06d}-{copy}.png"
        write_atomic(path, lambda temporary: picture.save(temporary, format="PNG"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.metrics_logger is not None:
            self.metrics_logger.log_metrics(values, step)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "scalars.csv"
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "name", "value"])
            writer.writerows([step, key, f"{value:.6g}"] for key, value in values.items())


def sink_for(target: Any) -> Sink:
    """The :class:`Sink` for a tracker, a Lightning logger or a folder; one line naming the type otherwise."""
    if isinstance(target, (str, Path)):
        return FolderSink(Path(target))
    if isinstance(target, ModuleType) and target.__name__ == "mlflow":
        return MLflowSink(target, None)
    kind = type(target).__name__
    if kind == "CSVLogger" and hasattr(target, "log_dir"):
        return FolderSink(Path(target.log_dir) / "gradcam", metrics_logger=target)
    if kind == "MLFlowLogger":
        return MLflowSink(target.experiment, target.run_id)
    if kind in {"TensorBoardLogger", "WandbLogger"} or (
        hasattr(target, "experiment") and hasattr(target, "log_metrics") and not hasattr(target, "add_image")
    ):
        return sink_for(target.experiment)
    if hasattr(target, "add_image") and hasattr(target, "add_scalar"):
        return TensorBoardSink(target)
    if hasattr(target, "log_image") and hasattr(target, "create_run"):
        raise TypeError("an MlflowClient needs its run: pass MLflowSink(client, run_id) or the mlflow module")
    if hasattr(target, "log") and hasattr(target, "id") and "wandb" in type(target).__module__:
        return WandbSink(target)
    raise TypeError(
        f"cannot log to a {kind}: pass a SummaryWriter, the mlflow module, an MlflowClient with its run "
        "(MLflowSink), a W&B run, a Lightning logger or a folder"
    )


def _mlflow_key(tag: str) -> str:
    """MLflow keys take letters, digits, ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./ ]", "_", tag)


def _safe_part(part: str) -> str:
    cleaned = re.sub(r"[^\w\-.]", "_", part).strip(".")
    return cleaned or "_"
