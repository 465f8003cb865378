"""``survae-flowify evaluate``: the bound of a checkpoint on a split, as JSON (DDP-sharded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from survae_flowify.cli import runs
from survae_flowify.cli.ranks import in_every_rank

__all__ = ["command"]


def command(args: argparse.Namespace) -> int:
    return in_every_rank(_evaluate, args)


def _evaluate(args: argparse.Namespace, dist: Any) -> int:
    from survae_flowify.training import evaluate, nll_to_metric, split_context

    flow, checkpoint = runs.load_run(args.run, dist.device)
    data = runs.load_data(checkpoint["spec"], args.data_dir)
    x = getattr(data, args.split)
    result: dict[str, Any] = {"checkpoint": checkpoint["path"], "step": checkpoint["step"],
                              "dataset": data.name, "split": args.split, "examples": len(x)}
    try:
        context = split_context(flow, data, args.split)  # the labels of a class-conditional run
    except ValueError as err:
        raise runs.RunError(str(err)) from None
    kw = {"context": context, "batch_size": args.batch_size, "dist": dist}
    result[data.metric] = nll_to_metric(evaluate(flow, x, **kw), data)
    if args.eval_samples:
        iw = evaluate(flow, x, num_samples=args.eval_samples, **kw)
        result.update({f"iw_{data.metric}": nll_to_metric(iw, data), "eval_samples": args.eval_samples})
    if dist.is_main:
        print(json.dumps(result))
        with open(Path(checkpoint["path"]).parent / "evaluations.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0
