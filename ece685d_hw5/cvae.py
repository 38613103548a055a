"""VAE and class-conditional VAE (C-VAE) of ECE 685D HW5 Problem 3, on Fashion-MNIST.

The template's fixed architecture (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014;
the C-VAE follows Sohn et al., "Learning Structured Output Representation using Deep
Conditional Generative Models", 2015):

    encoder  fc1: 784 (+10) -> 400, ReLU;  fc21: 400 -> 20 (mu);  fc22: 400 -> 20 (log sigma^2)
    decoder  fc3:  20 (+10) -> 400, ReLU;  fc4:  400 -> 784, sigmoid (Bernoulli means)

``VAE(n_in=784, n_hid=400, z_dim=20)`` keeps the template's ``encode(x, c)``, ``decode(z, c)``
and ``forward(x, c)`` and ignores ``c``. ``CVAE`` is the same network with the one-hot class
concatenated to the input of the encoder (fc1) and of the decoder (fc3), so both q(z | x, c)
and p(x | z, c) see the class; everything else (sizes, optimizer, batch, lr) is unchanged. ``c``
may also be given as integer labels (N,), as torchvision's datasets yield them.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class VAE(nn.Module):
    """The template's MLP VAE; ``n_cond`` > 0 (used by :class:`CVAE`) conditions on a one-hot c."""

    def __init__(self, n_in: int = 784, n_hid: int = 400, z_dim: int = 20, n_cond: int = 0):
        super().__init__()
        self.n_in, self.z_dim, self.n_cond = n_in, z_dim, n_cond
        self.fc1 = nn.Linear(n_in + n_cond, n_hid)
        self.fc21 = nn.Linear(n_hid, z_dim)
        self.fc22 = nn.Linear(n_hid, z_dim)
        self.fc3 = nn.Linear(z_dim + n_cond, n_hid)
        self.fc4 = nn.Linear(n_hid, n_in)

    def _with(self, a: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if not self.n_cond:
            return a
        if c is None:
            raise ValueError("the C-VAE needs the one-hot class c")
        if c.ndim == 1:  # integer labels, as a loop over torchvision's Fashion-MNIST passes them
            c = F.one_hot(c.long(), self.n_cond)
        return torch.cat([a, c.to(a.dtype)], dim=1)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x[, c]) = N(mu, diag(exp(logvar)))."""
        h1 = F.relu(self.fc1(self._with(x.view(-1, self.n_in), c)))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I)."""
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means p(x | z[, c]) in (0, 1), shape (N, 784)."""
        h3 = F.relu(self.fc3(self._with(z, c)))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        mu, logvar = self.encode(x, c)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, c), mu, logvar


class CVAE(VAE):
    """Class-conditional VAE: the template's VAE with the one-hot class appended to fc1 and fc3."""

    def __init__(self, n_in: int = 784, n_hid: int = 400, z_dim: int = 20, n_classes: int = 10):
        super().__init__(n_in, n_hid, z_dim, n_cond=n_classes)


def loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    """Negative ELBO summed over the batch, and its two terms:

        BCE = -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)]       (-E_q[log p(x | z)], one z draw)
        KLD = -1/2 sum_k (1 + logvar_k - mu_k^2 - exp(logvar_k))   (KL(q(z | x) || N(0, I)))
        loss = BCE + KLD = -ELBO
    """
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld, bce, kld


def save_best(path: Path, model: VAE, epoch: int, val_loss: float) -> None:
    """The weights with the best validation loss so far, with when and how good (atomic write)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "epoch": epoch, "val_loss": val_loss,
                "kind": type(model).__name__}, tmp)
    tmp.replace(path)


def load_best(path: Path, model: VAE) -> dict:
    """Load :func:`save_best`'s weights into ``model``; returns ``{"epoch", "val_loss", ...}``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    return {k: v for k, v in ckpt.items() if k != "model"}
