"""``flowify`` keeps the network's part names, so ``breakdown`` rows read like the network."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

import survae_flowify as ffn


def test_flowified_parts_keep_the_networks_names() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("encoder", nn.Sequential(OrderedDict([("fc", nn.Linear(3, 3)), ("act", nn.LeakyReLU(0.5))]))),
        ("skip", nn.Identity()),
        ("head", nn.Linear(3, 2)),
    ]))
    flow = ffn.Flow(ffn.StandardNormal(2), ffn.flowify(net))
    rows = [r[0] for r in flow.breakdown(torch.randn(4, 3)).rows]
    assert rows == ["encoder.fc", "encoder.act", "head", "base"]
    assert isinstance(flow.transform["head"], ffn.Linear)


def test_numbered_network_keeps_its_numbers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Identity(), nn.LeakyReLU(0.5))
    flowified = ffn.flowify(net)
    assert [name for name, _ in flowified.named_children()] == ["0", "2"]
