"""Side-by-side speed of flowified models against the plain networks of the same shapes.

Run ``python benchmarks/speed.py [--device cpu|cuda] [--batch 256] [--repeats N] [--quick]``.
Every comparison is measured in one run with the timings interleaved (one call of each
contender per round, so drifts in machine load hit all alike) and reported as medians:

* FMLP-MNIST (appendix figure 8) training step (``−log_prob`` + backward + Adam) against the
  plain ``nn.Sequential`` MLP 784→512→256→128→64→32→8 with LeakyReLU (mean-square loss), and
  eval ``log_prob`` under ``torch.no_grad()`` against the plain forward — as in the paper
  (conditional inverse densities), and with standard-normal inverse densities both with
  Householder rotations and with the rotation-free ``parametrization="gram"``;
* the same for FCONV1-MNIST (figure 11) against the plain conv stack of the same shapes;
  ``fconv1-densities``: FCONV1-MNIST with the convolutions' conditional densities of today
  (``density_net="3x3-1x1"``), of before 2026-12 (``"3x3-3x3"``) and ``"3x3-1x1"`` with the
  width ``C_out`` (``hidden=None``), each against the plain twin;
* the RqSpline activation on a (256, 512) batch, forward and forward+backward (input and
  parameters): the fast kernel (tables, per-entry loops and closed-form backward in C) vs the
  same kernel in PyTorch (``_rq_native.disabled()``) vs the same layer on ``backend="autograd"``
  (the same formulas differentiated by autograd, as the kernel was before) vs nflows' function vs
  LeakyReLU; and (group ``spline-kernels``) the FMLP-MNIST (SVD and LU) and FCONV1-MNIST train
  step and eval ``log_prob`` with the C kernel, the PyTorch kernel and the autograd backward,
  against the plain twin;
* ``RqCoupling`` on ``(batch, 784)`` (392 features pass, 392 get an 8-bin spline, an MLP
  392→256→256→392·23 with SiLU) against nflows' ``PiecewiseRationalQuadraticCouplingTransform``
  with the same mask, bins, tails and network (nflows' ``MLP``), forward and forward+backward;
* the FCONV2-NSF-MNIST (appendix C) training step with its coupling stacks on the native
  ``RqCoupling`` (what ``models.fconv2_nsf`` builds) against the same model with the stacks the
  library used before, nflows' ``PiecewiseRationalQuadraticCouplingTransform`` with
  ``ReversePermutation`` between (same couplings, bins, bound and hidden widths) wrapped as
  ``NflowsBijection``; ``--nsf-repeats`` rounds (default 5: one nflows step takes seconds);
* the graph breaks ``torch.compile`` (dynamo) meets in FMLP ``log_prob``;
* ``compile`` and ``compile-lu`` (only when asked: ``--only compile``): the FMLP-MNIST training
  step (SVD; ``parametrization="lu"``) with the loss module under ``torch.compile`` (as
  ``TrainConfig(compile=True)``) against eager and against the plain twin, the first (compiling)
  call reported apart;
* ``fconv1-lu``: the FCONV1-MNIST rows with ``parametrization="lu"`` in every layer;
* ``fmlp-lu``: the FMLP-MNIST rows with ``parametrization="lu"`` (triangular ``T = L U`` and
  dense couplings, no rotations; conditional inverse densities as in ``fmlp``), and
  ``memory-lu`` its step's peak memory as in ``memory``;
* ``memory``: the peak of live torch tensors during one FMLP-MNIST training step, SVD and Gram,
  against the plain twin's (the torch profiler's memory timeline on a CPU,
  ``torch.cuda.max_memory_allocated`` on a GPU), and what the step allocates on top of the
  parameters and Adam's moments.

``--only fmlp,memory`` picks row groups (see ``GROUPS``); ``--sweep 64,256,1024`` runs the chosen
groups (default ``fmlp``) at each batch size and each of ``--sweep-threads`` (default ``1,2``).

Timings are wall-clock with the device synchronised around every call. ``--profile`` adds a
``torch.profiler`` table of one FMLP training step. On a small or shared CPU pass
``--threads 1``: oversubscribed OpenMP threads can slow the many small operations of a flow
tenfold (FMLP eval ``log_prob`` measured 13.5 ms with one thread, 126 ms with two, on a loaded
two-core machine), which distorts the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from survae_flowify.training import adam
from survae_flowify.transforms import _rq_native

MNIST = (1, 28, 28)
LEVELS = 256
FMLP_WIDTHS = [512, 256, 128, 64, 32, 8]  # appendix figure 8
# Appendix figure 11: (out_channels, kernel_size, stride), then the dense widths.
FCONV1_CONVS = [(16, 3, 2), (24, 2, 2), (32, 3, 2), (48, 2, 1), (64, 2, 1)]
FCONV1_WIDTHS = [64] * 6 + [32] * 7 + [8]
LEAKY_SLOPE = 0.5
SPLINE_SHAPE = (256, 512)  # FMLP-MNIST's widest activation
COUPLING_FEATURES, COUPLING_HIDDEN, COUPLING_BINS = 784, (256, 256), 8  # an MNIST-sized coupling
LEARNING_RATE = 5e-4  # appendix F


@dataclass
class Row:
    """One line of the table: a contender's median time against a reference's."""

    name: str
    time_s: float | None
    reference: str = ""
    reference_s: float | None = None
    goal: str = ""
    note: str = ""
    unit: str = "ms"  # the value columns: "ms" (time_s in seconds, shown in ms) or "MiB"

    @property
    def ratio(self) -> float | None:
        if self.time_s is None or not self.reference_s:
            return None
        return self.time_s / self.reference_s


# --------------------------------------------------------------------------------------------
# timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved(
    contenders: dict[str, Callable[[], object]], *, repeats: int, warmup: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds per call of each contender; each round calls every contender once."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


# --------------------------------------------------------------------------------------------
# models


def flowified(name: str, **kwargs: object) -> ffn.Flow:
    """The paper's model from ``survae_flowify.models`` (``kwargs`` go to its layers)."""
    from survae_flowify import models

    return models.build(name, MNIST, **kwargs)


def plain_mlp() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    features = 784
    for i, width in enumerate(FMLP_WIDTHS):
        layers.append(nn.Linear(features, width))
        if i < len(FMLP_WIDTHS) - 1:
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
        features = width
    return nn.Sequential(*layers)


class PadToTile(nn.Module):
    """Zero-pad right/bottom so a ``kernel_size``/``stride`` kernel tiles the image (the shapes
    of the flowified ``Pad``)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = (-(x.shape[-2] - self.kernel_size)) % self.stride
        pad_w = (-(x.shape[-1] - self.kernel_size)) % self.stride
        return F.pad(x, (0, pad_w, 0, pad_h))


def plain_conv() -> nn.Sequential:
    """FCONV1-MNIST's shapes with ordinary layers: (pad, conv, LeakyReLU)*, flatten, (linear, LeakyReLU)*."""
    layers: list[nn.Module] = []
    channels, size = 1, 28
    for out_c, k, s in FCONV1_CONVS:
        layers += [PadToTile(k, s), nn.Conv2d(channels, out_c, k, s), nn.LeakyReLU(LEAKY_SLOPE)]
        size = (size + (-(size - k)) % s - k) // s + 1
        channels = out_c
    layers.append(nn.Flatten())
    features = channels * size * size
    for width in FCONV1_WIDTHS:
        layers += [nn.Linear(features, width), nn.LeakyReLU(LEAKY_SLOPE)]
        features = width
    return nn.Sequential(*layers)


def train_step(model: nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = adam(model.parameters(), lr=LEARNING_RATE)  # the trainer's (fused) Adam, both sides

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step


def compare_model(
    label: str, name: str, plain: nn.Module, images: torch.Tensor, args: argparse.Namespace,
    sync: Callable[[], None], goals: tuple[str, str],
    variants: dict[str, Callable[[Callable[[], None], nn.Module], Callable[[], None]]] | None = None,
    **model_kwargs: object,
) -> list[Row]:
    """The model's train step and eval ``log_prob`` against the plain twin's, interleaved.

    ``variants`` maps a row suffix to a wrapper ``(call, flow) -> call`` (e.g.
    :func:`with_autograd_backward`), timed in the same rounds and reported as extra rows.
    """
    variants = variants or {}
    flow = flowified(name, **model_kwargs)
    flow, plain = flow.to(args.device), plain.to(args.device)
    flat = images.float() / LEVELS

    def timed(flow_call: Callable[[], None], plain_call: Callable[[], None]) -> dict[str, float]:
        contenders = {"flow": flow_call, "plain": plain_call}
        contenders.update({k: wrap(flow_call, flow) for k, wrap in variants.items()})
        return interleaved(contenders, repeats=args.repeats, warmup=args.warmup, sync=sync)

    rows = []
    flow.train()
    plain.train()
    t = timed(train_step(flow, lambda: -flow.log_prob(images).mean()),
              train_step(plain, lambda: plain(flat).pow(2).mean()))
    rows.append(Row(f"{label} train step", t["flow"], "plain net", t["plain"], goals[0]))
    rows += [Row(f"{label} train step: {k}", t[k], "plain net", t["plain"]) for k in variants]
    flow.eval()
    plain.eval()

    @torch.no_grad()
    def flow_eval() -> None:
        flow.log_prob(images)

    @torch.no_grad()
    def plain_eval() -> None:
        plain(flat)

    t = timed(flow_eval, plain_eval)
    rows.append(Row(f"{label} eval log_prob", t["flow"], "plain forward", t["plain"], goals[1]))
    rows += [Row(f"{label} eval log_prob: {k}", t[k], "plain forward", t["plain"]) for k in variants]
    return rows


FCONV1_DENSITIES = {  # row label -> model keywords (models.fconv1)
    "3x3-1x1 (default)": {},
    "3x3-3x3 (before)": {"density_net": "3x3-3x3"},
    "3x3-1x1, width C_out": {"hidden": None},
}


def elementwise_runners(
    x: torch.Tensor, x_backward: torch.Tensor
) -> tuple[Callable[[nn.Module], Callable[[], None]], Callable[[nn.Module], Callable[[], None]]]:
    """``(forward, backward)``: each maps a transform to a timed call — ``forward`` without grad on
    ``x``, ``backward`` through ``z.sum() + contribution.sum()`` on ``x_backward`` (an input that
    requires grad, where the layer has no parameters of its own to differentiate)."""

    def forward(layer: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                layer(x)
        return run

    def backward(layer: nn.Module) -> Callable[[], None]:
        def run() -> None:
            z, contribution = layer(x_backward)
            (z.sum() + contribution.sum()).backward()
        return run

    return forward, backward


def with_autograd_backward(fn: Callable[[], object], model: nn.Module) -> Callable[[], None]:
    """``fn`` (which runs ``model``) with every ``RqSpline`` of ``model`` on ``backend="autograd"``:
    the same tables and formulas as the fast kernel, differentiated by autograd instead of the
    closed-form backward (what the kernel did before it had one), timed in the same run."""
    splines = [m for m in model.modules() if isinstance(m, ffn.RqSpline)]

    def run() -> None:
        for m in splines:
            m.backend = "autograd"
        try:
            fn()
        finally:
            for m in splines:
                m.backend = "fast"
    return run


def with_torch_kernel(fn: Callable[[], object], model: nn.Module) -> Callable[[], None]:
    """``fn`` with the spline kernel in PyTorch (``_rq_native.disabled()``: tables built by
    ``rq_tables``, per-entry loops as torch operations) rather than in C: the same formulas and
    closed-form backward."""

    def run() -> None:
        with _rq_native.disabled():
            fn()
    return run


def compare_spline(args: argparse.Namespace, sync: Callable[[], None]) -> list[Row]:
    """Layers with input validation off, so the kernels themselves are timed: the fast kernel
    against the same kernel in PyTorch (``with_torch_kernel``), the same layer differentiated by
    autograd (``with_autograd_backward``: same parameters, interleaved), nflows' and LeakyReLU. The
    backward differentiates the input and the spline's parameters."""
    gen = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(SPLINE_SHAPE, generator=gen)).to(args.device)
    layers = {
        "fast": ffn.RqSpline(),
        "nflows": ffn.RqSpline(backend="nflows"),
        "leaky": ffn.LeakyReLU(LEAKY_SLOPE),
    }
    with torch.no_grad():
        for layer in layers.values():
            for p in layer.parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    for layer in layers.values():
        layer.to(args.device)
    forward, backward = elementwise_runners(x, x.clone().requires_grad_())

    shape = "×".join(map(str, SPLINE_SHAPE))
    rows = []
    repeats = max(3, args.repeats // 2) if args.quick else args.repeats
    with ffn.validation(False):
        for what, make in (("forward", forward), ("fwd+bwd", backward)):
            contenders = {k: make(v) for k, v in layers.items()}
            contenders["old"] = with_autograd_backward(make(layers["fast"]), layers["fast"])
            contenders["torch"] = with_torch_kernel(make(layers["fast"]), layers["fast"])
            t = interleaved(contenders, repeats=repeats, warmup=args.warmup, sync=sync)
            rows.append(Row(f"RqSpline {shape} {what}: fast", t["fast"], "LeakyReLU", t["leaky"]))
            rows.append(Row(f"RqSpline {shape} {what}: fast", t["fast"], "PyTorch kernel", t["torch"]))
            rows.append(Row(f"RqSpline {shape} {what}: fast", t["fast"], "autograd backward", t["old"]))
            rows.append(Row(f"RqSpline {shape} {what}: autograd backward", t["old"], "LeakyReLU", t["leaky"]))
            rows.append(Row(f"RqSpline {shape} {what}: nflows", t["nflows"], "fast spline", t["fast"]))
    return rows


class _ContextFreeNet(nn.Module):
    """nflows' couplings call ``net(inputs, context)``; its ``MLP`` takes only the inputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(inputs)


def compare_coupling(args: argparse.Namespace, sync: Callable[[], None]) -> list[Row]:
    """``RqCoupling`` against nflows' spline coupling with the same split, spline and network."""
    from nflows.nn.nets import MLP
    from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

    half = COUPLING_FEATURES // 2
    mask = torch.cat([torch.zeros(half), torch.ones(COUPLING_FEATURES - half)])  # > 0: transformed
    theirs = PiecewiseRationalQuadraticCouplingTransform(
        mask, lambda i, o: _ContextFreeNet(MLP((i,), (o,), list(COUPLING_HIDDEN), activation=F.silu)),
        num_bins=COUPLING_BINS, tails="linear", tail_bound=3.0,
    )
    ours = ffn.RqCoupling(COUPLING_FEATURES, num_bins=COUPLING_BINS, tail_bound=3.0, hidden=COUPLING_HIDDEN)
    layers = {"ours": ours, "nflows": theirs}
    for seed, layer in enumerate(layers.values()):
        perturb_parameters(layer, scale=0.3, seed=seed)  # off the identity start
        layer.to(args.device)
    gen = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(args.batch, COUPLING_FEATURES, generator=gen)).to(args.device)
    forward, backward = elementwise_runners(x, x)

    rows = []
    with ffn.validation(False), warnings.catch_warnings():
        # nflows warns when its net has no ``hidden_features`` to scale the softmax inputs by;
        # neither side scales them, so the two compute the same kind of spline.
        warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
        for what, make in (("forward", forward), ("fwd+bwd", backward)):
            t = interleaved({k: make(v) for k, v in layers.items()}, repeats=args.repeats,
                            warmup=args.warmup, sync=sync)
            rows.append(Row(f"RqCoupling {COUPLING_FEATURES} {what}", t["ours"], "nflows coupling",
                            t["nflows"]))
    return rows


class _OldNsfConditioner(nn.Module):
    """The conditioner of the nflows stacks ``models.nsf`` built before: 3 hidden ReLU layers of
    256 (vectors) or of 32 channels with 3×3 convolutions throughout (feature maps)."""

    def __init__(self, n_in: int, n_out: int, *, image: bool) -> None:
        super().__init__()
        hidden = 32 if image else 256
        widths = (n_in, hidden, hidden, hidden, n_out)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, padding=1) if image else nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(inputs)


def old_nsf_stack(shape: tuple[int, ...], num_couplings: int) -> ffn.Transform:
    """An nflows coupling stack with the structure of ``models.nsf.nsf_stack``, as it was built
    before the native couplings: 5 bins, linear tails, bound 3, a reversal between each two."""
    from nflows import transforms

    features = shape[0]
    mask = [0] * (features // 2) + [1] * (features - features // 2)  # > 0: transformed

    def make(i: int, o: int) -> nn.Module:
        return _OldNsfConditioner(i, o, image=len(shape) == 3)

    parts: list[nn.Module] = []
    for i in range(num_couplings):
        if i:
            parts.append(transforms.ReversePermutation(features))
        parts.append(transforms.PiecewiseRationalQuadraticCouplingTransform(
            mask, make, num_bins=5, tails="linear", tail_bound=3.0))
    return ffn.NflowsBijection(transforms.CompositeTransform(parts), shape=shape)


def with_nflows_stacks(flow: ffn.Flow) -> ffn.Flow:
    """``flow`` with each native coupling stack (a ``Sequential`` of ``RqCoupling`` and
    ``Reverse``) replaced by :func:`old_nsf_stack` of the same shape and number of couplings."""
    for name, part in list(flow.transform.named_children()):
        if not isinstance(part, ffn.Sequential):
            continue
        couplings = [p for p in part if isinstance(p, ffn.RqCoupling)]
        if couplings:
            setattr(flow.transform, name, old_nsf_stack(couplings[0].shape, len(couplings)))
    return flow


def compare_nsf(images: torch.Tensor, args: argparse.Namespace, sync: Callable[[], None]) -> list[Row]:
    """FCONV2-NSF-MNIST training steps: native coupling stacks against the nflows ones."""
    native = flowified("fconv2-nsf").to(args.device).train()
    old = with_nflows_stacks(flowified("fconv2-nsf")).to(args.device).train()
    for seed, flow in enumerate((native, old)):
        perturb_parameters(flow, scale=0.3, seed=seed)  # splines off their identity start
    counts = {k: sum(p.numel() for p in f.parameters()) for k, f in (("native", native), ("nflows", old))}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
        t = interleaved(
            {"native": train_step(native, lambda: -native.log_prob(images).mean()),
             "nflows": train_step(old, lambda: -old.log_prob(images).mean())},
            repeats=args.nsf_repeats, warmup=min(args.warmup, 1), sync=sync,
        )
    note = f"parameters: native {counts['native']:,}, nflows {counts['nflows']:,}"
    return [Row("FCONV2-NSF-MNIST train step: native", t["native"], "nflows stacks", t["nflows"],
                note=note)]


def _explain(flow: ffn.Flow, images: torch.Tensor, *, train: bool, validate: bool) -> str:
    """One line: the graph breaks dynamo meets in ``flow.log_prob``, and where."""
    flow.train(train)
    label = (f"graph breaks, FMLP log_prob ({'train' if train else 'eval, no_grad'}, "
             f"input checks {'on' if validate else 'off'})")
    torch._dynamo.reset()
    try:
        with ffn.validation(validate), torch.set_grad_enabled(train):
            explanation = torch._dynamo.explain(flow.log_prob)(images)
    except Exception as error:  # report it in the table rather than crash the run
        return f"{label}: dynamo failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    places = {}
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        places.setdefault(where, str(reason.reason).splitlines()[0][:90])
    lines = [f"{label}: {explanation.graph_break_count} in {explanation.graph_count} graph(s)"]
    lines += [f"    - {where}: {why}" for where, why in sorted(places.items())[:8]]
    return "\n".join(lines)


def graph_breaks(args: argparse.Namespace) -> list[str]:
    """Dynamo's graph breaks in FMLP ``log_prob``; the goal is none with input checks off (the
    checks raise on data-dependent conditions by design, see ``ffn.validation``)."""
    flow = flowified("fmlp").to(args.device)
    images = mnist_like(2, args.device)
    torch._logging.set_logs(dynamo=logging.ERROR)  # the breaks are summarised below instead
    try:
        return [_explain(flow, images, train=train, validate=validate)
                for train, validate in ((True, False), (False, False), (True, True))]
    finally:
        torch._dynamo.reset()
        torch._logging.set_logs()


def profile_fmlp(args: argparse.Namespace, sync: Callable[[], None], **kwargs: object) -> str:
    flow = flowified("fmlp", **kwargs).to(args.device).train()
    images = mnist_like(args.batch, args.device)
    step = train_step(flow, lambda: -flow.log_prob(images).mean())
    for _ in range(args.warmup):
        step()
    sync()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            with torch.profiler.record_function("fmlp_train_step"):
                step()
        sync()
    key = "self_cuda_time_total" if args.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=20)


class _Loss(nn.Module):
    """``x ↦ −mean log p(x)``: the module the trainer compiles (its forward and backward)."""

    def __init__(self, flow: ffn.Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.flow.log_prob(x).mean()


def compare_compiled(images: torch.Tensor, args: argparse.Namespace, sync: Callable[[], None],
                     label: str = "FMLP-MNIST", **model_kwargs: object) -> list[Row]:
    """FMLP-MNIST training steps with the loss module under ``torch.compile`` (forward and
    backward, as ``TrainConfig(compile=True)`` runs them; Adam stays eager) against eager and
    against the plain twin in the same rounds, input checks off. The first call's compile time is
    reported apart from the step time. ``model_kwargs`` go to the model's layers."""
    eager = flowified("fmlp", **model_kwargs).to(args.device).train()
    twin = flowified("fmlp", **model_kwargs).to(args.device).train()
    twin.load_state_dict(eager.state_dict())
    plain = plain_mlp().to(args.device).train()
    flat = images.float() / LEVELS
    compiled = torch.compile(_Loss(twin))
    loss = _Loss(eager)
    steps = {"eager": train_step(eager, lambda: loss(images)),
             "compiled": train_step(twin, lambda: compiled(images)),
             "plain": train_step(plain, lambda: plain(flat).pow(2).mean())}
    torch._dynamo.reset()
    with ffn.validation(False):
        start = time.perf_counter()
        steps["compiled"]()
        sync()
        compile_s = time.perf_counter() - start
        t = interleaved(steps, repeats=args.repeats, warmup=args.warmup, sync=sync)
    return [Row(f"{label} train step: compiled", t["compiled"], "eager step", t["eager"],
                note=f"first call (compiles) {compile_s:.1f} s"),
            Row(f"{label} train step: compiled", t["compiled"], "plain net", t["plain"], "≤ 3")]


def peak_step_memory(step: Callable[[], object]) -> tuple[int, int]:
    """``(peak, transient)`` bytes of torch tensors over one call of ``step``: ``peak`` counts
    every tensor alive at the worst moment (parameters, gradients, optimizer state included),
    ``transient`` only what the step allocated on top of what was alive before it.

    CPU allocations are invisible to ``tracemalloc`` and blurred in the process's RSS (the
    allocator keeps freed pages), so they are read from the torch profiler's memory timeline:
    every allocation and free of a tensor, in order. On a GPU the caching allocator's own peak
    counter is exact and cheaper (``torch.cuda.max_memory_allocated``).
    """
    step()  # optimizer state and caches exist before the measured call
    if torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.memory_allocated():
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return peak, peak - before
    from torch.profiler import _memory_profiler

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True, record_shapes=True) as prof:
        step()
    live = peak = extra = 0
    actions = _memory_profiler.Action
    for _, action, (key, _version), size in _memory_profiler.MemoryProfile(
            prof.profiler.kineto_results).timeline:
        if key.device.type != "cpu":
            continue
        if action == actions.PREEXISTING:
            live += size
        elif action == actions.CREATE:
            extra += size
        elif action == actions.DESTROY:
            extra -= size
        peak = max(peak, extra)
    return live + peak, peak


MEMORY_VARIANTS = {
    "memory": (("FMLP-MNIST", {}), ("FMLP-MNIST gram, conditional", {"parametrization": "gram"})),
    "memory-lu": (("FMLP-MNIST lu, conditional", {"parametrization": "lu"}),),
}
"""Row label and model keywords of each memory group."""


def compare_memory(args: argparse.Namespace, group: str = "memory") -> list[Row]:
    """Peak memory of one FMLP-MNIST training step (batch ``--batch``) against the plain twin's,
    for the models of :data:`MEMORY_VARIANTS` ``[group]``. The ratio column compares the peaks of
    all live tensors; the note gives what the step itself allocates (activations, gradients,
    temporaries) on top of parameters and Adam's moments."""
    images = mnist_like(args.batch, args.device)
    flat = images.float() / LEVELS
    rows = []
    plain = plain_mlp().to(args.device).train()
    plain_peak, plain_extra = peak_step_memory(train_step(plain, lambda: plain(flat).pow(2).mean()))
    for label, kwargs in MEMORY_VARIANTS[group]:
        flow = flowified("fmlp", **kwargs).to(args.device).train()
        with ffn.validation(False):
            peak, extra = peak_step_memory(train_step(flow, lambda f=flow: -f.log_prob(images).mean()))
        mib = 2.0**20
        rows.append(Row(f"{label} step peak memory", peak / mib, "plain net", plain_peak / mib,
                        "≤ 2", unit="MiB",
                        note=f"allocated by the step itself: {extra / mib:.1f} MiB against "
                             f"{plain_extra / mib:.1f} MiB, {extra / max(plain_extra, 1):.2f}×"))
    return rows


def mnist_like(batch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, LEVELS, (batch, *MNIST), generator=gen).float().to(device)


# --------------------------------------------------------------------------------------------
# output


def _value(t: float | None, unit: str = "ms") -> str:
    if t is None:
        return "n/a"
    return f"{1e3 * t:9.3f}" if unit == "ms" else f"{t:9.1f}"


def table(rows: list[Row]) -> str:
    header = f"{'comparison':<48} {'value':>9}   {'reference':<14} {'value':>9} {'ratio':>8}  goal"
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:7.2f}×"
        reference = _value(r.reference_s, r.unit) if r.reference else ""
        name = r.name if r.unit == "ms" else f"{r.name} ({r.unit})"
        line = (f"{name:<48} {_value(r.time_s, r.unit):>9}   {r.reference:<14} {reference:>9} "
                f"{ratio:>8}  {r.goal}")
        lines.append(line.rstrip())
        if r.note:
            lines.append(f"    ({r.note})")
    lines.append("(values: milliseconds unless the comparison names another unit)")
    return "\n".join(lines)


def _groups(text: str) -> list[str]:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"unknown row group(s) {unknown}; choose from {', '.join(GROUPS)}")
    return groups


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per comparison")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--nsf-repeats", type=int, default=5,
                        help="timed rounds of the FCONV2-NSF comparison (an nflows step takes seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 16, 3 rounds, 1 warm-up (numbers are not meaningful)")
    parser.add_argument("--no-compile", action="store_true", help="skip the graph-break count")
    parser.add_argument("--profile", action="store_true", help="profile one FMLP training step")
    parser.add_argument("--only", type=_groups, default=DEFAULT_GROUPS,
                        help=f"comma-separated row groups, of: {', '.join(GROUPS)} (default: all "
                             "but compile)")
    parser.add_argument("--sweep", type=_ints, default=None, metavar="B1,B2,...",
                        help="run the --only groups (default: fmlp) at each of these batch sizes")
    parser.add_argument("--sweep-threads", type=_ints, default=[1, 2], metavar="T1,T2,...",
                        help="thread counts of --sweep (default: 1,2)")
    args = parser.parse_args(argv)
    if args.sweep and "--only" not in " ".join(argv if argv is not None else sys.argv):
        args.only = ["fmlp"]
    if args.quick:
        args.batch, args.repeats, args.warmup = min(args.batch, 16), 3, 1
        args.nsf_repeats = min(args.nsf_repeats, 2)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    args.device = torch.device(args.device)
    return args


GROUPS = ("fmlp", "fmlp-normal", "fmlp-gram", "fmlp-gram-cond", "fmlp-lu", "fconv1", "fconv1-lu",
          "fconv1-densities", "spline", "spline-kernels", "coupling", "nsf", "compile", "compile-lu",
          "memory", "memory-lu")
"""Row groups of the table, in order; ``--only`` picks some."""
DEFAULT_GROUPS = [g for g in GROUPS if not g.startswith("compile")]
"""All but ``compile``, whose first call compiles for minutes on a small CPU: ask for it."""


def rows_for(group: str, images: torch.Tensor, args: argparse.Namespace,
             sync: Callable[[], None]) -> list[Row]:
    goals = ("≤ 3", "≤ 2")
    if group == "fmlp":
        return compare_model("FMLP-MNIST", "fmlp", plain_mlp(), images, args, sync, goals)
    # The same shapes with standard-normal inverse densities: rotations (Householder) against the
    # rotation-free Gram parametrization of the same likelihood.
    if group == "fmlp-normal":
        return compare_model("FMLP-MNIST normal, householder", "fmlp", plain_mlp(), images, args,
                             sync, goals, inverse_density="normal")
    if group == "fmlp-gram":
        return compare_model("FMLP-MNIST normal, gram", "fmlp", plain_mlp(), images, args, sync,
                             goals, inverse_density="normal", parametrization="gram")
    if group == "fmlp-gram-cond":  # the paper's conditional densities, without rotations
        return compare_model("FMLP-MNIST gram, conditional", "fmlp", plain_mlp(), images, args,
                             sync, goals, parametrization="gram")
    if group == "fmlp-lu":  # the paper's conditional densities on the rotation-free LU layer
        return compare_model("FMLP-MNIST lu, conditional", "fmlp", plain_mlp(), images, args,
                             sync, goals, parametrization="lu")
    if group == "memory-lu":
        return compare_memory(args, group)
    if group == "fconv1":
        return compare_model("FCONV1-MNIST", "fconv1", plain_conv(), images, args, sync, ("≤ 5", "≤ 5"))
    if group == "fconv1-lu":  # the rotation-free kernels in every convolution and dense layer
        return compare_model("FCONV1-MNIST lu", "fconv1", plain_conv(), images, args, sync,
                             ("≤ 5", "≤ 5"), parametrization="lu")
    if group == "fconv1-densities":  # each density network against the plain twin
        return [row for label, kw in FCONV1_DENSITIES.items()
                for row in compare_model(f"FCONV1-MNIST, density {label}:", "fconv1", plain_conv(),
                                         images, args, sync, ("", ""), **kw)]
    if group == "spline":
        return compare_spline(args, sync)
    if group == "spline-kernels":  # the kernel in C, in PyTorch, and with autograd, in whole models
        kernels = {"PyTorch kernel": with_torch_kernel, "autograd backward": with_autograd_backward}
        return (compare_model("FMLP-MNIST", "fmlp", plain_mlp(), images, args, sync, goals, kernels)
                + compare_model("FMLP-MNIST lu", "fmlp", plain_mlp(), images, args, sync, goals,
                                {"PyTorch kernel": with_torch_kernel}, parametrization="lu")
                + compare_model("FCONV1-MNIST", "fconv1", plain_conv(), images, args, sync, ("", ""),
                                kernels))
    if group == "coupling":
        return compare_coupling(args, sync)
    if group == "nsf":
        return compare_nsf(images, args, sync)
    if group == "compile-lu":
        return compare_compiled(images, args, sync, "FMLP-MNIST lu", parametrization="lu")
    if group == "compile":
        return compare_compiled(images, args, sync)
    return compare_memory(args)


def sweep(args: argparse.Namespace, sync: Callable[[], None]) -> list[Row]:
    """The FMLP rows at every batch × threads of ``--sweep``/``--sweep-threads``."""
    rows = []
    for threads in args.sweep_threads:
        torch.set_num_threads(threads)
        for batch in args.sweep:
            images = mnist_like(batch, args.device)
            for group in args.only:
                for row in rows_for(group, images, args, sync):
                    row.name = f"{row.name} b{batch} t{threads}"
                    rows.append(row)
    return rows


def _spline_kernel(device: torch.device) -> str:
    if device.type != "cpu":
        return f"PyTorch ({device.type}: the C kernel is for CPU tensors)"
    return "C" if _rq_native.available() else "PyTorch (no C compiler, or SURVAE_FLOWIFY_NATIVE=0)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sync = synchronizer(args.device)
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else platform.processor()
    print(f"survae_flowify speed — device {args.device} ({name or platform.machine()}), batch {args.batch}, "
          f"{args.repeats} interleaved rounds (medians), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; spline kernel in {_spline_kernel(args.device)}")
    if args.sweep:
        print(table(sweep(args, sync)))
        return 0
    images = mnist_like(args.batch, args.device)
    rows = [row for group in args.only for row in rows_for(group, images, args, sync)]
    print(table(rows))
    if not args.no_compile:
        print("\n".join(graph_breaks(args)))
    if args.profile:
        print(profile_fmlp(args, sync))
        if "fmlp-lu" in args.only:
            print(profile_fmlp(args, sync, parametrization="lu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
