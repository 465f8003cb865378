"""Item 8: each layer's kind, the kinds of flows built from them, and their breakdown rows."""

from __future__ import annotations

import math

import pytest
import torch

import survae_flowify as ffn

KINDS = {  # (exact, stochastic_forward, stochastic_inverse)
    "Abs": (True, False, True),
    "Sort": (True, False, True),
    "MaxPool2d": (True, False, True),
    "StochasticPermutation": (False, True, True),
}


def _layers() -> dict[str, ffn.Transform]:
    return {"Abs": ffn.Abs(3), "Sort": ffn.Sort(), "MaxPool2d": ffn.MaxPool2d(2),
            "StochasticPermutation": ffn.StochasticPermutation()}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_layer_declares_its_kind(name: str) -> None:
    layer = _layers()[name]
    assert (layer.exact, layer.stochastic_forward, layer.stochastic_inverse) == KINDS[name]
    assert isinstance(layer, ffn.InferenceSurjection) == (name != "StochasticPermutation")


def test_a_flow_of_exact_surjections_is_exact_and_samples_with_its_density() -> None:
    """MaxPool2d → Flatten → Abs → Sort → a coupling: exact, so ``sample_and_log_prob`` works and
    its log-density is the one ``log_prob`` gives the same samples; every layer has a breakdown
    row, and the rows add up to ``log_prob``."""
    torch.manual_seed(0)
    transform = ffn.Sequential(
        pool=ffn.MaxPool2d(2, channels=1), flat=ffn.Flatten((1, 2, 2)), abs=ffn.Abs(4, hidden=8),
        sort=ffn.Sort(), coupling=ffn.AffineCoupling(4, hidden=8),
    )
    flow = ffn.Flow(ffn.StandardNormal(4), transform)
    assert flow.exact and not transform.stochastic_forward and transform.stochastic_inverse
    with torch.no_grad():
        x, log_p = flow.sample_and_log_prob(6)
        torch.testing.assert_close(log_p, flow.log_prob(x))
        table = flow.breakdown(x)
    rows = {r[0]: r for r in table.rows}
    assert list(rows) == ["pool", "flat", "abs", "sort", "coupling", "base"]
    assert all(r[2] == "exact" for r in table.rows)
    assert rows["sort"][3] == pytest.approx(-math.log(24))
    assert rows["abs"][3] == pytest.approx(-4 * math.log(2))  # the sign net starts uniform
    assert rows["pool"][4] == (1, 2, 2)
    assert table.total == pytest.approx(float(log_p.mean()), rel=1e-5)


def test_a_stochastic_permutation_makes_the_flow_a_bound() -> None:
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(ffn.Abs(3), ffn.StochasticPermutation()))
    assert not flow.exact
    x = torch.randn(5, 3)
    table = flow.breakdown(x)
    assert [r[2] for r in table.rows] == ["exact", "bound", "exact"]
    with pytest.raises(ValueError, match="StochasticPermutation gives a lower bound"):
        flow.sample_and_log_prob(2)
