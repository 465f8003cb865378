"""``Flow(base, transform)``: a transform pushed onto a base distribution becomes a density."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.sequential import entry_layer
from survae_flowify.algebra.transform import Transform, check_context, check_input

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
    r"""The density ``p(x)`` defined by ``z = transform(x)`` with ``z ~ base``; conditional on a
    context ``a`` when some part takes one.

    ``log p(x | a) ≥ log p_base(z | e) + V(x, z | e)`` with ``e = embedding(a)`` (or ``e = a``
    without an embedding), with equality when :attr:`exact`. ``base`` is
    :class:`StandardNormal`, :class:`DiagonalNormal`, :class:`ConditionalNormal` or any module
    with ``log_prob(z) -> (B,)`` and ``sample(n)``; a base with an integer ``context_features``
    attribute is conditional and is called as ``log_prob(z, e)`` and ``sample(n, e)``.

    ``embedding`` (optional module) maps the raw context (labels, images, ...) to ``e`` once per
    call, before any layer or the base sees it; every layer then receives the same ``e``. The
    layers and the base that take a context (an integer ``context_features``) must agree on its
    size ``k``; :attr:`context_features` is that ``k`` (``None`` for an unconditional flow), and
    every call checks ``e`` against ``(B, k)`` (after the embedding) with a ``ValueError`` that
    names the expected shape. An unconditional flow ignores a context, like its layers do.

    Every call checks its input once, at the entry (shape, dtype and device against the flow's
    parameters, finiteness); what the layers compute inside is not checked again, so a
    numerical blow-up shows as a non-finite log-probability, not as an error.
    """

    def __init__(self, base: nn.Module, transform: Transform, embedding: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"Flow: transform must be a survae_flowify Transform, got {type(transform).__name__}"
            )
        if not (hasattr(base, "log_prob") and hasattr(base, "sample")):
            raise TypeError(f"Flow: base must offer log_prob and sample, got {type(base).__name__}")
        if embedding is not None and not isinstance(embedding, nn.Module):
            raise TypeError(
                f"Flow: embedding must be a torch.nn.Module or None, got {type(embedding).__name__}"
            )
        self.base = base
        self.transform = transform
        self.embedding = embedding
        self._conditional_base = _context_size(base) is not None
        self.context_features = _shared_context_size(base, transform)

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

    def _context(self, context: object, batch: int) -> Tensor | None:
        """The embedded context, checked against ``(batch, context_features)`` once per call."""
        if context is not None and self.embedding is not None:
            context = self._embed(context)
        if not _state.validation_enabled() or (context is None and self.context_features is None):
            return context  # type: ignore[return-value]
        after = " (after the embedding)" if self.embedding is not None else ""
        if context is not None and not isinstance(context, Tensor):
            raise TypeError(f"Flow: the context{after} must be a torch.Tensor, got {type(context).__name__}")
        if self.context_features is not None:
            try:
                check_context(self, context, self.context_features, batch)
            except ValueError as error:
                raise ValueError(f"{error}{after}") from None
        elif context.shape[0] != batch:  # type: ignore[union-attr]
            raise ValueError(f"Flow: the context{after} must have batch size {batch} (one row per "
                             f"sample), got shape {tuple(context.shape)}")  # type: ignore[union-attr]
        if _state.entry_checks_enabled():
            check_input(self, context, None, what="context", integer_ok=True)  # dtype, device, finite
        return context  # type: ignore[return-value]

    def _embed(self, context: object) -> object:
        try:
            return self.embedding(context)  # type: ignore[misc]
        except (RuntimeError, IndexError, TypeError) as error:  # the user's module, told what it got
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"Flow: the embedding {type(self.embedding).__name__} failed on a "
                             f"context of shape {got}: {error}") from error

    def _base_log_prob(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self.base.log_prob(z, context) if self._conditional_base else self.base.log_prob(z)

    def _elbo(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, contribution = self.transform(x, context)
        return self._base_log_prob(z, context) + contribution

    def _elbo_samples(self, x: Tensor, context: Tensor | None, num_samples: int, chunk: int) -> Tensor:
        """ELBO terms for ``num_samples`` noise draws per datum: shape ``(K, B)``.

        Row ``k·B + i`` of a chunk is datum ``i``, so the context is repeated the same way."""
        out = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            out.append(self._elbo(_repeat(x, k), _repeat(context, k)).view(k, x.shape[0]))
        return torch.cat(out, 0)

    def log_prob(
        self,
        x: Tensor,
        context: object = None,
        *,
        num_samples: int | None = None,
        chunk_size: int = 64,
    ) -> Tensor:
        """``log p(x | context)`` per sample, shape ``(B,)``; ``context`` ``(B, ...)``, or ``None``.

        Exact when :attr:`exact`. Otherwise the single-sample ELBO, or with
        ``num_samples=K`` the importance-weighted bound ``log (1/K) Σ_k exp(ELBO_k)``, computed
        ``chunk_size`` draws at a time (each datum's context repeated with it).
        """
        if num_samples is not None:
            _checks.positive_int("Flow.log_prob", "num_samples", num_samples)
        _checks.positive_int("Flow.log_prob", "chunk_size", chunk_size)
        self._check_x(x)
        context = self._context(context, x.shape[0])
        with _state.inside_call():
            if num_samples is None or not self.transform.stochastic_forward:
                return self._elbo(x, context)  # without noise every draw would be the same
            terms = self._elbo_samples(x, context, num_samples, chunk_size)
        return torch.logsumexp(terms, 0) - math.log(num_samples)

    def augmentation_gap(
        self, x: Tensor, context: object = None, *, num_samples: int, chunk_size: int = 64
    ) -> AugmentationGap:
        """Estimated gap between the IW bound and the ELBO, per sample (see :class:`AugmentationGap`)."""
        k = _checks.positive_int("Flow.augmentation_gap", "num_samples", num_samples)
        _checks.positive_int("Flow.augmentation_gap", "chunk_size", chunk_size)
        self._check_x(x)
        context = self._context(context, x.shape[0])
        with _state.inside_call():
            terms = self._elbo_samples(x, context, k, chunk_size)
        elbo = terms.mean(0)
        iw = torch.logsumexp(terms, 0) - math.log(k)
        return AugmentationGap(iw - elbo, elbo, iw, k, bool(self.transform.bounded_noise))

    def bits_per_dim(self, x: Tensor, context: object = None, *, num_samples: int | None = None) -> Tensor:
        """``−log p(x | context) / (D ln 2)`` per sample, ``D`` the number of data dimensions."""
        d = math.prod(x.shape[1:])
        return -self.log_prob(x, context, num_samples=num_samples) / (d * math.log(2))

    def _draw_latent(self, owner: str, n: int, context: object, mean: object) -> tuple[Tensor, Tensor | None]:
        _checks.positive_int(owner, "n", n)
        _checks.boolean(owner, "mean", mean)
        context = self._context(context, n)
        if self._conditional_base:
            return self.base.sample(n, context), context
        return self.base.sample(n), context

    def sample(self, n: int, context: object = None, *, mean: bool = False) -> Tensor:
        """``n`` samples of ``p(x | context)``; ``context`` has ``n`` rows (one per sample; repeat a
        single context with ``context.expand(n, -1)``), or is ``None`` for an unconditional flow.

        ``mean=True`` inverts every stochastic inverse by its mean (appendix E); the base is
        still sampled.
        """
        z, context = self._draw_latent("Flow.sample", n, context, mean)
        with _state.inside_call():  # z comes from the base, not from a user: no entry checks
            return self.transform.inverse(z, context, mean=mean)

    def sample_and_log_prob(self, n: int, context: object = None) -> tuple[Tensor, Tensor]:
        """``(x, log p(x | context))`` for ``n`` samples of an exact flow, in one call.

        The samples come from the inverse; their exact log-density from one forward pass of
        the same samples (the layers offer no inverse log-determinant), differentiable in the
        parameters. A flow that is a bound (:attr:`exact` false) has no exact density to return:
        ``ValueError``, naming its first bound layer.
        """
        if not self.exact:
            bound = next((type(m).__name__ for m in self.transform.modules()
                          if isinstance(m, Transform) and not m.exact
                          and not any(isinstance(c, Transform) for c in m.children())),
                         type(self.transform).__name__)
            raise ValueError(
                f"Flow.sample_and_log_prob: needs an exact flow, but {bound} gives a lower bound; "
                "use sample(n) and log_prob(x, num_samples=K) instead"
            )
        z, context = self._draw_latent("Flow.sample_and_log_prob", n, context, False)
        with _state.inside_call():
            x = self.transform.inverse(z, context)
            return x, self._elbo(x, context)

    def reconstruct(self, x: Tensor, context: object = None, *, mean: bool = True) -> Tensor:
        """``inverse(forward(x))``: exact for bijections, lossy through inference surjections."""
        _checks.boolean("Flow.reconstruct", "mean", mean)
        self._check_x(x)
        context = self._context(context, x.shape[0])
        with _state.inside_call():
            z, _ = self.transform(x, context)
            return self.transform.inverse(z, context, mean=mean)

    @torch.no_grad()
    def breakdown(self, x: Tensor, context: object = None) -> Breakdown:
        """Where the nats go: each layer's mean contribution and the base term.

        ``print(flow.breakdown(x))`` prints a table; the total equals ``log_prob(x).mean()``
        (for one noise draw). Rows are named by the layers' paths in the transform (numbers,
        or the names given to :class:`Sequential`). For an empty batch every mean is NaN (a mean
        over no sample, as ``torch.mean`` gives), while names and output shapes are still shown.
        """
        self._check_x(x)
        context = self._context(context, x.shape[0])
        rows = []
        total = 0.0
        z = x
        with _state.inside_call():
            for name, layer, z, c in self.transform.trace(x, context):
                kind = "exact" if layer.exact else "bound"
                value = float(c.mean())
                total += value
                rows.append((name or type(layer).__name__, type(layer).__name__, kind, value,
                             tuple(z.shape[1:])))
            base = float(self._base_log_prob(z, context).mean())
        rows.append(("base", type(self.base).__name__, "exact", base, tuple(z.shape[1:])))
        return Breakdown(tuple(rows), total + base)


def _repeat(t: Tensor | None, k: int) -> Tensor | None:
    """``(B, ...) → (k·B, ...)``, the whole batch ``k`` times (row ``j·B + i`` is row ``i``)."""
    if t is None:
        return None
    return t.unsqueeze(0).expand(k, *t.shape).reshape(k * t.shape[0], *t.shape[1:])


def _context_size(module: object) -> int | None:
    size = getattr(module, "context_features", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _context_parts(module: nn.Module) -> list[nn.Module]:
    """``module`` and its submodules, except those of a layer with ``private_context`` (e.g. the
    encoder ``q(u | x)`` of VariationalDequantize): they see that layer's input, not the flow's context."""
    if getattr(module, "private_context", False):
        return [module]
    return [module, *(m for child in module.children() for m in _context_parts(child))]


def _shared_context_size(base: nn.Module, transform: Transform) -> int | None:
    """The context size ``k`` that every conditional part (``context_features=k``) expects."""
    parts = [base, *_context_parts(transform)] if not isinstance(base, nn.Module) else [
        *_context_parts(base), *_context_parts(transform)]
    sizes = {}
    for part in parts:
        size = _context_size(part)
        if size is not None:
            sizes.setdefault(size, type(part).__name__)
    if len(sizes) > 1:
        found = ", ".join(f"{name} takes {size}" for size, name in sizes.items())
        raise ValueError(f"Flow: the conditional parts expect contexts of different sizes ({found}); "
                         "give them one context_features (an embedding can map the raw context to it)")
    return next(iter(sizes), None)
