"""Class-conditional training: the labels reach training, validation and test; OneHot; builders."""

from __future__ import annotations

import math

import pytest
import torch

from survae_flowify import models
from survae_flowify.data import DataSplits, SplitLabels, load_digits
from survae_flowify.distributions import ConditionalNormal
from survae_flowify.layers.linear_base import Linear
from survae_flowify.models.builders import OneHot, mlp_flow
from survae_flowify.testing import perturb_parameters
from survae_flowify.training import ConfigError, TrainConfig, Trainer, evaluate, read_jsonl
from survae_flowify.training.plots import class_rows, draw_samples

CENTRES = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])


def _labelled(n: int = 480) -> DataSplits:
    """Three well separated 2-D clusters, the class of each point its label."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = CENTRES[y] + 0.3 * torch.randn(n, 2, generator=g)
    cut = (slice(0, 320), slice(320, 400), slice(400, n))
    return DataSplits("clusters", "toy", *(x[c] for c in cut),
                      labels=SplitLabels(*(y[c] for c in cut)), num_classes=3)


def _conditional_flow(seed: int = 0):
    torch.manual_seed(seed)
    return mlp_flow((2,), [2, 2], context_features=3, embedding=OneHot(3))


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 15, "batch_size": 32, "lr": 1e-2, "quiet": True,
                          "plots": False, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = _labelled()
    trainer = Trainer(_conditional_flow(), data, tmp_path_factory.mktemp("cond"), _config())
    result = trainer.run()
    assert result.status == "finished"
    return trainer, data, result


def test_training_sees_the_labels(trained):
    trainer, data, _ = trained
    right = evaluate(trainer.flow, data.test, context=data.labels.test)
    wrong = evaluate(trainer.flow, data.test, context=(data.labels.test + 1) % 3)
    # with the right label the clusters are ~0.3 wide; with a wrong one the point sits ~4 away
    assert right < 1.5 and wrong > right + 10


def test_validation_and_test_metrics_use_the_labels(trained):
    trainer, data, result = trained
    flow = trainer.flow  # exact (square layers only): the metric is deterministic
    assert flow.exact
    assert result.summary["conditional"] is True
    assert result.summary["test_nats"] == pytest.approx(
        evaluate(flow, data.test, context=data.labels.test), abs=1e-5)
    last_valid = [r for r in read_jsonl(trainer.out / "metrics.jsonl") if r["split"] == "valid"][-1]
    assert last_valid["nats"] == pytest.approx(
        evaluate(flow, data.valid, context=data.labels.valid), abs=1e-5)


def test_a_conditional_flow_on_data_without_labels_is_a_config_error(tmp_path):
    data = _labelled()
    bare = DataSplits("bare", "toy", data.train, data.valid, data.test)
    with pytest.raises(ConfigError, match="'bare' has no labels"):
        Trainer(_conditional_flow(), bare, tmp_path, _config())


def test_an_unconditional_flow_ignores_the_labels(tmp_path):
    torch.manual_seed(0)
    flow = mlp_flow((2,), [2, 2])
    result = Trainer(flow, _labelled(), tmp_path, _config(epochs=1)).run()
    assert result.status == "finished" and result.summary["conditional"] is False


def test_evaluate_refuses_a_context_of_another_length():
    data = _labelled()
    with pytest.raises(ValueError, match="one row per example"):
        evaluate(_conditional_flow(), data.test, context=data.labels.test[:-1])


def test_one_hot():
    y = torch.tensor([2, 0, 1, 2])
    assert torch.equal(OneHot(3)(y), torch.eye(3)[y])
    assert OneHot(3).double()(y).dtype == torch.float64
    for bad, match in ((torch.tensor([0.0, 1.0]), "integer class labels"),
                       (y.view(2, 2), r"shape \(B,\)"), (torch.tensor([0, 3]), r"0 … 2")):
        with pytest.raises(ValueError, match=match):
            OneHot(3)(bad)
    with pytest.raises(ValueError, match="OneHot"):
        OneHot(0)
    assert not OneHot(3).state_dict()  # nothing saved: checkpoints stay as they were
    with pytest.raises(ValueError, match=r"OneHot\(3\)"):
        _conditional_flow().log_prob(torch.zeros(2, 2), torch.tensor([0, 5]))


@pytest.mark.parametrize("name", ["small-conv", "small-mlp"])
def test_conditional_small_models(name):
    torch.manual_seed(0)
    flow = models.build(name, (1, 8, 8), levels=17, context_features=10, embedding=OneHot(10))
    assert isinstance(flow.base, ConditionalNormal) and flow.context_features == 10
    linears = [m for m in flow.transform.modules() if isinstance(m, Linear)]
    reducing = [m.in_features > m.out_features for m in linears]
    assert any(reducing)
    # exactly the reducing layers (conditional inverse densities) take the context
    assert [m.context_features == 10 for m in linears] == reducing
    perturb_parameters(flow, scale=0.3)
    x = load_digits().test[:6]
    a, b = flow.log_prob(x, torch.full((6,), 3)), flow.log_prob(x, torch.full((6,), 7))
    assert torch.isfinite(a).all() and (a - b).abs().min() > 1e-3


def test_unconditional_builds_are_unchanged():
    torch.manual_seed(0)
    plain = models.build("small-conv", (1, 8, 8), levels=17)
    assert plain.context_features is None and plain.embedding is None


def test_sample_rows_per_class_and_their_dependence_on_the_label():
    labels = class_rows(3, 7)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # ⌈7/3⌉ = 3 of each class
    flow = _conditional_flow()
    perturb_parameters(flow, scale=0.3)
    torch.manual_seed(1)
    samples = draw_samples(flow, 9, labels)
    assert samples["mean"].shape == (9, 2)
    means = torch.stack([samples["mean"][labels == k].mean(0) for k in range(3)])
    assert torch.cdist(means, means).triu(1).max() > 1e-3
    assert math.isfinite(float(samples["stochastic"].sum()))
