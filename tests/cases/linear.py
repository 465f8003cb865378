"""Battery cases for the flowified Linear in its three regimes and rotation kinds."""

from __future__ import annotations

import survae_flowify as ffn
from tests.cases.base import Case

CASES: dict[str, Case] = {}
for rotation in ("householder", "cayley", "exp"):
    CASES[f"linear_square_{rotation}"] = Case(
        lambda r=rotation: ffn.Linear(4, 4, rotation=r), (4,), linear_gaussian=True)
    CASES[f"linear_reducing_normal_{rotation}"] = Case(
        lambda r=rotation: ffn.Linear(5, 2, rotation=r), (5,), linear_gaussian=True, log_det=False)
    CASES[f"linear_increasing_normal_{rotation}"] = Case(
        lambda r=rotation: ffn.Linear(2, 4, rotation=r), (2,), linear_gaussian=True)
CASES.update({
    "linear_reducing_diagonal": Case(
        lambda: ffn.Linear(6, 3, inverse_density="diagonal"), (6,), linear_gaussian=True,
        log_det=False),
    "linear_reducing_conditional": Case(
        lambda: ffn.Linear(6, 2, inverse_density="conditional"), (6,), log_det=False),
    "linear_increasing_uniform": Case(lambda: ffn.Linear(3, 5, noise="uniform"), (3,)),
    "linear_no_bias": Case(lambda: ffn.Linear(3, 3, bias=False), (3,), linear_gaussian=True),
    "linear_stack": Case(
        lambda: ffn.Sequential(ffn.Linear(3, 5), ffn.LeakyReLU(0.5), ffn.Linear(5, 5),
                               ffn.RqSpline(), ffn.Linear(5, 2, inverse_density="conditional")),
        (3,), log_det=False),
    "linear_gaussian_stack": Case(
        lambda: ffn.Sequential(ffn.Linear(3, 5), ffn.Linear(5, 5), ffn.Linear(5, 2)),
        (3,), linear_gaussian=True, log_det=False),
})
