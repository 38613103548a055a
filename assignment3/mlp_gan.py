"""Assignment 3: the MLP GAN of the handout (Figure 1) and the training pieces every part shares.

Handout: the Assignment 3 handout (Part I TODO-1..TODO-5, Part II studies). The GAN is
Goodfellow et al., "Generative Adversarial Nets" (2014), with the non-saturating generator loss.

* TODO-1 ``Generator`` (100 -> 256 -> 512 -> 1024 -> 784, Tanh) and ``Discriminator``
  (784 -> 1024 -> 512 -> 256 -> 1, Sigmoid), each ONE ``nn.Sequential``; LeakyReLU(0.2) between
  the linear layers, dropout in D.
* TODO-2 ``nn.BCELoss`` and Adam (``make_optimizers``; ``fit`` builds the same with the fused
  kernel, ``common.training.adam``).
* TODO-3 ``real_fake_labels``, ``d_loss_real``, ``d_loss_fake``, ``g_loss_fn``, freezing with
  ``set_requires_grad`` inside ``train_discriminator_step`` / ``train_generator_step``, and
  ``train_step`` (one D step, then one G step).
* ``fit`` runs whole trainings for the Part II studies through the shared epoch loop
  (``common.loop``: history, checkpoints with resume, NaN guard) with judge-based evaluations and
  snapshots as its callbacks, ``sample`` draws images from a fixed noise tensor.

Images are flat vectors of 784 pixels in [-1, 1] (``Normalize((0.5,), (0.5,))``), which is what
the Tanh output of G produces and what D reads.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from common import data as D
from common.cli import BaseConfig
from common.loop import train_epochs
from common.training import EpochSamples, Run, adam, autocast

LATENT_DIM = 100
IMAGE_DIM = 28 * 28


@dataclass
class Recipe:
    """Part I's training recipe: 30 epochs, batch 128, Adam lr 2e-4 with beta1 0.5 (DCGAN's), z of 100.
    Plain fields (no flags), so the submitted notebook can use it as is."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = dataclasses.field(default=0.5, metadata={"help": "Adam beta1 (DCGAN's 0.5)"})
    latent_dim: int = 100
    dropout: float = dataclasses.field(default=0.3, metadata={"help": "dropout after each hidden layer of D"})
    seed: int = 0


@dataclass
class GanConfig(Recipe, BaseConfig):
    """Defaults shared by every Assignment 3 script (each script may override epochs)."""

    n_eval: int = dataclasses.field(default=2000, metadata={"help": "samples per judge evaluation"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "n_eval": 256}


# --------------------------------------------------------------------------------------------
# TODO-1: the two networks, each one nn.Sequential (handout Figure 1)


class Generator(nn.Sequential):
    """z (N, 100) -> image (N, 784) in [-1, 1]: Linear 100-256-512-1024-784, LeakyReLU, Tanh."""

    def __init__(self, latent_dim: int = LATENT_DIM):
        super().__init__(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),    # Layer-1
            nn.Linear(256, 512), nn.LeakyReLU(0.2),           # Layer-2
            nn.Linear(512, 1024), nn.LeakyReLU(0.2),          # Layer-3
            nn.Linear(1024, IMAGE_DIM),                       # Layer-4
            nn.Tanh(),                                        # last layer
        )
        self.latent_dim = latent_dim


class Discriminator(nn.Sequential):
    """image (N, 784) or (N, 1, 28, 28) -> P(real) (N, 1): Linear 784-1024-512-256-1, LeakyReLU,
    dropout, Sigmoid. ``Flatten`` (no parameters) lets it read unflattened images too."""

    def __init__(self, dropout: float = 0.3):
        super().__init__(
            nn.Flatten(),
            nn.Linear(IMAGE_DIM, 1024), nn.LeakyReLU(0.2), nn.Dropout(dropout),  # Layer-1
            nn.Linear(1024, 512), nn.LeakyReLU(0.2), nn.Dropout(dropout),        # Layer-2
            nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(dropout),         # Layer-3
            nn.Linear(256, 1),                                                   # Layer-4
            nn.Sigmoid(),                                                        # last layer
        )


# --------------------------------------------------------------------------------------------
# TODO-2: loss and optimizers


def make_optimizers(G: nn.Module, D: nn.Module, lr: float = 2e-4, beta1: float = 0.5):
    """Adam for each network, betas (beta1, 0.999) as in DCGAN; returns ``(opt_G, opt_D)``."""
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, 0.999))
    return opt_G, opt_D


# --------------------------------------------------------------------------------------------
# TODO-3: labels, losses, freezing, the training step


def real_fake_labels(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for D: ones (N, 1) for real images, zeros (N, 1) for generated ones."""
    return torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)


def d_loss_real(criterion, d_real: torch.Tensor, real_labels: torch.Tensor) -> torch.Tensor:
    """L_D^real = BCE(D(x), 1) = -mean log D(x)."""
    return criterion(d_real.float(), real_labels)


def d_loss_fake(criterion, d_fake: torch.Tensor, fake_labels: torch.Tensor) -> torch.Tensor:
    """L_D^fake = BCE(D(G(z)), 0) = -mean log(1 - D(G(z)))."""
    return criterion(d_fake.float(), fake_labels)


def g_loss_fn(criterion, d_fake: torch.Tensor, real_labels: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss L_G = BCE(D(G(z)), 1) = -mean log D(G(z))."""
    return criterion(d_fake.float(), real_labels)


def set_requires_grad(model: nn.Module, flag: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(flag)


def noise(n: int, latent_dim: int = LATENT_DIM, device="cpu", generator=None) -> torch.Tensor:
    """z ~ N(0, I), shape (n, latent_dim), from ``generator`` (a torch.Generator) if given."""
    if generator is not None:
        return torch.randn(n, latent_dim, generator=generator).to(device)
    return torch.randn(n, latent_dim, device=device)


def train_discriminator_step(G, D, opt_D, criterion, real: torch.Tensor, latent_dim: int = LATENT_DIM,
                             precision: str = "fp32") -> dict:
    """One D update with G frozen: L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)."""
    set_requires_grad(G, False)
    set_requires_grad(D, True)
    n, device = real.shape[0], real.device
    real_labels, fake_labels = real_fake_labels(n, device)
    with autocast(device, precision):
        fake = G(noise(n, latent_dim, device))  # no graph: G is frozen
        out = D(torch.cat([real, fake.to(real.dtype)]))  # one pass over real and fake rows
    d_real, d_fake = out[:n], out[n:]
    loss_real = d_loss_real(criterion, d_real, real_labels)
    loss_fake = d_loss_fake(criterion, d_fake, fake_labels)
    d_loss = loss_real + loss_fake
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    return {"d_loss": d_loss.detach(), "d_loss_real": loss_real.detach(), "d_loss_fake": loss_fake.detach(),
            "d_real": d_real.detach().float().mean(), "d_fake": d_fake.detach().float().mean()}


def train_generator_step(G, D, opt_G, criterion, n: int, device, latent_dim: int = LATENT_DIM,
                         precision: str = "fp32") -> dict:
    """One G update with D frozen: L_G = BCE(D(G(z)), 1) on fresh noise."""
    set_requires_grad(D, False)
    set_requires_grad(G, True)
    real_labels, _ = real_fake_labels(n, device)
    with autocast(device, precision):
        d_fake = D(G(noise(n, latent_dim, device)))
    g_loss = g_loss_fn(criterion, d_fake, real_labels)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_G.step()
    return {"g_loss": g_loss.detach(), "d_fake_g": d_fake.detach().float().mean()}


def train_step(G, D, opt_G, opt_D, criterion, real, latent_dim: int = LATENT_DIM, precision: str = "fp32") -> dict:
    """A D step then a G step on a batch of real images; returns the losses and D outputs."""
    out = train_discriminator_step(G, D, opt_D, criterion, real, latent_dim, precision)
    out.update(train_generator_step(G, D, opt_G, criterion, real.shape[0], real.device, latent_dim, precision))
    return out


def train_epoch(G, D, opt_G, opt_D, criterion, loader, device, latent_dim: int = LATENT_DIM,
                schedulers=()) -> dict:
    """One epoch of Part I's loop: for each batch of real images a D update with G frozen, then a G
    update with D frozen; each of ``schedulers`` steps after every batch. Returns per-batch lists
    of the losses, the mean of D(x) and of D(G(z)), and G's learning rate."""
    log = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": [], "lr": []}
    for real, _ in loader:
        real, n = real.to(device), real.size(0)
        real_labels, fake_labels = real_fake_labels(n, device)  # labels: 1 real, 0 fake

        set_requires_grad(G, False)  # D's update: freeze G, unfreeze D
        set_requires_grad(D, True)
        d_real, d_fake = D(real), D(G(noise(n, latent_dim, device)))
        loss_real = d_loss_real(criterion, d_real, real_labels)  # D loss on real images
        loss_fake = d_loss_fake(criterion, d_fake, fake_labels)  # D loss on fake images
        d_loss = loss_real + loss_fake
        opt_D.zero_grad()
        d_loss.backward()
        opt_D.step()

        set_requires_grad(D, False)  # G's update: freeze D, unfreeze G; fresh noise
        set_requires_grad(G, True)
        g_loss = g_loss_fn(criterion, D(G(noise(n, latent_dim, device))), real_labels)  # G loss
        opt_G.zero_grad()
        g_loss.backward()
        opt_G.step()

        log["lr"].append(opt_G.param_groups[0]["lr"])
        for scheduler in schedulers:
            scheduler.step()
        for key, value in zip(log, (d_loss, g_loss, d_real.mean(), d_fake.mean())):
            log[key].append(value.item())
    set_requires_grad(D, True)
    return log


@torch.no_grad()
def sample(G: nn.Module, z: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """G(z) in eval mode, without gradients; (N, 784) in [-1, 1] on the CPU."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i:i + batch]).float().cpu() for i in range(0, len(z), batch)])
    G.train(was_training)
    return out


def fixed_noise(n: int, latent_dim: int = LATENT_DIM, seed: int = 1234, device="cpu"):
    """The same noise every time (seeded), made once per run for sample grids."""
    return noise(n, latent_dim, device, torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Data and whole trainings (Part II)


def load_mnist(cfg, device, split: str = "train") -> tuple[torch.Tensor, torch.Tensor, str]:
    """MNIST as flat (N, 784) floats in [-1, 1] on ``device``, labels, and the data source."""
    s = D.load_split("mnist", split, root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    return D.images(s, "tanh", device=device).view(len(s), -1), s.y.to(device), s.source


def make_loader(x: torch.Tensor, batch_size: int, seed: int) -> D.TensorLoader:
    return D.TensorLoader(x, batch_size=batch_size, shuffle=True, seed=seed)


def evaluate(G, evaluator, z_eval: torch.Tensor) -> dict:
    """Judge metrics of G(z_eval): Frechet distance (and floor), confidence, class entropy."""
    rep = evaluator.report(sample(G, z_eval), value_range=(-1, 1))
    return {k: rep[k] for k in ("frechet_distance", "frechet_floor_train_vs_test", "judge_confidence",
                                "class_entropy", "class_histogram")}


def fit(cfg, run: Run, x: torch.Tensor, device, precision: str = "fp32", evaluator=None, z_eval=None,
        eval_every: int = 1, eval_steps=(), snapshot_every: int = 0, z_fixed=None, schedule=None,
        label: str = "") -> dict:
    """Train G and D for ``cfg.epochs`` on ``x`` with checkpoints in ``run.dir`` (``--resume``).

    ``evaluator`` measures G every ``eval_every`` epochs and after each update count in
    ``eval_steps``; ``snapshot_every`` > 0 keeps ``snapshot_epochNNN.pt`` and the fixed-noise
    samples at those epochs; ``schedule(opt, steps_per_epoch, epochs)`` builds an LR scheduler
    for each optimizer. The evaluations and samples are kept in the checkpoint, so a resumed run
    returns every one. Returns the models, histories, evaluations and samples by epoch.
    """
    torch.manual_seed(cfg.seed)
    G, Dn = Generator(cfg.latent_dim).to(device), Discriminator(cfg.dropout).to(device)
    # make_optimizers' Adam, with its fused kernel where PyTorch has one (common.training.adam)
    opt_G, opt_D = (adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) for m in (G, Dn))
    criterion = nn.BCELoss()
    loader = make_loader(x, cfg.batch_size, cfg.seed)
    scheds = [schedule(o, len(loader), cfg.epochs) for o in (opt_G, opt_D)] if schedule else []
    epoch_samples = EpochSamples()  # evaluations (record) and fixed-noise samples (add)
    objects = {"G": G, "D": Dn, "opt_G": opt_G, "opt_D": opt_D, "loader": loader,
               **{f"sched_{i}": s for i, s in enumerate(scheds)}, "epoch_samples": epoch_samples}
    start = run.resume(objects) if cfg.resume else 0
    pending = sorted(s for s in eval_steps if s > run.step)

    def measure(epoch_float: float) -> None:
        if evaluator is not None:
            epoch_samples.record(epoch=round(epoch_float, 3), step=run.step, **evaluate(G, evaluator, z_eval))

    def step(batch, i) -> dict:
        """A D step then a G step; the LR schedulers (if any) step once per iteration."""
        out = train_step(G, Dn, opt_G, opt_D, criterion, batch[0], cfg.latent_dim, precision)
        out["lr"] = opt_G.param_groups[0]["lr"]
        for sched in scheds:
            sched.step()
        return out

    def evaluate_pending(row: dict) -> None:
        while pending and run.step >= pending[0]:
            pending.pop(0)
            measure(run.step / len(loader))

    def keep_epoch(e: int, last: bool = False) -> None:
        """The evaluation and snapshot due after epoch ``e`` (every ``eval_every`` and
        ``snapshot_every`` epochs, and after the ``last``)."""
        if evaluator is not None and eval_every and (e % eval_every == 0 or last):
            if not epoch_samples.values or epoch_samples.values[-1]["step"] != run.step:
                measure(float(e))
        due = snapshot_every and (e % snapshot_every == 0 or last) and z_fixed is not None
        if due and e not in epoch_samples.epochs:
            epoch_samples.add(e, sample(G, z_fixed))
            torch.save({"G": G.state_dict(), "D": Dn.state_dict(), "epoch": e, "step": run.step},
                       run.dir / f"snapshot_epoch{e:03d}.pt")

    def end_of_epoch(ep) -> None:
        set_requires_grad(G, True)
        set_requires_grad(Dn, True)
        keep_epoch(ep.number)
        ep.row["step"] = run.step

    if start == 0 and evaluator is not None and eval_every:
        measure(0.0)
    train_epochs(step, loader, cfg.epochs, run=run, objects=objects, start=start, models=(G, Dn),
                 guard=("d_loss", "g_loss"), on_step=[evaluate_pending], on_epoch=[end_of_epoch],
                 desc=f"{label} epoch".strip(), label=label or "gan")
    # After the checkpoint: a run resumed with more epochs then holds exactly what an
    # uninterrupted one holds, and a finished run resumed takes these again.
    keep_epoch(cfg.epochs, last=True)
    return {"G": G, "D": Dn, "history": run.history, "evals": epoch_samples.values,
            "snapshots": epoch_samples.by_epoch(), "steps_per_epoch": len(loader)}


# --------------------------------------------------------------------------------------------
# Stability measures (Part II.2 and II.3)

DIVERGED_D_LOSS = 0.1   # an epoch whose mean D loss is below this: D wins outright
DIVERGED_G_LOSS = 5.0   # an epoch whose mean G loss is above this: G's loss blew up
COLLAPSE_DROP = 0.25    # class entropy (nats) falling this much between two evaluations
COLLAPSE_FLOOR = 1.6    # or staying below this (about five equally used classes) late in training


def epoch_stability(d_epoch, g_epoch, last_fraction: float = 0.2) -> tuple[float, int]:
    """From the per-epoch mean losses of D and G: the spread (standard deviation) of G's over the
    last ``last_fraction`` of the epochs (at least two), and the number of diverged epochs (mean D
    loss below ``DIVERGED_D_LOSS``, mean G loss above ``DIVERGED_G_LOSS``, or not finite)."""
    d, g = np.asarray(d_epoch, dtype=float), np.asarray(g_epoch, dtype=float)
    late = max(2, int(round(len(g) * last_fraction)))
    spread = float(g[-late:].std()) if len(g) > 1 else float("nan")
    diverged = int(np.sum(~np.isfinite(d) | ~np.isfinite(g) | (d < DIVERGED_D_LOSS) | (g > DIVERGED_G_LOSS)))
    return spread, diverged


def stability_measures(history, evals: list[dict], last_fraction: float = 0.2) -> dict:
    """Numbers that say how (un)stable a run was.

    * ``g_loss_std_last``: standard deviation of G's per-step loss over the last
      ``last_fraction`` of the updates; ``g_loss_epoch_std_last``: the same over per-epoch means
      (independent of the per-batch noise that a smaller batch has anyway);
    * ``gap_last``: mean D(x) - D(G(z)) over those updates (0: D cannot tell; 1: D wins outright);
    * ``divergence_epochs``: epochs with mean D loss < 0.1 or mean G loss > 5 (or non-finite);
    * ``collapse_events``: evaluations where the judge's class entropy fell by > 0.25 nats
      since the previous one, or stayed below 1.6 nats in the second half of training.
    """
    g = np.asarray(history.series("g_loss"), dtype=float)
    gap = np.asarray(history.series("d_real"), dtype=float) - np.asarray(history.series("d_fake"), dtype=float)
    k = max(1, int(len(g) * last_fraction))
    epoch_spread, diverged = epoch_stability(history.series("d_loss", "epoch"), history.series("g_loss", "epoch"),
                                             last_fraction)
    collapse = 0
    trained = [e for e in evals if e["epoch"] >= 1]
    last_epoch = trained[-1]["epoch"] if trained else 0
    for prev, cur in zip(trained, trained[1:]):
        if prev["class_entropy"] - cur["class_entropy"] > COLLAPSE_DROP:
            collapse += 1
        elif cur["epoch"] > last_epoch / 2 and cur["class_entropy"] < COLLAPSE_FLOOR:
            collapse += 1
    return {"g_loss_std_last": float(g[-k:].std()) if len(g) else math.nan,
            "g_loss_epoch_std_last": epoch_spread,
            "g_loss_mean_last": float(g[-k:].mean()) if len(g) else math.nan,
            "d_loss_mean_last": float(np.asarray(history.series("d_loss")[-k:]).mean()) if len(g) else math.nan,
            "gap_last": float(gap[-k:].mean()) if len(gap) else math.nan,
            "divergence_epochs": diverged, "collapse_events": collapse}


def instability_key(measures: dict) -> tuple:
    """Sort key, most unstable first: events (divergence + collapse), then the spread of G's loss."""
    return (-(measures["divergence_epochs"] + measures["collapse_events"]), -measures["g_loss_epoch_std_last"])
