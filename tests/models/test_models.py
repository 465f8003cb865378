"""The paper's models: sizes from the appendix, forward and inverse on data-shaped batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify import models
from survae_flowify.distributions.conditional import ConditionalNormalDensity
from survae_flowify.layers.linear import ReducingLinear
from survae_flowify.models.builders import conv_output_size

PAPER = ["fmlp", "fconv1", "fconv2", "fconv1-nsf", "fconv2-nsf"]
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def _images(shape: tuple[int, ...], n: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape)).float()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("name", PAPER)
def test_paper_models_forward_and_inverse(name: str, dataset: str) -> None:
    torch.manual_seed(0)
    flow = models.build(name, SHAPES[dataset], levels=256)
    x = _images(SHAPES[dataset])
    with torch.no_grad():
        log_p = flow.log_prob(x)
        assert log_p.shape == (2,) and torch.isfinite(log_p).all()
        for mean in (False, True):
            s = flow.sample(2, mean=mean)
            assert s.shape == x.shape and torch.isfinite(s).all()
            assert ((s >= 0) & (s <= 255)).all()


def test_latent_sizes_follow_the_appendix() -> None:
    assert models.fmlp("mnist").base.shape == (8,)
    assert models.fmlp("cifar10").base.shape == (128,)
    assert models.fconv1("mnist").base.shape == (8,)
    assert models.fconv1("cifar10").base.shape == (128,)
    widths = [m.out_features for m in models.fmlp("mnist").transform if isinstance(m, ffn.Linear)]
    assert widths == [512, 256, 128, 64, 32, 8]
    widths = [m.out_features for m in models.fmlp("cifar10").transform if isinstance(m, ffn.Linear)]
    assert widths == [1024, 512, 512, 256, 128]


@pytest.mark.parametrize(("size", "k", "s", "out"), [
    (28, 3, 2, 14), (14, 2, 2, 7), (7, 3, 2, 3), (3, 2, 1, 2), (2, 2, 1, 1), (32, 3, 2, 16),
    (7, 2, 2, 4), (4, 2, 2, 2)])
def test_conv_output_sizes(size: int, k: int, s: int, out: int) -> None:
    assert conv_output_size(size, k, s) == out


def test_fconv_spatial_sizes_reach_one_by_one() -> None:
    for name in ("fconv1", "fconv2"):
        for dataset, shape in SHAPES.items():
            flow = models.build(name, shape, levels=256)
            flat = next(m for m in flow.transform if isinstance(m, ffn.Flatten))
            assert flat.shape[1:] == (1, 1), (name, dataset, flat.shape)


def test_tabular_and_small_models() -> None:
    torch.manual_seed(0)
    flow = models.build("tabular-mlp", (6,))
    assert [m.out_features for m in flow.transform if isinstance(m, ffn.Linear)] == [128, 64, 32, 16, 8]
    assert all(m.negative_slope == 0.5 for m in flow.transform if isinstance(m, ffn.LeakyReLU))
    bsds = models.tabular_mlp(63, dataset="bsds300")
    assert [m.out_features for m in bsds.transform if isinstance(m, ffn.Linear)] == [128, 128, 128, 64, 32]
    x = torch.randn(4, 6)
    assert torch.isfinite(flow.log_prob(x)).all()
    digits = models.build("small-mlp", (1, 8, 8), levels=17)
    assert torch.isfinite(digits.log_prob(torch.randint(0, 17, (3, 1, 8, 8)).float())).all()
    conv = models.build("small-conv", (1, 8, 8), levels=17)
    assert conv.exact is False  # Dequantize makes it a bound
    assert torch.isfinite(conv.log_prob(torch.randint(0, 17, (3, 1, 8, 8)).float())).all()


def test_build_errors_list_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: fmlp"):
        models.build("resnet", (1, 28, 28))
    with pytest.raises(ValueError, match="MNIST-shaped"):
        models.build("fconv1", (1, 8, 8))


def test_parameter_counts_are_reported() -> None:
    counts = models.paper_parameter_counts()
    assert set(counts) == {f"{n}/{d}" for n in PAPER for d in SHAPES}
    fmlp = counts["fmlp/mnist"]
    # Two rotations per layer (n² parameters each) dominate: 784² + 512² + … for FMLP-MNIST.
    rotations = sum(a * a + b * b for a, b in [(784, 512), (512, 256), (256, 128), (128, 64), (64, 32),
                                               (32, 8)])
    assert rotations < fmlp < 2 * rotations


def test_hidden_reaches_every_conditional_density_and_gives_the_official_fmlp_size() -> None:
    flow = models.build("fmlp", (1, 28, 28), hidden=1635)
    nets = [m.inverse_density.net for m in flow.modules() if isinstance(m, ReducingLinear)]
    assert len(nets) == 6 and all(net[0].out_features == 1635 for net in nets)
    # The official code's FMLP-MNIST: 5.50 M parameters (DESIGN.md §4).
    assert round(models.parameter_count(flow) / 1e6, 2) == 5.50
    conv = models.build("fconv2", (1, 28, 28), hidden=5)
    firsts = [m.net[0] for m in conv.modules() if isinstance(m, ConditionalNormalDensity)]
    assert {type(f) for f in firsts} == {nn.Conv2d, nn.Linear}  # kernels' map densities and Linear's
    assert all(getattr(f, "out_channels", None) == 5 or getattr(f, "out_features", None) == 5
               for f in firsts)


def test_generic_builders_have_their_own_module_and_old_names_still_work() -> None:
    from survae_flowify.models import builders, paper

    for name in ("image_flow", "mlp_flow", "conv_output_size", "ConvSpec"):
        assert getattr(paper, name) is getattr(builders, name)
    assert models.image_flow is builders.image_flow and models.mlp_flow is builders.mlp_flow
