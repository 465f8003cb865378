"""Rotations: orthogonality, agreement with independent formulas, both apply paths, set_matrix, caching."""

from __future__ import annotations

import io

import pytest
import scipy.linalg
import torch

from survae_flowify.layers.rotations import Rotation
from survae_flowify.testing import perturb_parameters

KINDS = ["householder", "cayley", "exp"]


def _rotation(n: int, kind: str, seed: int = 0) -> Rotation:
    return perturb_parameters(Rotation(n, kind).double(), scale=1.0, seed=seed)


def _reference(rot: Rotation) -> torch.Tensor:
    """``Q`` from the parameters by the textbook formula of each kind, not the module's code."""
    p = rot.weight.detach()
    n = rot.n
    eye = torch.eye(n, dtype=torch.float64)
    if rot.kind == "householder":
        q0 = eye.clone()
        for v in torch.triu(p):  # −H_1 H_2 ⋯ H_n, one explicit reflector at a time
            q0 = q0 @ (eye - 2 * torch.outer(v, v) / v.dot(v))
        q0 = -q0
    elif rot.kind == "cayley":
        a = (p - p.T).numpy()
        q0 = torch.from_numpy((eye.numpy() - a) @ scipy.linalg.inv(eye.numpy() + a))
    else:
        q0 = torch.from_numpy(scipy.linalg.expm((p - p.T).numpy()))
    return q0 * rot.signs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 7, 24])
def test_matrix_is_orthogonal_and_matches_the_formula(kind: str, n: int) -> None:
    rot = _rotation(n, kind)
    q = rot.matrix()
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(q.T @ q, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(q, _reference(rot), atol=1e-10, rtol=0)
    assert torch.linalg.det(q) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_starts_at_the_identity(kind: str) -> None:
    assert torch.equal(Rotation(5, kind).matrix(), torch.eye(5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows", [3, 400])  # blocked UT transform (rows ≪ n); the formed matrix
def test_rotate_and_rotate_t_agree_with_the_matrix_values_and_gradients(kind: str, rows: int) -> None:
    n = 150  # three blocks of reflectors (64, 64, 22)
    rot = _rotation(n, kind, seed=1)
    with torch.no_grad():
        rot.signs[-1] = -1.0
    x = torch.randn(rows, n, dtype=torch.float64)
    q = _reference(rot)
    torch.testing.assert_close(rot.rotate(x), x @ q.T, atol=1e-11, rtol=0)
    torch.testing.assert_close(rot.rotate_t(x), x @ q, atol=1e-11, rtol=0)
    target = torch.randn(rows, n, dtype=torch.float64)
    grads = []
    for apply in (lambda: rot.rotate(x), lambda: x @ rot.matrix().T):
        rot.zero_grad()
        (apply() * target).sum().backward()
        grads.append(rot.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("det", [1.0, -1.0])
def test_set_matrix_reaches_both_components(kind: str, det: float) -> None:
    torch.manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    if torch.linalg.det(q) * det < 0:
        q[:, 2].neg_()
    rot = Rotation(6, kind).double()
    rot.set_matrix(q)
    torch.testing.assert_close(rot.matrix(), q, atol=1e-10, rtol=0)
    torch.testing.assert_close(_reference(rot), q, atol=1e-10, rtol=0)
    assert rot.signs[-1].item() == det


def test_half_turns_exp_and_householder_reach_them_cayley_cannot() -> None:
    """Rotations by π in some planes (eigenvalue −1): the naive complex logarithm fails there."""
    torch.manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    signs = torch.tensor([-1.0, -1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    cases = [torch.diag(signs[1:]), -torch.eye(4, dtype=torch.float64), basis @ torch.diag(signs) @ basis.T]
    for q in cases:
        with pytest.raises(ValueError, match="eigenvalue −1"):
            Rotation(q.shape[0], "cayley").double().set_matrix(q)
        for kind in ("exp", "householder"):
            rot = Rotation(q.shape[0], kind).double()
            rot.set_matrix(q)
            torch.testing.assert_close(_reference(rot), q, atol=1e-12, rtol=0)


def test_set_matrix_rejects_what_is_not_orthogonal() -> None:
    rot = Rotation(3)
    with pytest.raises(ValueError, match="orthogonal"):
        rot.set_matrix(2 * torch.eye(3))
    with pytest.raises(ValueError, match="orthogonal"):
        rot.set_matrix(torch.eye(4))


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="positive int"):
        Rotation(0)
    with pytest.raises(ValueError, match="rotation must be one of"):
        Rotation(3, "givens")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_eval_cache_is_reused_and_invalidated(kind: str) -> None:
    rot = _rotation(5, kind).eval()
    with torch.no_grad():
        first = rot.matrix()
        assert rot.matrix() is first  # computed once
        rot.weight.add_(0.1 * torch.randn_like(rot.weight))  # not symmetric: A = P − Pᵀ moves
        changed = rot.matrix()
    assert changed is not first and not torch.allclose(changed, first)
    torch.testing.assert_close(changed, _reference(rot), atol=1e-10, rtol=0)
    with torch.no_grad():
        state = {k: v.clone() for k, v in rot.state_dict().items()}
        state["signs"][-1] = -1.0
        rot.load_state_dict(state)
        torch.testing.assert_close(rot.matrix(), _reference(rot), atol=1e-10, rtol=0)
    rot.train()
    assert rot.matrix().requires_grad  # training: fresh, differentiable


def test_float32_and_pickling() -> None:
    rot = perturb_parameters(Rotation(9), scale=1.0)
    q = rot.matrix()
    assert q.dtype == torch.float32
    torch.testing.assert_close(q.T @ q, torch.eye(9), atol=1e-5, rtol=0)
    buffer = io.BytesIO()
    torch.save(rot.eval(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded.matrix(), rot.matrix())


def _full_vector_householder(n: int, seed: int) -> tuple[dict, torch.Tensor]:
    """A version-1 state dict (full Householder vectors) and its ``Q``, by explicit reflectors."""
    g = torch.Generator().manual_seed(seed)
    p = torch.eye(n, dtype=torch.float64) + 0.5 * torch.randn(n, n, generator=g, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    q0 = eye.clone()
    for v in p:
        q0 = q0 @ (eye - 2 * torch.outer(v, v) / v.dot(v))
    signs = torch.ones(n, dtype=torch.float64)
    signs[-1] = -1.0
    return {"weight": p, "signs": signs}, -q0 * signs


@pytest.mark.parametrize("n", [3, 70])
def test_state_dict_of_full_vectors_loads_to_the_same_matrix(n: int) -> None:
    state, q = _full_vector_householder(n, seed=n)
    rot = Rotation(n).double()
    metadata = {"": {"version": 1}}  # what torch records for a module saved before version 2
    state = dict(state)
    state_with_meta = type("StateDict", (dict,), {})(state)
    state_with_meta._metadata = metadata
    rot.load_state_dict(state_with_meta)
    torch.testing.assert_close(rot.matrix().detach(), q, atol=1e-10, rtol=0)
    assert not torch.tril(rot.weight.detach(), -1).any()
    # a state dict of this version is loaded as it is
    again = Rotation(n).double()
    again.load_state_dict(rot.state_dict())
    assert torch.equal(again.weight, rot.weight)


def test_entries_below_the_diagonal_are_unused() -> None:
    rot = _rotation(80, "householder", seed=2)
    x = torch.randn(5, 80, dtype=torch.float64)
    before = rot.rotate(x).detach()
    with torch.no_grad():
        rot.weight.add_(torch.tril(torch.randn(80, 80, dtype=torch.float64), -1))
    torch.testing.assert_close(rot.rotate(x).detach(), before, atol=1e-12, rtol=0)
    (rot.rotate(x).sum() + rot.rotate_t(x).sum()).backward()
    assert not torch.tril(rot.weight.grad, -1).any() and torch.triu(rot.weight.grad).abs().sum() > 0


def test_old_linear_checkpoint_keeps_its_weight() -> None:
    """A flowified Linear saved before version 2 (full vectors in U and V) keeps its dense weight."""
    import survae_flowify as ffn

    layer = ffn.Linear(6, 4).double()
    state = layer.state_dict()
    (u_state, u), (v_state, v) = _full_vector_householder(4, seed=1), _full_vector_householder(6, seed=2)
    state["U.weight"], state["U.signs"] = u_state["weight"], u_state["signs"]
    state["V.weight"], state["V.signs"] = v_state["weight"], v_state["signs"]
    state._metadata["U"]["version"] = state._metadata["V"]["version"] = 1
    layer.load_state_dict(state)
    sigma = torch.exp(layer.log_sigma.detach())
    torch.testing.assert_close(layer.weight.detach(), (u * sigma) @ v[:, :4].T, atol=1e-10, rtol=0)
