"""EE 8520 HW2, Step 3: a fully connected variational autoencoder for MNIST (Kingma & Welling, 2014).

Handout (Step 3 c): encoder and decoder built only from linear layers with LeakyReLU (except the
outputs). ``hidden_dims = [h1, h2, h3, 2 * d]``: the encoder maps 784 -> h1 -> h2 -> h3 and a last
linear layer to ``2 * d`` numbers, the mean and the log-variance of q(z|x), so
``z_size = hidden_dims[-1] // 2`` (the skeleton's example ends in 4: a 2-D latent). The decoder
mirrors it, d -> h3 -> h2 -> h1 -> 784, with a Sigmoid so pixels lie in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn as nn

LEAKY_SLOPE = 0.2


def _stack(sizes) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(LEAKY_SLOPE)]
    return layers


class VAE_model(nn.Module):  # noqa: N801 - the skeleton's name
    """Gaussian encoder q(z|x) = N(mean(x), diag(exp(logvar(x)))) and Bernoulli-mean decoder."""

    def __init__(self, input_dim, hidden_dims, decode_dim=-1):
        super().__init__()
        hidden_dims = list(hidden_dims)
        if len(hidden_dims) < 2 or hidden_dims[-1] % 2:
            raise ValueError("hidden_dims = [hidden sizes..., 2 * latent size]; the last entry must be even")
        self.input_dim = input_dim
        self.hidden_dims = hidden_dims
        self.z_size = hidden_dims[-1] // 2
        self.decode_dim = input_dim if decode_dim == -1 else decode_dim
        hidden = hidden_dims[:-1]
        self.encoder = nn.Sequential(*_stack([input_dim, *hidden]), nn.Linear(hidden[-1], hidden_dims[-1]))
        rev = hidden[::-1]
        self.decoder = nn.Sequential(*_stack([self.z_size, *rev]), nn.Linear(rev[-1], self.decode_dim), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, ...) -> mean, logvar, each (N, z_size)."""
        h = self.encoder(x.reshape(x.shape[0], -1))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar

    def reparameterize(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mean + sigma * eps, eps ~ N(0, I): a sample of q(z|x) that gradients pass through."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_size) -> pixel means (N, decode_dim) in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> dict:
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar)
        return {"imgs": self.decode(z), "z": z, "mean": mean, "logvar": logvar}
