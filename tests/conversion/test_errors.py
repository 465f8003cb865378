"""What flowify refuses in a traced network, and how the error reads: the node, its source line,
why, and the alternative."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.conversion import registry


class ReluBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Outer(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Functional(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.fc(x))


def _line(text: str) -> int:
    """The line of this file that holds ``text`` (the source line the error must cite)."""
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def test_relu_module_names_its_qualified_path_the_source_line_and_the_alternative() -> None:
    line = _line("return self.act(self.fc(x))")
    with pytest.raises(ValueError, match=(
            r"layer 'inner.act' \(ReLU\(\)\): ReLU is not injective; use nn.LeakyReLU\(negative_slope>0\).*"
            rf"called in Outer.forward at test_errors.py:{line} `return self.act\(self.fc\(x\)\)`")):
        ffn.flowify(Outer(ReluBlock()), input_shape=(3,))


@pytest.mark.parametrize(
    ("fn", "what", "why"),
    [(F.relu, "torch.nn.functional.relu", "not injective; use nn.LeakyReLU / F.leaky_relu"),
     (torch.relu, "torch.relu", "not injective"),
     (F.gelu, "torch.nn.functional.gelu", "not injective"),
     (lambda h: F.softmax(h, dim=1), "torch.nn.functional.softmax", "adding a constant to every logit"),
     (lambda h: h.relu(), "Tensor.relu", "not injective"),
     (lambda h: h * 2.0, "operator.mul", "no converter for this call.*register_converter"),
     (lambda h: h + h, "operator.add", r"combines a value with itself \(h \+ h\)"),
     (lambda h: h[:, :2], "operator.getitem", "no converter for this call")],
)
def test_refused_calls_name_the_node_and_why(fn, what: str, why: str) -> None:
    line = _line("return self.fn(self.fc(x))")
    with pytest.raises(ValueError, match=(
            rf"cannot convert node '\w+' \({re.escape(what)}\) of Functional.forward at test_errors.py:\d+ "
            rf"`.*`: .*{why}")) as info:
        ffn.flowify(Functional(fn), input_shape=(3,))
    # The cited line is the user's (this file), not torch's internals.
    assert f"test_errors.py:{line}" in str(info.value) or "lambda" in str(info.value)


def test_a_function_inside_a_submodule_has_the_submodule_path() -> None:
    with pytest.raises(ValueError, match=r"node 'inner.relu' \(torch.nn.functional.relu\)"):
        ffn.flowify(Outer(Functional(F.relu)), input_shape=(3,))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_module_says_why_and_suggests_register_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=(
            r"cannot trace DataDependent.forward with torch.fx \(TraceError: symbolically traced variables "
            r"cannot be used as inputs to control flow\).*register_converter\(DataDependent, fn\)")):
        ffn.flowify(DataDependent(), input_shape=(2,))
    # ... and the suggestion works: a registered type is converted whole, never traced.
    monkeypatch.setattr(registry, "_CONVERTERS", dict(registry._CONVERTERS))
    ffn.register_converter(DataDependent, lambda m, **ctx: ffn.Linear.from_linear(m.fc))
    flow = ffn.flowify(nn.Sequential(DataDependent(), nn.Linear(2, 3)), input_shape=(2,))
    assert isinstance(flow[0], ffn.Linear)


class Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * self.b(x)


class Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.g = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.f(x)
        return torch.cat([x + h, self.g(h)], dim=1)


class CatBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.f(x)], dim=0)


class AddParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.f(x), x


class BatchMerge(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1)


@pytest.mark.parametrize(
    ("net", "message"),
    [(Product(), r"node 'x' .*two branches first meet at 'mul' \(operator.mul\); only a\(h\) \+ b\(h\)"),
     (Broadcast(), r"node 'add' .*shapes \(3,\) and \(1,\): a flowified sum needs equal shapes"),
     (Reused(), r"node 'f' .*used again besides 'add'"),
     (CatBatch(), r"node 'cat' .*merges or splits the batch dimension"),
     (AddParameter(), r"node 'add' .*combines the input with 'shift'"),
     (TwoOutputs(), r"must return one tensor"),
     (BatchMerge(), r"merges or splits the batch dimension")],
)
def test_graph_shapes_that_are_not_a_flow_are_refused(net: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ffn.flowify(net, input_shape=(3,))


def test_tracing_needs_the_input_shape() -> None:
    with pytest.raises(ValueError, match=r"ReluBlock's own forward .* needs the input's event shape"):
        ffn.flowify(ReluBlock())


class Conv(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    ("conv", "size", "message"),
    [(nn.Conv2d(1, 2, 3, dilation=2), 7, r"layer 'conv' .*dilation=\(2, 2\) \(use 1\)"),
     (nn.Conv2d(2, 2, 3, groups=2), 7, r"layer 'conv' .*groups=2 \(use 1\)"),
     # 7×7, kernel 2, stride 2, no padding: nn.Conv2d ignores the last row of real pixels.
     (nn.Conv2d(1, 2, 2, stride=2), 7, r"layer 'conv' .*maps \(1, 7, 7\) to \(2, 3, 3\), but its "
                                         r"flowified Conv2d gives \(2, 4, 4\).*keeps every pixel"),
     (nn.Conv2d(1, 2, 2, stride=3), 7, r"larger than kernel_size")],
)
def test_convolutions_that_do_not_flowify(conv: nn.Conv2d, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ffn.flowify(Conv(conv), input_shape=(conv.in_channels, size, size))


class Pool(nn.Module):
    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


@pytest.mark.parametrize(
    ("pool", "message"),
    [(nn.AvgPool2d(2, stride=1), r"only non-overlapping pooling"),
     (nn.AvgPool2d(2, padding=1), r"padded average pooling"),
     (nn.AvgPool2d(3), r"5×4 image is not tiled by 3×3 patches"),
     (nn.AdaptiveAvgPool2d(3), r"does not divide the 5×4 image"),
     (nn.MaxPool2d(2, stride=1), r"only non-overlapping max pooling")],
)
def test_pooling_that_does_not_flowify(pool: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ffn.flowify(Pool(pool), input_shape=(2, 5, 4))
