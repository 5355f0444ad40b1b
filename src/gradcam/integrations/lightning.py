"""``GradCAMCallback``: Grad-CAM maps of a fixed set of photos, logged during a Lightning ``Trainer``'s fit.

At the end of every ``every_n_epochs``-th epoch (after its validation, or at the epoch's end where there is
no validation) the module being trained explains the photos and each overlay is logged to every logger the
trainer has (TensorBoard, MLflow, W&B, CSV: PNG files beside its metrics; a ``gradcam/`` folder in the
trainer's root when it has none), with the maps' insertion and deletion areas as scalars. When fitting ends,
each photo's strip of maps over the logged epochs is logged too. Training is not changed, bit for bit (see
:mod:`gradcam.integrations.training`); with several processes only the first logs.

Example:
    >>> from gradcam.integrations.lightning import GradCAMCallback              # doctest: +SKIP
    >>> trainer = Trainer(max_epochs=10, logger=TensorBoardLogger("runs"),
    ...                   callbacks=[GradCAMCallback(val_loader, targets="labels", labels=classes)])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from ..io.models import Preprocessing
from .training import History, Photos, fixed_photos, log_explanations, log_history


class GradCAMCallback(Callback):
    """Log Grad-CAM-family maps of ``photos`` during training.

    Args:
        photos: image paths, a preprocessed tensor batch (B, C, H, W) or a DataLoader (its first
            ``max_photos`` inputs, taken once, with the random state put back).
        every_n_epochs: log after every n-th epoch (1: every epoch).
        method, layer, targets, labels: as in :func:`gradcam.explain`; ``targets="labels"`` explains the
            true classes of a DataLoader's photos (None: each photo's top class at that epoch).
        network: the attribute of the LightningModule that is the image model (``"net"``), when the
            module's own ``forward`` does not return class scores; layer names are then relative to it.
        preprocessing: how paths are turned into inputs, and how inputs are drawn (its mean and std).
        metrics: also log the maps' insertion and deletion areas (16 forward passes per photo).
    """

    def __init__(
        self,
        photos: Any,
        every_n_epochs: int = 1,
        method: str = "gradcam",
        layer: Any = None,
        targets: Any = None,
        labels: Sequence[str] | None = None,
        network: str | None = None,
        preprocessing: Preprocessing | None = None,
        max_photos: int = 8,
        metrics: bool = True,
        tag: str = "gradcam",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be 1 or more, got {every_n_epochs}")
        self.source, self.every_n_epochs, self.max_photos = photos, every_n_epochs, max_photos
        self.method, self.layer, self.targets, self.labels = method, layer, targets, labels
        self.network, self.preprocessing, self.metrics, self.tag = network, preprocessing, metrics, tag
        self.history = History()
        self.photos: Photos | None = None
        self._logged_epoch: int | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.photos is None:
            self.photos = fixed_photos(self.source, self.preprocessing, self.max_photos)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log(trainer, pl_module)  # no validation this epoch: log here instead (at most once an epoch)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and self.history.tiles:
            log_history(self.history, self._loggers(trainer), trainer.global_step, self.tag)

    def _log(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if self._logged_epoch == epoch or (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        self._logged_epoch = epoch
        model = getattr(pl_module, self.network) if self.network else pl_module
        log_explanations(
            model, self.photos if self.photos is not None else self.source, self._loggers(trainer),
            trainer.global_step, method=self.method, layer=self.layer, targets=self.targets, labels=self.labels,
            preprocessing=self.preprocessing, metrics=self.metrics, epoch=epoch, tag=self.tag, history=self.history,
        )  # fmt: skip

    @staticmethod
    def _loggers(trainer: Any) -> list[Any]:
        return list(trainer.loggers) or [Path(trainer.default_root_dir) / "gradcam"]
