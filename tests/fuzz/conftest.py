"""Hypothesis profiles for the fuzz suite: ``ci`` (a few examples each, part of ``make test``) and ``long``
(many examples; ``make fuzz`` runs it again and again with new seeds for 10 minutes, see run_for.py)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,  # CI is reproducible; `make fuzz` explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("GRADCAM_FUZZ_PROFILE", "ci"))


def scaled(examples: int) -> int:
    """Fewer examples for the slow properties (each a whole command): ``examples`` in the long profile,
    a quarter of the profile's count in CI."""
    return examples if settings.default.max_examples > 12 else max(2, settings.default.max_examples // 4)
