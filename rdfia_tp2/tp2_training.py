"""RDFIA TP2-de: the training pieces both parts share (``tp2_dcgan.py``, ``tp2_cgan.py``).

The data as the course loads it (MNIST padded to 32x32 in [-1, 1]), the models as they train
(channels-last, and in bf16 the changes of ``tp2_speedups.py``), the practical's GAN step (D on
a real and a fake batch, then G on the same fakes) and the loop's step around it, the optimizers
and their learning-rate schedule, eval-mode generation, and the training figures (loss curves,
samples over training, Frechet distance per epoch).
"""
from __future__ import annotations

import torch

from common import data as D
from common.plotting import plot_curves, plot_panels, save_grid
from common.training import EpochSamples, Run, adam, autocast, epoch_decay
from tp2_models import discriminator_loss
from tp2_speedups import prepare

COURSE = "rdfia_tp2"


def load_data(cfg, device):
    split = D.load_split(cfg.dataset, "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    x = D.images(split, "tanh", size=32, device=device)  # Pad(2) + Normalize((0.5,), (0.5,))
    return split, x.contiguous(memory_format=torch.channels_last), split.y.to(device)


def channels_last(*models):
    """NHWC weights and activations: oneDNN's fast layout for bf16 convolutions on the CPU
    (the training step is ~15% faster)."""
    return [m.to(memory_format=torch.channels_last) for m in models]


def prepare_models(cfg, device, precision: str, *models):
    """The models as they train, before their optimizers are made: in bf16 with
    ``tp2_speedups.prepare`` (the Sigmoid in fp32; with ``cfg.fast_wgrad``, on a CPU, the 4x4
    convolutions' weight gradient as one matmul), then channels-last. In fp32 the stock layers."""
    return channels_last(*(prepare(m, precision, device, cfg.fast_wgrad) for m in models))


@torch.no_grad()
def generate(G, z: torch.Tensor, device, precision: str, *cond, batch: int = 1000) -> torch.Tensor:
    """G(z) in eval mode (BatchNorm running statistics), float32 on the CPU."""
    was_training = G.training
    G.eval()
    out = []
    with autocast(device, precision):
        for i in range(0, len(z), batch):
            out.append(G(z[i:i + batch].to(device), *(c[i:i + batch].to(device) for c in cond)).float().cpu())
    G.train(was_training)
    return torch.cat(out)


def gan_step(G, D, opt_G, opt_D, real, z, g_loss_fn, device, precision, cond_real=(), cond_fake=(),
             freeze_d: bool = True):
    """One step of the practical: D on a real and a fake batch, then G on the same fakes.

    With ``freeze_d`` D's parameters do not require gradients during G's update, so its backward
    skips D's weight gradients, which the course's loop computes and then discards (D's next
    update zeroes them): the same updates, less work. ``freeze_d=False`` is the course's loop."""
    with autocast(device, precision):
        fake = G(z, *cond_fake)
        d_real = D(real, *cond_real)
        d_fake = D(fake.detach(), *cond_fake)
    d_loss = discriminator_loss(d_real, d_fake)
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    D.requires_grad_(not freeze_d)
    with autocast(device, precision):
        d_fake_g = D(fake, *cond_fake)
    g_loss = g_loss_fn(d_fake_g)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_G.step()
    D.requires_grad_(True)
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "D_x": d_real.detach().float().mean(),
            "D_G_z": d_fake.detach().float().mean()}


def make_step(G, Dn, opt_G, opt_D, batch_inputs, g_loss_fn, device, precision: str):
    """The loop's step: ``gan_step`` on one loader batch. ``batch_inputs(batch) -> (real, z,
    cond_real, cond_fake)`` turns it into the step's inputs (the unconditional model has no conditions)."""
    def step(batch, i):
        real, z, cond_real, cond_fake = batch_inputs(batch)
        return gan_step(G, Dn, opt_G, opt_D, real, z, g_loss_fn, device, precision,
                        cond_real=cond_real, cond_fake=cond_fake)
    return step


def make_optimizers(cfg, G, D):
    opt_G = adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_D = adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    scheds = [epoch_decay(o, cfg.lr_decay_epochs) for o in (opt_G, opt_D)]
    return opt_G, opt_D, scheds


def plot_training(run: Run, title: str, epoch_samples: EpochSamples, value_range=(-1, 1), col_labels=None,
                  xlabel: str = "fixed z", fd_floor: float | None = None, fd_n: int | None = None) -> None:
    """Loss curves, the fixed-noise rows of ``epoch_samples`` and, where it recorded
    ``frechet_distance`` values, their curve against the train-vs-test floor."""
    h = run.history
    steps = h.series("step")
    plot_panels({"losses": {"D loss": (steps, h.series("d_loss")), "G loss": (steps, h.series("g_loss"))},
                 "discriminator outputs": {"D(x)": (steps, h.series("D_x")), "D(G(z))": (steps, h.series("D_G_z"))}},
                run.path("losses.png"), title=f"{title}: training curves (smoothed, raw faint)", xlabel="step",
                ylabels={"losses": "BCE loss", "discriminator outputs": "mean D output"}, window=25)
    rows = epoch_samples.rows
    save_grid(torch.cat(rows), run.path("samples_over_training.png"), nrow=len(rows[0]),
              title=f"{title}: fixed-noise samples over training", value_range=value_range,
              row_labels=[f"epoch {e}" for e in epoch_samples.epochs], ylabel="epoch", xlabel=xlabel,
              col_labels=col_labels)
    fd_epochs, fd = epoch_samples.series("frechet_distance")
    if fd:
        plot_curves({"generated vs MNIST test": (fd_epochs, fd),
                     "floor: MNIST train vs test": (fd_epochs, [fd_floor] * len(fd))},
                    run.path("fd_over_training.png"), title=f"{title}: Frechet distance (judge features)",
                    xlabel="epoch", ylabel=f"FD ({fd_n} samples)")
