"""One dtype/device policy, checked once at the entry of a call (issue 8, items 2, 4 and 10).

A floating input must have the parameters' dtype and lie on their device, in train and eval
mode alike: otherwise a ``ValueError`` names the layer and both dtypes (devices). Integer input
to a flow whose entry is ``Dequantize`` is converted to the model's dtype.
"""

from __future__ import annotations

import math

import pytest
import torch

import survae_flowify as ffn
from survae_flowify import models
from survae_flowify.testing import perturb_parameters


def _mlp_flow() -> ffn.Flow:
    torch.manual_seed(0)
    t = ffn.Sequential(ffn.Linear(3, 3), ffn.LeakyReLU(0.5), ffn.Linear(3, 2))
    return ffn.Flow(ffn.StandardNormal(2), t)


@pytest.mark.parametrize("mode", ["train", "eval", "eval_no_grad"])
def test_float64_input_to_float32_flow_names_layer_and_both_dtypes(mode: str) -> None:
    flow = _mlp_flow()
    flow.train(mode == "train")
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.set_grad_enabled(mode != "eval_no_grad"), pytest.raises(
        ValueError, match=r"Linear\(.*x has dtype torch\.float64 but the parameters have dtype torch\.float32"
    ):
        flow.log_prob(x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_float64_input_to_float32_layer_and_sequential(mode: str) -> None:
    layer = ffn.Linear(3, 3).train(mode == "train")
    seq = ffn.Sequential(ffn.LeakyReLU(0.5), ffn.Linear(3, 3)).train(mode == "train")
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Linear.*float64.*float32"):
        layer(x)
    # The entry (LeakyReLU) has no parameters: the composite's parameters decide.
    with pytest.raises(ValueError, match=r"LeakyReLU.*float64.*float32"):
        seq(x)
    with pytest.raises(ValueError, match=r"Linear.*z has dtype torch\.float64"):
        seq.inverse(x)


def test_layer_without_parameters_follows_its_input() -> None:
    for dtype in (torch.float32, torch.float64):
        z, c = ffn.LeakyReLU(0.5)(torch.randn(2, 3, dtype=dtype))
        assert z.dtype == c.dtype == dtype


def test_float32_input_to_float64_flow_is_rejected_too() -> None:
    flow = _mlp_flow().double()
    with pytest.raises(ValueError, match=r"float32 but the parameters have dtype torch\.float64"):
        flow.log_prob(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"float32.*float64"):
        flow.reconstruct(torch.randn(2, 3))


def _images(n: int, levels: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_model_takes_uint8_in_every_mode(dtype: torch.dtype) -> None:
    """``small-conv`` in float64 on integer images: train, eval, no_grad, IW bound, breakdown,
    augmentation gap and sampling all give results of the model's dtype."""
    torch.manual_seed(0)
    flow = perturb_parameters(models.build("small-conv", (1, 8, 8), levels=17)).to(dtype)
    x = _images(3, 17)
    flow.train()
    lp = flow.log_prob(x)
    assert lp.dtype == dtype and lp.shape == (3,) and torch.isfinite(lp).all()
    lp.sum().backward()
    flow.eval()
    with torch.no_grad():
        lp_eval = flow.log_prob(x)
        iw = flow.log_prob(x, num_samples=4, chunk_size=3)
        samples = flow.sample(2)
        mean_samples = flow.sample(2, mean=True)
    assert lp_eval.dtype == iw.dtype == dtype and iw.shape == (3,)
    # Uniform dequantization of the same integers: the float view of the images is the same data.
    with torch.no_grad():
        torch.manual_seed(5)
        a = flow.log_prob(x)
        torch.manual_seed(5)
        b = flow.log_prob(x.to(dtype))
    torch.testing.assert_close(a, b)
    table = flow.breakdown(x)
    assert math.isfinite(table.total)
    gap = flow.augmentation_gap(x, num_samples=3)
    assert gap.gap.dtype == dtype
    for s in (samples, mean_samples):
        assert s.dtype == dtype and s.shape == (2, 1, 8, 8)
        assert ((s >= 0) & (s <= 16) & (s == s.floor())).all()


def test_dequantize_alone_converts_integers_to_its_dtype() -> None:
    layer = ffn.Dequantize(4).double()
    z, c = layer(torch.tensor([[0, 3, 1]], dtype=torch.int64))
    assert z.dtype == c.dtype == torch.float64
    assert ((z > 0) & (z < 1)).all()


def test_meta_tensors_pass_the_input_check() -> None:
    """Shape inference on ``meta``: the check must not read values that meta tensors lack."""
    layer = ffn.LeakyReLU(0.5)
    z, c = layer(torch.empty(3, 4, device="meta"))
    assert z.device.type == "meta" and z.shape == (3, 4) and c.shape == (3,)
    flow = ffn.Flow(ffn.StandardNormal(4), ffn.Sequential(ffn.LeakyReLU(0.5), ffn.Repeat(2, 2)))
    flow = flow.to("meta")
    lp = flow.log_prob(torch.empty(5, 2, device="meta"))
    assert lp.device.type == "meta" and lp.shape == (5,)


def test_device_mismatch_names_layer_and_both_devices() -> None:
    flow = _mlp_flow().to("meta")
    with pytest.raises(ValueError, match=r"Linear\(.*x is on device cpu but the parameters are on meta"):
        flow.log_prob(torch.randn(2, 3))
    layer = ffn.Linear(3, 3).to("meta")
    with pytest.raises(ValueError, match=r"Linear.*device cpu.*meta"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"Dequantize.*device cpu.*meta"):
        ffn.Dequantize(4).to("meta")(torch.zeros(2, 3, dtype=torch.int64))


def test_dtype_check_costs_no_device_sync_inside_a_composite() -> None:
    """Inner layers skip the entry-only checks: a NaN produced inside is not re-checked (no
    sync per layer), while the same NaN at the entry is rejected."""

    class MakeNaN(ffn.Bijection):
        def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * float("nan"), x.new_zeros(x.shape[0])

    seq = ffn.Sequential(MakeNaN(), ffn.LeakyReLU(0.5))
    z, _ = seq(torch.ones(2, 2))
    assert torch.isnan(z).all()
    with pytest.raises(ValueError, match="NaN"):
        seq(torch.full((2, 2), float("nan")))
