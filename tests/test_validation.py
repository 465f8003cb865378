"""Invalid options and inputs are refused with errors that name the layer, the argument, what was
expected and what came (issue 8, items 3 and 8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.distributions import ConditionalNormalDensity, Noise, make_inverse_density
from survae_flowify.layers.residual import AddHalves, Branch
from survae_flowify.testing import perturb_parameters


def _flow() -> ffn.Flow:
    torch.manual_seed(0)
    return ffn.Flow(ffn.StandardNormal(4), ffn.Sequential(ffn.Augment(2, 2), ffn.LeakyReLU(0.5)))


_X = torch.randn(3, 2)
_Z = torch.randn(2, 2)
_NAN, _INF = float("nan"), float("inf")

# (what is built or called, the message it must give)
BAD: dict[str, tuple[Callable[[], Any], str]] = {
    "slice_keep_bool": (lambda: ffn.Slice((4,), True),
                        r"Slice: num_keep must be an int in \[1, 3\], got True"),
    "slice_keep_all": (lambda: ffn.Slice(4, 4), r"Slice: num_keep must be an int in \[1, 3\], got 4"),
    "slice_keep_float": (lambda: ffn.Slice(4, 2.0), r"Slice: num_keep must be an int in \[1, 3\], got 2\.0"),
    "slice_density": (lambda: ffn.Slice(4, 2, inverse_density="bogus"),
                      r"Slice: inverse_density must be one of 'normal', 'diagonal', 'conditional', got "
                      r"'bogus'"),
    "slice_hidden": (lambda: ffn.Slice(4, 2, inverse_density="conditional", hidden=0),
                     r"Slice: hidden must be a positive int, got 0"),
    "slice_shape": (lambda: ffn.Slice((4, True), 2),
                    r"Slice: in_shape must be .*positive ints.*got \(4, True\)"),
    "leaky_bool": (lambda: ffn.LeakyReLU(True),
                   r"LeakyReLU: negative_slope must be a finite number > 0.*got True"),
    "leaky_zero": (lambda: ffn.LeakyReLU(0.0),
                   r"LeakyReLU: negative_slope must be a finite number > 0.*got 0\.0"),
    "leaky_negative": (lambda: ffn.LeakyReLU(-0.5), r"LeakyReLU: negative_slope .*got -0\.5"),
    "leaky_nan": (lambda: ffn.LeakyReLU(_NAN), r"LeakyReLU: negative_slope .*got nan"),
    "leaky_inf": (lambda: ffn.LeakyReLU(_INF), r"LeakyReLU: negative_slope .*got inf"),
    "leaky_string": (lambda: ffn.LeakyReLU("0.5"), r"LeakyReLU: negative_slope .*got '0\.5'"),
    "augment_extra_bool": (lambda: ffn.Augment(3, True), r"Augment: extra must be a positive int, got True"),
    "augment_extra_zero": (lambda: ffn.Augment(3, 0), r"Augment: extra must be a positive int, got 0"),
    "augment_noise": (lambda: ffn.Augment(3, 2, noise="bogus"),
                      r"Augment: noise must be one of 'normal', 'uniform', got 'bogus'"),
    "augment_scale_zero": (lambda: ffn.Augment(3, 2, init_scale=0.0),
                           r"Augment: init_scale must be a finite number > 0.*got 0\.0"),
    "augment_scale_negative": (lambda: ffn.Augment(3, 2, init_scale=-1.0),
                               r"Augment: init_scale .*got -1\.0"),
    "augment_scale_nan": (lambda: ffn.Augment(3, 2, init_scale=_NAN), r"Augment: init_scale .*got nan"),
    "repeat_copies_bool": (lambda: ffn.Repeat(3, True), r"Repeat: copies must be an int >= 2, got True"),
    "repeat_copies_one": (lambda: ffn.Repeat(3, 1), r"Repeat: copies must be an int >= 2, got 1"),
    "repeat_noise": (lambda: ffn.Repeat(3, 2, noise="bogus"),
                     r"Repeat: noise must be one of 'normal', 'uniform'"),
    "repeat_scale": (lambda: ffn.Repeat(3, 2, init_scale=0), r"Repeat: init_scale .*got 0"),
    "dequantize_bool": (lambda: ffn.Dequantize(True), r"Dequantize: levels must be an int >= 2, got True"),
    "dequantize_one": (lambda: ffn.Dequantize(1), r"Dequantize: levels must be an int >= 2, got 1"),
    "dequantize_float": (lambda: ffn.Dequantize(256.0),
                         r"Dequantize: levels must be an int >= 2, got 256\.0"),
    "noise_kind": (lambda: Noise("bogus"), r"Noise: noise must be one of 'normal', 'uniform', got 'bogus'"),
    "noise_scale": (lambda: Noise(init_scale=-2.0),
                    r"Noise: init_scale must be a finite number > 0.*got -2\.0"),
    "density_kind": (lambda: make_inverse_density("bogus", (2,), (2,)),
                     r"make_inverse_density: inverse_density must be one of 'normal', 'diagonal', "
                     r"'conditional', got 'bogus'"),
    "density_hidden": (lambda: make_inverse_density("conditional", (2,), (2,), hidden=0),
                       r"make_inverse_density: hidden must be a positive int, got 0"),
    "density_hidden_bool": (lambda: make_inverse_density("normal", (2,), (2,), hidden=True),
                            r"make_inverse_density: hidden must be a positive int, got True"),
    "conditional_hidden": (lambda: ConditionalNormalDensity((2,), (2,), hidden=0),
                           r"ConditionalNormalDensity: hidden must be a positive int, got 0"),
    "add_halves_density": (lambda: AddHalves(3, inverse_density="bogus"),
                           r"AddHalves: inverse_density must be one of"),
    "add_halves_hidden": (lambda: AddHalves(3, hidden=0), r"AddHalves: hidden must be a positive int, got 0"),
    "residual_noise": (lambda: ffn.Residual(ffn.Linear(3, 3), noise="bogus"),
                       r"Residual: noise must be one of 'normal', 'uniform', got 'bogus'"),
    "residual_hidden": (lambda: ffn.Residual(ffn.Linear(3, 3), hidden=0),
                        r"Residual: hidden must be a positive int"),
    "standard_normal_shape": (lambda: ffn.StandardNormal(0), r"StandardNormal: shape must be .*got \(0,\)"),
    "standard_normal_bool": (lambda: ffn.StandardNormal(True),
                             r"StandardNormal: shape must be .*got \(True,\)"),
    "diagonal_normal_shape": (lambda: ffn.DiagonalNormal(2.5),
                              r"DiagonalNormal: shape must be .*got \(2\.5,\)"),
    "base_sample_n": (lambda: ffn.StandardNormal(2).sample(True),
                      r"StandardNormal.sample: n must be a positive int, got True"),
    "base_sample_mean": (lambda: ffn.DiagonalNormal(2).sample(2, mean=1),
                         r"DiagonalNormal.sample: mean must be True or False, got 1"),
    "flatten_shape": (lambda: ffn.Flatten((2, 0)), r"Flatten: shape must be .*got \(2, 0\)"),
    "reshape_shape": (lambda: ffn.Reshape((6,), (2, True)), r"Reshape: out_shape must be .*got \(2, True\)"),
    "log_prob_k_bool": (lambda: _flow().log_prob(_X, num_samples=True),
                        r"Flow.log_prob: num_samples must be a positive int, got True"),
    "log_prob_k_zero": (lambda: _flow().log_prob(_X, num_samples=0), r"Flow.log_prob: num_samples .*got 0"),
    "log_prob_chunk_zero": (lambda: _flow().log_prob(_X, num_samples=4, chunk_size=0),
                            r"Flow.log_prob: chunk_size must be a positive int, got 0"),
    "gap_k_bool": (lambda: _flow().augmentation_gap(_X, num_samples=True),
                   r"Flow.augmentation_gap: num_samples must be a positive int, got True"),
    "gap_chunk": (lambda: _flow().augmentation_gap(_X, num_samples=3, chunk_size=-1),
                  r"Flow.augmentation_gap: chunk_size .*got -1"),
    "bpd_k": (lambda: _flow().bits_per_dim(_X, num_samples=2.5),
              r"num_samples must be a positive int, got 2\.5"),
    "sample_n_bool": (lambda: _flow().sample(True), r"Flow.sample: n must be a positive int, got True"),
    "sample_mean": (lambda: _flow().sample(2, mean="yes"),
                    r"Flow.sample: mean must be True or False, got 'yes'"),
    "reconstruct_mean": (lambda: _flow().reconstruct(_X, mean=1),
                         r"Flow.reconstruct: mean must be True or False, got 1"),
    "inverse_mean": (lambda: ffn.Slice(4, 2).inverse(_Z, mean=1),
                     r"Slice.inverse: mean must be True or False, got 1"),
    "sequential_inverse_mean": (lambda: ffn.Sequential(ffn.Slice(4, 2)).inverse(_Z, mean="mean"),
                                r"Sequential.inverse: mean must be True or False, got 'mean'"),
    "sequential_name": (lambda: ffn.Sequential(**{"a.b": ffn.LeakyReLU()}),
                        r"Sequential: part names must be .*without '\.', got 'a\.b'"),
    "flowify_keep_weights": (lambda: ffn.flowify(nn.Sequential(nn.Linear(2, 2)), keep_weights="yes"),
                             r"flowify: keep_weights must be True or False, got 'yes'"),
    "flatten_bool": (lambda: ffn.Flatten(True), r"Flatten: shape must be .*got True"),
    "branch_f": (lambda: Branch(nn.Linear(2, 2), (2,)), r"Branch: f must be a survae_flowify Transform"),
    "branch_shape": (lambda: Branch(ffn.LeakyReLU(), (0,)), r"Branch: shape must be .*got \(0,\)"),
    "perturb_scale": (lambda: perturb_parameters(nn.Linear(2, 2), scale=_NAN),
                      r"perturb_parameters: scale must be a finite number >= 0.*got nan"),
    "perturb_seed": (lambda: perturb_parameters(nn.Linear(2, 2), seed=1.5),
                     r"perturb_parameters: seed must be an int >= 0, got 1\.5"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_option_is_refused_with_a_clear_message(name: str) -> None:
    make, message = BAD[name]
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# ------------------------------------------------------------------ Dequantize's input (item 3)
@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.tensor([[0.5, 0.25]]), r"got 0\.5"),
        (torch.tensor([[3.0, 16.5]]), r"got 16\.5"),
        (torch.tensor([[17.0, 2.0]]), r"got 17\.0"),
        (torch.tensor([[-1, 2]]), r"got -1"),
        (torch.tensor([[0, 17]], dtype=torch.uint8), r"got 17"),
    ],
)
def test_dequantize_rejects_values_that_are_not_counts(x: torch.Tensor, message: str) -> None:
    prefix = r"Dequantize\(levels=17\): expected integer values in \[0, 16\].*"
    with pytest.raises(ValueError, match=prefix + message):
        ffn.Dequantize(17)(x)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_dequantize_rejects_bool_and_complex(dtype: torch.dtype) -> None:
    x = torch.ones(2, 3, dtype=dtype)
    message = rf"Dequantize\(levels=4\): x must be a floating-point or integer tensor, got dtype {dtype}"
    with pytest.raises(ValueError, match=message):
        ffn.Dequantize(4)(x)


def test_scaled_images_are_refused_by_an_image_model() -> None:
    """The reported mistake: images already divided by 255 fed to a model with ``levels=256``."""
    from survae_flowify import models

    flow = models.build("small-mlp", (1, 4, 4), levels=256)
    counts = torch.randint(0, 256, (2, 1, 4, 4))
    assert torch.isfinite(flow.log_prob(counts)).all()
    with pytest.raises(ValueError, match=r"Dequantize\(levels=256\): expected integer values"):
        flow.log_prob(counts.float() / 255)


def test_dequantize_checks_are_switched_off_with_validation() -> None:
    with ffn.validation(False):
        z, _ = ffn.Dequantize(4)(torch.tensor([[0.5]]))
    assert z.shape == (1, 1)


def test_complex_input_to_an_ordinary_layer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"LeakyReLU.*floating-point tensor, got dtype torch\.complex64"):
        ffn.LeakyReLU(0.5)(torch.ones(2, 2, dtype=torch.complex64))


# ------------------------------------------------------------------ the fast value checks
@pytest.mark.parametrize("bad", [_NAN, _INF, -_INF])
def test_non_finite_input_is_refused(bad: float) -> None:
    x = torch.zeros(3, 4)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"RqSpline.*x contains NaN or infinite values \(shape \(3, 4\)\)"):
        ffn.Flow(ffn.StandardNormal((4,)), ffn.RqSpline()).log_prob(x)


def test_finite_input_whose_sum_overflows_is_accepted() -> None:
    """The finiteness check sums the input first: a sum that overflows must not count as NaN."""
    x = torch.full((2, 3), 3e38)
    assert not torch.isfinite(x.sum())
    z, _ = ffn.LeakyReLU(0.5)(x)
    assert torch.equal(z, x)


@pytest.mark.parametrize(("bad", "message"), [(1e-3, r"got 0\.001"), (255.0 + 2**-6, r"got 255\.01"),
                                              (-2.0, r"got -2\.0"), (256.0, r"got 256\.0")])
def test_dequantize_names_the_first_bad_value(bad: float, message: str) -> None:
    x = torch.randint(0, 256, (4, 5)).float()
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"Dequantize\(levels=256\): expected integer values.*" + message):
        ffn.Dequantize(256)(x)


def test_dequantize_accepts_whole_numbers_at_both_ends_and_negative_zero() -> None:
    x = torch.tensor([[0.0, -0.0, 255.0, 17.0]], dtype=torch.float64)
    z, _ = ffn.Dequantize(256).double()(x)
    assert ((z >= 0) & (z <= 1)).all()
