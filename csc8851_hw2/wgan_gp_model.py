"""CSC 8851 HW2, Part 1: the class-conditional WGAN-GP's models, losses and training steps.

The handout's ``Recipe``, the generator and the projection critic, eq. (1) and (2) with the gradient
penalty, sampling helpers (fixed latents, interpolation) and one critic and one generator update.
``wgan_gp.py`` trains with them and draws the figures; the notebook template's ``#| inline:`` cells
copy these definitions into the submitted notebook.

Papers: Gulrajani et al., "Improved Training of Wasserstein GANs" (2017, gradient penalty); Miyato
& Koyama, "cGANs with Projection Discriminator" (2018); Karras et al. / Yazici et al. for
generator weight averaging (EMA).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.training import autocast, ema_update, gradient_penalty, make_ema

NUM_CLASSES = 10


@dataclass
class Recipe:
    """The handout's recipe (Part 2): Adam 2e-4, betas (0.0, 0.9), lambda_gp 10, n_critic 3, batch 128,
    and the figures' sizes. Plain fields (no flags), so the submitted notebook can use it as is."""

    epochs: int = field(default=20, metadata={
        "help": "training epochs (handout: 10-20); 20 because G_ema (tau 0.999) needs them to pass G (README)"})
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient-penalty weight in eq. (1)"})
    n_critic: int = field(default=3, metadata={"help": "critic updates per generator update (handout: 2-3)"})
    z_dim: int = 64
    embed_dim: int = 32
    proj_dim: int = 128
    ema_decay: float = field(default=0.999, metadata={"help": "tau of the generator EMA"})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format on a CPU (faster convs)"})
    grid_cols: int = field(default=10, metadata={"help": "N of the final 10 x N class grid"})
    interp_steps: int = field(default=10, metadata={"help": "K of the 10 x K interpolation panel"})
    seed: int = 0


# --------------------------------------------------------------------------------------------
# Part 1: models


def _up_block(cin: int, cout: int) -> nn.Sequential:
    """Upsample x2 (nearest) -> Conv 3x3 s1 p1 -> BN -> ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def class_index(y: torch.Tensor) -> torch.Tensor:
    """Integer class labels (B,) for the label embeddings, from integer labels as torchvision's
    datasets give them or from one-hot vectors (B, 10)."""
    return y.long() if y.ndim == 1 else y.reshape(y.shape[0], -1).argmax(1)


class Generator(nn.Module):
    """G(z, y), y integer labels or one-hot: [z (64) ; e_g(y) (32)] -> FC 4x4x128 -> 3 x (up, conv, BN, ReLU) 128->64->32->16
    -> Conv 16->1 -> Tanh, a (B, 1, 32, 32) image in [-1, 1]."""

    def __init__(self, z_dim: int = 64, embed_dim: int = 32, num_classes: int = NUM_CLASSES, base: int = 128):
        super().__init__()
        self.z_dim, self.base = z_dim, base
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(z_dim + embed_dim, 4 * 4 * base)
        self.blocks = nn.Sequential(_up_block(base, 64), _up_block(64, 32), _up_block(32, 16))
        self.to_image = nn.Sequential(nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(class_index(y))], dim=1)).view(-1, self.base, 4, 4)
        return self.to_image(self.blocks(h))


class _LeakyReLUFn(torch.autograd.Function):
    """F.leaky_relu whose backward reads its output detached, so a double backward does not send
    zeros into the forward graph (see ``LeakyReLU``)."""

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
        # what nn.LeakyReLU(inplace=True)'s backward computes (slope > 0: out and x share their sign)
        return torch.ops.aten.leaky_relu_backward(grad, out.detach(), ctx.slope, True), None


class LeakyReLU(nn.LeakyReLU):
    """nn.LeakyReLU(inplace=True)'s forward and backward (bit-equal), with a backward linear in the
    incoming gradient alone. The gradient penalty differentiates the critic's input gradient again;
    through nn.LeakyReLU that second backward also sends an all-zero gradient (the derivative of
    leaky_relu_backward with respect to the activation) back through the penalty's forward pass:
    three convolution backward passes on zeros per critic step. Without them a training batch took
    1/1.16 of the time (bf16, one thread, side by side; issue 20, README)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LeakyReLUFn.apply(x, self.negative_slope)


class Critic(nn.Module):
    """Projection critic D(x, y) = w^T f(x) + <f(x), e(y)>, f(x) = sum_{u,v} h(x)[:, :, u, v].

    Trunk: 3 x (Conv 4x4 s2 p1 -> LeakyReLU(0.2)) 1->32->64->128, 32->16->8->4. No normalization
    layers and no sigmoid: raw scores of shape (B,), as WGAN-GP needs. y integer labels or one-hot."""

    def __init__(self, num_classes: int = NUM_CLASSES, proj_dim: int = 128):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), LeakyReLU(0.2),
            nn.Conv2d(32, 64, 4, 2, 1), LeakyReLU(0.2),
            nn.Conv2d(64, proj_dim, 4, 2, 1), LeakyReLU(0.2))
        self.linear = nn.Linear(proj_dim, 1, bias=False)  # w
        self.embed = nn.Embedding(num_classes, proj_dim)  # e(y)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # e(y) acts as a class-specific linear head next to w, so it gets w's Kaiming scale
        # (PyTorch's default N(0, 1) would make the projection term ~11x the w term at init).
        nn.init.kaiming_normal_(self.embed.weight, a=0.2, nonlinearity="leaky_relu", mode="fan_in")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.linear(f).squeeze(1) + (f * self.embed(class_index(y))).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Part 1: losses (eq. 1 and 2 of the handout)


def critic_gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """GP = E[(||grad_xhat D(xhat, y)||_2 - 1)^2], xhat = eps x + (1 - eps) G(z, y), eps ~ U(0, 1) per sample.

    ``gradient_penalty`` takes per-sample gradients of sum_i D(xhat_i, y_i) (the handout's
    pseudocode differentiates the *mean*, which would shrink every norm by 1/B), with
    ``create_graph=True`` so that the penalty trains the critic."""
    return gradient_penalty(critic, real, fake, y)


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, gp: torch.Tensor, lambda_gp: float = 10.0) -> torch.Tensor:
    """Eq. (1): L_C = -(E[D(x, y)] - E[D(G(z, y), y)]) + lambda_gp * GP."""
    return -(d_real.mean() - d_fake.mean()) + lambda_gp * gp


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (2): L_G = -E[D(G(z, y), y)]."""
    return -d_fake.mean()


# --------------------------------------------------------------------------------------------
# Sampling helpers


class evaluating:
    """``with evaluating(G):`` eval mode and no grad inside, the previous mode restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self._ng = torch.no_grad()
        self._ng.__enter__()
        return self.model

    def __exit__(self, *exc):
        self._ng.__exit__(*exc)
        self.model.train(self.was_training)


def generate(G: Generator, z: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """G(z, y) in eval mode, in batches, as float32 on the CPU."""
    device = next(G.parameters()).device
    with evaluating(G):
        return torch.cat([G(z[i:i + batch].to(device), y[i:i + batch].to(device)).float().cpu()
                          for i in range(0, len(z), batch)])


def class_labels(n_per_class: int) -> torch.Tensor:
    """0,...,0, 1,...,1, ..., 9,...,9: a 10 x n grid with a row per class."""
    return torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)


def noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Part 2: building the models and one training step of each


def memory_format(cfg: Recipe, device: torch.device) -> torch.memory_format:
    """channels-last on a CPU (oneDNN's convolutions ran ~1.3x faster per training step there, see
    README), the default layout elsewhere or with ``--no-channels-last``."""
    return torch.channels_last if cfg.channels_last and device.type == "cpu" else torch.contiguous_format


def build(cfg: Recipe, device: torch.device) -> tuple[Generator, Generator, Critic]:
    """G, its frozen EMA copy (deepcopy, requires_grad=False) and D, on ``device`` in ``memory_format``."""
    fmt = memory_format(cfg, device)
    G = Generator(cfg.z_dim, cfg.embed_dim).to(device, memory_format=fmt)
    D_ = Critic(proj_dim=cfg.proj_dim).to(device, memory_format=fmt)
    return G, make_ema(G), D_


def fixed_latents(cfg: Recipe, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents and labels of every per-epoch grid: one z per column, shared by all ten rows."""
    z = noise(cfg.grid_cols, cfg.z_dim, cfg.seed + 1).repeat(NUM_CLASSES, 1)
    return z.to(device), class_labels(cfg.grid_cols).to(device)


def critic_step(G: Generator, Dc: Critic, opt_D, x: torch.Tensor, y: torch.Tensor, cfg: Recipe,
                device: torch.device, precision: str = "fp32") -> dict:
    """One critic update on eq. (1) with a fresh G(z, y) (detached); returns its scalars."""
    z = torch.randn(len(x), cfg.z_dim, device=device)
    with torch.no_grad(), autocast(device, precision):
        fake = G(z, y)
    with autocast(device, precision):
        # real and fake in one batch: the same scores (D has no batch statistics), larger convolutions
        d_real, d_fake = Dc(torch.cat([x, fake.to(x.dtype)]), torch.cat([y, y])).float().split(len(x))
        gp = critic_gradient_penalty(Dc, x, fake.float(), y).float()
        loss_C = critic_loss(d_real, d_fake, gp, cfg.lambda_gp)
    opt_D.zero_grad(set_to_none=True)
    loss_C.backward()
    opt_D.step()
    return {"d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(), "gp": gp.item(), "loss_C": loss_C.item()}


def generator_step(G: Generator, G_ema: Generator, Dc: Critic, opt_G, y: torch.Tensor, cfg: Recipe,
                   device: torch.device, precision: str = "fp32") -> float:
    """One generator update on eq. (2), then theta_ema <- tau theta_ema + (1 - tau) theta; returns L_G."""
    z = torch.randn(len(y), cfg.z_dim, device=device)
    with autocast(device, precision):
        loss_G = generator_loss(Dc(G(z, y), y).float())
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward(inputs=list(G.parameters()))  # G's gradients only: D's weight gradients are not computed
    opt_G.step()
    ema_update(G, G_ema, cfg.ema_decay)
    return loss_G.item()
