"""The switches (``noise_off``, ``validation``, the entry-only finite check) are per thread.

Each test forces an interleaving with ``threading.Event``s: thread A enters a switch and waits
while thread B runs a call; B must see the defaults, not A's setting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

import survae_flowify as ffn
from survae_flowify import _state


def _while_other_thread_holds(switch: Callable[[], object], probe: Callable[[], object]) -> object:
    """Run ``probe`` in this thread while another thread is inside ``switch()``."""
    entered, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with switch():  # type: ignore[attr-defined]
                entered.set()
                assert done.wait(10), "probe never finished"
        except BaseException as err:  # reported in the main thread
            errors.append(err)
            entered.set()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert entered.wait(10), "holder never entered the switch"
        result = probe()
    finally:
        done.set()
        thread.join(10)
    assert not errors, errors
    return result


def test_noise_off_in_one_thread_leaves_noise_on_in_another() -> None:
    layer = ffn.Augment(2, 3)
    x = torch.zeros(4, 2)
    z = _while_other_thread_holds(ffn.noise_off, lambda: layer(x)[0])
    assert z[:, 2:].abs().sum() > 0  # noise was drawn here
    assert _state.noise_enabled()


def test_validation_off_in_one_thread_keeps_checks_in_another() -> None:
    layer = ffn.LeakyReLU(0.5)
    bad = torch.tensor([[float("nan"), 1.0]])

    def probe() -> str:
        with pytest.raises(ValueError, match="NaN") as info:
            layer(bad)
        return str(info.value)

    assert "LeakyReLU" in _while_other_thread_holds(lambda: ffn.validation(False), probe)


def test_entry_only_finite_check_of_one_thread_does_not_leak() -> None:
    """While thread A is inside a composite (inner layers skip the finite check), a layer
    called at the top level in thread B must still reject NaN."""
    layer = ffn.LeakyReLU(0.5)
    bad = torch.tensor([[float("nan"), 1.0]])
    inside, release = threading.Event(), threading.Event()

    class Hold(ffn.Bijection):
        def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            inside.set()
            assert release.wait(10)
            return x, x.new_zeros(x.shape[0])

    outer = ffn.Sequential(ffn.LeakyReLU(0.5), Hold())
    thread = threading.Thread(target=lambda: outer(torch.ones(2, 2)))
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(ValueError, match="NaN"):
            layer(bad)
    finally:
        release.set()
        thread.join(10)


def test_switches_nest_and_restore() -> None:
    with ffn.validation(False):
        with ffn.validation(True):
            assert _state.validation_enabled()
        assert not _state.validation_enabled()
    assert _state.validation_enabled()
    with ffn.noise_off():
        assert not _state.noise_enabled()
    assert _state.noise_enabled()


def test_validation_argument_must_be_bool() -> None:
    with pytest.raises(TypeError, match=r"validation: enabled must be True or False, got 'no'"):
        ffn.validation("no")  # type: ignore[arg-type]
