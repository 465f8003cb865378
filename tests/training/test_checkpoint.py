"""Schedule, atomic writes and checkpoint validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from survae_flowify.training import (
    CheckpointError,
    TrainConfig,
    atomic_write,
    cosine_lr,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from survae_flowify.training.config import ConfigError
from survae_flowify.training.records import MetricsLog, read_jsonl, write_json


def test_cosine_schedule_values():
    assert cosine_lr(0, 100, 5e-4) == pytest.approx(5e-4)
    assert cosine_lr(50, 100, 5e-4) == pytest.approx(2.5e-4)
    assert cosine_lr(25, 100, 1.0) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert cosine_lr(100, 100, 5e-4) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(150, 100, 5e-4) == pytest.approx(0.0, abs=1e-15)
    values = [cosine_lr(t, 40, 1.0) for t in range(41)]
    assert all(a > b for a, b in itertools.pairwise(values))


def _payload(model):
    return {"spec": {"model": "custom"}, "model": model.state_dict(), "optimizer": {}, "step": 3,
            "epoch": 0, "batch_in_epoch": 3, "total_steps": 10, "config": TrainConfig().to_dict()}


def test_checkpoint_round_trip_and_directory(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "checkpoint.pt", _payload(model))
    data = load_checkpoint(tmp_path)
    assert data["step"] == 3 and data["path"].endswith("checkpoint.pt")
    other = torch.nn.Linear(3, 2)
    load_model_state(other, data["model"])
    assert torch.equal(other.weight, model.weight)
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint.pt"]  # no temporary files left


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "checkpoint.pt", _payload(model))
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def crash(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "checkpoint.pt", crash, binary=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(tmp_path / "garbage.pt")
    save_checkpoint(tmp_path / "good.pt", _payload(torch.nn.Linear(3, 2)))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a survae-flowify checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "survae-flowify-checkpoint", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"format": "survae-flowify-checkpoint", "version": 1, "spec": {}}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="missing model"):
        load_checkpoint(tmp_path / "part.pt")


def test_load_model_state_names_the_mismatch():
    state = torch.nn.Linear(3, 2).state_dict()
    with pytest.raises(CheckpointError, match="wrong shape: weight"):
        load_model_state(torch.nn.Linear(4, 2), state)
    with pytest.raises(CheckpointError, match=r"2 missing: 0\.bias, 0\.weight; 2 unexpected: bias, weight"):
        load_model_state(torch.nn.Sequential(torch.nn.Linear(3, 2)), state)


def test_config_validation():
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="eval_samples"):
        TrainConfig(eval_samples=0)
    config = TrainConfig(epochs=3, clip_grad=1.0)
    assert TrainConfig.from_dict({**config.to_dict(), "unknown": 1}) == config


def test_json_records(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    import json

    assert json.loads((tmp_path / "s.json").read_text()) == {"a": "nan", "b": [1.0, "inf"]}
    log = MetricsLog(tmp_path / "m.jsonl")
    log.write(step=1, loss=2.0)
    log.write(step=2, loss=1.5)
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a torn line from a crash
    assert read_jsonl(tmp_path / "m.jsonl") == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_atomic_files_honour_the_umask(tmp_path, umask):
    import os

    previous = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint(tmp_path / "c.pt", _payload(torch.nn.Linear(2, 2)))
    finally:
        os.umask(previous)
    for name in ("a.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.pt"]  # no temporaries left
