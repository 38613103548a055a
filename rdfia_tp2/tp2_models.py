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
        return self.main(z.view(z.shape[0], -1, 1, 1))


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
        return self.main(x).view(-1)


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
        return self.main(torch.cat([hz, hy], 1))


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
        return self.main(h).view(-1)


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
