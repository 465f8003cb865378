"""The training loop: progress, exact resume, divergence, interruption, outputs."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

import survae_flowify as ffn
from survae_flowify.data import DataSplits, load_digits, sample_toy
from survae_flowify.testing import perturb_parameters
from survae_flowify.training import (
    CheckpointError,
    ConfigError,
    TrainConfig,
    Trainer,
    evaluate,
    load_checkpoint,
    nll_to_metric,
    read_jsonl,
)
from survae_flowify.training.plots import image_grid
from tests.training.tiny import tiny_flow

PNG = b"\x89PNG\r\n\x1a\n"


def _digits(n_train: int = 96) -> DataSplits:
    d = load_digits()
    return DataSplits("digits", "image", d.train[:n_train], d.valid[:40], d.test[:40], levels=17)


def _vectors(kind: str, dim: int) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    if dim == 2:
        x = sample_toy("moons", 400, seed=5)
    else:
        x = torch.randn(400, dim, generator=g) * torch.linspace(0.5, 2, dim)
    return DataSplits("vectors", kind, x[:256], x[256:320], x[320:])


def _config(**kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 32, "lr": 1e-2, "log_every": 1, "quiet": True, "plots": False}
    return TrainConfig(**{**base, **kw})


def _flow(data: DataSplits, seed: int = 0) -> ffn.Flow:
    torch.manual_seed(seed)
    return tiny_flow(data.shape, levels=data.levels)


def test_nll_to_metric():
    digits = _digits()
    assert nll_to_metric(64 * math.log(2) * 3.0, digits) == pytest.approx(3.0)
    assert nll_to_metric(1.25, _vectors("tabular", 3)) == 1.25


def test_evaluate_is_the_mean_negative_log_likelihood():
    data = _vectors("tabular", 4)
    flow = _flow(data)
    perturb_parameters(flow)
    with torch.no_grad():
        direct = -flow.log_prob(data.test).double().mean().item()  # exact, deterministic flow
    assert evaluate(flow, data.test, batch_size=7) == pytest.approx(direct, rel=1e-6)
    assert flow.training  # evaluation restores the mode


def test_training_lowers_the_validation_loss(tmp_path):
    data = _digits(256)
    flow = _flow(data)
    before = evaluate(flow, data.valid)
    result = Trainer(flow, data, tmp_path, _config(epochs=3)).run()
    assert result.status == "finished" and result.step == 24
    assert evaluate(flow, data.valid) < before - 0.2 * 64 * math.log(2)  # at least 0.2 bits/dim better


def test_metrics_follow_the_cosine_schedule(tmp_path):
    data = _digits()
    trainer = Trainer(_flow(data), data, tmp_path, _config(epochs=2))
    trainer.run()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    for r in train:  # the learning rate of the step just taken
        assert r["lr"] == pytest.approx(0.5 * 1e-2 * (1 + math.cos(math.pi * (r["step"] - 1) / 6)))
        assert r["bpd"] == pytest.approx(r["loss"] / (64 * math.log(2)))
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]
    assert [r["split"] for r in records][-1] == "test"


class _InterruptAt(Trainer):
    """Sends itself a real SIGINT during step ``interrupt_at``."""

    interrupt_at = 4

    def _train_step(self, index, stop):
        if self.step + 1 == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return super()._train_step(index, stop)


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = _digits()
    config = _config(epochs=3)
    full = _flow(data)
    Trainer(full, data, tmp_path / "a", config).run()

    interrupted = _InterruptAt(_flow(data), data, tmp_path / "b", config)
    result = interrupted.run()
    assert result.status == "interrupted" and "--resume" in result.message
    checkpoint = load_checkpoint(tmp_path / "b")
    assert checkpoint["step"] == result.step and 4 <= result.step < 9

    resumed_flow = _flow(data, seed=123)  # different initialisation: everything comes from the checkpoint
    resumed = Trainer(resumed_flow, data, tmp_path / "b", config)
    resumed.restore(checkpoint)
    assert resumed.lr_at(resumed.step) == pytest.approx(
        0.5 * config.lr * (1 + math.cos(math.pi * result.step / 9)))
    assert resumed.run().status == "finished"

    for p, q in zip(full.parameters(), resumed_flow.parameters()):
        assert torch.equal(p, q)
    a, b = ([(r["step"], r["lr"], r["loss"]) for r in read_jsonl(tmp_path / run / "metrics.jsonl")
             if r["split"] == "train"] for run in ("a", "b"))
    assert a == b  # same steps (none repeated), same learning rates, same losses


def test_pause_and_resume(tmp_path):
    data = _digits()
    config = _config(epochs=2)
    trainer = Trainer(_flow(data), data, tmp_path, config)
    result = trainer.run(stop_after=4)
    assert result.status == "paused" and result.step == 4
    assert load_checkpoint(tmp_path)["step"] == 4
    again = Trainer(_flow(data), data, tmp_path, config)
    again.restore(load_checkpoint(tmp_path))
    assert again.run().step == 6


def test_resume_refuses_a_different_schedule(tmp_path):
    data = _digits()
    Trainer(_flow(data), data, tmp_path, _config(epochs=1)).run(stop_after=1)
    checkpoint = load_checkpoint(tmp_path)
    for change in ({"lr": 1e-3}, {"batch_size": 16}, {"epochs": 5}, {"seed": 1}):
        other = Trainer(_flow(data), data, tmp_path, _config(**{"epochs": 1, **change}))
        with pytest.raises(CheckpointError, match="different schedule"):
            other.restore(checkpoint)


class _PoisonedFlow(ffn.Flow):
    """Its training log-likelihood turns NaN from the ``poison_from``-th call on."""

    poison_from = 5

    def __init__(self, flow: ffn.Flow) -> None:
        super().__init__(flow.base, flow.transform)
        self.calls = 0

    def log_prob(self, x, **kw):
        out = super().log_prob(x, **kw)
        if self.training:
            self.calls += 1
            if self.calls >= self.poison_from:
                return out * float("nan")
        return out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _digits()
    flow = _PoisonedFlow(_flow(data))
    result = Trainer(flow, data, tmp_path, _config(epochs=3, checkpoint_every=2)).run()
    assert result.status == "diverged"
    assert "non-finite at step 5" in result.message and "(step 4)" in result.message
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["step"] == 4
    for name, p in flow.state_dict().items():  # the poisoned step was not applied
        assert torch.equal(p, checkpoint["model"][name]) and bool(torch.isfinite(p).all())
    assert not (tmp_path / "summary.json").exists()
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["split"] == "error"


def test_image_run_outputs(tmp_path):
    data = _digits()
    flow = _flow(data)
    result = Trainer(flow, data, tmp_path, _config(epochs=1, plots=True, plot_samples=16),
                     spec={"model": "tiny", "dataset": "digits"}).run()
    s = result.summary
    assert s["parameters"] == sum(p.numel() for p in flow.parameters())
    assert {"test_bpd", "valid_bpd", "wall_time_s", "device", "steps"} <= set(s)
    for name in ("samples", "reconstructions", "loss"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    import json

    assert json.loads((tmp_path / "summary.json").read_text())["test_bpd"] == pytest.approx(s["test_bpd"])


@pytest.mark.parametrize(("kind", "dim", "figure"), [("toy", 2, "density"), ("tabular", 3, "samples")])
def test_vector_run_outputs_and_exact_test_metric(tmp_path, kind, dim, figure):
    data = _vectors(kind, dim)
    flow = _flow(data)
    result = Trainer(flow, data, tmp_path, _config(epochs=1, plots=True, eval_samples=3)).run()
    with torch.no_grad():
        flow.eval()
        direct = -flow.log_prob(data.test).double().mean().item()
    assert result.summary["test_nats"] == pytest.approx(direct, rel=1e-5)
    assert result.summary["test_iw_nats"] == pytest.approx(direct, rel=1e-5)  # exact flow: IW = exact
    assert (tmp_path / f"{figure}.png").read_bytes()[:8] == PNG


def test_image_grid_scales_levels_and_tiles():
    images = torch.zeros(3, 1, 2, 2)
    images[1] = 16.0
    grid = image_grid(images, levels=17, nrow=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1)
    assert grid[1:3, 4:6].min() == 1.0 and grid[1:3, 1:3].max() == 0.0  # second image white, first black
    assert grid[4:6, 4:6].min() == 1.0  # the empty fourth cell stays background
    colour = image_grid(torch.full((1, 3, 2, 2), 0.5), levels=None)
    assert colour.shape == (4, 4, 3) and colour[1, 1, 0] == 0.5


def test_time_budget_sets_the_schedule_length_and_survives_resume(tmp_path):
    data = _digits()
    config = _config(epochs=10000, time_budget_s=3.0)
    trainer = Trainer(_flow(data), data, tmp_path, config)
    result = trainer.run(stop_after=25)  # estimated every 10 steps from the recent speed
    assert result.status == "paused"
    total = trainer.total_steps
    assert 25 < total < 10000 * trainer.steps_per_epoch
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["calibrated"] and checkpoint["total_steps"] == total
    assert 0 < checkpoint["train_time_s"] < 3.0
    again = Trainer(_flow(data), data, tmp_path, config)
    again.restore(checkpoint)
    assert again.total_steps == total and again.lr_at(25) == pytest.approx(
        0.5 * config.lr * (1 + math.cos(math.pi * 25 / total)))
    finished = again.run()
    assert finished.status == "finished" and finished.step == again.total_steps
    assert finished.summary["train_time_s"] < 60  # about the budget, not 10000 epochs


class _FakeClock:
    """``time.perf_counter``/``time.monotonic`` stand-in that moves only when a step is taken."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _SlowStartTrainer(Trainer):
    """Each step costs ``seconds(step)`` on the fake clock: the first 20 steps are 10× slower,
    as on a machine that was loaded while a time budget was being calibrated."""

    clock: _FakeClock

    def _train_step(self, index, stop):
        self.clock.now += 0.5 if self.step < 20 else 0.05
        return super()._train_step(index, stop)


def test_time_budget_uses_at_least_90_percent_and_is_not_capped_by_default_epochs(tmp_path,
                                                                                  monkeypatch):
    import time

    clock = _FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    monkeypatch.setattr(time, "monotonic", clock)
    data = _digits()  # 3 steps per epoch: the default 10 epochs would be 30 steps
    config = TrainConfig(batch_size=32, lr=1e-2, quiet=True, plots=False, time_budget_s=30.0)
    trainer = _SlowStartTrainer(_flow(data), data, tmp_path, config)
    trainer.clock = clock
    result = trainer.run()
    assert result.status == "finished"
    trained = result.summary["train_time_s"]
    assert 0.9 * 30.0 <= trained <= 30.0 + 0.5, (trained, result.step)
    assert result.step > 30  # more than the default 10 epochs


def test_data_that_cannot_train_is_refused_before_the_first_step(tmp_path):
    d = _digits()
    empty_test = DataSplits("digits", "image", d.train, d.valid, d.test[:0], levels=17)
    with pytest.raises(ConfigError, match="too small to train on: train 96, valid 40, test 0"):
        Trainer(_flow(d), empty_test, tmp_path, _config())
    out_of_range = DataSplits("digits", "image", d.train.clone().fill_(17), d.valid, d.test, levels=17)
    with pytest.raises(ConfigError, match="outside 0 … 16"):
        Trainer(_flow(d), out_of_range, tmp_path, _config())
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unused_parameter_probe_leaves_no_trace():
    """The DDP probe runs one train-mode step on two examples; ActNorm must not initialise from it."""
    from types import SimpleNamespace

    import survae_flowify as ffn
    from survae_flowify.training.loop import Trainer

    torch.manual_seed(0)
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(ffn.ActNorm((3,)), ffn.Linear(3, 3)))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    probe = SimpleNamespace(flow=flow, train_x=torch.randn(8, 3) * 5 + 3, train_c=None)
    assert Trainer._has_unused_parameters(probe) is False
    after = flow.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(64, 3) * 5 + 3  # the first real training batch initialises it
    z, _ = flow.transform[0](x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
