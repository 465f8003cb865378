"""FourierConv2d (appendix H) against the flowified Conv2d on the 8×8 digits, same budget.

Run ``python benchmarks/fourier.py [--steps 800] [--batch 64] [--seeds 0 1 2] [--threads 1] [--quick]``
(one seed, the default: about 3.5 minutes on a loaded two-core machine).

Three models of one structure, ``models.small_conv((1, 8, 8))`` (dequantize, two exact stages
that multiply the channels by 4 and halve the size, each followed by a spline, then Linear
64 → 64 → 32 → 16 with conditional inverse densities):

* ``conv``: the library's ``small_conv``: each stage a ``Conv2d(c, 4c, 2, stride=2)`` (= squeeze
  then a 1×1 flowified kernel, exact);
* ``fourier``: each ``Conv2d`` replaced by ``Squeeze(2) → FourierConv2d(4c, 4c)`` on the squeezed
  map: the same dimensions, the 1×1 kernel replaced by a full-size circular one (exact too);
* ``fourier+local``: as ``fourier``, with the appendix's auxiliary loss
  ``λ · locality_penalty(3)`` on the Fourier layers larger than 3×3 (the 4×4 one).

All train with the same seed, batches, optimiser (Adam) and number of steps, one step of each per
round so that drifts in machine load hit all alike; the loss is the training bits/dim (the
dequantized bound). Reported: test bits/dim (the same bound, one dequantization sample, eval
mode), the median training step time, the median eval ``log_prob`` time on the test set, the
number of parameters. Then one layer's forward+backward time at a few sizes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch

import survae_flowify as ffn
from survae_flowify.data import load_digits
from survae_flowify.data.base import DataSplits
from survae_flowify.layers.fourier import FourierConv2d
from survae_flowify.models import small_conv

SHAPE = (1, 8, 8)
LOCALITY_KERNEL = 3
LOCALITY_WEIGHT = 1.0  # λ: the penalty is a kernel mass (order 1), the loss bits/dim (order 1)


def fourier_variant(flow: ffn.Flow) -> ffn.Flow:
    """``flow`` with every ``Conv2d(c, 4c, 2, 2)`` replaced by ``Squeeze(2) → FourierConv2d``."""
    parts = []
    for part in flow.transform:
        if isinstance(part, ffn.Conv2d):
            if (part.kernel_size, part.stride) != (2, 2) or part.out_channels != 4 * part.in_channels:
                raise ValueError(f"fourier_variant: expected 2×2 stride-2 convolutions, got {part}")
            h, w = part.image_size
            parts += [ffn.Squeeze(2), FourierConv2d(part.out_channels, part.out_channels,
                                                    image_size=(h // 2, w // 2))]
        else:
            parts.append(part)
    return ffn.Flow(flow.base, ffn.Sequential(*parts))


@dataclass
class Contender:
    name: str
    flow: ffn.Flow
    locality: float = 0.0
    optimizer: torch.optim.Optimizer = field(init=False)
    step_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=2e-3)

    def fourier_layers(self) -> list[FourierConv2d]:
        return [m for m in self.flow.modules() if isinstance(m, FourierConv2d)]

    def penalty(self) -> torch.Tensor:
        terms = [m.locality_penalty(LOCALITY_KERNEL) for m in self.fourier_layers()
                 if min(m.image_size) > LOCALITY_KERNEL]
        return torch.stack(terms).sum()

    def step(self, x: torch.Tensor) -> None:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.flow.bits_per_dim(x).mean()
        if self.locality:
            loss = loss + self.locality * self.penalty()
        loss.backward()
        self.optimizer.step()
        self.step_times.append(time.perf_counter() - start)


def build(seed: int) -> list[Contender]:
    out = []
    for name, locality in (("conv", 0.0), ("fourier", 0.0), ("fourier+local", LOCALITY_WEIGHT)):
        torch.manual_seed(seed)
        flow = small_conv(SHAPE, levels=17)
        if name != "conv":
            flow = fourier_variant(flow)
        out.append(Contender(name, flow, locality))
    return out


def evaluate(c: Contender, test: torch.Tensor, repeats: int) -> tuple[float, float]:
    c.flow.eval()
    times = []
    with torch.no_grad():
        torch.manual_seed(0)
        bpd = c.flow.bits_per_dim(test).mean().item()
        for _ in range(repeats):
            start = time.perf_counter()
            c.flow.log_prob(test)
            times.append(time.perf_counter() - start)
    c.flow.train()
    return bpd, statistics.median(times)


def outside_mass(c: Contender, k: int) -> float:
    """Fraction of the (4×4) Fourier kernel's squared mass outside the ``k × k`` window (``nan``
    for the model without Fourier layers); at initialisation the kernel is a delta: 0."""
    layers = [m for m in c.fourier_layers() if min(m.image_size) > LOCALITY_KERNEL]
    if not layers:
        return float("nan")
    with torch.no_grad():
        return sum(float(m.locality_penalty(k)) for m in layers) / \
            sum(float(m.weight.square().sum()) for m in layers)


LAYER_SIZES = [(4, 4), (16, 2), (16, 8)]  # (channels, image size): the model's two, and a larger one


def layer_timings(batch: int, repeats: int) -> None:
    """Forward+backward of one square layer, ``(batch, c, s, s)``: FourierConv2d with either map to
    the unitary group against the flowified 1×1 kernel (``PatchLinear``) and the ``k × k``
    ``Conv2d``, ``k = min(3, s)`` (unfold, a bound; output ``(s−k+1)²``). Minimum over ``repeats``
    (robust to a loaded machine)."""
    print(f"one layer, forward + backward, batch {batch}, minimum of {repeats} (ms)")
    print(f"{'c × s × s':<10} {'fourier cayley':>15} {'fourier exp':>12} {'1×1 kernel':>11} "
          f"{'Conv2d k×k':>11}")
    for c, size in LAYER_SIZES:
        torch.manual_seed(0)
        layers = [FourierConv2d(c, c, image_size=size), FourierConv2d(c, c, image_size=size, rotation="exp"),
                  ffn.PatchLinear(c, c), ffn.Conv2d(c, c, min(3, size), 1, image_size=size)]
        x = torch.randn(batch, c, size, size)
        row = []
        for layer in layers:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                z, contribution = layer(x)
                (z.square().sum() - contribution.sum()).backward()
                times.append(time.perf_counter() - start)
            row.append(1e3 * min(times))
        cells = "".join(f"{t:>{w}.2f}" for t, w in zip(row, (16, 13, 12, 12)))
        print(f"{f'{c} × {size} × {size}':<10}{cells}")


def train(data: DataSplits, seed: int, steps: int, batch: int) -> tuple[list[Contender], float]:
    """The three contenders trained round-robin on the same batches; the wall time."""
    contenders = build(seed)
    gen = torch.Generator().manual_seed(seed)
    wall = time.perf_counter()
    for _ in range(steps):
        x = data.train[torch.randint(len(data.train), (batch,), generator=gen)]
        for c in contenders:
            c.step(x)
    return contenders, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed (batches, dequantization noise, density networks)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10 steps: a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 10 if args.quick else args.steps
    data = load_digits()
    machine = platform.processor() or platform.machine()
    bpds: dict[str, list[float]] = {}
    for seed in args.seeds:
        contenders, wall = train(data, seed, steps, args.batch)
        print(f"digits 8×8, {steps} steps, batch {args.batch}, Adam 2e-3, seed {seed}, "
              f"{args.threads} thread(s), torch {torch.__version__}, {machine}; {wall:.0f} s training")
        print(f"{'model':<15} {'params':>7} {'test bpd':>9} {'step ms':>8} {'× conv':>7} {'eval ms':>8} "
              f"{'mass out 1×1':>13} {'out 3×3':>8}")
        reference = None
        for c in contenders:
            bpd, eval_time = evaluate(c, data.test, repeats=3 if args.quick else 10)
            bpds.setdefault(c.name, []).append(bpd)
            params = sum(p.numel() for p in c.flow.parameters())
            step = statistics.median(c.step_times[len(c.step_times) // 10:])  # skip the warm-up
            reference = reference or step
            print(f"{c.name:<15} {params:>7} {bpd:>9.3f} {1e3 * step:>8.2f} {step / reference:>7.2f} "
                  f"{1e3 * eval_time:>8.2f} {outside_mass(c, 1):>13.4f} {outside_mass(c, 3):>8.4f}")
    if len(args.seeds) > 1:
        print(f"test bpd over seeds {args.seeds}: " + ", ".join(
            f"{name} {statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for name, v in bpds.items()))
    layer_timings(args.batch, repeats=3 if args.quick else 30)


if __name__ == "__main__":
    main()
