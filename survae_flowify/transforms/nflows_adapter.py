"""Use any ``nflows`` bijective transform as a :class:`Bijection` (needs the optional nflows extra).

Importing this module without nflows raises an ``ImportError`` that says how to install it; the
package itself (``survae_flowify.transforms``, ``import survae_flowify``) imports it only when
``NflowsBijection`` is first asked for.
"""

from __future__ import annotations

from torch import Tensor, nn

try:
    import nflows  # noqa: F401  (only to fail early and clearly: the adapter wraps nflows objects)
except ImportError as error:
    raise ImportError("NflowsBijection needs the nflows package, an optional extra: "
                      "pip install survae_flowify[nflows]") from error

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape

__all__ = ["NflowsBijection"]


class NflowsBijection(Bijection):
    """Wrap an ``nflows.transforms.Transform`` (e.g. its rational-quadratic couplings).

    nflows' convention matches ours: ``transform(x) -> (z, logabsdet)`` and
    ``transform.inverse(z) -> (x, logabsdet)``. ``shape`` is the event shape the wrapped
    transform expects (optional, used for input checks).
    """

    def __init__(self, transform: nn.Module, *, shape: int | tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not (hasattr(transform, "inverse") and isinstance(transform, nn.Module)):
            raise TypeError(
                f"NflowsBijection: expected an nflows Transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self._shape = None if shape is None else _checks.shape("NflowsBijection", "shape", shape)

    @property
    def in_shape(self) -> Shape | None:
        return self._shape

    @property
    def out_shape(self) -> Shape | None:
        return self._shape

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] == 0:  # nflows' reshapes fail on B = 0: run one dummy row, keep none
            z, logabsdet = self.transform(x.new_zeros(1, *x.shape[1:]))
            return z[:0], logabsdet[:0].to(x.dtype)
        z, logabsdet = self.transform(x)
        return z, logabsdet.to(x.dtype)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        if z.shape[0] == 0:
            return self.transform.inverse(z.new_zeros(1, *z.shape[1:]))[0][:0]
        x, _ = self.transform.inverse(z)
        return x
