"""``python -m gradcam``: the same as the ``gradcam`` command."""

import sys

from .cli import main

sys.exit(main())
