"""Third-party libraries' console chatter, kept out of a run's own progress and summary unless the user asks
for it (``--verbose``, which sets ``GRADCAM_VERBOSE=1``): Ray prints a few hundred INFO lines for three photos
(its start, Ray Data's plans and a progress report every ten seconds), transformers its loading bars.

Example:
    >>> start_ray(address=None)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any

VERBOSE = "GRADCAM_VERBOSE"
RAY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune")


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def start_ray(address: str | None) -> Any:
    """``ray.init`` (once) for a gradcam run: the driver's console keeps errors only unless verbose, the
    workers' logs stay in Ray's session folder (``log_to_driver=False``), Ray Data shows no progress bars."""
    import ray

    quiet = not verbose()
    if quiet:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # its token notice on every local start
        for name in RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 logging_level=logging.ERROR if quiet else logging.INFO)  # fmt: skip
    if quiet:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for name in RAY_LOGGERS:  # Ray Data sets its own levels when imported
            logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def quiet_transformers(transformers: Any) -> None:
    """No loading bars or INFO from transformers unless verbose (its warnings that matter still show)."""
    if verbose():
        return
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
