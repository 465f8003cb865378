"""A context reaches the layers that name it in ``_forward``/``_inverse``; others never see one."""

import torch

import survae_flowify as ffn


class Shift(ffn.Bijection):
    """``z = x + context`` (a conditional bijection, contribution 0)."""

    def _forward(self, x, context=None):
        return x + context, x.new_zeros(x.shape[0])

    def _inverse(self, z, context=None, *, mean):
        return z - context


class Legacy(ffn.Bijection):
    """Written against the context-free signatures, as users' own layers are."""

    def _forward(self, x):
        return 2 * x, torch.full((x.shape[0],), torch.log(torch.tensor(2.0)).item() * x.shape[1])

    def _inverse(self, z, *, mean):
        return z / 2


def test_context_reaches_layers_that_take_it_through_sequential():
    x, c = torch.randn(5, 3), torch.randn(5, 3)
    model = ffn.Sequential(Legacy(), Shift(), Legacy())
    z, contribution = model(x, c)
    torch.testing.assert_close(z, 2 * (2 * x + c))
    torch.testing.assert_close(contribution, torch.full((5,), 6 * torch.log(torch.tensor(2.0)).item()))
    torch.testing.assert_close(model.inverse(z, c), x)
    torch.testing.assert_close(model.inverse(z, context=c, mean=True), x)


def test_layers_without_context_ignore_it():
    x = torch.randn(4, 2)
    legacy = Legacy()
    torch.testing.assert_close(legacy(x, torch.randn(4, 7))[0], legacy(x)[0])
    assert not Legacy._forward_takes_context and Shift._forward_takes_context
    assert Shift._inverse_takes_context and not Legacy._inverse_takes_context


def test_check_context_names_layer_and_expected_shape():
    import pytest

    from survae_flowify.algebra.transform import check_context

    layer = Legacy()
    check_context(layer, None, None, 3)  # unconditional: nothing to check
    check_context(layer, torch.zeros(3, 2), 2, 3)
    with pytest.raises(ValueError, match=r"Legacy: needs a context of shape \(3, 2\), got none"):
        check_context(layer, None, 2, 3)
    with pytest.raises(ValueError, match=r"Legacy: expected a context of shape \(3, 2\), got \(3, 5\)"):
        check_context(layer, torch.zeros(3, 5), 2, 3)
