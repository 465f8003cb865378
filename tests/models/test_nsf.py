"""The "+NSF" coupling stacks (appendix C) on the native ``RqCoupling``: structure and likelihood."""

from __future__ import annotations

import pytest
import torch

import survae_flowify as ffn
from survae_flowify import models
from survae_flowify.models.nsf import nsf_stack
from survae_flowify.testing import perturb_parameters


def _stacks(flow: ffn.Flow) -> list[ffn.Sequential]:
    return [p for p in flow.transform if isinstance(p, ffn.Sequential)
            and any(isinstance(q, ffn.RqCoupling) for q in p)]


@pytest.mark.parametrize("shape", [(64,), (16, 7, 7)])
@pytest.mark.parametrize("num_couplings", [1, 2, 3])
def test_stack_alternates_couplings_and_reversals(shape: tuple[int, ...], num_couplings: int) -> None:
    """Same structure as the nflows stacks it replaces: couplings (5 bins, bound 3, the first
    ⌊C/2⌋ features pass) with a reversal of dimension 1 between each two."""
    stack = nsf_stack(shape, num_couplings)
    kinds = [type(p) for p in stack]
    assert kinds == [ffn.RqCoupling, ffn.Reverse] * (num_couplings - 1) + [ffn.RqCoupling]
    for coupling in stack:
        if isinstance(coupling, ffn.RqCoupling):
            assert coupling.shape == shape and coupling.split == shape[0] // 2
            assert coupling.elementwise.num_bins == 5 and coupling.elementwise.tail_bound == 3.0


def test_conditioner_widths_are_the_old_ones() -> None:
    """Dense conditioners: three hidden layers of 256; conv conditioners: three of 32 channels."""
    dense = nsf_stack((64,), 1)[0].net
    assert [layer.out_features for layer in dense.hidden] == [256, 256, 256]
    assert dense.out.out_features == 32 * (3 * 5 - 1)
    conv = nsf_stack((16, 7, 7), 1)[0].net
    assert [layer.out_channels for layer in conv.hidden] == [32, 32, 32]
    assert conv.out.out_channels == 8 * (3 * 5 - 1)


@pytest.mark.parametrize(("name", "dataset", "expected"), [
    # (after a convolution: couplings per stack) then the dense stacks, from paper.py's tables
    ("fconv1-nsf", "mnist", [2, 2, 2]),
    ("fconv2-nsf", "mnist", [2, 2, 2, 2, 2, 2, 2]),
    ("fconv1-nsf", "cifar10", [4, 4, 4, 8]),
    ("fconv2-nsf", "cifar10", [4, 4, 4, 6]),
])
def test_paper_nsf_models_use_native_couplings(name: str, dataset: str, expected: list[int]) -> None:
    flow = models.build(name, {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}[dataset])
    stacks = _stacks(flow)
    assert [sum(isinstance(q, ffn.RqCoupling) for q in s) for s in stacks] == expected
    assert not any(type(m).__name__ == "NflowsBijection" for m in flow.modules())


def _log_abs_det_autograd(t: ffn.Transform, x: torch.Tensor) -> torch.Tensor:
    """``log|det ∂z/∂x|`` per sample from the autograd Jacobian, not from the contribution."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(
            lambda v: t(v.view(1, *x.shape[1:]))[0].flatten(), row.flatten())
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(5,), (3, 2, 2)])
def test_stack_contribution_is_the_log_det_of_its_jacobian(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    stack = perturb_parameters(nsf_stack(shape, 3).double(), scale=0.5, seed=2)
    x = 2.0 * torch.randn(4, *shape, dtype=torch.float64)
    z, contribution = stack(x)
    assert (contribution.abs() > 0.1).all()  # off the identity start: a real test
    torch.testing.assert_close(contribution, _log_abs_det_autograd(stack, x), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(stack.inverse(z), x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("shape", "message"), [
    ((1,), r"nsf_stack: .*at least 2"),
    ((1, 4, 4), r"nsf_stack: .*at least 2"),
    ((4, 4), r"nsf_stack: shape must be \(D,\) or \(C, H, W\)"),
])
def test_bad_shapes_are_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nsf_stack(shape, 2)


@pytest.mark.parametrize("num_couplings", [0, -1, 1.5, True])
def test_bad_coupling_counts_are_refused(num_couplings: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"nsf_stack.*num_couplings"):
        nsf_stack((4,), num_couplings)  # type: ignore[arg-type]
