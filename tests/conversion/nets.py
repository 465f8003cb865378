"""Small networks written as classes, as users write them, for the traced flowify tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def trained(net: nn.Module, in_shape: tuple[int, ...], steps: int = 10) -> nn.Module:
    """A few optimiser steps (batch norm statistics included), so nothing is at its initial value."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    dtype = next(net.parameters()).dtype
    net.train()
    for _ in range(steps):
        x = torch.randn(32, *in_shape, dtype=dtype) * 1.5 + 0.3
        opt.zero_grad()
        out = net(x)
        (out - out.mean(0)).square().mean().neg().backward()
        opt.step()
    return net.eval()


class Block(nn.Module):
    """``h + f(h)`` with ``f = fc2 ∘ leaky_relu ∘ fc1``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.leaky_relu(self.fc1(h), 0.3))


class ResidualMLP(nn.Module):
    """6 → 8 → two residual blocks → 3: input and output sizes differ (FrEIA #95)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.norm = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.inp(x), negative_slope=0.5)
        for block in self.blocks:
            h = block(h)
        h = torch.tanh(self.norm(h))
        return self.out(h)


class ConvNet(nn.Module):
    """Padded strided convolutions, batch norm, average pooling, residual, functional calls."""

    def __init__(self, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)  # 8×8 → 4×4: nn ignores one border row
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)  # "same"-sized, for the residual connection
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = pool if pool is not None else nn.AvgPool2d(2)  # 4×4 → 2×2
        self.act = nn.ELU(0.8)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.5)
        h = h + self.bn2(self.conv2(h))
        h = self.act(self.pool(h))
        return self.fc(h.flatten(1))


class Functional(nn.Module):
    """Methods and functions only: view with x.size(0), torch.flatten, sigmoid, softplus."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 2, stride=2)
        self.fc = nn.Linear(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(self.conv(x), 1)
        h = torch.sigmoid(self.fc(h)).view(h.size(0), 3, 4)
        return F.softplus(h.reshape(-1, 12), beta=2.0)


class Concat(nn.Module):
    """``torch.cat([h, f(h)], dim=1)`` then a reducing layer."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4)
        self.out = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([x, F.elu(self.f(x))], dim=1))


class Global(nn.Module):
    """Global average pooling written as a mean, as ResNets do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))
