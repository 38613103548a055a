"""RDFIA TP2-de: what bf16 training on a CPU changes in the models of ``tp2_models.py``, applied
from outside by swapping modules (the graded classes stay stock PyTorch).

* ``Fp32Sigmoid``: the discriminator's last Sigmoid computed in fp32. Under bf16 autocast the
  sigmoid would run in bf16, which rounds D(x) = 0.997 to exactly 1.0, so BCE's log(1 - D) is
  clamped at -100; fp32 keeps the course's numerics whatever the precision of the convolutions.
* ``GemmConv2d`` / ``GemmConvTranspose2d`` (optional, ``--fast-wgrad``): the 4x4-spatial
  convolutions (D's conv down to 4x4, G's transposed conv up from 4x4) compute their bf16 weight
  gradient as one matrix product of im2col patches (channels innermost) and the output gradient,
  where oneDNN's bf16 backward-weights kernel for these small layers is slow. Forward and input
  gradient are oneDNN's (bit-equal); the weight gradient equals it up to float rounding (the same
  bf16 inputs, fp32 accumulation, another summation order). In fp32, on another device or without
  gradients they compute exactly what ``nn.Conv2d`` / ``nn.ConvTranspose2d`` do.

``prepare(model, precision, device, fast_wgrad)`` applies both where they apply; the swapped
modules hold the same parameter tensors, so state dicts and optimizers are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Fp32Sigmoid(nn.Sigmoid):
    """``nn.Sigmoid`` computed in fp32 (its input cast up first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.float())


def _patches(t: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """(N*Ho*Wo, k*k*C) patches of ``t`` (N, C, H, W) for a k x k window, stride s, padding p;
    each row ordered (kh, kw, C), the memory order of a channels-last weight."""
    n, c = t.shape[:2]
    win = F.pad(t, (p, p, p, p)).permute(0, 2, 3, 1).unfold(1, k, s).unfold(2, k, s)  # N Ho Wo C kh kw
    return win.permute(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)


class _GemmWeightGradConv(torch.autograd.Function):
    """conv2d (or conv_transpose2d) without bias, square kernel, no dilation or groups, whose
    backward computes the weight gradient as patches^T x grad by one matmul.

    Regular conv: dW[o, i, kh, kw] = sum_{n,y,x} dY[n, o, y, x] X_pad[n, i, s*y + kh, s*x + kw].
    Transposed conv: Y = conv_transpose(X, W) scatters X[n, i, y, x] W[i, o, kh, kw] onto
    Y_pad[n, o, s*y + kh, s*x + kw], so dW[i, o, kh, kw] = sum X[n, i, y, x] dY_pad[n, o, s*y + kh, s*x + kw]:
    the same product with the patches taken from dY."""

    @staticmethod
    def forward(ctx, x, w, stride: int, padding: int, transposed: bool):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, transposed)
        return torch.ops.aten.convolution(x, w, None, [stride] * 2, [padding] * 2, [1, 1], transposed, [0, 0], 1)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        s, p, transposed = ctx.conf
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, w, None, [s] * 2, [p] * 2, [1, 1], transposed,
                                                         [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            k = w.shape[-1]
            a, b = (x, grad) if transposed else (grad, x)  # rows of dW come from a, patches from b
            rows = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).t()  # (C_a, N*L)
            g = rows @ _patches(b, k, s, p)  # (C_a, kh*kw*C_b)
            grad_w = g.view(w.shape[0], k, k, w.shape[1]).permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None, None


def eligible(m: nn.Module) -> bool:
    """A 4x4 stride-2 convolution or transposed convolution with padding 1 and no bias, dilation,
    groups or output padding: the layers whose weight gradient the GEMM path computes."""
    return (type(m) in (nn.Conv2d, nn.ConvTranspose2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
            and m.padding == (1, 1) and m.dilation == (1, 1) and m.groups == 1 and m.bias is None
            and getattr(m, "output_padding", (0, 0)) == (0, 0) and m.padding_mode == "zeros")


def gemm_dtype(m: nn.Module, x: torch.Tensor) -> torch.dtype | None:
    """bf16 when this call of ``m`` takes the GEMM path: a 4x4-spatial layer (a conv whose input
    is at most 8x8, a transposed conv whose input is at most 4x4) computing in bf16 on the CPU
    (autocast or bf16 tensors) whose weight needs a gradient; else None."""
    if x.device.type != "cpu" or x.dim() != 4 or not (torch.is_grad_enabled() and m.weight.requires_grad):
        return None
    transposed = isinstance(m, nn.ConvTranspose2d)
    if x.shape[2] * x.shape[3] > (16 if transposed else 64):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    else:
        dtype = x.dtype if x.dtype == m.weight.dtype else None
    return dtype if dtype == torch.bfloat16 else None


def _gemm_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dtype = gemm_dtype(m, x)
    with torch.autocast("cpu", enabled=False):
        return _GemmWeightGradConv.apply(x.to(dtype), m.weight.to(dtype), 2, 1, isinstance(m, nn.ConvTranspose2d))


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose bf16 weight gradient, for a 4x4-spatial output, is one matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _gemm_forward(self, x) if gemm_dtype(self, x) is not None else super().forward(x)


class GemmConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` whose bf16 weight gradient, for a 4x4-spatial input, is one matmul."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is None and gemm_dtype(self, x) is not None:
            return _gemm_forward(self, x)
        return super().forward(x, output_size)


def _swapped(m: nn.Module) -> nn.Module | None:
    """The replacement of ``m`` holding its parameters, or None to keep it."""
    if type(m) is nn.Sigmoid:
        return Fp32Sigmoid()
    if eligible(m):
        cls = GemmConvTranspose2d if isinstance(m, nn.ConvTranspose2d) else GemmConv2d
        new = cls(m.in_channels, m.out_channels, 4, 2, 1, bias=False, device="meta")
        new.weight = m.weight
        return new.train(m.training)
    return None


def swap_modules(model: nn.Module, which) -> nn.Module:
    """Replace, in place, each submodule ``m`` of ``model`` for which ``which(m)`` returns a module."""
    for name, child in list(model.named_children()):
        new = which(child)
        if new is not None:
            setattr(model, name, new)
        else:
            swap_modules(child, which)
    return model


def prepare(model: nn.Module, precision: str, device, fast_wgrad: bool = True) -> nn.Module:
    """``model`` ready to train in ``precision`` on ``device``: in bf16, its Sigmoid in fp32 and,
    with ``fast_wgrad`` on a CPU, the GEMM weight gradient for its eligible convolutions. In fp32
    the model is left as it is."""
    if precision != "bf16":
        return model
    gemm = fast_wgrad and torch.device(device).type == "cpu"

    def which(m):
        new = _swapped(m)
        return new if isinstance(new, Fp32Sigmoid) or (new is not None and gemm) else None

    return swap_modules(model, which)
