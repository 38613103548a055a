"""Gaussian-Bernoulli RBM trained with CD-k (ECE 685D HW5, Problem 2).

The handout's energy, with visible units v (D of them), binary hidden units h (F = M of them),
visible bias b_i (``c`` here, as in the template), hidden bias alpha_j (``b`` here) and weights
W_ij (stored as ``W`` of shape (F, D), as in the template):

    E(v, h) = -( sum_ij W_ij h_j v_i / sigma_i - sum_i (v_i - b_i)^2 / (2 sigma_i^2) + sum_j alpha_j h_j )

Its conditionals (Problem 2.1):

    p(h_j = 1 | v) = sigmoid( sum_i W_ij v_i / sigma_i + alpha_j )
    p(v_i | h)     = N( v_i ; b_i + sigma_i sum_j W_ij h_j , sigma_i^2 )

sigma: the data are standardized to zero mean and unit variance before training (the template's
``(data - mean) / std``), and sigma_i is then fixed to 1 for every pixel rather than learned, so
the formulas above lose every sigma. (``sigma`` can be set to another fixed value shared by all
pixels, for experiments; the default and the handout's setting is 1.) The free energy, with the
hidden units summed out, is

    F(v) = sum_i (v_i - b_i)^2 / (2 sigma^2) - sum_j softplus( sum_i W_ij v_i / sigma + alpha_j ),

and CD-k minimises mean(F(x)) - mean(F(x_k)), where x_k is the visible state after k steps of
block Gibbs sampling started at the data and is held constant (no gradient through the chain).

The interface is the course template's: ``RBM(D, F, k)``, ``sample``, ``sample_gaussian``,
``P_h_x``, ``P_x_h``, ``free_energy`` and ``forward`` (CD-k, returns ``x_negative, pxh_k``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.loop import train_epochs


class RBM(nn.Module):
    """Gaussian (visible) - Bernoulli (hidden) RBM with unit visible variance.

    D: number of visible units (784), F: number of hidden units (M), k: Gibbs steps of CD-k,
    sigma: the fixed standard deviation of every visible unit (1 for standardized data).
    """

    def __init__(self, D: int, F: int, k: int, sigma: float = 1.0):
        super().__init__()
        self.sigma = float(sigma)
        self.W = nn.Parameter(torch.randn(F, D) * 1e-2)  # N(0, 1e-4), as in the template
        self.c = nn.Parameter(torch.zeros(D))  # visible bias (b_i of the handout)
        self.b = nn.Parameter(torch.zeros(F))  # hidden bias (alpha_j of the handout)
        self.k = k

    def sample(self, p: torch.Tensor) -> torch.Tensor:
        """Bernoulli draw h ~ B(p) for hidden units."""
        return torch.bernoulli(p)

    def sample_gaussian(self, p: torch.Tensor) -> torch.Tensor:
        """Gaussian draw v ~ N(p, sigma^2) for visible units (sigma = 1 after standardization)."""
        return p + self.sigma * torch.randn_like(p)

    def P_h_x(self, x: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v) = sigmoid(W v / sigma + alpha), shape (N, F)."""
        return torch.sigmoid(F.linear(x / self.sigma, self.W, self.b))

    def P_x_h(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] = b + sigma W^T h, the mean of the Gaussian visible units, shape (N, D)."""
        return F.linear(h, self.W.t() * self.sigma, self.c)

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(v) = ||v - b||^2 / (2 sigma^2) - sum_j softplus(W_j . v / sigma + alpha_j), one value per row."""
        visible = ((x - self.c) ** 2).sum(dim=1) / (2 * self.sigma ** 2)
        hidden = F.softplus(F.linear(x / self.sigma, self.W, self.b)).sum(dim=1)
        return visible - hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k steps of block Gibbs sampling from the data: h ~ p(h|v), v ~ p(v|h).

        Returns the negative sample x_k and the mean p(v|h_k) it was drawn from.
        """
        x_k = x
        pxh_k = x
        for _ in range(self.k):
            h = self.sample(self.P_h_x(x_k))
            pxh_k = self.P_x_h(h)
            x_k = self.sample_gaussian(pxh_k)
        return x_k, pxh_k

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic one-step reconstruction E[v | h = p(h|v)] = b + sigma W^T sigmoid(W v / sigma + alpha)."""
        return self.P_x_h(self.P_h_x(x))


def cd_loss(rbm: RBM, x: torch.Tensor, x_negative: torch.Tensor) -> torch.Tensor:
    """CD-k surrogate: mean_n F(x_n) - mean_n F(x_neg_n); its gradient is the CD-k update
    (positive phase minus negative phase), with the negative sample detached."""
    return rbm.free_energy(x).mean() - rbm.free_energy(x_negative.detach()).mean()


def brute_force_free_energy(rbm: RBM, x: torch.Tensor) -> torch.Tensor:
    """-log sum_h exp(-E(v, h)) by enumerating all 2^F hidden states (tiny F only; tests)."""
    n_hidden = rbm.W.shape[0]
    states = torch.tensor([[(s >> j) & 1 for j in range(n_hidden)] for s in range(2 ** n_hidden)],
                          dtype=x.dtype)
    # -E(v, h) = h^T W v / sigma - ||v - b||^2 / (2 sigma^2) + alpha^T h, for every (v, h) pair
    neg_energy = ((x / rbm.sigma) @ rbm.W.t() @ states.t() + (states @ rbm.b)[None, :]
                  - ((x - rbm.c) ** 2).sum(1, keepdim=True) / (2 * rbm.sigma ** 2))
    return -torch.logsumexp(neg_energy, dim=1)


class Standardizer:
    """(x - mean) / std with scalar mean and std, and back.

    ``mode='global'`` uses the train split's statistics for every batch and for the test set (so
    train and test MSE are on one scale); ``mode='batch'`` is the template's per-batch
    ``(data - data.mean()) / data.std()``.
    """

    def __init__(self, mode: str = "global", mean: float = 0.0, std: float = 1.0):
        if mode not in ("global", "batch"):
            raise ValueError("mode must be 'global' or 'batch'")
        self.mode, self.mean, self.std = mode, float(mean), float(std)

    @classmethod
    def fit(cls, x: torch.Tensor, mode: str = "global") -> "Standardizer":
        return cls(mode, x.mean().item(), x.std().item())

    def stats(self, x: torch.Tensor) -> tuple[float, float]:
        if self.mode == "batch":
            return x.mean().item(), x.std().item()
        return self.mean, self.std

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        mean, std = self.stats(x)
        return (x - mean) / std, mean, std


@torch.no_grad()
def reconstruction_mse(rbm: RBM, x_unit: torch.Tensor, standardizer: Standardizer,
                       batch_size: int = 2000) -> dict:
    """MSE of the one-step reconstruction per pixel, in standardized units and in [0, 1] pixels
    (x_unit is (N, D) in [0, 1]; the [0, 1] reconstruction is un-standardized, not clipped)."""
    sq_std, sq_unit, n = 0.0, 0.0, 0
    for i in range(0, len(x_unit), batch_size):
        xb = x_unit[i:i + batch_size]
        z, mean, std = standardizer(xb)
        err = (rbm.reconstruct(z) - z) ** 2
        sq_std += err.sum().item()
        sq_unit += (err * std ** 2).sum().item()
        n += err.numel()
    return {"mse_std": sq_std / n, "mse_unit": sq_unit / n}


def cd_step(rbm: RBM, optimizer: torch.optim.Optimizer, xb: torch.Tensor, standardizer: Standardizer) -> dict:
    """One CD-k update on a batch; returns the CD loss and the mean squared error of the chain's
    final mean p(v | h_k) against the batch (standardized units)."""
    z, _, _ = standardizer(xb)
    x_negative, pxh_k = rbm(z)
    loss = cd_loss(rbm, z, x_negative)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"cd_loss": loss.item(), "chain_mse_std": F.mse_loss(pxh_k.detach(), z).item()}


def train_epoch(rbm: RBM, optimizer: torch.optim.Optimizer, loader, standardizer: Standardizer) -> dict:
    """One epoch of :func:`cd_step` through the shared loop (no run: nothing logged); returns the
    epoch means of its numbers."""
    (epoch,) = train_epochs(lambda batch, i: cd_step(rbm, optimizer, batch[0], standardizer), loader, 1,
                            models=(rbm,), line=lambda ep: None)
    return epoch.means()
