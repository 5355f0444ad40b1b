"""Where users already work: maps logged during training (:func:`log_explanations` for a hand-written loop,
:class:`gradcam.integrations.lightning.GradCAMCallback` for Lightning) to TensorBoard, MLflow, W&B or a folder.

Example:
    >>> from gradcam.integrations import log_explanations                        # doctest: +SKIP
    >>> log_explanations(model, ["cat.jpg"], SummaryWriter("runs/a"), step=epoch, epoch=epoch)
"""

from .sinks import FolderSink, MLflowSink, Sink, TensorBoardSink, WandbSink, sink_for
from .training import History, Logged, Photos, fixed_photos, log_explanations, log_history

__all__ = [
    "FolderSink",
    "History",
    "Logged",
    "MLflowSink",
    "Photos",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "fixed_photos",
    "log_explanations",
    "log_history",
    "sink_for",
]
