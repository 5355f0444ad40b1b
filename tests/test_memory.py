"""Repeated calls keep memory flat: nothing (graphs, hooks, caches) accumulates between calls."""

from __future__ import annotations

import gc
import resource

import torch

import gradcam


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_repeated_calls_keep_peak_rss_flat(tiny_cnn, tiny_images):
    for _ in range(50):  # warm up allocators and caches
        gradcam.explain(tiny_cnn, tiny_images, targets="top-2")
    gc.collect()
    before = peak_rss_mb()
    for _ in range(300):
        gradcam.explain(tiny_cnn, tiny_images, targets="top-2")
    gc.collect()
    assert peak_rss_mb() - before < 10  # a leak of one batch's activations per call would be ~30 MB
    assert all(not m._forward_hooks for m in tiny_cnn.modules())
    assert torch.is_grad_enabled()
