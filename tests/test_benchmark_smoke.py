"""The speed benchmark runs and prints its table (timings are never asserted: shared machines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.mark.slow  # ~15–35 s: builds FMLP and FCONV1 and runs dynamo three times
def test_speed_benchmark_quick_mode_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row in ("FMLP-MNIST train step", "FMLP-MNIST eval log_prob", "FCONV1-MNIST train step",
                "FCONV1-MNIST eval log_prob", "RqSpline 256×512 forward: fast",
                "RqSpline 256×512 fwd+bwd: nflows", "FMLP-MNIST train step: autograd backward",
                "FMLP-MNIST lu train step: PyTorch kernel", "spline kernel in C",
                "graph breaks, FMLP log_prob (train, input checks off)"):
        assert row in out, out
    spline_rows = [line for line in out.splitlines() if line.startswith("RqSpline")]
    assert len(spline_rows) == 10 and all(line.rstrip().endswith("×") for line in spline_rows), out
