"""Uniform against variational dequantization: the same model, steps and seed on the digits.

Run ``python benchmarks/dequantization.py [--steps 1500] [--batch 64] [--seed 0] [--threads 1]``.
Both runs build ``models.build("small-conv", (1, 8, 8), levels=17)`` from the same seed; the
variational run swaps its first layer, ``Dequantize(17)``, for
``VariationalDequantize(17, VariationalDequantize.default_encoder(...))``, so the flow above the
dequantizer starts from the same weights. Each trains with Adam (same learning rate, same batch
order) for ``--steps`` steps, then reports on the 360 test images:

* test bits/dim of the single-sample bound (the ELBO, averaged over ``--draws`` noise draws),
* test bits/dim of the importance-weighted bound with ``--iw`` samples.

Both numbers are upper bounds on the true bits/dim (lower bounds on ``log P(x)``); lower is
tighter. The variational encoder adds parameters and time per step (printed).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import survae_flowify as ffn
from survae_flowify.data import load_digits
from survae_flowify.models import build

SHAPE = (1, 8, 8)


def make(kind: str, seed: int, levels: int, hidden: int, couplings: int) -> ffn.Flow:
    torch.manual_seed(seed)
    flow = build("small-conv", SHAPE, levels=levels)
    if kind == "uniform":
        return flow
    encoder = ffn.VariationalDequantize.default_encoder(SHAPE, hidden=hidden, couplings=couplings)
    parts = [ffn.VariationalDequantize(levels, encoder, shape=SHAPE), *list(flow.transform)[1:]]
    return ffn.Flow(flow.base, ffn.Sequential(*parts))


def train(flow: ffn.Flow, data: torch.Tensor, steps: int, batch: int, seed: int, lr: float) -> float:
    """Adam on the mean negative ELBO; returns seconds per step."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        loss = -flow.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def evaluate(flow: ffn.Flow, data: torch.Tensor, draws: int, iw: int) -> tuple[float, float]:
    """(ELBO bits/dim averaged over ``draws`` draws, IW bits/dim with ``iw`` samples)."""
    flow.eval()
    scale = -1 / (math.prod(SHAPE) * math.log(2))
    elbo = torch.stack([flow.log_prob(data) for _ in range(draws)]).mean(0)
    bound = flow.log_prob(data, num_samples=iw, chunk_size=min(iw, 16))
    return scale * elbo.mean().item(), scale * bound.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--iw", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64, help="width of the encoder's networks")
    parser.add_argument("--couplings", type=int, default=2, help="coupling layers in the encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_digits()
    rows = []
    for kind in ("uniform", "variational"):
        flow = make(kind, args.seed, splits.levels, args.hidden, args.couplings)
        per_step = train(flow, splits.train, args.steps, args.batch, args.seed, args.lr)
        elbo, iw = evaluate(flow, splits.test, args.draws, args.iw)
        params = sum(p.numel() for p in flow.parameters())
        rows.append((kind, elbo, iw, params, per_step))
    print(f"small-conv on digits (1×8×8, 17 levels): {args.steps} Adam steps, batch {args.batch}, "
          f"lr {args.lr}, seed {args.seed}, {args.threads} thread(s)")
    print(f"{'dequantization':<14} {'test bpd (ELBO)':>16} {f'test bpd (IW, K={args.iw})':>22} "
          f"{'parameters':>11} {'ms/step':>8}")
    for kind, elbo, iw, params, per_step in rows:
        print(f"{kind:<14} {elbo:>16.4f} {iw:>22.4f} {params:>11d} {1000 * per_step:>8.1f}")
    (_, e_u, i_u, *_), (_, e_v, i_v, *_) = rows
    print(f"difference (variational − uniform): {e_v - e_u:+.4f} bpd (ELBO), {i_v - i_u:+.4f} bpd (IW)")


if __name__ == "__main__":
    main()
