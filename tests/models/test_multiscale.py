"""``models.multiscale`` (the CLI's ``glow``): exact likelihood against an independent
change-of-variables computation, the right inverse, gradients, context, training, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from survae_flowify import models
from survae_flowify.bijections import AffineCoupling, RqCoupling
from survae_flowify.cli import main
from survae_flowify.data import load_digits
from survae_flowify.distributions import ConditionalNormal, StandardNormal
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms import Slice

SHAPE = (2, 4, 4)
CONTEXT = 3


def _tiny(coupling: str = "affine", context_features: int | None = None, seed: int = 0):
    """A 2-scale flow over (2, 4, 4), float64, ActNorm initialised by one training batch, then
    every parameter moved off its initial value."""
    torch.manual_seed(seed)
    flow = models.multiscale(SHAPE, scales=2, steps=2, coupling=coupling, hidden=8,
                             context_features=context_features).double()
    batch = 1.5 * torch.randn(16, *SHAPE, dtype=torch.float64) + 0.3
    context = _context(16, context_features)
    flow.train()
    flow.log_prob(batch, context=context)  # ActNorm's data-dependent initialisation
    with torch.no_grad():
        perturb_parameters(flow, scale=0.5, seed=seed)
    return flow.eval()


def _context(n: int, features: int | None, seed: int = 1) -> torch.Tensor | None:
    if features is None:
        return None
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _log_abs_det(parts: list, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log|det ∂(parts)/∂h|`` per sample from the autograd Jacobian of the composition."""
    out = []
    for i in range(h.shape[0]):
        c = None if context is None else context[i:i + 1]

        def f(v, c=c):
            y = v.view(1, *h.shape[1:])
            for part in parts:
                y, _ = part.forward(y, c)
            return y.flatten()

        jac = jacobian(f, h[i].flatten())
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def _apply(parts: list, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    for part in parts:
        h, _ = part.forward(h, context)
    return h


def _gaussian(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return Normal(loc, log_scale.exp()).log_prob(x).flatten(1).sum(1)


def _change_of_variables(flow, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log p(x)``: the autograd log|det| of every run of bijections between splits, plus the
    closed-form Gaussian log-density of each split-off half given what was kept (its mean and
    scale read from the split prior's network), plus the base's Gaussian log-density."""
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    h, run = x, []
    for part in flow.transform:
        if not isinstance(part, Slice):
            run.append(part)
            continue
        total = total + _log_abs_det(run, h, context)
        h, run = _apply(run, h, context), []
        kept, dropped = h[:, :part.num_keep], h[:, part.num_keep:]
        assert dropped.shape[1] == kept.shape[1]  # the split keeps half the channels
        loc, log_scale = part.inverse_density.params(kept, *([] if context is None else [context]))
        assert loc.abs().min() > 0 and log_scale.abs().min() > 0  # perturbed: not N(0, I)
        total = total + _gaussian(dropped, loc, log_scale)
        h = kept
    total = total + _log_abs_det(run, h, context)
    h = _apply(run, h, context)
    if context is None:
        return total + _gaussian(h, torch.zeros_like(h), torch.zeros_like(h))
    loc, log_scale = flow.base.params(context)
    return total + _gaussian(h, loc, log_scale)


@pytest.mark.parametrize("context_features", [None, CONTEXT])
@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_log_prob_is_the_change_of_variables(coupling, context_features):
    flow = _tiny(coupling, context_features)
    assert flow.exact
    x = 1.5 * torch.randn(5, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    context = _context(5, context_features)
    with torch.no_grad():
        got = flow.log_prob(x, context=context)
    expected = _change_of_variables(flow, x, context).detach()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("context_features", [None, CONTEXT])
@pytest.mark.parametrize("mean", [False, True])
def test_right_inverse_and_sample_shapes(context_features, mean):
    flow = _tiny("spline", context_features)
    context = _context(6, context_features)
    z = flow.base.sample(6, *([] if context is None else [context]))
    assert z.shape == (6, 8, 1, 1)  # 2 · 2² channels at 4 / 2² = 1 pixel
    x = flow.transform.inverse(z, context, mean=mean)
    assert x.shape == (6, *SHAPE)
    z_back, _ = flow.transform.forward(x, context)
    torch.testing.assert_close(z_back, z, rtol=1e-7, atol=1e-7)  # the spline inverse solves a quadratic
    assert flow.sample(6, context=context, mean=mean).shape == (6, *SHAPE)
    if not mean:  # the split priors sample what was dropped: two inverses of one z differ
        assert not torch.allclose(flow.transform.inverse(z, context), x)


@pytest.mark.parametrize("context_features", [None, CONTEXT])
def test_every_parameter_gets_a_gradient(context_features):
    flow = _tiny("affine", context_features).train()
    x = torch.randn(8, *SHAPE, dtype=torch.float64)
    (-flow.log_prob(x, context=_context(8, context_features)).mean()).backward()
    dead = [name for name, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_the_structure_squeezes_splits_and_ends_in_a_block_of_steps():
    flow = models.multiscale((1, 8, 8), scales=2, steps=3, coupling="spline", num_bins=5, levels=17)
    names = list(flow.transform._modules)
    assert names[0] == "dequantize" and names[1] == "squeeze1"
    kinds = [type(p).__name__ for p in flow.transform]
    assert kinds.count("Slice") == 2 and kinds.count("RqCoupling") == 9 and kinds.count("Conv1x1") == 9
    assert kinds[-3:] == ["ActNorm", "Conv1x1", "RqCoupling"]
    splits = [p for p in flow.transform if isinstance(p, Slice)]
    assert [(s.in_shape, s.out_shape) for s in splits] == [((4, 4, 4), (2, 4, 4)), ((8, 2, 2), (4, 2, 2))]
    assert all(s.inverse_density.__class__.__name__ == "ConditionalNormalDensity" for s in splits)
    assert all(p.elementwise.num_bins == 5 for p in flow.transform if isinstance(p, RqCoupling))
    assert isinstance(flow.base, StandardNormal) and flow.base.shape == (4, 2, 2)
    assert not flow.exact  # dequantization is a bound


def test_the_context_reaches_every_coupling_split_prior_and_the_base():
    flow = _tiny("affine", CONTEXT)
    assert isinstance(flow.base, ConditionalNormal)
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    c1, c2 = _context(4, CONTEXT, seed=1), _context(4, CONTEXT, seed=2)
    with torch.no_grad():
        assert (flow.log_prob(x, context=c1) - flow.log_prob(x, context=c2)).abs().min() > 1e-4
        h, seen = x, 0
        for part in flow.transform:
            z1, v1 = part.forward(h, c1)
            _, v2 = part.forward(h, c2)
            if isinstance(part, (AffineCoupling, RqCoupling, Slice)):
                assert (v1 - v2).abs().min() > 1e-8, part
                seen += 1
            h = z1
    assert seen == 6 + 2  # 3 blocks of 2 couplings, 2 splits
    with pytest.raises(ValueError, match=r"\(B, 3\)|\(4, 3\)|context"):
        flow.log_prob(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (1, 28, 28), "scales": 3}, r"multiscale: shape \(1, 28, 28\) cannot be squeezed scales=3"),
        ({"shape": (1, 6, 8), "scales": 2}, r"multiscale: shape \(1, 6, 8\).*divisible by 2\*\*2 = 4"),
        ({"shape": (64,)}, r"multiscale: shape must be an image shape \(C, H, W\)"),
        ({"shape": (1, 8, 8), "steps": 0}, r"multiscale.*steps"),
        ({"shape": (1, 8, 8), "scales": 0}, r"multiscale.*scales"),
        ({"shape": (1, 8, 8), "coupling": "additive"}, r"multiscale.*coupling.*'affine', 'spline'"),
        ({"shape": (1, 8, 8), "hidden": 0}, r"multiscale.*hidden"),
        ({"shape": (1, 8, 8), "levels": 1}, r"multiscale.*levels"),
        ({"shape": (1, 8, 8), "context_features": 0}, r"multiscale.*context_features"),
        ({"shape": (1, 8, 8), "num_bins": 4}, r"multiscale: num_bins=4 applies only to coupling='spline'"),
        ({"shape": (1, 8, 8), "coupling": "spline", "tail_bound": -1.0}, r"multiscale.*tail_bound"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    shape = kwargs.pop("shape")
    with pytest.raises(ValueError, match=message):
        models.multiscale(shape, **kwargs)


def test_glow_is_built_by_name_with_defaults_by_image_size():
    assert "glow" in models.MODEL_NAMES
    digits = models.build("glow", (1, 8, 8), levels=17)
    assert type(digits.transform[0]).__name__ == "Dequantize" and digits.transform[0].levels == 17
    assert digits.base.shape == (4, 2, 2)  # two scales
    assert models.build("glow", (1, 28, 28)).base.shape == (4, 7, 7)
    assert models.build("glow", (3, 32, 32)).base.shape == (24, 4, 4)  # three scales
    assert models.build("glow", (1, 8, 8), scales=1, steps=1).base.shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"'glow' needs \(C, H, W\) images"):
        models.build("glow", (64,))


def test_a_short_training_on_digits_lowers_bits_per_dim():
    torch.manual_seed(0)
    data = load_digits()
    flow = models.multiscale((1, 8, 8), scales=2, steps=2, hidden=32, levels=data.levels)
    test = data.test[:256]

    def bpd() -> float:
        flow.eval()
        with torch.no_grad():
            value = -flow.log_prob(test).mean().item() / (64 * math.log(2))
        flow.train()
        return value

    flow.log_prob(data.train[:256])  # ActNorm initialisation on a training batch
    before = bpd()
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = data.train[torch.randint(len(data.train), (64,), generator=gen)]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = bpd()
    assert after < before - 0.3, (before, after)


def test_cli_lists_and_trains_glow(tmp_path, capsys):
    assert main(["list"]) == 0
    assert "glow" in capsys.readouterr().out.splitlines()[0]
    out = tmp_path / "glow"
    rc = main(["train", "--model", "glow", "--dataset", "digits", "--max-steps", "2", "--batch-size", "32",
               "--out", str(out), "--quiet", "--no-plots", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "glow" and summary["steps"] == 2
    assert 0 < summary["test_bpd"] < 20 and summary["parameters"] == models.parameter_count(
        models.build("glow", (1, 8, 8), levels=17))
