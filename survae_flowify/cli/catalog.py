"""``survae-flowify list``: the models, data sets (with their default models) and presets."""

from __future__ import annotations

import argparse

from survae_flowify.cli.presets import PRESETS
from survae_flowify.cli.runs import default_model

__all__ = ["command"]


def command(args: argparse.Namespace) -> int:
    from survae_flowify import models
    from survae_flowify.data import DATASET_INFO

    print("models:    " + ", ".join(models.MODEL_NAMES))
    print("data sets:")
    for name, info in DATASET_INFO.items():
        levels = f", {info.levels} levels" if info.levels else ""
        print(f"  {name:<16} {info.kind:<8} shape {info.shape}{levels}; default model {default_model(name)}")
    print("presets:   " + ", ".join(PRESETS))
    return 0
