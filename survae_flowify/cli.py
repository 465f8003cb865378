"""The ``survae-flowify`` command line: train, evaluate, sample, bench, list.

Examples::

    survae-flowify train --preset demo                      # ~2 minutes on 2 CPU cores
    survae-flowify train --model fconv1 --dataset fashion-mnist --epochs 5 --out runs/fconv1
    survae-flowify train --resume runs/fconv1                # continue step count and schedule
    survae-flowify evaluate runs/fconv1 --eval-samples 100   # importance-weighted test bound
    survae-flowify sample runs/fconv1 -n 64
    survae-flowify bench --model fmlp --dataset mnist
    torchrun --nproc-per-node 2 -m survae_flowify.cli train …   # DDP (gloo on CPU, NCCL on GPU)

Exit codes: 0 done, 1 training diverged (non-finite loss), 2 bad input (unknown model or data
set, missing data, unreadable or mismatched checkpoint, existing output), 130 interrupted
(the checkpoint is saved; continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["PRESETS", "build_parser", "default_model", "main"]

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"model": "small-conv", "dataset": "digits", "epochs": 2000, "batch_size": 64,
             "lr": 2e-3, "time_budget_s": 120.0, "name": "demo"},
    "paper": {"batch_size": 256, "lr": 5e-4, "epochs": "paper"},
}
"""``demo``: a small flowified convolutional flow (``small-conv``) on the 8×8 digits for a time
budget of two minutes (the schedule's length is set from the measured speed). ``paper``:
appendix F (Adam 5e-4 with cosine annealing, batch 256, 200 epochs for 28×28 images, 1000 for
CIFAR-10)."""

_PAPER_EPOCHS = {(1, 28, 28): 200, (3, 32, 32): 1000}
_CONFIG_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "clip_grad", "max_steps",
                 "eval_batch_size", "eval_samples", "valid_every", "log_every",
                 "checkpoint_every", "checkpoint_minutes", "seed", "quiet", "plots", "plot_samples",
                 "time_budget_s")


class UsageError(Exception):
    """Bad input from the user: printed as one paragraph, exit code 2."""


def _fail(message: str) -> int:
    print(f"survae-flowify: error: {message}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- models and data
def default_model(dataset: str) -> str:
    """The model trained when ``--model`` is not given."""
    from survae_flowify.data import DATASET_INFO

    info = DATASET_INFO[dataset]
    if info.kind == "image":
        return "small-conv" if info.shape == (1, 8, 8) else "fconv1"
    return "tabular-mlp" if info.kind == "tabular" else "small-mlp"


def _check_name(kind: str, name: str, choices: tuple[str, ...]) -> None:
    if name not in choices:
        raise UsageError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--model-option expects KEY=VALUE, got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered == "none":
        return key, None
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    return key, raw


def _build_flow(spec: dict[str, Any]) -> Any:
    """``models.build`` from a run's spec; a model that does not fit the data is a usage error."""
    from survae_flowify import models

    _check_name("model", spec["model"], models.MODEL_NAMES)
    kwargs = dict(spec.get("model_options") or {})
    if spec.get("levels"):
        kwargs["levels"] = spec["levels"]
    if spec["model"] == "tabular-mlp":
        kwargs.setdefault("dataset", spec["dataset"])
    try:
        return models.build(spec["model"], tuple(spec["data_shape"]), **kwargs)
    except (ValueError, TypeError) as err:
        raise UsageError(f"cannot build model {spec['model']!r} for {spec['dataset']}: {err}") from err


def _load_data(spec: dict[str, Any], data_dir: str | None) -> Any:
    from survae_flowify.data import DATASET_NAMES, load_dataset

    _check_name("data set", spec["dataset"], DATASET_NAMES)
    data = load_dataset(spec["dataset"], data_dir)
    return data.subset(spec["subset"]) if spec.get("subset") else data


def _flow_from_checkpoint(checkpoint: dict[str, Any], device: torch.device) -> Any:
    from survae_flowify.training import CheckpointError, load_model_state

    spec = checkpoint["spec"]
    if spec.get("model") in (None, "custom"):
        raise CheckpointError(
            f"{checkpoint['path']} holds a custom model trained through the Python API; rebuild "
            "that model in Python and load checkpoint['model'] into it"
        )
    flow = _build_flow(spec)
    load_model_state(flow, checkpoint["model"], source=checkpoint["path"])
    return flow.to(device).eval()


# -------------------------------------------------------------------------------- train
def _explicit_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k, None) is not None}


def _run_settings(args: argparse.Namespace, checkpoint: dict[str, Any] | None) -> tuple[dict, dict]:
    """The run's spec (model, data set, options) and configuration, from the checkpoint when
    resuming, else from the preset, with explicit flags on top."""
    from survae_flowify.data import DATASET_INFO, DATASET_NAMES

    if checkpoint is not None:
        spec = dict(checkpoint["spec"])
        for key in ("model", "dataset"):
            given = getattr(args, key)
            if given is not None and given != spec.get(key):
                raise UsageError(f"--{key} {given} does not match the checkpoint's {key} {spec.get(key)!r}")
        return spec, {**checkpoint["config"], **_explicit_config(args)}
    preset = dict(PRESETS[args.preset]) if args.preset else {}
    dataset = args.dataset or preset.get("dataset") or "digits"
    _check_name("data set", dataset, DATASET_NAMES)
    info = DATASET_INFO[dataset]
    if preset.get("epochs") == "paper":
        if info.shape not in _PAPER_EPOCHS:
            raise UsageError("--preset paper is defined for MNIST, Fashion-MNIST and CIFAR-10 "
                             f"(appendix F); for {dataset} set --epochs and --batch-size yourself")
        preset["epochs"] = _PAPER_EPOCHS[info.shape]
    options = dict(_parse_option(o) for o in args.model_option or [])
    spec = {"model": args.model or preset.get("model") or default_model(dataset), "dataset": dataset,
            "levels": info.levels, "model_options": options, "subset": args.subset,
            "preset": args.preset}
    config = {k: v for k, v in preset.items() if k in _CONFIG_FLAGS}
    return spec, {**config, **_explicit_config(args)}


def _output_dir(args: argparse.Namespace, spec: dict, checkpoint: dict | None, dist: Any) -> Path:
    """The run directory: the checkpoint's when resuming; else ``--out`` or a new
    ``runs/<name>-<time>``. An existing non-empty directory is never reused for a new run."""
    if checkpoint is not None:
        out = Path(checkpoint["path"]).parent
        if args.out and Path(args.out).resolve() != out.resolve():
            raise UsageError(f"--resume continues in the run's own directory {out}; drop --out {args.out}")
        return out
    name = PRESETS.get(args.preset or "", {}).get("name") or f"{spec['model']}-{spec['dataset']}"
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(dist.broadcast(str(out)))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty directory; nothing was changed. "
                         f"Choose another --out, or continue that run with --resume {out}")
    dist.barrier()
    return out


_HARD_EXIT = [False]


def _leave(dist: Any, *, synced: bool) -> None:
    """Under torchrun: wait for every rank (when all got here normally), then let :func:`main`
    end the process with ``os._exit``, skipping interpreter finalization, during which PyTorch's
    gloo threads can abort a worker that has already finished its work."""
    if not dist.enabled:
        return
    if synced:
        dist.barrier()
    _HARD_EXIT[0] = True


def _distributed(command: Any, args: argparse.Namespace) -> int:
    from survae_flowify.training import setup

    dist = setup(args.device)
    try:
        code = command(args, dist)
    except BaseException:
        _leave(dist, synced=False)
        raise
    _leave(dist, synced=True)
    return code


def _cmd_train(args: argparse.Namespace) -> int:
    return _distributed(_train, args)


def _already_finished(checkpoint: dict[str, Any]) -> bool:
    done = checkpoint["step"] >= checkpoint["total_steps"]
    return done and (Path(checkpoint["path"]).parent / "summary.json").is_file()


def _train(args: argparse.Namespace, dist: Any) -> int:
    from survae_flowify.training import TrainConfig, Trainer, load_checkpoint, write_json

    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None and _already_finished(checkpoint):
        if dist.is_main:
            print(f"{Path(checkpoint['path']).parent} already finished ({checkpoint['step']} steps); "
                  "see its summary.json", file=sys.stderr)
        return 0
    spec, config_dict = _run_settings(args, checkpoint)
    config = TrainConfig.from_dict(config_dict)
    from survae_flowify.models import MODEL_NAMES

    _check_name("model", spec["model"], MODEL_NAMES)  # before the (maybe slow) data loading
    data = _load_data(spec, args.data_dir)
    if checkpoint is None:
        spec["data_shape"] = list(data.shape)
    elif tuple(spec["data_shape"]) != data.shape:
        raise UsageError(f"the checkpoint was trained on data of shape {tuple(spec['data_shape'])}, "
                         f"the data found now has shape {data.shape}")
    torch.manual_seed(config.seed)
    flow = _build_flow(spec)
    out = _output_dir(args, spec, checkpoint, dist)
    trainer = Trainer(flow, data, out, config, spec=spec, dist=dist)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            write_json(out / "config.json", {"spec": spec, "config": config.to_dict(), "argv": sys.argv})
        if not config.quiet:
            print(f"{'resuming' if checkpoint else 'training'} {spec['model']} on {data} "
                  f"({trainer.total_steps} steps, device {dist.device}, {dist.world_size} process(es)); "
                  f"run directory {out}", file=sys.stderr, flush=True)
    result = trainer.run(stop_after=args.stop_after)
    if not dist.is_main:
        return 0 if result.status == "finished" else 1
    return _report(result, data)


def _report(result: Any, data: Any) -> int:
    if result.status == "diverged":
        print(f"survae-flowify: {result.message}", file=sys.stderr)
        return 1
    if result.status in ("interrupted", "paused"):
        print(f"survae-flowify: {result.message}", file=sys.stderr)
        return 130 if result.status == "interrupted" else 0
    s, metric = result.summary, data.metric
    unit = "bits/dim" if metric == "bpd" else "nats"
    print(f"test {unit}: {s[f'test_{metric}']:.4f} ({s['bound']})")
    if f"test_iw_{metric}" in s:
        print(f"test {unit}, importance-weighted (K={s['eval_samples']}): {s[f'test_iw_{metric}']:.4f}")
    figures = s.get("figures", {})
    for key in ("samples", "density", "reconstructions"):
        if key in figures:
            print(f"{'sample grid' if key == 'samples' else key}: {figures[key]}")
    print(f"summary: {Path(s['checkpoint']).parent / 'summary.json'}")
    return 0


# ---------------------------------------------------------------------- evaluate, sample
def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _distributed(_evaluate, args)


def _evaluate(args: argparse.Namespace, dist: Any) -> int:
    from survae_flowify.training import evaluate, load_checkpoint, nll_to_metric

    checkpoint = load_checkpoint(args.run)
    flow = _flow_from_checkpoint(checkpoint, dist.device)
    data = _load_data(checkpoint["spec"], args.data_dir)
    x = getattr(data, args.split)
    result: dict[str, Any] = {"checkpoint": checkpoint["path"], "step": checkpoint["step"],
                              "dataset": data.name, "split": args.split, "examples": len(x)}
    kw = {"batch_size": args.batch_size, "dist": dist}
    result[data.metric] = nll_to_metric(evaluate(flow, x, **kw), data)
    if args.eval_samples:
        iw = evaluate(flow, x, num_samples=args.eval_samples, **kw)
        result.update({f"iw_{data.metric}": nll_to_metric(iw, data), "eval_samples": args.eval_samples})
    if dist.is_main:
        print(json.dumps(result))
        with open(Path(checkpoint["path"]).parent / "evaluations.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from survae_flowify.training import load_checkpoint, plots, resolve_device

    checkpoint = load_checkpoint(args.run)
    flow = _flow_from_checkpoint(checkpoint, resolve_device(args.device))
    run_dir = Path(checkpoint["path"]).parent
    default = f"samples-step{checkpoint['step']}-n{args.n}-seed{args.seed}.png"
    out = Path(args.out) if args.out else run_dir / default
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file, got {out}")
    tensors = out.with_suffix(".pt")
    if out.exists() or tensors.exists():
        raise UsageError(f"{out if out.exists() else tensors} already exists; nothing was overwritten. "
                         "Choose another --out or --seed")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        z = flow.base.sample(args.n)
        samples = {"mean": flow.transform.inverse(z, mean=True).cpu(),
                   "stochastic": flow.transform.inverse(z, mean=False).cpu()}
    spec = checkpoint["spec"]
    if len(spec["data_shape"]) == 3:
        plots.save_image_panels(out, [("samples, mean inverse", samples["mean"]),
                                      ("samples, stochastic inverse", samples["stochastic"])],
                                levels=spec.get("levels"))
    else:
        plots.save_scatter(out, [("samples, mean inverse", samples["mean"]),
                                 ("samples, stochastic inverse", samples["stochastic"])])
    torch.save(samples, tensors)
    print(f"sample grid: {out}\nsample tensors: {tensors}")
    return 0


# --------------------------------------------------------------------------- bench, list
def _cmd_bench(args: argparse.Namespace) -> int:
    from survae_flowify.data import DATASET_INFO
    from survae_flowify.training import resolve_device
    from survae_flowify.training.bench import benchmark, synthetic_batch

    _check_name("data set", args.dataset, tuple(DATASET_INFO))
    info = DATASET_INFO[args.dataset]
    model = args.model or default_model(args.dataset)
    spec = {"model": model, "dataset": args.dataset, "data_shape": list(info.shape),
            "levels": info.levels, "model_options": dict(_parse_option(o) for o in args.model_option or [])}
    device = resolve_device(args.device)
    torch.manual_seed(0)
    flow = _build_flow(spec)
    x = synthetic_batch(info.shape, info.levels, args.batch_size, device)
    result = {"model": model, "dataset": args.dataset, "shape": list(info.shape),
              "threads": torch.get_num_threads(), **benchmark(flow, x, steps=args.steps)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from survae_flowify import models
    from survae_flowify.data import DATASET_INFO

    print("models:    " + ", ".join(models.MODEL_NAMES))
    print("data sets:")
    for name, info in DATASET_INFO.items():
        levels = f", {info.levels} levels" if info.levels else ""
        print(f"  {name:<16} {info.kind:<8} shape {info.shape}{levels}; default model {default_model(name)}")
    print("presets:   " + ", ".join(PRESETS))
    return 0


# -------------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: the GPU when there is one (auto), or force cpu/cuda (default: auto)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="directory holding the data set (or a parent holding its usual subdirectory, "
                   "e.g. fashion-mnist/, power/); default: the data set's own default place, e.g. "
                   "/usr/share/datasets/fashion-mnist, or $SURVAE_FLOWIFY_DATA/<name>")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's choice)")


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model", description=(
        "Train a flowified model. Defaults follow the paper (appendix F): Adam, learning rate 5e-4 "
        "annealed to 0 by a cosine schedule over all steps, batch 256. Writes metrics.jsonl, "
        "checkpoint.pt (atomically, each epoch), summary.json and PNG figures into the run "
        "directory. Ctrl-C saves the checkpoint and stops; --resume continues."))
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="demo: small flowified conv net on the 8x8 digits for ~2 minutes; paper: the "
                   "paper's schedule (200 epochs for 28x28 images, 1000 for CIFAR-10). Flags override it")
    p.add_argument("--model", help="model name, e.g. fmlp, fconv1, fconv2, fconv1-nsf, fconv2-nsf, "
                   "tabular-mlp, small-mlp, small-conv (see `survae-flowify list`); default depends on "
                   "the data")
    p.add_argument("--dataset", help="data set, e.g. digits (default, no download), fashion-mnist, mnist, "
                   "cifar10, power, gas, hepmass, miniboone, bsds300, moons, checkerboard (see `list`)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="extra keyword for the model builder, e.g. inverse_density=normal, noise=uniform "
                   "(repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<model>-<dataset>-<time>); "
                   "must not exist or be empty")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN (its directory or checkpoint "
                   "file): same step count, data order and learning-rate schedule")
    p.add_argument("--stop-after", type=int, metavar="STEPS",
                   help="pause after this many steps of this invocation (checkpoint saved; continue "
                   "with --resume), e.g. to fit a job's time slot; not part of the schedule")
    p.add_argument("--epochs", type=int, help="passes over the training set (default 10)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over DDP processes (default 256)")
    p.add_argument("--lr", type=float, help="initial learning rate, annealed to 0 (default 5e-4)")
    p.add_argument("--weight-decay", type=float, help="Adam weight decay (default 0)")
    p.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm (default: off)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (also the schedule's length)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float, metavar="SECONDS",
                   help="train for about this long: the schedule's length is set from the speed of "
                   "the first steps (at most --epochs epochs); results then depend on the machine")
    p.add_argument("--subset", type=int, metavar="N", help="use only the first N examples of each split")
    p.add_argument("--eval-samples", type=int, metavar="K",
                   help="also report the importance-weighted test bound with K samples")
    p.add_argument("--eval-batch-size", type=int, help="batch size for evaluation (default: --batch-size)")
    p.add_argument("--valid-every", type=int, metavar="EPOCHS", help="validate every this many epochs "
                   "(0: never; default 1)")
    p.add_argument("--log-every", type=int, metavar="STEPS",
                   help="metrics line every this many steps (default 10)")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every this many steps (default: at each epoch's end only)")
    p.add_argument("--checkpoint-minutes", type=float, metavar="MIN",
                   help="also checkpoint when this many minutes passed since the last (default 10)")
    p.add_argument("--seed", type=int, help="random seed: initialisation, data order, noise (default 0)")
    p.add_argument("--quiet", action="store_const", const=True,
                   help="no progress bar or progress lines (bars also stay off when not on a terminal)")
    p.add_argument("--no-plots", dest="plots", action="store_const", const=False,
                   help="skip the PNG figures")
    p.add_argument("--plot-samples", type=int, metavar="N", help="samples in the grids (default 64)")
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _add_run_commands(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint", description=(
        "Negative log-likelihood bound of a checkpoint on a split: bits/dim for images, nats "
        "otherwise; with --eval-samples K also the importance-weighted bound. Prints JSON and "
        "appends it to the run's evaluations.jsonl."))
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test", help="split (default test)")
    p.add_argument("--eval-samples", type=int, metavar="K", help="importance samples per example")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("sample", help="draw samples from a checkpoint", description=(
        "Draw N samples from one set of base draws, inverted with the mean of every inverse "
        "density and by sampling them (the paper's appendix E); writes a PNG and the tensors (.pt)."))
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", metavar="FILE.png", help="output image (default: in the run directory); "
                   "never overwritten")
    _add_common(p)
    p.set_defaults(func=_cmd_sample)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="time a model", description=(
        "Median time of a training step, an evaluation and a batch of samples on synthetic data "
        "of a data set's shape (no data files needed)."))
    p.add_argument("--model", help="model name (default: the data set's default model)")
    p.add_argument("--dataset", default="mnist", help="data set whose shape to use (default mnist)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="extra model keyword")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--steps", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    _add_common(p)
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``survae-flowify``."""
    parser = argparse.ArgumentParser(
        prog="survae-flowify", description="Train, evaluate, sample and time flowified models "
        "(Máté et al., NeurIPS 2022).", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_run_commands(sub)
    _add_bench(sub)
    p = sub.add_parser("list", help="list models, data sets and presets")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command and return its exit code (bad input: 2, without a traceback)."""
    from survae_flowify.data import DataError
    from survae_flowify.training import CheckpointError, ConfigError

    args = build_parser().parse_args(argv)
    for name in ("n", "batch_size", "steps", "eval_samples", "threads", "subset", "stop_after"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            return _fail(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        code = args.func(args)
    except (UsageError, DataError, CheckpointError, ConfigError) as err:
        code = _fail(str(err))
    except KeyboardInterrupt:
        print("survae-flowify: interrupted", file=sys.stderr)
        code = 130
    if _HARD_EXIT[0]:  # a torchrun worker: everything is written; exit without finalization
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
