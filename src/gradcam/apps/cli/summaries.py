"""What ``gradcam -h`` needs, and nothing else (so it needs neither torch nor the commands): each subcommand's
one-line summary (the one place each command's own parser reads it from too), the exit codes and the help
formatter.
"""

from __future__ import annotations

import argparse
import textwrap

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

SUMMARIES = {
    "explain": "explain photos, folders and globs",
    "evaluate": "measure how faithful and well-localised the maps of several methods are",
    "audit": "what a model relies on across a dataset (possible shortcuts), and how two models differ",
    "concepts": "what the model sees: concepts shared by the photos (Deep Feature Factorization)",
    "serve": "try photos in the browser (needs: pip install 'gradcam[web]')",
    "models": "list model names and which work offline now",
    "layers": "list a model's candidate layers with their output shapes",
}


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, except where the help already says what the default is."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Wrapped at spaces only: a method name such as ``gradcam-elementwise`` is never cut at its hyphen."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default in (None, False, argparse.SUPPRESS):
            return text  # a default is shown only where one applies
        return super()._get_help_string(action)
