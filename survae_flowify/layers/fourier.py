r"""The Fourier-flowified convolution (paper appendix H, DESIGN.md §12).

A circular convolution of a `C_in × H × W` image with a full-size kernel $w$ (`C_out × C_in × H × W`),

$$ y_o[m, n] = \sum_{i, a, b} w_{oi}[a, b]\; x_i[(m + a) \bmod H,\ (n + b) \bmod W] + b_o , $$

(``nn.Conv2d`` with a full-size kernel and circular padding ``(0, W−1, 0, H−1)``) is diagonalised
by the 2-D Fourier transform: with $X = \mathcal F x$ (orthonormal ``rfft2``) every frequency
$f = (u, v)$ mixes only channels, $Y(f) = M(f)\, X(f)$, where
$M(f) = \sum_{a, b} w[a, b]\, e^{2\pi i (ua/H + vb/W)}$ is a `C_out × C_in` complex matrix.

**Parametrisation.** Each independent frequency holds $M(f) = U(f)\,\Sigma(f)\,V(f)^H$ with
$r = \min(C_{in}, C_{out})$ singular values $\sigma = \exp(\log \sigma) > 0$:

* the $P$ frequencies that represent a conjugate pair $\{f, -f\}$: unitary $U \in U(C_{out})$,
  $V \in U(C_{in})$ from skew-Hermitian $A$ (``n²`` real numbers each, the dimension of
  $\mathfrak u(n)$);
* the $S \le 4$ self-conjugate ones (DC, and the Nyquist row, column and corner of even sizes):
  real rotations $U, V \in SO(n)$ from real skew-symmetric $A$, so $M(f)$ is real there;
* the ``rfft2`` grid also stores some conjugates (in the columns $v = 0$ and $v = W/2$): they
  get $\overline{M(f)}$. Hence $M(-f) = \overline{M(f)}$ everywhere, the output's spectrum stays
  Hermitian and the output — and the kernel — are real (:mod:`survae_flowify.layers._spectrum`).

The map from $A$ to the group (``rotation=``): ``"cayley"`` (default),
$U = (I - A)(I + A)^{-1}$, one batched LU solve for all frequencies (and both factors when the
channels are equal); exactly unitary at any parameter value; it reaches every unitary without
eigenvalue $-1$, all a layer trained from the identity needs. ``"exp"``, $U = \exp(A)$, the
paper's Lie-algebra map (appendix G), is onto $U(n)$ but its backward pass is costly: a
forward+backward of a 16-channel layer on 8×8 images (batch 64, one thread) took 69 ms with
``"exp"`` against 17 ms with ``"cayley"``. Both start at $U = V = I$, $\sigma = 1$: the identity.

**Real coordinates and the contribution.** The real coordinates of the half-spectrum — $X(s)$
at the self-conjugate frequencies, $\sqrt2\,\mathrm{Re}\,X(p)$ and $\sqrt2\,\mathrm{Im}\,X(p)$ at
the pair representatives — are an orthogonal change of coordinates of $x$ (Parseval:
$\lVert x\rVert^2 = \sum_s X(s)^2 + 2\sum_p \lvert X(p)\rvert^2$). In them a complex $M$ acts
as the real matrix
$\begin{pmatrix}\mathrm{Re}\,M & -\mathrm{Im}\,M\\ \mathrm{Im}\,M & \mathrm{Re}\,M\end{pmatrix}$,
whose singular values are those of $M$, each twice. So the log-volume of the map is

$$ L = \sum_{s} \sum_{j} \log \sigma_j(s) + 2 \sum_{p} \sum_{j} \log \sigma_j(p) $$

(the orthonormal FFTs contribute nothing; unnormalised ones would contribute $\pm\frac12 \log N$
each, cancelling). Three regimes, as :class:`~survae_flowify.layers.linear.Linear`:

* `C_in == C_out` — :class:`SquareFourierConv2d`, a bijection; contribution $L$.
* `C_in > C_out` — :class:`ReducingFourierConv2d`, exact: per frequency $(Y, D) = V^H X$,
  $Z = U \Sigma Y$. The dropped components $D(f) \in \mathbb C^{C_{in} - C_{out}}$ are Hermitian
  like $X$, so $d = \mathcal F^{-1} D$ is a real map `(C_in − C_out, H, W)`, an orthogonal image
  of their real coordinates: $x \mapsto (z, d)$ has log-volume $L$ and the contribution is
  $L + \log p(d \mid z)$. The inverse samples $d$, so ``forward(inverse(z)) = z``.
* `C_in < C_out` — :class:`IncreasingFourierConv2d`, a bound: a real noise map $n$ of shape
  `(C_out − C_in, H, W)` (normal or uniform, learned scale) fills the new directions,
  $Z = U\,[\Sigma V^H X;\ \mathcal F n]$; contribution $L - \log q(n)$; the inverse drops $n$.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._cache import ParameterCache
from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
    Shape,
    Transform,
    check_context,
)
from survae_flowify.distributions.conditional import (
    InverseDensityKind,
    check_context_features,
    make_inverse_density,
)
from survae_flowify.distributions.noise import Noise, NoiseKind, check_noise
from survae_flowify.layers._spectrum import (
    Layout,
    complex_dtype,
    gather,
    maybe_parameter,
    skew_hermitian,
    skew_symmetric,
    to_group,
    upper_positions,
)
from survae_flowify.layers.pad import check_image_size

__all__ = [
    "FourierConv2d",
    "IncreasingFourierConv2d",
    "ReducingFourierConv2d",
    "SquareFourierConv2d",
]

_NAME = "FourierConv2d"
FourierRotation = Literal["cayley", "exp"]
ROTATIONS: tuple[str, ...] = get_args(FourierRotation)


def _regime(in_channels: int, out_channels: int) -> type[FourierConv2d]:
    if in_channels == out_channels:
        return SquareFourierConv2d
    return ReducingFourierConv2d if in_channels > out_channels else IncreasingFourierConv2d


def _mix(matrices: Tensor, spectrum: Tensor) -> Tensor:
    """``(H, W', O, I)`` per-frequency matrices times ``(B, I, H, W')`` spectra → ``(B, O, H, W')``."""
    return torch.einsum("hwoi,bihw->bohw", matrices, spectrum)


class FourierConv2d(ParameterCache, Transform):
    r"""Flowified circular convolution with full-size kernels, parametrised in the Fourier domain
    (appendix H); see the module docstring for the math.

    Args:
        in_channels, out_channels: input ``(B, C_in, H, W)``, output ``(B, C_out, H, W)``.
        image_size: ``H`` or ``(H, W)``, required: the frequencies are the parameters.
        bias: learn a per-channel bias ``b`` added to the output (it moves only the DC component).
        inverse_density: for ``C_in > C_out``, the density of the dropped map ``d``
            (``(C_in − C_out, H, W)``): ``"conditional"`` (default: mean and scale predicted
            from ``z`` by a small conv network), ``"diagonal"`` (learned per entry) or ``"normal"``.
        noise: for ``C_in < C_out``, the augmenting noise map: ``"normal"`` or ``"uniform"``.
        hidden: width of the conditional density's network.
        rotation: the map from the Lie algebra to the unitary factors: ``"cayley"`` (default,
            fast) or ``"exp"`` (the paper's, onto); see the module docstring.
        context_features: for a reducing layer with the conditional density, the size ``k`` of a
            flow context ``(B, k)`` its network also sees (broadcast as ``k`` extra channels).

    ``FourierConv2d(...)`` returns the class of its regime (:class:`SquareFourierConv2d`,
    :class:`ReducingFourierConv2d`, :class:`IncreasingFourierConv2d`). :attr:`weight` is the
    spatial kernel ``w`` (``(C_out, C_in, H, W)``): under :func:`survae_flowify.noise_off` the
    output equals ``F.conv2d(F.pad(x, (0, W−1, 0, H−1), mode="circular"), weight, bias)``.
    :meth:`locality_penalty` is the appendix's auxiliary loss that pulls ``w`` into a ``k × k``
    window. Every option is validated whatever the regime.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> FourierConv2d:
        if cls is FourierConv2d:
            names = ("in_channels", "out_channels")
            given = {**dict(zip(names, args)), **{n: kwargs[n] for n in names if n in kwargs}}
            if len(given) < 2:
                missing = ", ".join(n for n in names if n not in given)
                raise TypeError(f"{_NAME}: missing argument(s) {missing}")
            cls = _regime(*(_checks.positive_int(_NAME, n, given[n]) for n in names))
        return super().__new__(cls)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        image_size: int | tuple[int, int],
        bias: bool = True,
        inverse_density: InverseDensityKind = "conditional",
        noise: NoiseKind = "normal",
        hidden: int = 64,
        rotation: FourierRotation = "cayley",
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _checks.positive_int(_NAME, "in_channels", in_channels)
        self.out_channels = _checks.positive_int(_NAME, "out_channels", out_channels)
        if _regime(self.in_channels, self.out_channels) is not type(self):
            raise ValueError(f"{type(self).__name__}: channels {in_channels} → {out_channels} belong "
                             f"to {_regime(self.in_channels, self.out_channels).__name__}")
        size = check_image_size(_NAME, image_size)
        if size is None:
            raise ValueError(f"{_NAME}: image_size must be an int or (H, W) of positive ints, got None")
        self.image_size: tuple[int, int] = size
        _checks.boolean(_NAME, "bias", bias)
        self.inverse_density_kind = _checks.choice(_NAME, "inverse_density", inverse_density,
                                                   get_args(InverseDensityKind))
        self.noise_kind = check_noise(_NAME, noise)
        self.hidden = _checks.positive_int(_NAME, "hidden", hidden)
        self.rotation = _checks.choice(_NAME, "rotation", rotation, ROTATIONS)
        self.context_features = check_context_features(_NAME, context_features, inverse_density)
        if self.context_features is not None and self.in_channels <= self.out_channels:
            raise ValueError(
                f"{_NAME}({in_channels}, {out_channels}): context_features is used by the "
                "conditional inverse density of a reducing layer (in_channels > out_channels); "
                "this layer drops nothing"
            )
        self.rank = min(self.in_channels, self.out_channels)
        self.layout = Layout.of(*self.image_size)
        self._register_parameters(bias)
        self._init_regime()

    def _register_parameters(self, bias: bool) -> None:
        """Per pair: ``U``, ``V`` (``n²`` numbers each) and ``log σ``; per self-conjugate frequency:
        real ``U``, ``V`` (``n(n−1)/2``) and ``log σ``; all zero, the identity map."""
        p, s, co, ci = self.layout.pairs, self.layout.self_conjugate, self.out_channels, self.in_channels
        # Parameters that would hold no number (1-channel rotations, images without complex
        # pairs) are registered as None: an empty parameter never gets a gradient.
        for name, shape in (("u_pairs", (p, co, co)), ("v_pairs", (p, ci, ci)),
                            ("u_real", (s, co * (co - 1) // 2)), ("v_real", (s, ci * (ci - 1) // 2)),
                            ("log_sigma_pairs", (p, self.rank))):
            self.register_parameter(name, maybe_parameter(*shape))
        self.log_sigma_real = nn.Parameter(torch.zeros(s, self.rank))
        self.bias_param = nn.Parameter(torch.zeros(co)) if bias else None
        # Constants (they follow .to() and .double(); rebuilt from the sizes, never saved).
        self.register_buffer("_grid_index", self.layout.index, persistent=False)
        self.register_buffer("_upper_out", upper_positions(co), persistent=False)
        self.register_buffer("_upper_in", upper_positions(ci), persistent=False)

    def _init_regime(self) -> None:
        pass

    def extra_repr(self) -> str:
        out = f"{self.in_channels}, {self.out_channels}, image_size={self.image_size}"
        if self.rotation != "cayley":
            out += f", rotation={self.rotation!r}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    @property
    def in_shape(self) -> Shape:
        return (self.in_channels, *self.image_size)

    @property
    def out_shape(self) -> Shape:
        return (self.out_channels, *self.image_size)

    # ----------------------------------------------------------------- per-frequency factors
    def _factor_parameters(self) -> list[Tensor]:
        return [t for t in (self.u_pairs, self.v_pairs, self.u_real, self.v_real, self.log_sigma_pairs,
                            self.log_sigma_real) if t is not None]

    def _factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``U (F, C_out, C_out)``, ``V (F, C_in, C_in)`` complex and ``σ (F, r)`` real for the
        ``F = P + S`` independent frequencies, pairs first (the self-conjugate ``U``, ``V`` real).

        A batched solve (or exponential) per call in training; in eval mode built once and reused
        while the parameters are unchanged (:mod:`survae_flowify._cache`)."""
        return self._derived("factors", self._factor_parameters(), self._build_factors,
                             extra=self.rotation)

    def _build_factors(self) -> tuple[Tensor, Tensor, Tensor]:
        p, s = self.layout.pairs, self.layout.self_conjugate
        co, ci = self.out_channels, self.in_channels
        like = self.log_sigma_real
        a_u = torch.cat([skew_hermitian(self.u_pairs, p, co, like),
                         skew_symmetric(self.u_real, self._upper_out, s, co, like)])
        a_v = torch.cat([skew_hermitian(self.v_pairs, p, ci, like),
                         skew_symmetric(self.v_real, self._upper_in, s, ci, like)])
        if co == ci:  # one batched solve (or exponential) for both factors
            u, v = to_group(torch.cat([a_u, a_v]), self.rotation).split(p + s)
        else:
            u, v = to_group(a_u, self.rotation), to_group(a_v, self.rotation)
        log_sigma = self.log_sigma_real if self.log_sigma_pairs is None else \
            torch.cat([self.log_sigma_pairs, self.log_sigma_real])
        return u, v, torch.exp(log_sigma)

    def _on_grid(self, per_frequency: Tensor) -> Tensor:
        return gather(per_frequency, self._grid_index, *self.image_size)

    def _log_det(self) -> Tensor:
        """``L = Σ_s Σ_j log σ_j(s) + 2 Σ_p Σ_j log σ_j(p)`` (pairs count twice: two real dimensions
        per complex one)."""
        total = self.log_sigma_real.sum()
        return total if self.log_sigma_pairs is None else total + 2 * self.log_sigma_pairs.sum()

    def _spectrum_matrices(self) -> Tensor:
        """``M(f) = U Σ V^H`` restricted to the ``r`` singular directions, on the rfft2 grid
        ``(H, ⌊W/2⌋+1, C_out, C_in)``."""
        def build() -> Tensor:
            u, v, sigma = self._factors()
            r = self.rank
            return self._on_grid((u[..., :r] * sigma[:, None, :].to(u.dtype)) @ v[..., :r].mH)

        return self._derived("spectrum", self._factor_parameters(), build, extra=self.rotation)

    @property
    def weight(self) -> Tensor:
        r"""The spatial kernel $w$ ``(C_out, C_in, H, W)`` of the circular convolution: the
        unnormalised inverse FFT of $\overline{M}$, real by the Hermitian symmetry."""
        m = self._spectrum_matrices().permute(2, 3, 0, 1)
        return torch.fft.irfft2(m.conj(), s=self.image_size)

    @property
    def bias(self) -> Tensor | None:
        return self.bias_param

    def _add_bias(self, z: Tensor) -> Tensor:
        return z if self.bias_param is None else z + self.bias_param.to(z.dtype)[:, None, None]

    def _sub_bias(self, z: Tensor) -> Tensor:
        return z if self.bias_param is None else z - self.bias_param.to(z.dtype)[:, None, None]

    # An empty batch is answered without the FFT: MKL refuses a transform of zero signals.
    def _to_spectrum(self, x: Tensor) -> Tensor:
        if x.shape[0] == 0:
            h, w = self.image_size
            return x.new_zeros(0, x.shape[1], h, w // 2 + 1, dtype=complex_dtype(x))
        return torch.fft.rfft2(x, norm="ortho")

    def _to_image(self, spectrum: Tensor) -> Tensor:
        if spectrum.shape[0] == 0:
            return spectrum.real.new_zeros(0, spectrum.shape[1], *self.image_size)
        return torch.fft.irfft2(spectrum, s=self.image_size, norm="ortho")

    # ----------------------------------------------------------------- the auxiliary loss
    def window(self, kernel_size: int) -> Tensor:
        """The ``(H, W)`` boolean mask of the offsets ``−⌊(k−1)/2⌋ … ⌊k/2⌋`` (mod ``H``, ``W``)
        of a ``k × k`` kernel: where ``nn.Conv2d(k, padding="same", padding_mode="circular")``
        has its weights."""
        h, w = self.image_size
        k = _checks.integer(f"{_NAME}.locality_penalty", "kernel_size", kernel_size, minimum=1,
                            maximum=min(h, w))
        offsets = torch.arange(k) - (k - 1) // 2
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[(offsets % h)[:, None], (offsets % w)[None, :]] = True
        return mask

    def locality_penalty(self, kernel_size: int) -> Tensor:
        r"""``Σ w[o, i, a, b]²`` over the offsets outside the ``k × k`` :meth:`window` (a scalar):
        the appendix's auxiliary loss; add ``λ·penalty`` to the training loss. At zero the layer is
        a ``k × k`` circular convolution."""
        outside = ~self.window(kernel_size).to(self.log_sigma_real.device)
        return self.weight[..., outside].square().sum()


class SquareFourierConv2d(FourierConv2d, Bijection):
    """``C_in == C_out``: ``Z(f) = M(f) X(f)``; contribution ``L``; inverse ``X = V Σ⁻¹ U^H Z``."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self._to_image(_mix(self._spectrum_matrices(), self._to_spectrum(x)))
        return self._add_bias(z), self._log_det().to(x.dtype).expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        u, v, sigma = self._factors()
        inv = self._on_grid((v / sigma[:, None, :].to(v.dtype)) @ u.mH)
        return self._to_image(_mix(inv, self._to_spectrum(self._sub_bias(z))))


class ReducingFourierConv2d(FourierConv2d, InferenceSurjection):
    """``C_in > C_out``: exact; the dropped map ``d = F⁻¹(V[:, r:]^H X)`` gets ``p(d | z)``."""

    def _init_regime(self) -> None:
        drop = self.in_channels - self.out_channels
        self.inverse_density = make_inverse_density(
            self.inverse_density_kind, (drop, *self.image_size),  # type: ignore[arg-type]
            (self.out_channels, *self.image_size), hidden=self.hidden,
            context_features=self.context_features, owner=_NAME)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        u, v, sigma = self._factors()
        r = self.rank
        keep = (u * sigma[:, None, :].to(u.dtype)) @ v[..., :r].mH
        # One product gives both the kept output and the dropped components.
        both = self._to_image(_mix(self._on_grid(torch.cat([keep, v[..., r:].mH], dim=1)),
                                   self._to_spectrum(x)))
        z, dropped = self._add_bias(both[:, :r]), both[:, r:]
        log_det = self._log_det().to(x.dtype)
        return z, log_det + self.inverse_density.log_prob(dropped, z, context)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        dropped = self.inverse_density.draw(z, context, mean=mean)
        u, v, sigma = self._factors()
        r = self.rank
        inv = torch.cat([(v[..., :r] / sigma[:, None, :].to(v.dtype)) @ u.mH, v[..., r:]], dim=2)
        both = torch.cat([self._sub_bias(z), dropped.to(z.dtype)], dim=1)
        return self._to_image(_mix(self._on_grid(inv), self._to_spectrum(both)))


class IncreasingFourierConv2d(FourierConv2d, GenerativeSurjection):
    """``C_in < C_out``: a bound; a noise map ``n`` fills the new directions, ``Z = U[ΣV^H X; F n]``."""

    def _init_regime(self) -> None:
        self.noise = Noise(self.noise_kind)

    @property
    def bounded_noise(self) -> bool:
        return self.noise.bounded

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = x.shape[0]
        n, log_q = self.noise.sample((b, self.out_channels - self.in_channels, *self.image_size), x)
        u, v, sigma = self._factors()
        r = self.rank
        keep = (u[..., :r] * sigma[:, None, :].to(u.dtype)) @ v.mH
        mats = self._on_grid(torch.cat([keep, u[..., r:]], dim=2))
        z = self._to_image(_mix(mats, self._to_spectrum(torch.cat([x, n], dim=1))))
        return self._add_bias(z), self._log_det().to(x.dtype) - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        u, v, sigma = self._factors()
        r = self.rank
        inv = self._on_grid((v / sigma[:, None, :].to(v.dtype)) @ u[..., :r].mH)
        return self._to_image(_mix(inv, self._to_spectrum(self._sub_bias(z))))
