"""Runs from Python: spec ↔ flow ↔ checkpoint ↔ run directory, as the command line uses them.

A *spec* is the plain dict a run stores in ``config.json`` and in every checkpoint: ``model``,
``dataset``, ``data_shape``, ``levels``, ``model_options``, ``subset`` (and ``preset``), and for
a class-conditional run ``conditional: True`` with ``num_classes``. It is all that is needed to
rebuild the model::

    from survae_flowify.cli import runs

    flow, checkpoint = runs.load_run("runs/demo")          # the trained flow, in eval mode
    data = runs.load_data(checkpoint["spec"])              # the data it was trained on
    spec = runs.new_spec("small-mlp", "moons", subset=512)
    flow = runs.build_flow({**spec, "data_shape": [2]})    # a fresh model from a spec
    out = runs.create_run_dir("runs/mine")                 # claimed for this process alone

Every function raises :class:`RunError` (a ``ValueError``) for what a user can fix: an unknown
model or data set, options that do not fit, a run directory that exists or is in use.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CLAIM_FILE",
    "CONDITIONAL_MODELS",
    "RunError",
    "add_labels",
    "build_flow",
    "check_model_options",
    "create_run_dir",
    "default_model",
    "flow_from_checkpoint",
    "load_data",
    "load_run",
    "new_spec",
    "parse_model_option",
    "release_run_dir",
]

CLAIM_FILE = "config.json"
"""Created exclusively (``O_EXCL``) when a run directory is claimed, then filled atomically."""


CONDITIONAL_MODELS = ("fmlp", "fconv1", "fconv2", "fconv1-nsf", "fconv2-nsf", "small-mlp",
                      "small-conv")
"""Models with a class-conditional variant (``--conditional``): a conditional base and
context-aware inverse densities at every reducing layer, the label one-hot encoded."""


class RunError(ValueError):
    """Bad input about a run that the user can fix (printed as one paragraph, exit code 2)."""


def _check_name(kind: str, name: str, choices: tuple[str, ...]) -> None:
    if name not in choices:
        raise RunError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")


def default_model(dataset: str) -> str:
    """The model trained when none is named: ``small-conv`` for 8×8 images, ``fconv1`` for
    other images, ``tabular-mlp`` for tabular data, ``small-mlp`` for 2-D toys."""
    from survae_flowify.data import DATASET_INFO

    _check_name("data set", dataset, tuple(DATASET_INFO))
    info = DATASET_INFO[dataset]
    if info.kind == "image":
        return "small-conv" if info.shape == (1, 8, 8) else "fconv1"
    return "tabular-mlp" if info.kind == "tabular" else "small-mlp"


def parse_model_option(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` → ``(key, value)``: ``true``/``false``/``none``, Python literals (ints,
    floats, lists such as ``[64,32]``), otherwise the text itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise RunError(f"--model-option expects KEY=VALUE with KEY a keyword name, got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered == "none":
        return key, None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw
    return key, value if isinstance(value, (int, float, list, tuple)) else raw


def new_spec(model: str | None, dataset: str, *, model_options: dict[str, Any] | None = None,
             subset: int | None = None, preset: str | None = None,
             conditional: bool = False) -> dict[str, Any]:
    """The spec of a new run (``data_shape``, and ``num_classes`` of a conditional run, are
    added once the data is loaded)."""
    from survae_flowify import models
    from survae_flowify.data import DATASET_INFO

    model = model or default_model(dataset)
    _check_name("model", model, models.MODEL_NAMES)
    if conditional and model not in CONDITIONAL_MODELS:
        raise RunError(f"model {model!r} has no class-conditional variant yet (--conditional); "
                       f"choose one of: {', '.join(CONDITIONAL_MODELS)}")
    spec = {"model": model, "dataset": dataset, "levels": DATASET_INFO[dataset].levels,
            "model_options": dict(model_options or {}), "subset": subset, "preset": preset}
    return {**spec, "conditional": True} if conditional else spec


def add_labels(spec: dict[str, Any], data: Any) -> None:
    """Record the number of classes of a conditional run's data in ``spec`` (a
    :class:`RunError` when the data set has no labels); an unconditional spec is left alone."""
    if not spec.get("conditional"):
        return
    if data.labels is None:
        raise RunError(f"--conditional needs class labels, and data set {data.name!r} has none "
                       "(labelled: digits, mnist and fashion-mnist with their *-labels-idx1-ubyte "
                       "files, cifar10); drop --conditional to train an unconditional model")
    spec["num_classes"] = data.num_classes


def _builder_kwargs(spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    from survae_flowify.models.builders import OneHot

    kwargs = dict(options)
    if spec.get("conditional"):
        if spec["model"] not in CONDITIONAL_MODELS:
            raise RunError(f"model {spec['model']!r} has no class-conditional variant yet; "
                           f"choose one of: {', '.join(CONDITIONAL_MODELS)}")
        k = int(spec["num_classes"])
        kwargs.update(context_features=k, embedding=OneHot(k))
    if spec.get("levels"):
        kwargs["levels"] = spec["levels"]
    if spec["model"] == "tabular-mlp":
        kwargs.setdefault("dataset", spec["dataset"])
    return kwargs


def _build(spec: dict[str, Any], options: dict[str, Any]) -> Any:
    from survae_flowify import models

    try:
        return models.build(spec["model"], tuple(spec["data_shape"]), **_builder_kwargs(spec, options))
    except (ValueError, TypeError) as err:
        raise RunError(f"cannot build model {spec['model']!r} for {spec['dataset']}: {err}") from err


def build_flow(spec: dict[str, Any]) -> Any:
    """``models.build`` from a spec (with ``data_shape``); a model that does not fit is a RunError."""
    from survae_flowify import models

    _check_name("model", spec["model"], models.MODEL_NAMES)
    return _build(spec, dict(spec.get("model_options") or {}))


def _fingerprint(flow: Any) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    return str(flow), [(k, tuple(v.shape)) for k, v in flow.state_dict().items()]


def check_model_options(spec: dict[str, Any], flow: Any) -> None:
    """Raise :class:`RunError` for a model option that changes nothing in ``flow`` (built from
    ``spec``): no layer uses it (e.g. ``noise`` where every Linear is square), or it repeats the
    default. Each option is dropped in turn and the model rebuilt (the random state is kept)."""
    options = dict(spec.get("model_options") or {})
    if not options:
        return
    built = _fingerprint(flow)
    for key in options:
        with torch.random.fork_rng(devices=[]):
            without = _build(spec, {k: v for k, v in options.items() if k != key})
        if _fingerprint(without) == built:
            raise RunError(
                f"--model-option {key}={options[key]!r} changes nothing in model {spec['model']!r} "
                f"for {spec['dataset']}: no layer of it uses {key!r}, or {options[key]!r} is "
                "already the default; drop it"
            )


def load_data(spec: dict[str, Any], data_dir: str | os.PathLike | None = None) -> Any:
    """The spec's data set (``subset`` applied) as :class:`~survae_flowify.data.DataSplits`."""
    from survae_flowify.data import DATASET_NAMES, load_dataset

    _check_name("data set", spec["dataset"], DATASET_NAMES)
    data = load_dataset(spec["dataset"], data_dir)
    return data.subset(spec["subset"]) if spec.get("subset") else data


def flow_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> Any:
    """The flow a loaded checkpoint describes, with its weights, on ``device``, in eval mode."""
    from survae_flowify.training import CheckpointError, load_model_state

    spec = checkpoint["spec"]
    if spec.get("model") in (None, "custom"):
        raise CheckpointError(
            f"{checkpoint['path']} holds a custom model trained through the Python API; rebuild "
            "that model in Python and load checkpoint['model'] into it"
        )
    flow = build_flow(spec)
    load_model_state(flow, checkpoint["model"], source=checkpoint["path"])
    return flow.to(device).eval()


def load_run(run: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(flow, checkpoint)`` of a run directory or checkpoint file."""
    from survae_flowify.training import load_checkpoint

    checkpoint = load_checkpoint(run)
    return flow_from_checkpoint(checkpoint, device), checkpoint


def create_run_dir(path: str | os.PathLike) -> Path:
    """Claim ``path`` as a new run's directory, for this process alone.

    The directory may not exist yet or be empty. The claim is :data:`CLAIM_FILE` created with
    ``O_EXCL``, so of two trainings started into the same directory at once exactly one wins; the
    other gets a :class:`RunError` and changes nothing.
    """
    path = Path(path)
    refused = (f"{path} already exists and is not an empty directory; nothing was changed. "
               f"Choose another --out, or continue that run with --resume {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
    except OSError as err:  # a read-only parent, a file where a folder should be, ...
        raise RunError(f"cannot create the run directory {path}: {err.strerror or err}") from None
    if any(path.iterdir()):
        raise RunError(refused)
    try:
        os.close(os.open(path / CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise RunError(refused.replace("already exists", "was just claimed by another training")
                       .replace(" and is not an empty directory", "")) from None
    return path


def release_run_dir(path: str | os.PathLike) -> None:
    """Undo :func:`create_run_dir` when a run fails before writing anything but its claim."""
    path = Path(path)
    claim = path / CLAIM_FILE
    if claim.is_file() and claim.stat().st_size == 0:
        claim.unlink()
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
