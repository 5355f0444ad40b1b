"""The CAM methods, one class each, registered by name (gradient methods first)."""

from . import gradient  # noqa: I001  (import order is registry order)
from . import activation  # noqa: F401
from . import perturbation  # noqa: F401
from . import attention  # noqa: F401
from . import sess  # noqa: F401
from . import fullgrad  # noqa: F401
from . import legrad  # noqa: F401
from . import concepts  # noqa: F401
from .base import CAMMethod, channel_contributions, get_method, methods, register, weighted_sum

__all__ = ["CAMMethod", "channel_contributions", "get_method", "methods", "register", "weighted_sum", "gradient"]
