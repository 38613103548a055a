"""RDFIA TP2-de: the DCGAN and conditional DCGAN of the practical, and their losses.

Architectures are the course's (the RDFIA TP2-de handout, sections 2.4 and 2.5, and its task
sheet), after Radford et al., "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks" (DCGAN, arXiv:1511.06434), for 32x32 images
(MNIST padded by 2 pixels). The conditional pair follows Mirza & Osindero, "Conditional
Generative Adversarial Nets" (arXiv:1411.1784) with the course's two-branch layout: the noise
(or image) and the one-hot label each go through their own first layer, then are concatenated.

Losses are the course's binary cross-entropy on the discriminator's sigmoid output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def weights_init(m: nn.Module) -> None:
    """The course's init: conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0.

    Use as ``model.apply(weights_init)``.
    """
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------
# Convolutions whose weight gradient is one matrix product (issue 20). On a 2-core AMD EPYC
# (AVX-512 bf16, torch 2.14, one thread) oneDNN's bf16 backward-weights kernel runs the 4x4-spatial
# layers (D's conv to 4x4, G's transposed conv from 4x4) at ~100 GFLOP/s, half of what it does for
# the same layers' forward and input gradient (~230) and of a bf16 matmul (~200). Computed as
# im2col patches (N*Ho*Wo x kh*kw*C, channels innermost, so the copy moves 512-byte rows: ~3 ms)
# times the output gradient, the same gradient takes ~47 ms instead of ~83-115 ms: the conditional
# DCGAN's training step is ~8% faster, the DCGAN's with ndf = 256 several times faster in that layer.
# The models run their nn.Sequential stacks through ``_run``, which sends just those layers
# (plain nn.Conv2d / nn.ConvTranspose2d modules, the same parameters) through
# ``_GemmWeightGradConv``. Forward and input gradient stay oneDNN's (bit-equal); the weight gradient
# equals oneDNN's up to float rounding (the same bf16 inputs, fp32 accumulation, another summation
# order). Only bf16 on the CPU takes this path: fp32 runs, and other devices, compute exactly what
# the plain layers do.


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


def _gemm_weight_grad_dtype(m: nn.Module, x: torch.Tensor) -> torch.dtype | None:
    """bf16 where ``m`` is one of the layers that take the GEMM weight gradient: a 4x4 stride-2
    convolution (padding 1, no bias, dilation or groups) to 4x4 or a transposed one from 4x4, whose
    weight needs a gradient, computing in bf16 on the CPU (autocast or bf16 tensors); else None."""
    if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or x.device.type != "cpu" or x.dim() != 4:
        return None
    transposed = isinstance(m, nn.ConvTranspose2d)
    small = x.shape[2] * x.shape[3] <= (16 if transposed else 64)
    plain = (m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) and m.dilation == (1, 1)
             and m.groups == 1 and m.bias is None and getattr(m, "output_padding", (0, 0)) == (0, 0)
             and m.padding_mode == "zeros")
    if not (small and plain and torch.is_grad_enabled() and m.weight.requires_grad):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    else:
        dtype = x.dtype if x.dtype == m.weight.dtype else None
    return dtype if dtype == torch.bfloat16 else None


def _run(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)``, with the 4x4-spatial convolutions through ``_GemmWeightGradConv`` in bf16."""
    for m in seq:
        dtype = _gemm_weight_grad_dtype(m, x)
        if dtype is None:
            x = m(x)
        else:
            with torch.autocast("cpu", enabled=False):
                x = _GemmWeightGradConv.apply(x.to(dtype), m.weight.to(dtype), 2, 1,
                                              isinstance(m, nn.ConvTranspose2d))
    return x


def _sigmoid_fp32(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``seq`` with its final Sigmoid applied in fp32. Under bf16 autocast a bf16 sigmoid
    rounds D(x) = 0.997 to exactly 1.0 and BCE's log(1 - D) explodes; fp32 keeps the course's
    numerics whatever the precision of the convolutions."""
    return seq[-1](_run(seq[:-1], x).float())


class Generator(nn.Module):
    """z (N, nz, 1, 1) -> image (N, nc, 32, 32) in [-1, 1].

    ConvT(nz->4ngf, 4, 1, 0) BN ReLU [4x4]; ConvT(4ngf->2ngf, 4, 2, 1) BN ReLU [8x8];
    ConvT(2ngf->ngf, 4, 2, 1) BN ReLU [16x16]; ConvT(ngf->nc, 4, 2, 1) Tanh [32x32].
    """

    def __init__(self, nz: int = 100, ngf: int = 32, nc: int = 1):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _run(self.main, z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """image (N, nc, 32, 32) -> D(x) in (0, 1), shape (N,).

    Conv(nc->ndf, 4, 2, 1) LReLU(0.2) [16x16]; Conv(ndf->2ndf) BN LReLU [8x8];
    Conv(2ndf->4ndf) BN LReLU [4x4]; Conv(4ndf->1, 4, 1, 0) Sigmoid [1x1]. Convs without bias.
    """

    def __init__(self, ndf: int = 32, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _sigmoid_fp32(self.main, x).view(-1)


def label_input(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The label as the conditional branches take it, (N, n_classes, h, w). Accepted as the
    practical's loop may pass it: integer class labels (N,) straight from a torchvision dataset
    (made one-hot), one-hot vectors (N, n_classes) or (N, n_classes, 1, 1), and, for the
    discriminator, label maps already expanded to (N, n_classes, 32, 32), which are kept as they are."""
    if y.ndim == 1:
        y = F.one_hot(y.long(), n_classes)
    return y if y.ndim == 4 else y.view(y.shape[0], -1, 1, 1)


class ConditionalGenerator(nn.Module):
    """(z, y one-hot or integer labels) -> image (N, nc, 32, 32).

    Noise branch ConvT(nz->256, 4, 1, 0) BN ReLU and label branch ConvT(10->256, 4, 1, 0) BN ReLU
    (both 4x4), concatenated to 512 channels; ConvT(512->256, 4, 2, 1) BN ReLU [8x8];
    ConvT(256->128, 4, 2, 1) BN ReLU [16x16]; ConvT(128->nc, 4, 2, 1) Tanh [32x32].
    """

    def __init__(self, nz: int = 100, n_classes: int = 10, nc: int = 1):
        super().__init__()
        self.nz, self.n_classes = nz, n_classes
        self.z_branch = nn.Sequential(nn.ConvTranspose2d(nz, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True))
        self.y_branch = nn.Sequential(nn.ConvTranspose2d(n_classes, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True))
        self.main = nn.Sequential(
            nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hz = self.z_branch(z.view(z.shape[0], -1, 1, 1))
        hy = self.y_branch(label_input(y, self.n_classes).float())
        return _run(self.main, torch.cat([hz, hy], 1))


class ConditionalDiscriminator(nn.Module):
    """(image, y) -> D(x, y) in (0, 1), shape (N,); y one-hot, integer labels or the practical's
    label maps already expanded to (N, 10, 32, 32) (:func:`label_input`).

    Image branch Conv(nc->64, 4, 2, 1) LReLU and label branch (y expanded to 10x32x32)
    Conv(10->64, 4, 2, 1) LReLU (both 16x16), concatenated to 128; Conv(128->256) BN LReLU [8x8];
    Conv(256->512) BN LReLU [4x4]; Conv(512->1, 4, 1, 0) Sigmoid.
    """

    def __init__(self, n_classes: int = 10, nc: int = 1, size: int = 32):
        super().__init__()
        self.n_classes, self.size = n_classes, size
        self.x_branch = nn.Sequential(nn.Conv2d(nc, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
        self.y_branch = nn.Sequential(nn.Conv2d(n_classes, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
        self.main = nn.Sequential(
            nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
            nn.Conv2d(256, 512, 4, 2, 1, bias=False), nn.BatchNorm2d(512), nn.LeakyReLU(0.2, True),
            nn.Conv2d(512, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_map = label_input(y, self.n_classes).to(x.dtype).expand(-1, -1, x.shape[2], x.shape[3])
        h = torch.cat([self.x_branch(x), self.y_branch(y_map)], 1)
        return _sigmoid_fp32(self.main, h).view(-1)


# ------------------------------------------------------------------------------------------
# Losses (on D's sigmoid outputs, computed in fp32 outside autocast)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (7): D maximizes log D(x) + log(1 - D(G(z))), i.e. minimizes
    BCE(D(x), 1) + BCE(D(G(z)), 0) = -[log D(x) + log(1 - D(G(z)))] (batch means)."""
    d_real, d_fake = d_real.float(), d_fake.float()
    return (F.binary_cross_entropy(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake)))


def generator_loss_nonsaturating(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (6), the course default: G maximizes log D(G(z)), i.e. minimizes
    BCE(D(G(z)), 1) = -log D(G(z)). Strong gradients while D(G(z)) is near 0."""
    d_fake = d_fake.float()
    return F.binary_cross_entropy(d_fake, torch.ones_like(d_fake))


def generator_loss_saturating(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (5), the "true" minimax objective: G minimizes log(1 - D(G(z))) = -BCE(D(G(z)), 0).
    Its gradient vanishes when D confidently rejects the fakes (D(G(z)) near 0), early in training."""
    d_fake = d_fake.float()
    return -F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))


GENERATOR_LOSSES = {"nonsaturating": generator_loss_nonsaturating, "saturating": generator_loss_saturating}


def sample_z(n: int, nz: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Latents z ~ N(0, I) of shape (n, nz, 1, 1), drawn on the CPU so a seed gives the same z everywhere."""
    return torch.randn(n, nz, 1, 1, generator=generator).to(device)


def conditional_grid_inputs(nz: int, n_classes: int = 10, n_per_class: int = 10,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the practical's closing test: ``z = sample_z(n_ex, nz).repeat(n_classes, 1)``.

    Returns ``z`` (n_classes * n_per_class, nz, 1, 1) and labels ``y`` (same length), row-major:
    row ``c`` is class ``c`` and column ``j`` uses the same ``z_j`` in every row.
    """
    z = sample_z(n_per_class, nz, generator).repeat(n_classes, 1, 1, 1)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return z, y
