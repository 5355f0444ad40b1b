"""``python -m gradcam``: the same as the ``gradcam`` command."""

import sys

from .apps.cli import main

sys.exit(main())
