"""flowify() of networks written as classes: the traced conversion computes the network's function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.bijections.elementwise import ElementwiseAffine
from survae_flowify.layers.avgpool import AvgPool2d
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.residual import Residual
from survae_flowify.surjections import MaxPool2d
from survae_flowify.testing import check_log_det, check_right_inverse
from survae_flowify.transforms.activations import ELU, Tanh
from tests.conversion.nets import Concat, ConvNet, Functional, Global, ResidualMLP, trained


def _same_function(net: nn.Module, flow: ffn.Transform, x: torch.Tensor, tol: float = 1e-9) -> None:
    with ffn.noise_off(), torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net(x), atol=tol, rtol=tol)


def test_residual_mlp_with_different_input_and_output_sizes() -> None:
    torch.manual_seed(3)
    net = trained(ResidualMLP().double(), (6,))
    flow = flowify_and_check_untouched(net, (6,))
    assert [name for name, _ in flow.named_children()] == [
        "inp", "leaky_relu", "add", "add_1", "norm", "tanh", "out"]
    assert isinstance(flow["add"], Residual) and isinstance(flow["norm"], ElementwiseAffine)
    assert isinstance(flow["tanh"], Tanh)
    assert [n for n, _ in flow["add"].f.named_children()] == ["blocks_0_fc1", "leaky_relu_1", "blocks_0_fc2"]
    _same_function(net, flow, torch.randn(7, 6, dtype=torch.float64))
    z, contribution = flow(torch.randn(7, 6, dtype=torch.float64))
    assert z.shape == (7, 3) and torch.isfinite(contribution).all()


def flowify_and_check_untouched(net: nn.Module, shape: tuple[int, ...], **kwargs: object) -> ffn.Sequential:
    """flowify, checking that measuring the network's shapes changed nothing in it."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    flow = ffn.flowify(net, input_shape=shape, **kwargs)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # BN statistics too
    assert modes == [m.training for m in net.modules()]
    return flow


def test_padded_strided_conv_net_with_batch_norm_and_average_pooling() -> None:
    torch.manual_seed(4)
    net = trained(ConvNet().double(), (1, 8, 8))
    net.train()  # flowify must not use (or change) the training mode
    flow = flowify_and_check_untouched(net, (1, 8, 8))
    net.eval()
    conv1 = flow["conv1"]
    assert isinstance(conv1, Conv2d) and conv1.padding == (1, 0, 1, 0)  # the row nn never reads is left out
    assert isinstance(flow["pool"], AvgPool2d) and isinstance(flow["act"], ELU)
    assert isinstance(flow["add"], Residual)
    _same_function(net, flow, torch.randn(5, 1, 8, 8, dtype=torch.float64))
    z, contribution = flow(torch.randn(5, 1, 8, 8, dtype=torch.float64))
    assert z.shape == (5, 5) and torch.isfinite(contribution).all()


def test_conv_net_with_max_pooling() -> None:
    torch.manual_seed(10)
    net = trained(ConvNet(pool=nn.MaxPool2d(2)).double(), (1, 8, 8))
    flow = ffn.flowify(net, input_shape=(1, 8, 8))
    assert isinstance(flow["pool"], MaxPool2d) and flow["pool"].kernel_size == 2
    _same_function(net, flow, torch.randn(5, 1, 8, 8, dtype=torch.float64))

    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(x, 2).flatten(1)

    x = torch.randn(4, 2, 4, 6)
    _same_function(Functional(), ffn.flowify(Functional(), input_shape=(2, 4, 6)), x, tol=0)


def test_functional_calls_and_views() -> None:
    torch.manual_seed(5)
    net = trained(Functional().double(), (2, 4, 4))
    flow = ffn.flowify(net, input_shape=(2, 4, 4))
    assert [type(p).__name__ for p in flow] == ["Conv2d", "Flatten", "SquareLinear", "Sigmoid", "Reshape",
                                                 "Flatten", "Softplus"]
    _same_function(net, flow, torch.randn(6, 2, 4, 4, dtype=torch.float64))
    assert flow.exact  # the reducing kernel is an inference surjection: its right inverse holds
    z = flow(torch.randn(4, 2, 4, 4, dtype=torch.float64))[0]
    check_right_inverse(flow, z, atol=1e-7, rtol=1e-7)


def test_exact_traced_network_log_det_matches_autograd() -> None:
    """Square layers, batch norm, tanh, flatten: a bijection whose log-det autograd can check."""

    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.bn(self.fc(x.flatten(1))))
            return F.leaky_relu(h, 0.4).view(-1, 2, 2)

    net = trained(Square().double(), (1, 2, 2))
    flow = ffn.flowify(net, input_shape=(1, 2, 2))
    assert flow.exact
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    _same_function(net, flow, x)
    check_log_det(flow, x, atol=1e-8, rtol=1e-8)


def test_concatenation_of_a_value_and_a_function_of_it() -> None:
    torch.manual_seed(6)
    net = trained(Concat().double(), (4,))
    flow = ffn.flowify(net, input_shape=(4,))
    assert [type(p).__name__ for p in flow["cat"]] == ["Repeat", "Parallel"]
    _same_function(net, flow, torch.randn(5, 4, dtype=torch.float64))


class TwoBranches(nn.Module):
    """A projection shortcut a(h) + b(h), a concatenation in the other order with a branch that
    widens, and one whose both branches transform."""

    def __init__(self) -> None:
        super().__init__()
        self.short, self.main = nn.Linear(3, 4), nn.Linear(3, 4)
        self.wide = nn.Linear(4, 6)
        self.left, self.right = nn.Linear(10, 2), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.short(x) + F.leaky_relu(self.main(x), 0.5)
        h = torch.cat([torch.tanh(self.wide(h)), h], dim=1)  # (6 + 4,)
        return torch.cat((self.left(h), torch.sigmoid(self.right(h))), 1)


def test_two_transformed_branches_sum_and_concatenate() -> None:
    torch.manual_seed(11)
    net = trained(TwoBranches().double(), (3,))
    flow = ffn.flowify(net, input_shape=(3,))
    assert [name for name, _ in flow.named_children()] == ["add", "cat", "cat_1"]
    assert [type(p).__name__ for p in flow["add"]] == ["Repeat", "Parallel", "AddHalves"]
    _same_function(net, flow, torch.randn(6, 3, dtype=torch.float64))
    z, contribution = flow(torch.randn(6, 3, dtype=torch.float64))
    assert z.shape == (6, 5) and torch.isfinite(contribution).all()


def test_global_mean_pooling() -> None:
    torch.manual_seed(7)
    net = trained(Global().double(), (2, 2, 3))
    flow = ffn.flowify(net, input_shape=(2, 2, 3))
    _same_function(net, flow, torch.randn(5, 2, 2, 3, dtype=torch.float64))
    assert flow(torch.randn(5, 2, 2, 3, dtype=torch.float64))[0].shape == (5, 3)


def test_sequential_of_class_blocks_keeps_names_and_function() -> None:
    from tests.conversion.nets import Block

    torch.manual_seed(8)
    net = trained(nn.Sequential(nn.Linear(3, 5), Block(5), nn.LeakyReLU(0.5), Block(5)).double(), (3,))
    flow = ffn.flowify(net, input_shape=(3,))
    assert [name for name, _ in flow.named_children()] == ["0", "1", "2", "3"]
    assert isinstance(flow[1]["add"], Residual)
    _same_function(net, flow, torch.randn(4, 3, dtype=torch.float64))


def test_traced_flow_trains_as_a_density_model() -> None:
    torch.manual_seed(9)
    model = ffn.Flow(ffn.StandardNormal(3), ffn.flowify(ResidualMLP(), input_shape=(6,)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.randn(128, 6) @ torch.randn(6, 6)
    first = -model.log_prob(x).mean().item()
    for _ in range(25):
        opt.zero_grad()
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss.item() < first


class Scale(nn.Module):
    """A user layer: a learned factor per feature."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.linspace(-2.0, 1.5, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class WithScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = Scale(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.scale(self.fc(x)), 0.5)


def test_register_converter_inside_a_traced_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from survae_flowify.conversion import registry

    monkeypatch.setattr(registry, "_CONVERTERS", dict(registry._CONVERTERS))
    with pytest.raises(ValueError, match=r"node 'scale.mul' \(operator.mul\).*register_converter"):
        ffn.flowify(WithScale(), input_shape=(4,))  # traced into: x * self.factor has no converter
    seen = {}

    def convert(module: Scale, **ctx: object) -> ffn.Transform:
        seen.update(ctx)
        return ElementwiseAffine((module.factor.numel(),), scale=module.factor.detach())

    ffn.register_converter(Scale, convert)
    net = WithScale().double()
    flow = ffn.flowify(net, input_shape=(4,), rotation="cayley")
    assert seen == {"keep_weights": True, "input_shape": (4,), "rotation": "cayley"}
    assert isinstance(flow["scale"], ElementwiseAffine)
    _same_function(net, flow, torch.randn(5, 4, dtype=torch.float64))
    check_log_det(flow, torch.randn(3, 4, dtype=torch.float64), atol=1e-8, rtol=1e-8)


def test_keep_weights_false_gives_fresh_layers_of_the_traced_sizes() -> None:
    net = trained(ConvNet().double(), (1, 8, 8))
    flow = ffn.flowify(net, input_shape=(1, 8, 8), keep_weights=False)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        assert flow(x)[0].shape == net(x).shape
    assert not torch.allclose(flow["conv1"].weight, net.conv1.weight, atol=1e-3)
    assert torch.equal(flow["bn1"].log_scale, torch.zeros(4, dtype=torch.float64))  # a fresh identity
