"""``TrainConfig(compile=True)`` / ``survae-flowify train --compile``: the step runs compiled."""

from __future__ import annotations

import math

import pytest
import torch

from survae_flowify.cli import main
from survae_flowify.training import ConfigError, TrainConfig, load_checkpoint, read_jsonl


def test_compile_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="TrainConfig: compile"):
        TrainConfig(compile="yes")


@pytest.mark.slow  # compiling the tiny model's step takes ~10–40 s on one CPU thread
def test_two_step_cli_run_with_compile(tmp_path) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "moons", "--model", "small-mlp", "--subset", "128",
               "--batch-size", "32", "--max-steps", "2", "--log-every", "1", "--device", "cpu",
               "--threads", "1", "--no-plots", "--quiet", "--compile", "--out", str(out)])
    assert rc == 0
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0  # dynamo compiled the step
    assert load_checkpoint(out / "checkpoint.pt")["config"]["compile"] is True
    losses = [r["loss"] for r in read_jsonl(out / "metrics.jsonl") if r.get("split") == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    torch._dynamo.reset()
