"""`rankrl.memory`: the saved-activation meter counts what autograd saves and never keeps a graph alive."""

from __future__ import annotations

import gc
import warnings

import torch

from rankrl.memory import SavedActivationMeter


def _graphs_alive() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on every object touches torch's deprecated module aliases
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.grad_fn is not None)


def test_a_measured_forward_without_backward_frees_its_graph():
    """Tanh saves its *output*: returning that tensor itself from the pack hook made a cycle gc cannot break."""
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    before = _graphs_alive()
    for _ in range(3):
        with SavedActivationMeter(net.parameters()) as meter:
            out = net(torch.randn(8, 16)).sum()
        del out
    assert _graphs_alive() == before
    # Input (8x16) of the first linear, Tanh's output (8x16) and the second linear's input (the same storage).
    assert meter.count == 2 and meter.bytes == 2 * 8 * 16 * 4


def test_gradients_through_a_measured_forward_are_unchanged():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    x = torch.randn(8, 16)
    net(x).square().sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with SavedActivationMeter(net.parameters()):
        loss = net(x).square().sum()
    loss.backward()
    for grad, want in zip((p.grad for p in net.parameters()), expected, strict=True):
        torch.testing.assert_close(grad, want)
