"""Property-test kit for transforms: check functions and hypothesis strategies.

Use it on your own layers::

    from survae_flowify.testing import check_log_det, check_right_inverse, perturb_parameters
    perturb_parameters(layer)
    check_log_det(layer, x)            # bijections; generative surjections with noise off
    check_right_inverse(layer, z)      # inference surjections: forward(inverse(z)) == z
"""

from survae_flowify.testing.checks import (
    autograd_log_volume,
    check_bound,
    check_inverse,
    check_log_det,
    check_right_inverse,
    perturb_parameters,
)
from survae_flowify.testing.strategies import batch_sizes, batches, dtypes, seeds

__all__ = [
    "autograd_log_volume",
    "batch_sizes",
    "batches",
    "check_bound",
    "check_inverse",
    "check_log_det",
    "check_right_inverse",
    "dtypes",
    "perturb_parameters",
    "seeds",
]
