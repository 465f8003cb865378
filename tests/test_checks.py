"""The shared argument checks: each message names the owner, the argument, what was expected and what came."""

import math

import numpy as np
import pytest
import torch

from survae_flowify import _checks


@pytest.mark.parametrize("value", [True, False, 0, -3, 2.0, "3", None])
def test_positive_int_rejects(value):
    with pytest.raises((ValueError, TypeError)) as info:
        _checks.positive_int("Layer", "size", value)
    msg = str(info.value)
    assert msg.startswith("Layer: size must be a positive int") and repr(value) in msg


def test_positive_int_accepts():
    assert _checks.positive_int("L", "n", 5) == 5


def test_integer_bounds():
    assert _checks.integer("L", "seed", 0, minimum=0, maximum=2**32 - 1) == 0
    with pytest.raises(ValueError, match=r"L: seed must be an int in \[0, 4294967295\], got 4294967296"):
        _checks.integer("L", "seed", 2**32, minimum=0, maximum=2**32 - 1)
    with pytest.raises(TypeError, match="L: seed must be an int"):
        _checks.integer("L", "seed", 1.5)
    with pytest.raises(ValueError):
        _checks.integer("L", "seed", True)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "1", None, torch.tensor([1.0])])
def test_positive_float_rejects(value):
    with pytest.raises(ValueError, match="L: scale must be a finite number > 0"):
        _checks.positive_float("L", "scale", value)


@pytest.mark.parametrize("value", [1, 0.5, np.float32(2.0), torch.tensor(3.0)])
def test_positive_float_accepts(value):
    assert _checks.positive_float("L", "scale", value) == float(value)


def test_finite_float_range():
    assert _checks.finite_float("L", "slope", 0.0, minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"slope must be a finite number > 0.0 and < 1.0"):
        _checks.finite_float("L", "slope", 1.0, minimum=0.0, maximum=1.0, strict=True)


def test_choice():
    assert _checks.choice("Linear", "noise", "uniform", ("normal", "uniform")) == "uniform"
    with pytest.raises(ValueError, match=r"Linear: noise must be one of 'normal', 'uniform', got 'bogus'"):
        _checks.choice("Linear", "noise", "bogus", ("normal", "uniform"))
    with pytest.raises(ValueError):  # True == 1 must not pass for the option 1
        _checks.choice("L", "k", True, (1, 2))


def test_boolean():
    assert _checks.boolean("L", "bias", False) is False
    with pytest.raises(TypeError, match="L: bias must be True or False, got 1"):
        _checks.boolean("L", "bias", 1)


def test_shape():
    assert _checks.shape("L", "shape", 4) == (4,)
    assert _checks.shape("L", "shape", [1, None], allow_none=True) == (1, None)
    for bad in [(), (0,), (True,), "ab", (2, None), 2.0]:
        with pytest.raises(ValueError, match="L: shape must be a positive int"):
            _checks.shape("L", "shape", bad)


def test_no_extra_kwargs():
    _checks.no_extra_kwargs("Linear", {})
    with pytest.raises(TypeError, match="Linear: unexpected keyword argument\\(s\\) rotaton"):
        _checks.no_extra_kwargs("Linear", {"rotaton": "x"})
