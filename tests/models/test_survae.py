"""SurVAE's experiments as ready models: ``survae-abs`` and ``survae-maxpool`` and their twins."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import survae_flowify as ffn
from survae_flowify import models, surjections
from survae_flowify.cli import main
from survae_flowify.models.survae import InverseSoftplus
from survae_flowify.testing import check_right_inverse, perturb_parameters
from tests.data.writers import write_idx_set

DIGITS, FASHION = (1, 8, 8), (1, 28, 28)


def _kinds(flow: ffn.Flow) -> list[type]:
    return [type(m) for m in flow.transform]


# ---------------------------------------------------------------- building: shapes and kinds

def test_abs_flow_puts_abs_first_and_its_twin_has_the_same_bijections() -> None:
    torch.manual_seed(0)
    with_abs, without = models.build("survae-abs", (2,)), models.build("survae-abs", (2,), abs=False)
    assert _kinds(with_abs)[0] is surjections.Abs and surjections.Abs not in _kinds(without)
    assert _kinds(with_abs)[1] is InverseSoftplus and _kinds(with_abs)[2:] == _kinds(without)
    assert with_abs.exact and without.exact  # Abs is an exact inference surjection
    assert with_abs.base.shape == without.base.shape == (2,)
    x = torch.randn(7, 2)
    assert with_abs.log_prob(x).shape == without.log_prob(x).shape == (7,)
    assert with_abs.sample(5).shape == (5, 2)


def test_abs_flow_takes_vectors_of_any_size_and_the_uniform_sign_density() -> None:
    flow = models.abs_flow((5,), sign_density="uniform", couplings=2)
    assert flow.exact and flow.log_prob(torch.randn(3, 5)).shape == (3,)
    assert sum(isinstance(m, ffn.RqCoupling) for m in flow.transform) == 2


@pytest.mark.parametrize(("shape", "pool", "base"), [
    (DIGITS, "max", (4, 2, 2)), (DIGITS, "slice", (4, 2, 2)),
    (FASHION, "max", (4, 7, 7)), (FASHION, "slice", (4, 7, 7)),
])
def test_maxpool_flow_and_its_slice_twin_reduce_to_the_same_shapes(shape, pool, base) -> None:
    torch.manual_seed(0)
    options = {} if pool == "max" else {"pool": "slice"}
    flow = models.build("survae-maxpool", shape, levels=17, **options)
    assert flow.base.shape == base
    reducing = [m for m in flow.transform if isinstance(m, (surjections.MaxPool2d, ffn.Slice))]
    assert [type(m) for m in reducing] == [surjections.MaxPool2d if pool == "max" else ffn.Slice]
    assert not flow.exact  # Dequantize: the discrete likelihood is a bound ...
    continuous = models.build("survae-maxpool", shape, levels=None, **options)
    assert continuous.exact  # ... and everything after it is exact
    x = torch.randint(0, 17, (3, *shape))
    assert flow.log_prob(x).shape == (3,)
    samples = flow.sample(2)
    assert samples.shape == (2, *shape) and samples.min() >= 0 and samples.max() <= 16


def test_maxpool_twins_have_the_same_bijections() -> None:
    kinds = {pool: [t for t in _kinds(models.maxpool_flow(DIGITS, pool=pool))
                    if t not in (surjections.MaxPool2d, ffn.Slice, ffn.Squeeze)] for pool in ("max", "slice")}
    assert kinds["max"] == kinds["slice"] and ffn.AffineCoupling in kinds["max"]


def test_maxpool_flow_pools_twice_on_the_digits_and_takes_spline_couplings() -> None:
    flow = models.maxpool_flow(DIGITS, pools=2, steps=1, coupling="spline", hidden=8)
    assert flow.base.shape == (4, 1, 1)
    assert sum(isinstance(m, surjections.MaxPool2d) for m in flow.transform) == 2
    assert ffn.RqCoupling in _kinds(flow) and ffn.AffineCoupling not in _kinds(flow)


@pytest.mark.parametrize("pool", ["max", "slice"])
def test_maxpool_flow_satisfies_the_right_inverse_condition(pool) -> None:
    """``forward(inverse(z)) == z`` for every sample: the condition that makes it exact."""
    torch.manual_seed(1)
    flow = perturb_parameters(models.maxpool_flow(DIGITS, pool=pool, steps=2, hidden=16)).double().eval()
    z = torch.randn(6, 4, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        check_right_inverse(flow.transform, z, atol=1e-9, rtol=1e-9)


def test_abs_flow_satisfies_the_right_inverse_condition() -> None:
    """Every base draw inverts to a valid ``|x| > 0`` (the range map), so ``forward(inverse(z))
    == z`` holds everywhere, not only where the couplings happen to land in the quadrant."""
    torch.manual_seed(2)
    flow = perturb_parameters(models.abs_flow((2,), couplings=3), scale=0.5).double().eval()
    with torch.no_grad():
        check_right_inverse(flow.transform, 3 * torch.randn(200, 2, dtype=torch.float64), atol=1e-9,
                            rtol=1e-9)


# ---------------------------------------------------------------- mathematics: mass on a grid

def _midpoint_grid(low: float, high: float, n: int) -> tuple[torch.Tensor, float]:
    """Midpoints of an ``n × n`` grid of cells on ``[low, high]²`` and the cell area."""
    h = (high - low) / n
    axis = low + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.cartesian_prod(axis, axis), h * h


@torch.no_grad()
def _mass(flow: ffn.Flow, points: torch.Tensor, weights: torch.Tensor | float) -> float:
    """``Σ_i p(x_i) w_i``: a quadrature of the flow's density."""
    density = torch.cat([flow.log_prob(c) for c in points.split(20000)]).exp()
    return float((density * weights).sum())


def _quadrant_grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``y = softplus(u)`` of the positive quadrant for ``u`` on a midpoint grid of
    ``[−8, 8]²``, with their cells' areas ``σ(u_1) σ(u_2) du²`` (``dy/du = σ(u)``): it resolves
    the mass that piles up near the axes, where ``y → 0``."""
    u, area = _midpoint_grid(-8.0, 8.0, n)
    return torch.nn.functional.softplus(u), torch.sigmoid(u).prod(1) * area


@pytest.mark.parametrize("sign_density", ["learned", "uniform"])
def test_abs_flow_density_integrates_to_one_and_folds_onto_the_quadrant(sign_density) -> None:
    """``∫ p(x) dx = 1`` over the plane (the four quadrants' grids), and equals
    ``∫_{y > 0} p_rest(y) dy``: the rest of the flow (range map, ActNorm, couplings; a flow of its
    own, without the Abs layer) on the same grid of the quadrant. Independent of every layer's
    contribution code; the twin without Abs integrates to 1 on a plain grid."""
    torch.manual_seed(3)
    flow = perturb_parameters(models.abs_flow((2,), couplings=3, hidden=16,
                                              sign_density=sign_density)).double().eval()
    rest = ffn.Flow(flow.base, ffn.Sequential(*list(flow.transform)[1:]))
    y, weights = _quadrant_grid(400)
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    plane = sum(_mass(flow, y * s, weights) for s in signs)
    assert plane == pytest.approx(1.0, abs=1e-3)
    assert plane == pytest.approx(_mass(rest, y, weights), rel=1e-9)
    twin = perturb_parameters(models.abs_flow((2,), couplings=3, hidden=16, abs=False)).double().eval()
    assert _mass(twin, *_midpoint_grid(-8.0, 8.0, 400)) == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(("call", "match"), [
    (lambda: models.build("survae-abs", DIGITS), r"abs_flow: shape must be a vector shape \(D,\)"),
    (lambda: models.build("survae-abs", (1,)), r"D >= 2.*got \(1,\)"),
    (lambda: models.abs_flow((2,), abs=False, sign_density="uniform"), "only with abs=True"),
    (lambda: models.abs_flow((2,), sign_density="half"), "sign_density must be one of"),
    (lambda: models.abs_flow((2,), abs="no"), "abs must be"),
    (lambda: models.build("survae-maxpool", (2,)), r"needs \(C, H, W\) images, got shape \(2,\)"),
    (lambda: models.build("survae-maxpool", (1, 10, 10)), r"divisible by 2\*\*2 = 4, got H=10"),
    (lambda: models.maxpool_flow(DIGITS, pools=3), r"divisible by 2\*\*4 = 16, got H=8"),
    (lambda: models.maxpool_flow(DIGITS, pool="avg"), "pool must be one of"),
    (lambda: models.maxpool_flow(DIGITS, coupling="glow"), "coupling must be one of"),
    (lambda: models.maxpool_flow(DIGITS, levels=1), "levels must be an int >= 2"),
])
def test_bad_shapes_and_options_are_clear_errors(call, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------- the command line

TRAIN = ["--max-steps", "3", "--batch-size", "32", "--subset", "128", "--quiet", "--device", "cpu",
         "--plot-samples", "4"]


@pytest.mark.parametrize("options", [[], ["--model-option", "abs=false"],
                                     ["--model-option", "sign_density=uniform"]])
def test_survae_abs_trains_on_a_toy_density_and_draws_its_density(tmp_path, capsys, options) -> None:
    out = tmp_path / "r"
    assert main(["train", "--model", "survae-abs", "--dataset", "checkerboard", *options, *TRAIN,
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "survae-abs" and summary["bound"] == "exact"
    assert math.isfinite(summary["test_nats"]) and summary["steps"] == 3
    assert summary["figures"]["density"] == str(out / "density.png")
    assert (out / "density.png").read_bytes()[:4] == b"\x89PNG"
    assert f"density: {out / 'density.png'}" in capsys.readouterr().out


@pytest.mark.parametrize("options", [[], ["--model-option", "pool=slice"]])
def test_survae_maxpool_trains_on_the_digits(tmp_path, capsys, options) -> None:
    out = tmp_path / "r"
    assert main(["train", "--model", "survae-maxpool", "--dataset", "digits", *options, *TRAIN,
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["test_bpd"] < 20 and summary["data_shape"] == [1, 8, 8]
    for name in ("samples.png", "reconstructions.png"):
        assert (out / name).is_file()
    assert main(["sample", str(out), "-n", "3"]) == 0  # rebuilt from the run's spec


def test_survae_maxpool_trains_on_fashion_mnist_sized_images(tmp_path) -> None:
    rng = np.random.default_rng(0)
    write_idx_set(tmp_path / "fashion-mnist", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
                  rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    out = tmp_path / "r"
    assert main(["train", "--model", "survae-maxpool", "--dataset", "fashion-mnist", "--data-dir",
                 str(tmp_path), "--max-steps", "2", "--batch-size", "8", "--quiet", "--no-plots",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_shape"] == [1, 28, 28] and 0 < summary["test_bpd"] < 20


@pytest.mark.parametrize(("model", "dataset", "text"), [
    ("survae-maxpool", "moons", "needs (C, H, W) images"),
    ("survae-abs", "digits", "shape must be a vector shape (D,)"),
])
def test_models_on_the_wrong_data_are_usage_errors(tmp_path, capsys, model, dataset, text) -> None:
    assert main(["train", "--model", model, "--dataset", dataset, *TRAIN, "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_an_option_of_the_other_twin_is_refused(tmp_path, capsys) -> None:
    """``sign_density`` means nothing without Abs: refused, not silently ignored."""
    assert main(["train", "--model", "survae-abs", "--dataset", "moons", "--model-option", "abs=false",
                 "--model-option", "sign_density=uniform", *TRAIN, "--out", str(tmp_path / "r")]) == 2
    assert "only with abs=True" in capsys.readouterr().err


@pytest.mark.slow  # four tiny CLI trainings, ~10–30 s under load
def test_benchmark_prints_both_pairs(tmp_path) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "survae.py"
    result = subprocess.run([sys.executable, str(script), "--part", "all", "--steps", "2", "--toy", "moons"],
                            capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (("survae-maxpool", "digits", "MaxPool2d"), ("survae-maxpool", "digits", "Slice"),
            ("survae-abs", "moons", "Abs"), ("survae-abs", "moons", "no Abs"))
    for model, dataset, twin in rows:
        row = f"{model:<15} {dataset:<16} {twin:<10} seed 0: test "
        assert row in result.stdout, result.stdout
    means = [line for line in result.stdout.splitlines() if "mean over 1 seed(s)" in line]
    assert len(means) == 4 and sum("test bpd" in line for line in means) == 2, result.stdout
