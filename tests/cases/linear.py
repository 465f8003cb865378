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

# Flowified residual connections x + f(x): Repeat -> Branch(f) -> AddHalves. They contain an
# inference surjection (the summing map), so the noise-free log-det check does not apply.
from survae_flowify.layers.residual import AddHalves, Residual  # noqa: E402

CASES.update({
    "add_halves_normal": Case(lambda: AddHalves(3), (6,), linear_gaussian=True, log_det=False),
    "add_halves_diagonal": Case(lambda: AddHalves(2, inverse_density="diagonal"), (4,),
                                linear_gaussian=True, log_det=False),
    "add_halves_conditional_image": Case(
        lambda: AddHalves((1, 2, 2), inverse_density="conditional"), (2, 2, 2), log_det=False),
    "residual_linear": Case(lambda: Residual(ffn.Linear(3, 3)), (3,), linear_gaussian=True,
                            log_det=False),
    "residual_linear_diagonal": Case(
        lambda: Residual(ffn.Linear(2, 2), inverse_density="diagonal"), (2,),
        linear_gaussian=True, log_det=False),
    "residual_nonlinear": Case(
        lambda: Residual(ffn.Sequential(ffn.Linear(3, 3), ffn.LeakyReLU(0.5))), (3,),
        log_det=False),
    "residual_uniform_conditional": Case(
        lambda: Residual(ffn.Linear(2, 2), noise="uniform", inverse_density="conditional"), (2,),
        log_det=False),
    "residual_image": Case(
        lambda: Residual(ffn.RqSpline(), shape=(1, 2, 3), inverse_density="conditional"),
        (1, 2, 3), log_det=False),
})

CASES.update({
    "linear_gram_square": Case(
        lambda: ffn.Linear(4, 4, parametrization="gram"), (4,), linear_gaussian=True),
    "linear_gram_reducing": Case(
        lambda: ffn.Linear(5, 2, parametrization="gram"), (5,), linear_gaussian=True, log_det=False),
    "linear_gram_increasing": Case(
        lambda: ffn.Linear(2, 4, parametrization="gram"), (2,), linear_gaussian=True),
    "linear_gram_stack": Case(
        lambda: ffn.Sequential(ffn.Linear(3, 5, parametrization="gram"), ffn.RqSpline(),
                               ffn.Linear(5, 2, parametrization="gram")),
        (3,), log_det=False),
})
