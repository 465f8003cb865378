r"""Test bits/dim after the same training time: a flowified model against nflows' and zuko's flows.

Run ``python benchmarks/quality.py [--seconds 600] [--models ours,nflows-maf,zuko-maf,zuko-nsf]
[--clock thread|wall] [--data-dir DIR]``. Every model is trained for the same budget of seconds on
the same split (Fashion-MNIST from ``/usr/share/datasets/fashion-mnist``; MNIST from
``--data-dir``), with the same batches in the same order, the same dequantization, the same
preprocessing and the same optimiser schedule, on one thread, and then scored on the test images.
The table gives parameters, steps done, the seconds spent on both clocks and test bits/dim.

**One density for all.** Every model sees the same continuous data, and the harness, not the
models, does the dequantization and the preprocessing, so their log-dets are counted once and
identically. For integer pixels ``k ∈ {0, …, 255}^D`` and ``u ~ U(0, 1)^D``:

$$ y = (k + u)/256 ∈ [0, 1)^D, \qquad h = \operatorname{logit}(α + (1 − 2α)\,y), \quad α = 0.05, $$

(``--preprocess affine``: ``h = y − ½`` instead). A model gives ``log p(h)``; then

$$ \log P(k) \;≥\; \mathbb{E}_u\Big[\log p(h) + \sum_d \log\frac{∂h_d}{∂y_d} − D \log 256\Big],
   \qquad \text{bits/dim} = −\frac{\cdot}{D \ln 2}, $$

the usual uniform-dequantization bound in the discrete space. A model whose own likelihood is a
bound (a flowified layer with augmenting noise) reports its single-sample ELBO, which only adds to
its bits/dim; the ``exact`` column says which.

**Budget.** ``--clock thread`` (default) counts the training thread's CPU time
(``time.thread_time()``), so the budget means the same on a machine shared with other jobs;
``--clock wall`` counts wall time. A step starts only while the clock is under budget (the last
one may end past it). Both clocks are reported. Evaluation is not counted.

**Optimiser.** Adam, learning rate ``--lr`` (1e-3 for every model) annealed to 0 by a cosine of
the fraction of the budget spent, so every model ends its schedule when its time is up; steps whose
loss is not finite are skipped and counted.

Peers (installed by the ``bench`` extra): nflows' ``MaskedAutoregressiveFlow`` (5 layers, hidden
256, 2 residual blocks per layer), zuko's ``MAF`` (5 transforms, hidden (256, 256)) and ``NSF``
(an autoregressive spline flow: 5 transforms, 8 bins, hidden (256, 256)), each scored through a
small adapter on flattened images. Ours: ``survae_flowify.models.build`` names
(``fconv2-nsf``, ``glow``) and ``ours`` (see :func:`build_ours`).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import survae_flowify as ffn
from survae_flowify.data import load_fashion_mnist, load_mnist
from survae_flowify.models import build, parameter_count
from survae_flowify.models.fconv_maf import fconv_maf
from survae_flowify.training import adam

LEVELS = 256
LOGIT_ALPHA = 0.05  # RealNVP's logit margin: keeps h within ±2.9, inside the splines' tail bounds
HIDDEN = 256  # the peers' widths (the issue's MAF: 5 layers, hidden 256)
PEER_LAYERS = 5
NSF_BINS = 8  # zuko's default
NSF_HIDDEN = 128  # with 8 bins its MADEs end in 784·23 outputs: 12 M parameters at 128, 25 M at 256
NFLOWS_BLOCKS = 2  # residual blocks per MADE in nflows' MAF (its examples' default)
DEFAULT_MODELS = ("ours", "nflows-maf", "zuko-maf", "zuko-nsf")
CLOCKS: dict[str, Callable[[], float]] = {"thread": time.thread_time, "wall": time.perf_counter}


# ---------------------------------------------------------------------------------------------
# The shared data pipeline: dequantize, preprocess, count the preprocessing's log-det once.


@dataclass(frozen=True)
class Preprocess:
    """``y ∈ [0, 1)^D ↦ h`` with its log-det, the same map for every model."""

    kind: str  # "logit" or "affine"

    def __call__(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(h, Σ_d log ∂h_d/∂y_d)``, the second of shape ``(B,)``."""
        if self.kind == "affine":
            return y - 0.5, y.new_zeros(y.shape[0])
        s = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * y
        h = torch.log(s) - torch.log1p(-s)
        log_det = math.log(1 - 2 * LOGIT_ALPHA) - torch.log(s) - torch.log1p(-s)
        return h, log_det.flatten(1).sum(1)


def dequantize(k: Tensor, generator: torch.Generator) -> Tensor:
    """``y = (k + u) / 256``, ``u ~ U(0, 1)`` from ``generator``; ``k`` uint8 ``(B, 1, H, W)``."""
    u = torch.rand(k.shape, generator=generator)
    return (k.float() + u) / LEVELS


def bits_per_dim(log_p_h: Tensor, log_det: Tensor, dims: int) -> Tensor:
    """Bits/dim of the integer images, from ``log p(h)`` and the preprocessing's log-det."""
    log_p_k = log_p_h + log_det - dims * math.log(LEVELS)
    return -log_p_k / (dims * math.log(2))


def batches(train: Tensor, batch: int, seed: int) -> Iterator[Tensor]:
    """An endless stream of shuffled batches of ``train``, the same for every model (``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):
            yield train[order[start:start + batch]]


# ---------------------------------------------------------------------------------------------
# Models: each is a module with ``log_prob(h)`` for ``h`` of shape ``(B, 1, H, W)``.


class FlatPeer(nn.Module):
    """A peer's flow scored on flattened images: ``log_prob(h) = flow.log_prob(h.flatten(1))``."""

    exact = True

    def __init__(self, flow: nn.Module, *, lazy: bool) -> None:
        super().__init__()
        self.flow = flow
        self.lazy = lazy  # zuko's flows are built by a call: flow() is the distribution

    def log_prob(self, h: Tensor) -> Tensor:
        x = h.flatten(1)
        return (self.flow() if self.lazy else self.flow).log_prob(x)


def nflows_maf(features: int) -> nn.Module:
    from nflows.flows import MaskedAutoregressiveFlow

    return FlatPeer(MaskedAutoregressiveFlow(features, HIDDEN, PEER_LAYERS, NFLOWS_BLOCKS), lazy=False)


def zuko_maf(features: int) -> nn.Module:
    import zuko

    return FlatPeer(zuko.flows.MAF(features, transforms=PEER_LAYERS, hidden_features=(HIDDEN, HIDDEN)),
                    lazy=True)


def zuko_nsf(features: int) -> nn.Module:
    import zuko

    return FlatPeer(zuko.flows.NSF(features, bins=NSF_BINS, transforms=PEER_LAYERS,
                                   hidden_features=(NSF_HIDDEN, NSF_HIDDEN)), lazy=True)


def build_ours(shape: tuple[int, int, int]) -> ffn.Flow:
    """Our best flowified model: :func:`~survae_flowify.models.fconv_maf.fconv_maf` — two learned
    squeezes (flowified 2×2 convolutions with splines), then five flowified 1×1 convolutions each
    followed by an affine MADE (hidden 256, 256), as the peers'. Continuous input: the harness
    dequantizes."""
    return fconv_maf(shape, levels=None)


PEERS: dict[str, Callable[[int], nn.Module]] = {
    "nflows-maf": nflows_maf, "zuko-maf": zuko_maf, "zuko-nsf": zuko_nsf,
}
OURS: dict[str, Callable[[tuple[int, int, int]], nn.Module]] = {
    "ours": build_ours,
    "fconv2-nsf": lambda shape: build("fconv2-nsf", shape, levels=None),
    "glow": lambda shape: build("glow", shape, levels=None),
}
MODEL_NAMES = (*OURS, *PEERS)


def make_model(name: str, shape: tuple[int, int, int]) -> nn.Module:
    if name in OURS:
        return OURS[name](shape)
    return PEERS[name](math.prod(shape))


def is_exact(model: nn.Module) -> bool:
    return bool(getattr(model, "exact", True))


# ---------------------------------------------------------------------------------------------
# Training for a budget of seconds, and evaluation.


@dataclass
class Result:
    name: str
    parameters: int
    steps: int
    skipped: int
    thread_s: float
    wall_s: float
    test_bpd: float
    train_bpd: float
    exact: bool


def cosine_lr(lr: float, spent: float, budget: float) -> float:
    """``lr · ½(1 + cos(π t/T))``: the cosine schedule over the budget instead of over steps."""
    return lr * 0.5 * (1 + math.cos(math.pi * min(spent / budget, 1.0)))


def train_for(model: nn.Module, data: Iterator[Tensor], *, seconds: float, clock: Callable[[], float],
              lr: float, preprocess: Preprocess, seed: int) -> tuple[int, int, float, float, float]:
    """Adam steps on ``−mean log p`` while ``clock() − start < seconds``.

    Returns ``(steps, skipped, thread seconds, wall seconds, mean train bits/dim of the last
    tenth of the steps)``. ``clock`` decides the budget; both clocks are measured.
    """
    optimizer = adam(model.parameters(), lr=lr)  # the trainer's (fused) Adam, for every contender
    noise = torch.Generator().manual_seed(seed)
    model.train()
    steps = skipped = 0
    recent: list[float] = []
    start, thread0, wall0 = clock(), time.thread_time(), time.perf_counter()
    while (spent := clock() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(lr, spent, seconds)
        k = next(data)
        h, log_det = preprocess(dequantize(k, noise))
        log_p = model.log_prob(h)
        loss = -log_p.mean()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        loss.backward()
        optimizer.step()
        steps += 1
        recent.append(float(bits_per_dim(log_p.detach(), log_det, h[0].numel()).mean()))
        del recent[:-100]
    train_bpd = sum(recent) / len(recent) if recent else math.nan
    return steps, skipped, time.thread_time() - thread0, time.perf_counter() - wall0, train_bpd


@torch.no_grad()
def evaluate(model: nn.Module, test: Tensor, *, preprocess: Preprocess, seed: int, batch: int) -> float:
    """Mean test bits/dim with a fixed dequantization noise (``seed``), in eval mode."""
    model.eval()
    noise = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(test), batch):
        h, log_det = preprocess(dequantize(test[start:start + batch], noise))
        total += float(bits_per_dim(model.log_prob(h), log_det, h[0].numel()).sum())
    return total / len(test)


def run_model(name: str, train: Tensor, test: Tensor, args: argparse.Namespace,
              clock: Callable[[], float]) -> Result:
    torch.manual_seed(args.seed)
    shape = tuple(train.shape[1:])
    model = make_model(name, shape)  # type: ignore[arg-type]
    preprocess = Preprocess(args.preprocess)
    with ffn.validation(False):  # the input checks are the same for all; keep them off the clock
        steps, skipped, thread_s, wall_s, train_bpd = train_for(
            model, batches(train, args.batch, args.seed), seconds=args.seconds, clock=clock,
            lr=args.lr, preprocess=preprocess, seed=args.seed + 1)
        test_bpd = evaluate(model, test, preprocess=preprocess, seed=args.seed + 2,
                            batch=args.eval_batch)
    return Result(name, parameter_count(model), steps, skipped, thread_s, wall_s, test_bpd,
                  train_bpd, is_exact(model))


# ---------------------------------------------------------------------------------------------
# Command line.


def load(args: argparse.Namespace) -> tuple[str, Tensor, Tensor]:
    dataset = args.dataset or ("mnist" if args.data_dir else "fashion-mnist")
    loader = load_mnist if dataset == "mnist" else load_fashion_mnist
    splits = loader(args.data_dir)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train[:args.train_size]
    if args.test_size:
        test = test[:args.test_size]
    return dataset, train, test


def model_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--models: expected a comma-separated list of {', '.join(MODEL_NAMES)}; got {text!r}")
    return names


def positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=model_list, default=list(DEFAULT_MODELS),
                   help=f"comma-separated, from: {', '.join(MODEL_NAMES)} (default: %(default)s)")
    p.add_argument("--seconds", type=positive(float), default=600.0, help="training budget per model")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="thread",
                   help="what the budget counts: the training thread's CPU time or wall time")
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist"), default=None,
                   help="default: mnist when --data-dir is given, else fashion-mnist")
    p.add_argument("--data-dir", default=None, help="directory of the IDX files")
    p.add_argument("--batch", type=positive(int), default=256)
    p.add_argument("--eval-batch", type=positive(int), default=500)
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam's initial learning rate")
    p.add_argument("--preprocess", choices=("logit", "affine"), default="logit")
    p.add_argument("--train-size", type=positive(int), default=None, help="default: the whole split")
    p.add_argument("--test-size", type=positive(int), default=None,
                   help="the first N test images (default: the whole test set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive(int), default=1)
    return p


TABLE_HEAD = (f"{'model':<12} {'params':>10} {'steps':>7} {'skipped':>7} {'thread s':>9} {'wall s':>8} "
              f"{'train bpd':>9} {'test bpd':>9}  exact")


def format_row(r: Result) -> str:
    return (f"{r.name:<12} {r.parameters:>10,} {r.steps:>7} {r.skipped:>7} {r.thread_s:>9.1f} "
            f"{r.wall_s:>8.1f} {r.train_bpd:>9.3f} {r.test_bpd:>9.3f}  {'yes' if r.exact else 'ELBO'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset, train, test = load(args)
    print(f"# quality: {dataset}, {len(train)} training and {len(test)} test images "
          f"{tuple(train.shape[1:])}; {args.seconds:g} s per model ({args.clock} clock), batch "
          f"{args.batch}, Adam lr {args.lr:g} (cosine over the budget), preprocess {args.preprocess}, "
          f"{args.threads} thread(s), seed {args.seed}; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
          flush=True)
    print(TABLE_HEAD + "\n" + "-" * len(TABLE_HEAD), flush=True)
    for name in args.models:  # a row as soon as a model is done: a long run can be read as it goes
        print(format_row(run_model(name, train, test, args, CLOCKS[args.clock])), flush=True)
    print(f"(budget clock: {args.clock}; train bpd: mean of the last 100 steps; test bpd: the first "
          f"{len(test)} test images, one dequantization draw)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
