"""``Flow(base, transform)``: a transform pushed onto a base distribution becomes a density."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.sequential import entry_layer
from survae_flowify.algebra.transform import Transform, check_input

__all__ = ["AugmentationGap", "Breakdown", "Flow"]


@dataclass(frozen=True)
class AugmentationGap:
    """Estimate of the augmentation gap ``log p(x) − ELBO`` per sample.

    ``gap = iw_bound − elbo`` with both computed from the same ``num_samples`` draws, so the
    gap is non-negative and grows toward the true gap as ``num_samples`` grows. When
    ``bounded_support`` is true (some layer's noise is uniform), ``iw_bound`` converges to the
    likelihood restricted to the noise support, so ``gap`` underestimates the full gap.
    """

    gap: Tensor
    elbo: Tensor
    iw_bound: Tensor
    num_samples: int
    bounded_support: bool

    def __str__(self) -> str:
        text = (
            f"augmentation gap (K={self.num_samples}): mean {self.gap.mean().item():.4f} nats "
            f"(ELBO {self.elbo.mean().item():.4f}, IW bound {self.iw_bound.mean().item():.4f})"
        )
        if self.bounded_support:
            text += (
                "; noise of bounded support (uniform): the IW bound converges to the likelihood"
                " restricted to that support, so this is a lower estimate of the whole gap"
            )
        return text


@dataclass(frozen=True)
class Breakdown:
    """Per-layer likelihood contributions: rows of (name, class, kind, mean, output shape)."""

    rows: tuple[tuple[str, str, str, float, tuple[int, ...]], ...]
    total: float

    def __str__(self) -> str:
        header = ("layer", "class", "kind", "mean contribution [nats]", "output shape")
        body = [(n, c, k, f"{v:+.4f}", str(s)) for n, c, k, v, s in self.rows]
        body.append(("total", "", "", f"{self.total:+.4f}", ""))
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(5)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [line.format(*header), "  ".join("-" * w for w in widths)]
        out += [line.format(*r) for r in body]
        return "\n".join(out)


class Flow(nn.Module):
    """The density ``p(x)`` defined by ``z = transform(x)`` with ``z ~ base``.

    ``log p(x) ≥ log p_base(z) + V(x, z)`` with equality when :attr:`exact`.
    ``base`` is :class:`StandardNormal`, :class:`DiagonalNormal` or any module with
    ``log_prob(z) -> (B,)`` and ``sample(n)``.

    Every call checks its input once, at the entry (shape, dtype and device against the flow's
    parameters, finiteness); what the layers compute inside is not checked again, so a
    numerical blow-up shows as a non-finite log-probability, not as an error.
    """

    def __init__(self, base: nn.Module, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"Flow: transform must be a survae_flowify Transform, got {type(transform).__name__}"
            )
        if not (hasattr(base, "log_prob") and hasattr(base, "sample")):
            raise TypeError(f"Flow: base must offer log_prob and sample, got {type(base).__name__}")
        self.base = base
        self.transform = transform

    @property
    def exact(self) -> bool:
        """True when every layer's contribution is exact (no generative surjection)."""
        return self.transform.exact

    def _check_x(self, x: Tensor) -> None:
        """The input check of every call, once, naming the layer that takes ``x``."""
        if not _state.validation_enabled():
            return
        entry = entry_layer(self.transform)
        check_input(entry, x, entry.in_shape, what="x", integer_ok=entry.accepts_integer,
                    reference=self)

    def _elbo(self, x: Tensor) -> Tensor:
        z, contribution = self.transform(x)
        return self.base.log_prob(z) + contribution

    def _elbo_samples(self, x: Tensor, num_samples: int, chunk: int) -> Tensor:
        """ELBO terms for ``num_samples`` noise draws per datum: shape ``(K, B)``."""
        out = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])
            out.append(self._elbo(xs).view(k, x.shape[0]))
        return torch.cat(out, 0)

    def log_prob(
        self, x: Tensor, *, num_samples: int | None = None, chunk_size: int = 64
    ) -> Tensor:
        """``log p(x)`` per sample, shape ``(B,)``.

        Exact when :attr:`exact`. Otherwise the single-sample ELBO, or with
        ``num_samples=K`` the importance-weighted bound ``log (1/K) Σ_k exp(ELBO_k)``, computed
        ``chunk_size`` draws at a time.
        """
        if num_samples is not None:
            _checks.positive_int("Flow.log_prob", "num_samples", num_samples)
        _checks.positive_int("Flow.log_prob", "chunk_size", chunk_size)
        self._check_x(x)
        with _state.inside_call():
            if num_samples is None or not self.transform.stochastic_forward:
                return self._elbo(x)  # without noise every draw would be the same
            terms = self._elbo_samples(x, num_samples, chunk_size)
        return torch.logsumexp(terms, 0) - math.log(num_samples)

    def augmentation_gap(
        self, x: Tensor, *, num_samples: int, chunk_size: int = 64
    ) -> AugmentationGap:
        """Estimated gap between the IW bound and the ELBO, per sample (see :class:`AugmentationGap`)."""
        k = _checks.positive_int("Flow.augmentation_gap", "num_samples", num_samples)
        _checks.positive_int("Flow.augmentation_gap", "chunk_size", chunk_size)
        self._check_x(x)
        with _state.inside_call():
            terms = self._elbo_samples(x, k, chunk_size)
        elbo = terms.mean(0)
        iw = torch.logsumexp(terms, 0) - math.log(k)
        return AugmentationGap(iw - elbo, elbo, iw, k, bool(self.transform.bounded_noise))

    def bits_per_dim(self, x: Tensor, *, num_samples: int | None = None) -> Tensor:
        """``−log p(x) / (D ln 2)`` per sample, ``D`` the number of data dimensions."""
        d = math.prod(x.shape[1:])
        return -self.log_prob(x, num_samples=num_samples) / (d * math.log(2))

    def sample(self, n: int, *, mean: bool = False) -> Tensor:
        """``n`` samples. ``mean=True`` inverts every stochastic inverse by its mean (appendix E)."""
        _checks.positive_int("Flow.sample", "n", n)
        _checks.boolean("Flow.sample", "mean", mean)
        with _state.inside_call():  # z comes from the base, not from a user: no entry checks
            z = self.base.sample(n)
            return self.transform.inverse(z, mean=mean)

    def reconstruct(self, x: Tensor, *, mean: bool = True) -> Tensor:
        """``inverse(forward(x))``: exact for bijections, lossy through inference surjections."""
        _checks.boolean("Flow.reconstruct", "mean", mean)
        self._check_x(x)
        with _state.inside_call():
            z, _ = self.transform(x)
            return self.transform.inverse(z, mean=mean)

    @torch.no_grad()
    def breakdown(self, x: Tensor) -> Breakdown:
        """Where the nats go: each layer's mean contribution and the base term.

        ``print(flow.breakdown(x))`` prints a table; the total equals ``log_prob(x).mean()``
        (for one noise draw). Rows are named by the layers' paths in the transform (numbers,
        or the names given to :class:`Sequential`). For an empty batch every mean is NaN (a mean
        over no sample, as ``torch.mean`` gives), while names and output shapes are still shown.
        """
        self._check_x(x)
        rows = []
        total = 0.0
        z = x
        with _state.inside_call():
            for name, layer, z, c in self.transform.trace(x):
                kind = "exact" if layer.exact else "bound"
                value = float(c.mean())
                total += value
                rows.append((name or type(layer).__name__, type(layer).__name__, kind, value,
                             tuple(z.shape[1:])))
            base = float(self.base.log_prob(z).mean())
        rows.append(("base", type(self.base).__name__, "exact", base, tuple(z.shape[1:])))
        return Breakdown(tuple(rows), total + base)
