"""The quality benchmark: end to end on tiny IDX files, its budget, and its bits/dim bookkeeping.

Training times are never asserted (shared machines): the budget is checked with a fake clock.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tests.data.writers import write_idx_set

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "quality.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quality = _load_script()


class FakeClock:
    """Advances by ``tick`` seconds at every reading."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick, self.readings = 0.0, tick, 0

    def __call__(self) -> float:
        self.now += self.tick
        self.readings += 1
        return self.now


class UniformInY(nn.Module):
    """The density of ``h = logit(α + (1 − 2α) y)`` when ``y ~ U(0, 1)^D``, from the inverse map
    ``y = (σ(h) − α)/(1 − 2α)``: ``log p(h) = Σ log σ'(h) − D log(1 − 2α)``, ``σ' = σ(1 − σ)``."""

    exact = True

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.anchor = nn.Parameter(torch.zeros(()))  # one parameter, so Adam has something to step

    def log_prob(self, h: Tensor) -> Tensor:
        s = torch.sigmoid(h.flatten(1).double())
        log_p = (torch.log(s * (1 - s)) - math.log(1 - 2 * self.alpha)).sum(1)
        return log_p.to(h.dtype) + 0 * self.anchor


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)


@pytest.mark.slow  # every model trains for 2 s of CPU time and is scored: ~30 s idle, 6 min at load 9
def test_script_trains_every_model_and_prints_a_row_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx_set(tmp_path, _images(rng, 40), _images(rng, 12))
    models = list(quality.MODEL_NAMES)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--seconds", "2", "--batch", "8",
         "--eval-batch", "6", "--models", ",".join(models)],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "mnist, 36 training and 12 test images" in out, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()
            and line.split()[0] in models}
    assert sorted(rows) == sorted(models), out
    for name, cells in rows.items():
        steps, test_bpd = int(cells[2]), float(cells[7])
        assert steps >= 1, (name, out)
        # random pixels: no model can beat 8 bits/dim by much, and none may be non-finite
        assert math.isfinite(test_bpd) and test_bpd > 7.0, (name, out)


def test_unknown_model_is_a_clear_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        quality.parser().parse_args(["--models", "ours,maf"])
    err = capsys.readouterr().err
    assert "--models" in err and "'ours,maf'" in err and "nflows-maf" in err


@pytest.mark.parametrize("tick", [1.0, 0.25])
def test_training_stops_when_the_clock_reaches_the_budget(tick: float) -> None:
    clock = FakeClock(tick)
    data = quality.batches(torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8), 16, seed=0)
    steps, skipped, *_ = quality.train_for(
        UniformInY(quality.LOGIT_ALPHA), data, seconds=5.0, clock=clock, lr=1e-3,
        preprocess=quality.Preprocess("logit"), seed=0)
    # start reading at t0 = tick; a step starts at each later reading t with t − t0 < 5
    assert steps + skipped == math.ceil(5.0 / tick) - 1
    assert clock.readings == steps + skipped + 2


def test_learning_rate_anneals_over_the_budget_not_the_steps() -> None:
    assert quality.cosine_lr(1e-3, 0.0, 10.0) == pytest.approx(1e-3)
    assert quality.cosine_lr(1e-3, 5.0, 10.0) == pytest.approx(5e-4)
    assert quality.cosine_lr(1e-3, 12.0, 10.0) == pytest.approx(0.0, abs=1e-18)


@pytest.mark.parametrize("kind", ["logit", "affine"])
def test_a_density_uniform_over_the_pixel_bins_scores_eight_bits_per_dim(kind: str) -> None:
    # y ~ U(0,1)^D gives every integer image P(k) = 256^−D: 8 bits/dim exactly, whatever k is,
    # if the dequantization, the preprocessing's log-det and the conversion agree.
    model = UniformInY(quality.LOGIT_ALPHA) if kind == "logit" else _Flat()
    test = torch.randint(0, 256, (50, 1, 6, 6), dtype=torch.uint8)
    test[0] = 0
    test[1] = 255
    bpd = quality.evaluate(model, test, preprocess=quality.Preprocess(kind), seed=3, batch=16)
    assert bpd == pytest.approx(8.0, abs=1e-4)


class _Flat(nn.Module):
    """``h = y − ½`` is uniform on ``[−½, ½)^D``: density 1, ``log p(h) = 0``."""

    def log_prob(self, h: Tensor) -> Tensor:
        return h.new_zeros(h.shape[0])


def test_preprocessing_log_det_matches_autograd() -> None:
    y = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    h, log_det = quality.Preprocess("logit")(y)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: quality.Preprocess("logit")(v)[0], y[b:b + 1])
        assert torch.allclose(log_det[b], torch.linalg.slogdet(jac.reshape(4, 4)).logabsdet)
    assert h.abs().max() < math.log((1 - quality.LOGIT_ALPHA) / quality.LOGIT_ALPHA)


def test_same_batches_and_noise_for_every_model() -> None:
    train = torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1)
    first = [next(it) for it in [quality.batches(train, 4, seed=7)] for _ in range(8)]
    again = [next(it) for it in [quality.batches(train, 4, seed=7)] for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    epoch = torch.cat(first[:5]).flatten().sort().values
    assert torch.equal(epoch, torch.arange(20, dtype=torch.uint8))  # an epoch sees every image once
