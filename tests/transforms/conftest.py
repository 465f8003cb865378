"""The spline kernel's two implementations: C (``_rq_native``) and PyTorch (``_rq_kernel``)."""

from __future__ import annotations

import pytest

from survae_flowify.transforms import _rq_native


@pytest.fixture(params=["native", "torch"])
def spline_kernel(request: pytest.FixtureRequest):
    """Runs the test once with the C kernel (which must be available: the CI installs a C
    compiler) and once with ``_rq_native.disabled()``, the PyTorch kernel."""
    if request.param == "torch":
        with _rq_native.disabled():
            yield request.param
        return
    assert _rq_native.available(), (
        "the spline's C kernel did not build: these tests need a C compiler (cc; apt-get install gcc)"
    )
    yield request.param
