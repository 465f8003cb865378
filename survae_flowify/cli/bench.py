"""``survae-flowify bench``: time a model's training step, evaluation and sampling."""

from __future__ import annotations

import argparse
import json

import torch

from survae_flowify.cli import runs

__all__ = ["command"]


def command(args: argparse.Namespace) -> int:
    from survae_flowify.data import DATASET_INFO
    from survae_flowify.training import resolve_device
    from survae_flowify.training.bench import benchmark, synthetic_batch

    model = args.model or runs.default_model(args.dataset)
    spec = runs.new_spec(model, args.dataset,
                         model_options=dict(runs.parse_model_option(o) for o in args.model_option or []))
    info = DATASET_INFO[args.dataset]
    spec["data_shape"] = list(info.shape)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    flow = runs.build_flow(spec)
    x = synthetic_batch(info.shape, info.levels, args.batch_size, device)
    result = {"model": model, "dataset": args.dataset, "shape": list(info.shape),
              "threads": torch.get_num_threads(), **benchmark(flow, x, steps=args.steps)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0
