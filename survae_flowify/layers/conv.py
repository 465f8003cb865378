r"""Flowified convolution (paper §3.2): ``Conv2d = Pad → Unfold → PatchLinear``.

A convolution is a linear map applied to every patch of the image with shared weights. Its
flowification is three transforms, each public:

1. :class:`~survae_flowify.layers.pad.Pad`: noise rows/columns so that the kernel tiles the image;
2. :class:`~survae_flowify.layers.unfold.Unfold`: the patches as channels, every shared pixel
   copied with noise orthogonal to the diagonal (paper eq. 18, appendix fig. 5);
3. :class:`PatchLinear`: a flowified :class:`~survae_flowify.layers.linear.Linear` applied to
   every patch.

With :func:`survae_flowify.noise_off` the composite computes exactly
``F.conv2d(F.pad(x, (l, r + q, t, b + p)), weight, bias, stride)``, where ``(l, r, t, b)`` is the
fixed border (``padding``, the flowified form of ``nn.Conv2d``'s zero padding) and ``p, q`` the
rows and columns that make the kernel tile the image.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._layout import to_map, to_rows
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
    Shape,
    Transform,
    check_context,
    check_input,
)
from survae_flowify.distributions.conditional import (
    MAP_NETS,
    InverseDensityKind,
    MapNetKind,
    check_context_features,
    make_inverse_density,
)
from survae_flowify.distributions.noise import NoiseKind, check_noise
from survae_flowify.layers.linear import Linear, SvdLinear
from survae_flowify.layers.lu_linear import LuLinear
from survae_flowify.layers.pad import Pad, check_image_size, check_kernel_stride, check_padding
from survae_flowify.layers.rotations import RotationKind
from survae_flowify.layers.unfold import Unfold

__all__ = [
    "DEFAULT_DENSITY_NET",
    "DEFAULT_DENSITY_WIDTH",
    "Conv2d",
    "check_plain_conv",
    "conv_padding",
    "density_width",
    "PatchLinear",
    "PatchLinearBijection",
    "PatchLinearGenerative",
    "PatchLinearInference",
]


KernelParametrization = Literal["svd", "lu"]
KERNEL_PARAMETRIZATIONS: tuple[str, ...] = get_args(KernelParametrization)
"""The Linear parametrizations a kernel can use: both give a basis of what is dropped or filled."""

DEFAULT_DENSITY_NET: MapNetKind = "3x3-1x1"
"""The conditional map density of a reducing kernel: ``Conv3×3 → GELU → Conv1×1``."""
DEFAULT_DENSITY_WIDTH = 64
"""Its hidden width, as the dense layers' conditional densities (``Linear(hidden=64)``)."""


def _check_linear_options(layer: str, bias: object, inverse_density: object, noise: object,
                          rotation: object, hidden: object, density_net: object,
                          parametrization: object = "svd") -> None:
    """Every option is checked in every regime, also those the regime does not use (a typo in
    ``inverse_density`` of a square kernel must not pass silently)."""
    _checks.boolean(layer, "bias", bias)
    _checks.choice(layer, "inverse_density", inverse_density, get_args(InverseDensityKind))
    check_noise(layer, noise)
    _checks.choice(layer, "rotation", rotation, get_args(RotationKind))
    if parametrization == "gram":
        raise ValueError(f"{layer}: parametrization='gram' has no basis of the dropped coordinates "
                         "or the noise, which the patches' map density needs; use 'svd' or 'lu'")
    _checks.choice(layer, "parametrization", parametrization, KERNEL_PARAMETRIZATIONS)
    _check_density_net(layer, hidden, density_net)


def _check_density_net(layer: str, hidden: object, density_net: object) -> None:
    if hidden is not None:
        _checks.positive_int(layer, "hidden", hidden)
    _checks.choice(layer, "density_net", density_net, MAP_NETS)


def density_width(hidden: int | None, out_channels: int) -> int:
    """The hidden width of a kernel's conditional density: ``hidden``, or for ``None`` the kept
    width ``C_out``, so that the network grows with the layer (see :class:`PatchLinear`)."""
    return out_channels if hidden is None else hidden


def _regime(in_channels: int, out_channels: int) -> type[PatchLinear]:
    if in_channels == out_channels:
        return PatchLinearBijection
    return PatchLinearInference if in_channels > out_channels else PatchLinearGenerative


class PatchLinear(Transform):
    r"""A flowified Linear applied to every position of a map: ``(B, C_in, H, W) → (B, C_out, H, W)``.

    For a convolution, ``C_in = C·k²`` are the patches of :class:`~survae_flowify.layers.unfold.Unfold`
    and the output is the convolution's output map. Every position ``l`` holds a vector
    ``x_l ∈ R^{C_in}`` and the flowified Linear ``W = UΣVᵀ`` (DESIGN.md §2) maps it to
    ``z_l ∈ R^{C_out}`` with shared weights. Contributions are summed over the ``H·W`` positions.

    Constructing ``PatchLinear(C_in, C_out, …)`` returns the class of the Linear's regime:

    * ``C_in == C_out``: :class:`PatchLinearBijection`, ``z_l = W x_l + b``,
      ``V = H·W·Σ log σ``; inverse ``x_l = W⁻¹(z_l − b)``.
    * ``C_in > C_out``: :class:`PatchLinearInference`. ``(y_keep, y_drop) = Vᵀ x_l``,
      ``z_l = UΣ y_keep + b``; the dropped coordinates form a map ``d`` of shape
      ``(B, C_in − C_out, H, W)`` with inverse density ``p(d | z)`` over the whole map:
      ``"normal"`` (``N(0, I)``), ``"diagonal"`` (learned mean and scale per channel) or
      ``"conditional"`` (mean and log-scale predicted from the output map ``z`` by a small
      convolutional network, as in the paper's models, DESIGN.md §4).
      ``V = H·W·Σ log σ + log p(d | z)``, exact; the inverse samples ``d`` (or takes its mean).
    * ``C_in < C_out``: :class:`PatchLinearGenerative`. ``z_l = U(ΣVᵀx_l, u_l) + b`` with noise
      ``u_l`` (normal or uniform, learned scale); ``V = H·W·Σ log σ − Σ_l log q(u_l)``, a bound;
      the inverse drops ``u``.

    ``bias``, ``noise`` and ``rotation`` (``"householder"``, ``"cayley"``, ``"exp"``) configure the
    Linear. ``parametrization="lu"`` uses the rotation-free
    :class:`~survae_flowify.layers.lu_linear.LuLinear` instead (``y = x₂ + C x₁`` dropped,
    ``z = T x₁ + B y + b``, ``V = H·W·Σ s + log p(d | z)``; same map densities and noise; no
    ``rotation``); ``"gram"`` has no basis of what is dropped and is refused. Any ``H × W`` works.

    The conditional density's network
    (:class:`~survae_flowify.distributions.conditional.ConditionalNormalDensity`) is
    ``Conv_a(C_out, h) → GELU → Conv_b(h, 2M)``, ``M = C_in − C_out``, with
    ``density_net="a-b"``: ``"3x3-1x1"`` by default, ``"3x3-3x3"`` (the default before 2026-12)
    or ``"1x1-1x1"``; ``hidden`` is its width ``h`` (default 64). Per position it costs
    ``h·(9·C_out + 2M)`` multiply-adds with ``"3x3-1x1"``, against ``9·h·(C_out + 2M)`` with
    ``"3x3-3x3"``: the ``2M``-wide output layer, the expensive one, is 1×1 (FCONV1-MNIST's second
    convolution, ``C_in·C_out = 1536``: 18,944 against 59,904). ``hidden=None`` sets ``h = C_out``,
    a width that grows with the layer (:func:`density_width`; cheaper for narrow kernels). Measured
    with FCONV1 on Fashion-MNIST (600 Adam steps of 128 images, test bits/dim, two seeds):
    ``"3x3-3x3"`` 6.14, ``"3x3-1x1"`` 6.20 (a 0.78× training step), ``"3x3-1x1"`` with
    ``h = C_out`` 6.30 (0.74×), ``"1x1-1x1"`` with ``h = C_out`` 6.63 (one seed).

    ``context_features=k`` (reducing regime, ``inverse_density="conditional"``): the density's
    network also sees a flow context ``a`` of shape ``(B, k)``, broadcast over every position as
    ``k`` extra input channels: ``p(d | z, a)``. Every call then needs a context.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> PatchLinear:
        if cls is PatchLinear:
            in_channels = args[0] if args else kwargs.get("in_channels")
            out_channels = args[1] if len(args) > 1 else kwargs.get("out_channels")
            if isinstance(in_channels, int) and isinstance(out_channels, int):
                cls = _regime(in_channels, out_channels)
        return super().__new__(cls)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bias: bool = True,
        inverse_density: InverseDensityKind = "conditional",
        noise: NoiseKind = "normal",
        rotation: RotationKind = "householder",
        hidden: int | None = DEFAULT_DENSITY_WIDTH,
        context_features: int | None = None,
        density_net: MapNetKind = DEFAULT_DENSITY_NET,
        parametrization: KernelParametrization = "svd",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            _checks.positive_int("PatchLinear", name, value)
        _check_linear_options("PatchLinear", bias, inverse_density, noise, rotation, hidden, density_net,
                              parametrization)
        check_context_features("PatchLinear", context_features, inverse_density)
        # The Linear's own (vector) inverse density stays parameter-free: the dropped
        # coordinates get a density over the whole map instead.
        linear = Linear(in_channels, out_channels, bias=bias, noise=noise, inverse_density="normal",
                        parametrization=parametrization,
                        **({"rotation": rotation} if parametrization == "svd" else {}))
        self._adopt(linear, inverse_density, hidden=hidden, context_features=context_features,
                    density_net=density_net)

    def _adopt(self, linear: Linear, inverse_density: InverseDensityKind, *, hidden: int | None,
               context_features: int | None, density_net: MapNetKind) -> None:
        """Use ``linear`` for the patches; build the map density of the dropped coordinates."""
        if not isinstance(linear, (SvdLinear, LuLinear)):  # forward_parts: a basis of what is dropped
            raise TypeError(f"{type(self).__name__}: needs a Linear with parametrization='svd' or "
                            f"'lu', got {type(linear).__name__}")
        if _regime(linear.in_features, linear.out_features) is not type(self):
            raise ValueError(
                f"{type(self).__name__}: a Linear({linear.in_features}, {linear.out_features}) "
                "belongs to another regime"
            )
        self.in_channels, self.out_channels = linear.in_features, linear.out_features
        self.linear = linear
        drop = self.in_channels - self.out_channels
        if context_features is not None and drop <= 0:
            raise ValueError(
                f"{type(self).__name__}({self.in_channels}, {self.out_channels}): context_features is "
                "used by the conditional inverse density of a reducing kernel (in > out channels); "
                "this kernel drops nothing"
            )
        self.context_features = context_features
        if drop > 0:
            self.inverse_density = make_inverse_density(
                inverse_density, (drop, None, None), (self.out_channels, None, None),
                hidden=density_width(hidden, self.out_channels), context_features=context_features,
                net=density_net, owner=type(self).__name__,
            )

    @classmethod
    def from_linear(
        cls,
        linear: Linear,
        *,
        inverse_density: InverseDensityKind = "conditional",
        hidden: int | None = DEFAULT_DENSITY_WIDTH,
        context_features: int | None = None,
        density_net: MapNetKind = DEFAULT_DENSITY_NET,
    ) -> PatchLinear:
        """A PatchLinear that applies the given flowified ``linear`` to every position.

        ``linear`` should have been built with ``inverse_density="normal"``: the map density
        of the dropped coordinates replaces the Linear's own.
        """
        if not isinstance(linear, Linear):
            raise TypeError(
                f"PatchLinear.from_linear: expected a survae_flowify Linear, got {type(linear).__name__}"
            )
        _checks.choice("PatchLinear.from_linear", "inverse_density", inverse_density,
                       get_args(InverseDensityKind))
        _check_density_net("PatchLinear.from_linear", hidden, density_net)
        check_context_features("PatchLinear.from_linear", context_features, inverse_density)
        self = PatchLinear.__new__(PatchLinear, linear.in_features, linear.out_features)
        Transform.__init__(self)
        self._adopt(linear, inverse_density, hidden=hidden, context_features=context_features,
                    density_net=density_net)
        return self

    def extra_repr(self) -> str:
        out = f"in_channels={self.in_channels}, out_channels={self.out_channels}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    @property
    def bounded_noise(self) -> bool:
        return bool(self.linear.bounded_noise)

    @property
    def in_shape(self) -> Shape:
        return (self.in_channels, None, None)

    @property
    def out_shape(self) -> Shape:
        return (self.out_channels, None, None)

    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight ``(C_out, C_in)``."""
        return self.linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        b, _, h, w = x.shape
        z, dropped, log_q, log_det = self.linear.forward_parts(to_rows(x))
        z_map = to_map(z, b, h, w)
        contribution = (h * w * log_det).expand(b)
        if log_q is not None:
            contribution = contribution - log_q.reshape(h * w, b).sum(0)
        if dropped is not None:
            contribution = contribution + self.inverse_density.log_prob(to_map(dropped, b, h, w), z_map,
                                                                        context)
        return z_map, contribution

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        b, _, h, w = z.shape
        dropped = None
        if self.in_channels > self.out_channels:
            density = self.inverse_density
            dropped = to_rows(density.draw(z, context, mean=mean))
        return to_map(self.linear.inverse_parts(to_rows(z), dropped), b, h, w)


class PatchLinearBijection(PatchLinear, Bijection):
    """:class:`PatchLinear` with ``C_in == C_out``: a bijection."""


class PatchLinearInference(PatchLinear, InferenceSurjection):
    """:class:`PatchLinear` with ``C_in > C_out``: an exact inference surjection."""


class PatchLinearGenerative(PatchLinear, GenerativeSurjection):
    """:class:`PatchLinear` with ``C_in < C_out``: a generative surjection (a bound)."""


class Conv2d(Sequential):
    r"""Flowified ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)`` (paper §3.2).

    The composite ``pad → unfold → kernel`` of :class:`~survae_flowify.layers.pad.Pad`,
    :class:`~survae_flowify.layers.unfold.Unfold` and :class:`PatchLinear`
    (``C·k² → out_channels``), so ``flow.breakdown`` shows the three parts. Input
    ``(B, C, H, W)``; output ``(B, out_channels, H', W')`` with ``H' = (t + H + b + p − k)/s + 1``,
    the shape of ``nn.Conv2d(C, out_channels, k, s)`` on the padded input (``t, b`` the fixed
    border, ``p`` the tiling rows).

    Contribution: the sum of the parts',
    ``V = −log q(u_pad) + ½ Σ_p log N_p − Σ_p log q(w_p) + V_kernel``; exact only when no padding
    is added, the kernels do not overlap (``stride == kernel_size``) and the kernel does not
    increase the dimension (``C·k² ≥ out_channels``). Inverse: the kernel's inverse, the mean over
    the copies of every pixel, the crop.

    :attr:`weight` ``(out, C, k, k)`` and :attr:`bias` are those of the equivalent ``nn.Conv2d``:
    under :func:`survae_flowify.noise_off` the output equals
    ``F.conv2d(F.pad(x, (l, r + q, t, b + p)), weight, bias, stride)`` (zero padding).

    Keywords: ``padding`` (the fixed noise border of :class:`~survae_flowify.layers.pad.Pad`: an
    int, ``(pad_h, pad_w)`` as in ``nn.Conv2d``, or ``(left, right, top, bottom)``), ``noise``
    (``"normal"`` or ``"uniform"``, for padding, unfolding and an increasing kernel),
    ``inverse_density`` of a reducing kernel (``"conditional"`` by default, as in the paper's
    models; ``"normal"``, ``"diagonal"``), ``image_size`` (the input ``(H, W)``; needed by the
    inverse when ``stride > 1``, because the padding depends on it), ``rotation`` of the
    Linear's ``U`` and ``V`` (``"householder"``, ``"cayley"``, ``"exp"``), ``hidden`` and
    ``density_net`` (width and kernel sizes of the conditional network, see :class:`PatchLinear`;
    ``density_net="3x3-3x3"`` is the network before 2026-12), ``parametrization`` of the kernel
    (``"svd"``, default, or the rotation-free ``"lu"``; see :class:`PatchLinear`), ``context_features``
    (a reducing kernel's conditional density also sees a flow context ``(B, k)``, broadcast over
    positions as extra channels; see :class:`PatchLinear`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        padding: int | tuple[int, ...] = 0,
        bias: bool = True,
        noise: NoiseKind = "normal",
        inverse_density: InverseDensityKind = "conditional",
        image_size: int | tuple[int, int] | None = None,
        rotation: RotationKind = "householder",
        hidden: int | None = DEFAULT_DENSITY_WIDTH,
        context_features: int | None = None,
        density_net: MapNetKind = DEFAULT_DENSITY_NET,
        parametrization: KernelParametrization = "svd",
    ) -> None:
        super(Sequential, self).__init__()  # named parts instead of Sequential's numbered ones
        k, s = check_kernel_stride("Conv2d", kernel_size, stride)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            _checks.positive_int("Conv2d", name, value)
        _check_linear_options("Conv2d", bias, inverse_density, noise, rotation, hidden, density_net,
                              parametrization)
        check_context_features("Conv2d", context_features, inverse_density)
        if context_features is not None and in_channels * kernel_size**2 <= out_channels:
            raise ValueError(
                f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size}): context_features "
                "is used by the conditional inverse density of a reducing kernel "
                "(in_channels·kernel_size² > out_channels); this kernel drops nothing"
            )
        self.context_features = context_features
        self.kernel_size, self.stride = k, s
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = check_image_size("Conv2d", image_size)
        self.padding = check_padding("Conv2d", padding)
        self.add_module("pad", Pad(k, s, noise=noise, in_channels=in_channels, image_size=image_size,
                                   padding=self.padding))
        padded = None if self.image_size is None else self.pad.padded_size(self.image_size)
        self.add_module("unfold", Unfold(k, s, noise=noise, in_channels=in_channels, image_size=padded))
        self.add_module("kernel", PatchLinear(in_channels * k * k, out_channels, bias=bias, noise=noise,
                                              inverse_density=inverse_density, rotation=rotation,
                                              hidden=hidden, context_features=context_features,
                                              density_net=density_net, parametrization=parametrization))

    def extra_repr(self) -> str:
        out = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            out += f", padding={self.padding}"
        return out if self.image_size is None else out + f", image_size={self.image_size}"

    @property
    def out_shape(self) -> Shape:
        if self.image_size is None:
            return (self.out_channels, None, None)
        return (self.out_channels, *self.output_size(self.image_size))

    def inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool = False) -> Tensor:
        """The parts' inverses in reverse order; ``z`` is checked against :attr:`out_shape` first."""
        check_input(self, z, self.out_shape, what="z")
        return super().inverse(z, context, mean=mean)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')`` for an input of size ``(H, W)`` (after padding)."""
        return self.unfold.output_size(self.pad.padded_size(tuple(image_size)))  # type: ignore[arg-type]

    @property
    def weight(self) -> Tensor:
        """The equivalent ``nn.Conv2d`` weight, ``(out_channels, in_channels, k, k)``."""
        k = self.kernel_size
        return self.kernel.weight.reshape(self.out_channels, self.in_channels, k, k)

    @property
    def bias(self) -> Tensor | None:
        return self.kernel.bias

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **kwargs: Any) -> Conv2d:
        """A flowified copy of a trained ``nn.Conv2d`` with the same weight and bias.

        Supported: square kernels and strides with ``stride ≤ kernel_size``, zero padding (it
        becomes the noise border of :class:`~survae_flowify.layers.pad.Pad`, zeros with the noise
        off; ``"same"`` as ``nn.Conv2d`` splits it), no dilation, one group. ``kwargs`` go to
        :class:`Conv2d` (``noise``, ``inverse_density``, ``image_size``, ``padding`` to replace
        the conv's own border, ...).
        """
        check_plain_conv(conv)
        k, s = conv.kernel_size[0], conv.stride[0]
        kwargs.setdefault("padding", conv_padding(conv))
        layer = cls(conv.in_channels, conv.out_channels, k, s, bias=conv.bias is not None, **kwargs)
        layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        dense = nn.Linear(conv.in_channels * k * k, conv.out_channels, bias=conv.bias is not None)
        dense = dense.to(conv.weight.device, conv.weight.dtype)
        with torch.no_grad():
            dense.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                dense.bias.copy_(conv.bias)
        kernel = layer.kernel.linear
        kind = {"rotation": kernel.U.kind} if isinstance(kernel, SvdLinear) else {}
        linear = Linear.from_linear(dense, inverse_density="normal", noise=layer.unfold.kind,
                                    parametrization=kernel.parametrization, **kind)
        # Keep the kernel module (and its map density); load the fitted Linear's state into it.
        layer.kernel.linear.load_state_dict(linear.state_dict())
        return layer


def conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """The zero border of ``conv`` as ``(left, right, top, bottom)`` (``"same"`` split as torch
    splits it: the odd entry goes right/bottom)."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        (th, tw) = (d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = conv.padding  # type: ignore[misc]
    return (pw, pw, ph, ph)


def check_plain_conv(conv: nn.Module) -> None:
    """``TypeError``/``ValueError`` unless ``conv`` is an ``nn.Conv2d`` that flowifies (zero
    padding, no dilation or groups); shared by :meth:`Conv2d.from_conv2d` and
    :func:`~survae_flowify.flowify`."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"Conv2d.from_conv2d: expected a torch.nn.Conv2d, got {type(conv).__name__}")
    problems = []
    if conv.padding_mode != "zeros" and conv.padding != "valid" and any(conv_padding(conv)):
        problems.append(f"padding_mode={conv.padding_mode!r} (use 'zeros': Pad fills the border "
                        "with noise that is zeros when the noise is off)")
    if any(d != 1 for d in conv.dilation):
        problems.append(f"dilation={conv.dilation} (use 1)")
    if conv.groups != 1:
        problems.append(f"groups={conv.groups} (use 1)")
    if conv.kernel_size[0] != conv.kernel_size[1]:
        problems.append(f"kernel_size={conv.kernel_size} (must be square)")
    if conv.stride[0] != conv.stride[1]:
        problems.append(f"stride={conv.stride} (must be square)")
    elif conv.stride[0] > conv.kernel_size[0]:
        problems.append(f"stride={conv.stride} larger than kernel_size={conv.kernel_size} skips pixels")
    if problems:
        raise ValueError(f"Conv2d.from_conv2d: cannot flowify {conv}: " + "; ".join(problems))
