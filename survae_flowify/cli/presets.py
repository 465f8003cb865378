"""Named settings for ``survae-flowify train --preset NAME`` (flags given with it win)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_THREADS", "PAPER_EPOCHS", "PRESETS"]

DEMO_THREADS = 1
"""CPU threads of the demo. Measured (small-conv on the digits, batch 64): 14.3 ms a step with one
thread on an idle core; with two threads on a loaded two-core machine 78 ms, five times slower.
One thread keeps the demo's speed independent of the other core's load, and its result is a
fixed schedule's, whatever the speed."""

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"model": "small-conv", "dataset": "digits", "epochs": 300, "batch_size": 64,
             "lr": 5e-3, "threads": DEMO_THREADS, "name": "demo"},
    "paper": {"batch_size": 256, "lr": 5e-4, "epochs": "paper"},
}
"""``demo``: a small flowified convolutional flow (``small-conv``) on the 8×8 digits, a fixed
schedule of 300 epochs (5 700 steps of 64 images, about two minutes on one idle CPU core) on one
thread, so the same seed gives the same number on any machine load. ``paper``: appendix F (Adam
5e-4 with cosine annealing, batch 256, 200 epochs for 28×28 images, 1000 for CIFAR-10)."""

PAPER_EPOCHS = {(1, 28, 28): 200, (3, 32, 32): 1000}
"""Appendix F's epochs by image shape."""
