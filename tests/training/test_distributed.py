"""DDP end to end: two gloo processes under torchrun run the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from survae_flowify.cli import runs
from survae_flowify.training import evaluate, load_checkpoint, read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _train_two_processes(tmp_path: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``survae-flowify train`` under torchrun with two gloo processes on the CPU; must succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "survae_flowify.cli", "train", *args, "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc


@pytest.mark.slow
def test_two_process_training_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = _train_two_processes(tmp_path, out, "--dataset", "moons", "--model", "small-mlp",
                                "--subset", "512", "--batch-size", "64", "--max-steps", "5",
                                "--log-every", "1")
    assert proc.stdout.count("test nats:") == 1  # only rank 0 reports

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 5
    assert summary["ranks_in_sync"] is True  # DDP kept both replicas identical
    train = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert train == [1, 2, 3, 4, 5]  # one writer: every step once
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == [
        "checkpoint.pt", "config.json", "metrics.jsonl", "summary.json"]

    # the sharded, all-reduced test metric equals a single-process evaluation of the checkpoint
    checkpoint = load_checkpoint(out)
    flow = runs.flow_from_checkpoint(checkpoint, torch.device("cpu"))
    assert flow.exact  # deterministic log-likelihood: the comparison is exact up to rounding
    data = runs.load_data(checkpoint["spec"], None)
    assert len(data.test) == 512
    assert summary["test_nats"] == pytest.approx(evaluate(flow, data.test), rel=1e-5)


@pytest.mark.slow
def test_two_processes_with_parameters_unused_by_the_forward_pass(tmp_path):
    # small-conv's Pad layers have nothing to pad on 8x8 digits: their noise scales get no gradient,
    # which plain DDP rejects at the second step unless told to look for unused parameters
    out = tmp_path / "run"
    _train_two_processes(tmp_path, out, "--dataset", "digits", "--model", "small-conv",
                         "--subset", "128", "--batch-size", "32", "--max-steps", "3",
                         "--no-plots", "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["ranks_in_sync"] is True
