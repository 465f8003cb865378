"""``survae-flowify train``: settings from the preset, the checkpoint and the flags; then a run.

A new run is checked completely (names, numbers, model options, data sizes) before its
directory is claimed, so a refused run leaves nothing behind and can be retried at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from survae_flowify.cli import runs
from survae_flowify.cli.errors import UsageError
from survae_flowify.cli.presets import PAPER_EPOCHS, PRESETS
from survae_flowify.cli.ranks import in_every_rank

__all__ = ["CONFIG_FLAGS", "command", "run_settings"]

CONFIG_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "clip_grad", "max_steps",
                "eval_batch_size", "eval_samples", "valid_every", "log_every",
                "checkpoint_every", "checkpoint_minutes", "seed", "quiet", "plots", "plot_samples",
                "time_budget_s", "compile")
"""Flags that go into :class:`~survae_flowify.training.TrainConfig`."""


def command(args: argparse.Namespace) -> int:
    return in_every_rank(_train, args)


def _explicit_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k, None) is not None}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(runs.parse_model_option(o) for o in args.model_option or [])


def _resumed_settings(args: argparse.Namespace, checkpoint: dict[str, Any]) -> tuple[dict, dict]:
    spec = dict(checkpoint["spec"])
    for key in ("model", "dataset"):
        given = getattr(args, key)
        if given is not None and given != spec.get(key):
            raise UsageError(f"--{key} {given} does not match the checkpoint's {key} {spec.get(key)!r}")
    fixed = {"--subset": (args.subset, spec.get("subset")),
             "--conditional": (args.conditional, bool(spec.get("conditional"))),
             "--model-option": (_options(args) if args.model_option else None,
                                spec.get("model_options") or {})}
    for flag, (given, saved) in fixed.items():
        if given is not None and given != saved:
            raise UsageError(f"{flag} {given!r} differs from the run's {saved!r}, which its "
                             f"checkpoint fixes; drop {flag} to resume, or start a new run")
    return spec, {**checkpoint["config"], **_explicit_config(args)}


def run_settings(args: argparse.Namespace, checkpoint: dict[str, Any] | None) -> tuple[dict, dict]:
    """The run's spec (model, data set, options) and configuration: from the checkpoint when
    resuming, else from the preset, with explicit flags on top."""
    from survae_flowify.data import DATASET_INFO, DATASET_NAMES

    if checkpoint is not None:
        return _resumed_settings(args, checkpoint)
    preset = dict(PRESETS[args.preset]) if args.preset else {}
    dataset = args.dataset or preset.get("dataset") or "digits"
    runs._check_name("data set", dataset, DATASET_NAMES)
    info = DATASET_INFO[dataset]
    if preset.get("epochs") == "paper":
        if info.shape not in PAPER_EPOCHS:
            raise UsageError("--preset paper is defined for MNIST, Fashion-MNIST and CIFAR-10 "
                             f"(appendix F); for {dataset} set --epochs and --batch-size yourself")
        preset["epochs"] = PAPER_EPOCHS[info.shape]
    spec = runs.new_spec(args.model or preset.get("model"), dataset, model_options=_options(args),
                         subset=args.subset, preset=args.preset, conditional=bool(args.conditional))
    config = {k: v for k, v in preset.items() if k in CONFIG_FLAGS}
    return spec, {**config, **_explicit_config(args)}


def _check_same_labels(spec: dict[str, Any], data: Any) -> None:
    """A resumed conditional run needs the same number of classes in the data found now."""
    if not spec.get("conditional"):
        return
    saved = spec.get("num_classes")
    runs.add_labels(spec, data)
    if spec["num_classes"] != saved:
        raise UsageError(f"the checkpoint was trained on {saved} classes, the data found now has "
                         f"{spec['num_classes']}")


def _threads(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """The preset's thread count, unless ``--threads`` was given (applied by ``main``)."""
    preset = PRESETS.get(spec.get("preset") or "", {})
    if args.threads is None and preset.get("threads"):
        torch.set_num_threads(preset["threads"])


def _output_dir(args: argparse.Namespace, spec: dict, dist: Any) -> Path:
    """``--out`` or a new ``runs/<name>-<time>``, claimed by rank 0 (every rank learns the outcome)."""
    name = PRESETS.get(args.preset or "", {}).get("name") or f"{spec['model']}-{spec['dataset']}"
    stem = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # A named --out is the user's: taken means refused. A generated name is ours: two runs
    # started in the same second get -2, -3, ... rather than one of them failing.
    candidates = [Path(args.out)] if args.out else [stem, *(Path(f"{stem}-{i}") for i in range(2, 100))]
    claimed, refusal = None, None
    if dist.is_main:
        for out in candidates:
            try:
                claimed = str(runs.create_run_dir(out))
                break
            except UsageError as err:
                refusal = str(err)
    claimed, refusal = dist.broadcast((claimed, refusal))
    if claimed is None:
        raise UsageError(refusal)
    return Path(claimed)


def _resume_dir(args: argparse.Namespace, checkpoint: dict[str, Any]) -> Path:
    out = Path(checkpoint["path"]).parent
    if args.out and Path(args.out).resolve() != out.resolve():
        raise UsageError(f"--resume continues in the run's own directory {out}; drop --out {args.out}")
    return out


def _already_finished(checkpoint: dict[str, Any]) -> bool:
    done = checkpoint["step"] >= checkpoint["total_steps"]
    return done and (Path(checkpoint["path"]).parent / "summary.json").is_file()


def _train(args: argparse.Namespace, dist: Any) -> int:
    from survae_flowify.training import TrainConfig, Trainer, check_data_fits, load_checkpoint, write_json

    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None and _already_finished(checkpoint):
        if dist.is_main:
            print(f"{Path(checkpoint['path']).parent} already finished ({checkpoint['step']} steps); "
                  "see its summary.json", file=sys.stderr)
        return 0
    spec, config_dict = run_settings(args, checkpoint)
    config = TrainConfig.from_dict(config_dict)
    _threads(args, spec)
    data = runs.load_data(spec, args.data_dir)
    if checkpoint is None:
        spec["data_shape"] = list(data.shape)
        runs.add_labels(spec, data)
    elif tuple(spec["data_shape"]) != data.shape:
        raise UsageError(f"the checkpoint was trained on data of shape {tuple(spec['data_shape'])}, "
                         f"the data found now has shape {data.shape}")
    else:
        _check_same_labels(spec, data)
    check_data_fits(data, config, world_size=dist.world_size)
    torch.manual_seed(config.seed)
    flow = runs.build_flow(spec)
    if checkpoint is None:
        runs.check_model_options(spec, flow)
        out = _output_dir(args, spec, dist)
    else:
        out = _resume_dir(args, checkpoint)
    try:
        trainer = Trainer(flow, data, out, config, spec=spec, dist=dist)
    except BaseException:
        if checkpoint is None and dist.is_main:
            runs.release_run_dir(out)  # nothing but the claim was written: leave no trace
        raise
    if checkpoint is not None:
        trainer.restore(checkpoint)
    if dist.is_main:
        if checkpoint is None:
            write_json(out / runs.CLAIM_FILE, {"spec": spec, "config": config.to_dict(),
                                               "threads": torch.get_num_threads(), "argv": sys.argv})
        if not config.quiet:
            length = f"{trainer.total_steps} steps"
            if config.time_budget_s is not None:
                cap = f", at most {trainer.step_cap} steps" if trainer.step_cap else ""
                length = f"a time budget of {config.time_budget_s:g} s{cap}"
            kind = " (class-conditional)" if spec.get("conditional") else ""
            print(f"{'resuming' if checkpoint else 'training'} {spec['model']}{kind} on {data} "
                  f"({length}, device {dist.device}, {dist.world_size} process(es), "
                  f"{torch.get_num_threads()} thread(s)); run directory {out}",
                  file=sys.stderr, flush=True)
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
