"""CSC 8851 HW2, Parts 1, 3 and 4: the class-conditional WGAN-GP's models, losses and samplers.

The generator and the projection critic, eq. (1) and (2) with the gradient penalty, the two
objectives one training step minimizes, and the samples of the class grid, the interpolations and
the truncation sweep. Plain PyTorch: ``wgan_gp.py`` trains with these definitions and draws the
figures, and the notebook template's ``#| inline:`` cells copy them into the submitted notebook.

Papers: Gulrajani et al., "Improved Training of Wasserstein GANs" (2017, gradient penalty); Miyato
& Koyama, "cGANs with Projection Discriminator" (2018); Yazici et al., "The Unusual Effectiveness
of Averaging in GAN Training" (2019, generator EMA).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.training import gradient_penalty

NUM_CLASSES = 10
PSIS = (3.0, 2.5, 2.0, 1.5, 1.0, 0.8, 0.6, 0.4, 0.2, 0.1)  # the truncation sweep of Part 4


# --------------------------------------------------------------------------------------------
# Part 1: models


def class_index(y: torch.Tensor) -> torch.Tensor:
    """Integer labels (B,), from integer labels or one-hot rows (B, 10)."""
    return y.long() if y.ndim == 1 else y.reshape(y.shape[0], -1).argmax(1)


def up_block(cin: int, cout: int) -> nn.Sequential:
    """Upsample x2 (nearest) -> Conv 3x3 s1 p1 -> BN -> ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU())


class Generator(nn.Module):
    """G(z, y): [z (64); e_g(y) (32)] -> FC to 128x4x4 -> 3 x (up, conv, BN, ReLU)
    128 -> 64 -> 32 -> 16 channels (4 -> 8 -> 16 -> 32) -> Conv 16 -> 1 -> Tanh."""

    def __init__(self, z_dim: int = 64, embed_dim: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.z_dim = z_dim
        self.embed = nn.Embedding(num_classes, embed_dim)  # e_g(y)
        self.fc = nn.Linear(z_dim + embed_dim, 128 * 4 * 4)
        self.blocks = nn.Sequential(up_block(128, 64), up_block(64, 32), up_block(32, 16))
        self.to_image = nn.Sequential(nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh())
        for m in self.modules():  # Kaiming (He) normal
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(class_index(y))], dim=1))
        return self.to_image(self.blocks(h.view(-1, 128, 4, 4)))


class Critic(nn.Module):
    """D(x, y) = w^T f(x) + <f(x), e(y)>, f(x) = sum_{u,v} h(x)[:, :, u, v], where h is
    3 x (Conv 4x4 s2 p1 -> LeakyReLU(0.2)), 1 -> 32 -> 64 -> 128 channels (32 -> 16 -> 8 -> 4).
    No normalization and no sigmoid: raw scores of shape (B,)."""

    def __init__(self, num_classes: int = NUM_CLASSES, proj_dim: int = 128):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, proj_dim, 4, 2, 1), nn.LeakyReLU(0.2))
        self.linear = nn.Linear(proj_dim, 1, bias=False)  # w
        self.embed = nn.Embedding(num_classes, proj_dim)  # e(y)
        # Kaiming (He) normal; e(y) too, as a class-specific linear head beside w
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x).sum(dim=(2, 3))  # global sum pool: (B, C)
        return self.linear(f).squeeze(1) + (f * self.embed(class_index(y))).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Part 1: losses, eq. (1) and (2)


def critic_loss(d_real, d_fake, gp, lambda_gp: float = 10.0) -> torch.Tensor:
    """Eq. (1): L_C = -(E[D(x, y)] - E[D(G(z, y), y)]) + lambda_gp * GP."""
    return -(d_real.mean() - d_fake.mean()) + lambda_gp * gp


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (2): L_G = -E[D(G(z, y), y)]."""
    return -d_fake.mean()


def critic_objective(G, D, x, y, lambda_gp: float = 10.0):
    """L_C of eq. (1) on a real batch (x, y) and G(z, y) for fresh z (no gradient to G);
    returns L_C and its terms as numbers for the curves."""
    with torch.no_grad():
        fake = G(torch.randn(len(x), G.z_dim, device=x.device), y)
    # real and fake scored in one batch (D has no batch statistics); float32 for the means
    d_real, d_fake = D(torch.cat([x, fake]), torch.cat([y, y])).float().split(len(x))
    gp = gradient_penalty(D, x, fake, y)
    loss = critic_loss(d_real, d_fake, gp, lambda_gp)
    terms = {"d_real": d_real.mean(), "d_fake": d_fake.mean(), "gp": gp, "loss_C": loss}
    return loss, {k: v.item() for k, v in terms.items()}


def generator_objective(G, D, y) -> torch.Tensor:
    """L_G of eq. (2) on G(z, y) for fresh z and the labels y."""
    z = torch.randn(len(y), G.z_dim, device=y.device)
    return generator_loss(D(G(z, y), y).float())


# --------------------------------------------------------------------------------------------
# Parts 3 and 4: samples


@torch.no_grad()
def generate(G, z, y, batch: int = 1000) -> torch.Tensor:
    """G(z, y) in eval mode, in batches, as float32 on the CPU."""
    was_training, device = G.training, next(G.parameters()).device
    G.eval()
    out = torch.cat([G(z[i:i + batch].to(device), y[i:i + batch].to(device)).float().cpu()
                     for i in range(0, len(z), batch)])
    G.train(was_training)
    return out


def noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """n latents z ~ N(0, I) from their own seed (the same on every device)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def class_labels(n: int) -> torch.Tensor:
    """0,...,0, 1,...,1, ..., 9,...,9 (n each): row c of a 10 x n grid is label c."""
    return torch.arange(NUM_CLASSES).repeat_interleave(n)


def class_samples(G, n: int = 10, seed: int = 0) -> torch.Tensor:
    """Fig. 2: a 10 x n grid, row c = G(z_j, c) for n latents z_j shared by the rows."""
    z = noise(n, G.z_dim, seed).repeat(NUM_CLASSES, 1)
    return generate(G, z, class_labels(n))


def interpolation_samples(G, k: int = 10, seed: int = 0, interpolate=torch.lerp) -> torch.Tensor:
    """Fig. 3: row c = G(z_t, c) at k points t in [0, 1] from z_0 to z_1, two random endpoints
    per class; linear, z_t = (1 - t) z_0 + t z_1, unless ``interpolate`` says otherwise."""
    z0, z1 = noise(2 * NUM_CLASSES, G.z_dim, seed).view(2, NUM_CLASSES, 1, G.z_dim)
    t = torch.linspace(0, 1, k).view(1, k, 1)
    z = interpolate(z0, z1, t).reshape(-1, G.z_dim)
    return generate(G, z, class_labels(k))


def truncation_samples(G, psis=PSIS, seed: int = 0) -> torch.Tensor:
    """Fig. 4: row c = G(psi z_c, c) for each psi, one latent z_c per class."""
    z = noise(NUM_CLASSES, G.z_dim, seed)
    zs = torch.stack([psi * z for psi in psis], dim=1).reshape(-1, G.z_dim)
    return generate(G, zs, class_labels(len(psis)))
