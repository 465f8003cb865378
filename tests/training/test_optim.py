"""The shared Adam: fused where torch offers it, the same update as torch's reference loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from survae_flowify.training import adam


def _params(seed: int, dtype: torch.dtype) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 3, 2)]
    return [nn.Parameter(torch.randn(*shape, generator=gen, dtype=dtype)) for shape in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_is_fused_on_cpu_and_matches_the_reference_update(dtype: torch.dtype) -> None:
    ours, ref = _params(0, dtype), _params(0, dtype)
    opt = adam(ours, lr=0.05, weight_decay=0.1)
    assert opt.defaults["fused"] is True  # torch 2.13's CPU build has the fused kernel
    reference = torch.optim.Adam(ref, lr=0.05, weight_decay=0.1, foreach=False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(ours, ref, strict=True):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        reference.step()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for a, b, start in zip(ours, ref, _params(0, dtype), strict=True):
        assert (a - start).abs().max() > 0.05  # five steps of lr 0.05 moved it
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_adam_falls_back_to_the_default_loop_with_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.Adam

    def no_fused(params, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    opt = adam(_params(0, torch.float32), lr=0.02, weight_decay=0.3)
    assert not opt.defaults["fused"]
    assert opt.defaults["lr"] == 0.02 and opt.defaults["weight_decay"] == 0.3
