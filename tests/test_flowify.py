"""flowify(): conversions keep the network's function (noise off), errors name the layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.conversion import flowify, register_converter
from survae_flowify.conversion import registry as flowify_module
from survae_flowify.distributions import ConditionalNormalDensity
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.linear import IncreasingLinear, ReducingLinear, SquareLinear


def _trained(net: nn.Module, in_shape: tuple[int, ...], steps: int = 15) -> nn.Module:
    """A few optimiser steps, so the weights are not those of the initialiser."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    x = torch.randn(32, *in_shape, dtype=next(net.parameters()).dtype)
    for _ in range(steps):
        opt.zero_grad()
        out = net(x)
        (out - out.mean(0)).square().mean().neg().backward()
        opt.step()
    return net


def _mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(4, 7),  # expanding
        nn.LeakyReLU(0.3),
        nn.Sequential(nn.Linear(7, 7), nn.Identity(), nn.LeakyReLU(0.5)),  # nested, square
        nn.Linear(7, 3),  # reducing
    ).double()


@pytest.mark.parametrize("rotation", ["householder", "cayley", "exp"])
def test_mlp_function_is_unchanged_under_noise_off(rotation: str) -> None:
    net = _trained(_mlp(), (4,))
    flow = flowify(net, rotation=rotation)
    assert isinstance(flow, ffn.Sequential)
    assert [type(p) for p in flow] == [IncreasingLinear, ffn.LeakyReLU, ffn.Sequential, ReducingLinear]
    assert [type(p) for p in flow[2]] == [SquareLinear, ffn.LeakyReLU]  # Identity dropped
    x = torch.randn(9, 4, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net(x), atol=1e-9, rtol=1e-9)  # expm round trip: ~1e-10
    assert flow[0].U.kind == rotation
    assert not flow.exact and flow[0].stochastic_forward


def test_square_layer_with_negative_determinant_is_kept() -> None:
    net = nn.Sequential(nn.Linear(3, 3)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 1.2, 0.1], [0.9, 0.0, 0.3], [0.2, -0.1, 1.5]]))
    assert torch.linalg.det(net[0].weight) < 0
    flow = flowify(net)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(flow(x)[0], net(x), atol=1e-10, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 3))[0].flatten(), x[0])
    torch.testing.assert_close(flow(x)[1], torch.linalg.slogdet(jac)[1].expand(5), atol=1e-10, rtol=0)


def test_conv_network_function_shapes_and_inverse() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(1, 3, kernel_size=2, stride=2), nn.LeakyReLU(0.5),  # 4×4 → 2×2, exact tiling
        nn.Conv2d(3, 5, kernel_size=2, stride=1), nn.LeakyReLU(0.5),  # 2×2 → 1×1
        nn.Flatten(), nn.Linear(5, 2),
    ).double()
    net = _trained(net, (1, 4, 4))
    flow = flowify(net, input_shape=(1, 4, 4))
    assert isinstance(flow[0], Conv2d) and flow[0].image_size == (4, 4)
    assert flow[4].shape == (5, 1, 1)  # Flatten learnt the shape it needs to invert
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net(x), atol=1e-10, rtol=0)
    z, contribution = flow(x)
    assert z.shape == (6, 2) and torch.isfinite(contribution).all()
    assert flow.inverse(z).shape == x.shape


def test_keep_weights_false_gives_fresh_layers_of_the_same_sizes() -> None:
    net = _trained(_mlp(), (4,))
    flow = flowify(net, keep_weights=False, inverse_density="conditional")
    x = torch.randn(4, 4, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        assert flow(x)[0].shape == net(x).shape
        assert not torch.allclose(flow[0].weight, net[0].weight, atol=1e-3)
    assert flow[0].weight.dtype == torch.float64
    assert isinstance(flow[3].inverse_density, ConditionalNormalDensity)
    conv = flowify(nn.Conv2d(2, 3, 2, 2), keep_weights=False, input_shape=(2, 4, 4))
    assert isinstance(conv[0], Conv2d) and conv[0].weight.shape == (3, 2, 2, 2)


def test_single_layers_and_flowified_layers_pass_through() -> None:
    linear = nn.Linear(3, 2)
    flow = flowify(linear)
    assert len(flow) == 1 and isinstance(flow[0], ffn.Linear)
    spline = ffn.RqSpline()
    flow = flowify(nn.Sequential(nn.Linear(3, 3), spline))
    assert flow[1] is spline
    assert len(flowify(nn.Identity())) == 0


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (nn.ReLU(), r"'1' \(ReLU\(\)\): ReLU is not injective; use nn.LeakyReLU\(negative_slope>0\)"),
        (nn.GELU(), r"'1' \(GELU.*not injective; use nn.LeakyReLU"),
        (nn.Softmax(1), r"Softmax is not injective"),
        (nn.LeakyReLU(0.0), r"'1' .*negative_slope=0.0 is not injective"),
        (nn.ELU(-1.0), r"'1' .*alpha=-1.0 is not injective"),
        (nn.BatchNorm1d(3, track_running_stats=False), r"'1' .*track_running_stats=False"),
        (nn.Flatten(0), r"start_dim=1, end_dim=-1"),
        (nn.Bilinear(3, 3, 3), r"no converter for Bilinear; register one"),
    ],
)
def test_unsupported_layers_name_the_layer_and_the_alternative(layer: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flowify(nn.Sequential(nn.Linear(3, 3), layer))


def test_nested_paths_and_conv_configuration_errors() -> None:
    with pytest.raises(ValueError, match=r"layer '1.0' \(ReLU\(\)\)"):
        flowify(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU())))
    for conv, what in [(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), "padding_mode"),
                       (nn.Conv2d(1, 2, 3, dilation=2), "dilation"),
                       (nn.Conv2d(2, 2, 3, groups=2), "groups")]:
        with pytest.raises(ValueError, match=rf"layer '0' \(Conv2d.*{what}"):
            flowify(nn.Sequential(conv))
        with pytest.raises(ValueError, match=what):
            flowify(nn.Sequential(conv), keep_weights=False)


def test_shape_mismatches_are_reported_with_the_layer() -> None:
    with pytest.raises(ValueError, match=r"layer '1' \(ReducingLinear\) expects inputs of shape \(6,\)"):
        flowify(nn.Sequential(nn.Linear(3, 5), nn.Linear(6, 2)), input_shape=(3,))
    # 5×5 with kernel 3 stride 2 tiles; 6×6 is padded to 7×7, so the flattened size changes.
    net = nn.Sequential(nn.Conv2d(1, 1, 3, 2), nn.Flatten(), nn.Linear(4, 2))
    assert isinstance(flowify(net, input_shape=(1, 5, 5))[2], ffn.Linear)
    with pytest.raises(ValueError, match=r"layer '0' .*maps \(1, 6, 6\) to \(1, 2, 2\), but its flowified "
                                         r"Conv2d gives \(1, 3, 3\).*pads the image"):
        flowify(net, input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match="input_shape"):
        flowify(net, input_shape=(1, 0, 5))


def test_rank_deficient_weights_raise() -> None:
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight[1] = 2 * linear.weight[0]
    with pytest.raises(ValueError, match=r"layer '0' .*rank-deficient"):
        flowify(nn.Sequential(linear))


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


def test_register_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowify_module, "_CONVERTERS", dict(flowify_module._CONVERTERS))
    seen: dict[str, object] = {}

    def convert(module: _Scale, **ctx: object) -> ffn.Transform:
        seen.update(ctx)
        (d,) = ctx["input_shape"]  # type: ignore[misc]
        dense = nn.Linear(d, d, bias=False, dtype=torch.float64)
        with torch.no_grad():
            dense.weight.copy_(module.factor * torch.eye(d))
        return ffn.Linear.from_linear(dense, rotation=ctx["rotation"])

    register_converter(_Scale, convert)
    # float64 and a seed: in float32 the fit through the matrix logarithm (rotation="exp") is
    # good to ~1e-4 for some random weights, which made this test depend on the tests before it.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), _Scale(-2.0), nn.LeakyReLU(0.5)).double()
    flow = flowify(net, input_shape=(2,), rotation="exp")
    assert seen == {"keep_weights": True, "input_shape": (3,), "rotation": "exp"}
    x = torch.randn(5, 2, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net(x), atol=1e-10, rtol=1e-10)
    with pytest.raises(TypeError, match=r"nn.Module subclass"):
        register_converter(int, convert)  # type: ignore[arg-type]
    register_converter(_Scale, lambda module, **ctx: module)  # returns a plain nn.Module
    with pytest.raises(TypeError, match="expected a survae_flowify Transform"):
        flowify(net, input_shape=(2,))


def test_flowified_network_is_a_trainable_flow() -> None:
    net = nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(0.5), nn.Linear(4, 2))
    model = ffn.Flow(ffn.StandardNormal(2), flowify(net, input_shape=(2,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(64, 2) * torch.tensor([2.0, 0.5])
    first = -model.log_prob(x).mean()
    for _ in range(30):
        opt.zero_grad()
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss < first


def test_sequential_with_padding_batch_norm_pooling_and_bounded_activations() -> None:
    """The nn.Sequential path converts the new layer kinds too, with the shapes measured on the
    network (pooling declares open sizes, so the Flatten after it learns its shape from them)."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.Tanh(),  # 6×6 → 3×3
        nn.Conv2d(3, 3, 3, padding="same"), nn.Dropout(0.2), nn.AvgPool2d(3),  # 3×3 → 1×1
        nn.Flatten(), nn.Linear(3, 2), nn.Softplus(), nn.Linear(2, 2), nn.Sigmoid(),
    ).double()
    net = _trained(net, (1, 6, 6)).eval()
    flow = flowify(net, input_shape=(1, 6, 6))
    assert "4" not in dict(flow.named_children())  # Dropout dropped
    assert flow["6"].shape == (3, 1, 1)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net(x), atol=1e-9, rtol=1e-9)
