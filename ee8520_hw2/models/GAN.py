"""EE 8520 HW2, Step 1: an unconditional fully connected GAN for MNIST (Goodfellow et al., 2014).

Architecture as the handout asks: every layer is fully connected with LeakyReLU, no batch norm.
The generator maps z (dim 100) through hidden layers of 64, 128 and 256 units to 784 pixels in
[-1, 1] (Tanh); the discriminator maps 784 pixels through 256, 128 and 64 units with dropout to
one raw logit (no Sigmoid: the loss is ``nn.BCEWithLogitsLoss``, which is numerically stable).

``train_discriminator`` and ``train_generator`` keep the skeleton's signatures and return values;
``device`` is optional (the original main script calls them without it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

IMAGE_DIM = 28 * 28
LEAKY_SLOPE = 0.2


def _mlp(sizes, dropout: float = 0.0) -> list[nn.Module]:
    """Linear + LeakyReLU (+ Dropout) for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(LEAKY_SLOPE)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class Generator(nn.Module):
    """z (N, dim_z) -> hidden ``channels`` (LeakyReLU) -> 784 with Tanh; returns (N, 784)."""

    def __init__(self, dim_z=100, channels=[64, 128, 256]):  # noqa: B006 - the skeleton's signature
        super().__init__()
        self.dim_z = dim_z
        self.channels = list(channels)
        self.net = nn.Sequential(*_mlp([dim_z, *self.channels]),
                                 nn.Linear(self.channels[-1], IMAGE_DIM), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(-1, self.dim_z))


class Discriminator(nn.Module):
    """Image (N, 784) or (N, 1, 28, 28) -> hidden ``channels`` (LeakyReLU, Dropout) -> one logit (N, 1)."""

    def __init__(self, channels=[256, 128, 64], dropout: float = 0.3):  # noqa: B006 - the skeleton's signature
        super().__init__()
        self.channels = list(channels)
        self.dropout = dropout
        self.net = nn.Sequential(*_mlp([IMAGE_DIM, *self.channels], dropout), nn.Linear(self.channels[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, IMAGE_DIM))


def train_discriminator(discriminator, d_optimizer, images, fake_images, criterion, device=None):
    """One discriminator step on a real and a fake batch.

    L_D = BCE(D(x), 1) + BCE(D(G(z)), 0) = -log sigma(D(x)) - log(1 - sigma(D(G(z))))
    (the negated value function V(D, G) of Eq. 1 on one batch). The fakes are detached so no
    gradient reaches the generator. Returns ``d_loss, outputs_real, outputs_fake, fake_loss``
    (outputs are logits).
    """
    device = device if device is not None else images.device
    images = images.to(device)
    n = images.shape[0]
    real_labels = torch.ones(n, 1, device=device)
    fake_labels = torch.zeros(fake_images.shape[0], 1, device=device)

    outputs_real = discriminator(images)
    real_loss = criterion(outputs_real, real_labels)
    outputs_fake = discriminator(fake_images.detach())
    fake_loss = criterion(outputs_fake, fake_labels)
    d_loss = real_loss + fake_loss

    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()
    return d_loss, outputs_real, outputs_fake, fake_loss


def train_generator(generator, g_optimizer, discriminator_outputs, criterion, device=None):
    """One generator step from the discriminator's logits on freshly scored fakes.

    Non-saturating loss L_G = BCE(D(G(z)), 1) = -log sigma(D(G(z))) (Goodfellow et al., 2014,
    Sec. 3), which has strong gradients early when D rejects the fakes. Also returns
    ``g_loss_fake = BCE(D(G(z)), 0) = -log(1 - sigma(D(G(z))))``, the term of the minimax
    objective, for monitoring only. Returns ``g_loss, g_loss_fake``.
    """
    device = device if device is not None else discriminator_outputs.device
    real_labels = torch.ones(discriminator_outputs.shape[0], 1, device=device)
    g_loss = criterion(discriminator_outputs, real_labels)
    g_loss_fake = criterion(discriminator_outputs.detach(), 1 - real_labels)

    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()
    g_optimizer.step()
    return g_loss, g_loss_fake
