"""ECE 685D HW5, Problem 1: a DCGAN for 28x28 MNIST and a linear probe on its discriminator.

Handout: the ECE 685D HW5 handout (Problem 1.1 and 1.2). The handout's architecture
figure did not survive, so the networks follow its spirit and the DCGAN recipe of Radford et al.,
"Unsupervised Representation Learning with Deep Convolutional GANs" (ICLR 2016,
arXiv:1511.06434): strided (transposed) convolutions, BatchNorm in the generator, LeakyReLU in
the discriminator, Tanh output, weights N(0, 0.02), Adam(2e-4, beta1 = 0.5).

Generator ``G`` (z in R^100, z ~ N(0, I) -> image in [-1, 1])::

    z (N, 100)
    Linear(100 -> 7*7*256, no bias)  BatchNorm1d  ReLU  -> reshape (N, 256, 7, 7)
    ConvTranspose(256 -> 128, k3, s1, p1, no bias)  BatchNorm  ReLU   ->  (N, 128,  7,  7)
    ConvTranspose(128 ->  64, k4, s2, p1, no bias)  BatchNorm  ReLU   ->  (N,  64, 14, 14)
    ConvTranspose( 64 ->   1, k4, s2, p1)           Tanh              ->  (N,   1, 28, 28)

Discriminator ``D`` (image in [-1, 1] -> probability that it is real)::

    features:                                                   x (N, 1, 28, 28)
        Conv( 1 ->  64, k5, s2, p2)  LeakyReLU(0.2)  Dropout(0.3)  ->  (N,  64, 14, 14)
        Conv(64 -> 128, k5, s2, p2)  LeakyReLU(0.2)  Dropout(0.3)  ->  (N, 128,  7,  7)
        Flatten                                                    ->  (N, 6272)
    head (the last linear layer, removed in 1.2):
        Linear(6272 -> 1)  Sigmoid                                 ->  (N, 1)

D has no BatchNorm on purpose: its running statistics would mix real and generated batches,
and Problem 1.2 reuses ``D.features`` in eval mode as a frozen feature extractor.

Losses (the handout's min-max objective l = E_x[log D(x)] + E_z[log(1 - D(G(z)))]):
``discriminator_loss`` is -l (D maximizes l); ``generator_loss`` is the non-saturating
-E_z[log D(G(z))] by default (same fixed point, strong gradients when D rejects the samples
early in training), or the literal saturating E_z[log(1 - D(G(z)))] with ``kind="minimax"``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

NZ = 100
FEATURE_DIM = 128 * 7 * 7


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: (transposed) conv and linear weights N(0, 0.02); BatchNorm weight
    N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (N, nz) -> images (N, 1, 28, 28) in [-1, 1]; see the module docstring."""

    def __init__(self, nz: int = NZ):
        super().__init__()
        self.nz = nz
        self.project = nn.Sequential(nn.Linear(nz, 7 * 7 * 256, bias=False), nn.BatchNorm1d(7 * 7 * 256),
                                     nn.ReLU(inplace=True))
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.project(z).view(-1, 256, 7, 7))


class Discriminator(nn.Module):
    """images (N, 1, 28, 28) -> P(real) (N, 1). ``features`` is everything but the last linear
    layer ``head``; ``logits`` skips the Sigmoid (the losses use it for numerical stability)."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 5, 2, 2), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout),
            nn.Conv2d(64, 128, 5, 2, 2), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout),
            nn.Flatten())
        self.head = nn.Linear(FEATURE_DIM, 1)
        self.apply(init_weights)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def remove_last_layer(D: Discriminator) -> nn.Sequential:
    """Problem 1.2: D without its final real/fake linear layer, as a frozen copy in eval mode
    (dropout off) mapping images to the 6272-d features."""
    extractor = copy.deepcopy(D.features).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor


# --------------------------------------------------------------------------------------------
# Losses


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-( E_x[log D(x)] + E_z[log(1 - D(G(z)))] ), with D = sigmoid(logits); D minimizes this,
    i.e. maximizes the handout's min-max objective."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float))
    return real + fake


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """Non-saturating: -E_z[log D(G(z))]. Minimax (the handout's literal term): E_z[log(1 - D(G(z)))]."""
    fake_logits = fake_logits.float()
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "minimax":
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    raise ValueError("kind must be 'non_saturating' or 'minimax'")


# --------------------------------------------------------------------------------------------
# Training


def train_step(G: Generator, D: Discriminator, real: torch.Tensor, opt_G, opt_D, amp, g_loss_kind: str = "non_saturating") -> dict:
    """One DCGAN iteration: a D step on a real batch and a generated batch, then a G step on the
    same generated batch (as pytorch/examples/dcgan). ``amp`` is a context factory (autocast)."""
    z = torch.randn(real.shape[0], G.nz, device=real.device)
    with amp():
        fake = G(z)
        real_logits = D.logits(real)
        fake_logits = D.logits(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()

    with amp():
        gen_logits = D.logits(fake)
        g_loss = generator_loss(gen_logits, g_loss_kind)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_G.step()
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach().float()).mean()}


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Images for the noise ``z`` with G in eval mode (BatchNorm running statistics); restores
    G's previous mode."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i:i + batch]).float() for i in range(0, len(z), batch)])
    G.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Problem 1.2: linear probe on frozen features


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Flattened features of ``images`` (fp32, eval mode, no gradients), computed in batches."""
    extractor.eval()
    return torch.cat([extractor(images[i:i + batch]).float().flatten(1) for i in range(0, len(images), batch)])


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """(f - mean) / std with the TRAIN features' statistics (constant columns keep std 1)."""
    mean = train.mean(0)
    std = train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [(f - mean) / std for f in (train, *others)]


def fit_linear(x: torch.Tensor, y: torch.Tensor, weight_decay: float, num_classes: int = 10,
               max_iter: int = 200, seed: int = 0) -> nn.Linear:
    """A single ``nn.Linear`` trained full-batch with L-BFGS on
    mean cross-entropy + weight_decay / 2 * ||W||_F^2 (the bias is not penalised)."""
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(x), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


@torch.no_grad()
def accuracy(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (layer(x).argmax(1) == y).float().mean().item()


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                 weight_decays=(1e-4, 1e-3, 1e-2, 1e-1), val_fraction: float = 0.2, seed: int = 0,
                 max_iter: int = 200) -> dict:
    """Train a linear classifier on standardized frozen features; return train/test accuracy.

    The L2 strength is chosen on a seeded stratified ``val_fraction`` of the TRAIN features
    (never the test set), then the layer is refit on all the train features.
    """
    from common.data import train_val_split

    tr, va = train_val_split(y_train, val_fraction, seed=seed)
    a, b = standardize(f_train[tr], f_train[va])
    val_acc = {wd: accuracy(fit_linear(a, y_train[tr], wd, max_iter=max_iter, seed=seed), b, y_train[va])
               for wd in weight_decays}
    best = max(weight_decays, key=lambda wd: (val_acc[wd], wd))  # ties: the stronger penalty
    x_train, x_test = standardize(f_train, f_test)
    layer = fit_linear(x_train, y_train, best, max_iter=max_iter, seed=seed)
    return {"train_accuracy": accuracy(layer, x_train, y_train), "test_accuracy": accuracy(layer, x_test, y_test),
            "weight_decay": best, "val_accuracy": val_acc[best], "feature_dim": f_train.shape[1],
            "n_train": len(y_train), "n_test": len(y_test)}
