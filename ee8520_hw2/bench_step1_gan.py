"""Benchmark (Step 1): the MLP GAN's training loop, ours against the skeleton's.

Both loops run the skeleton's step (``models.GAN.train_discriminator`` then ``train_generator`` on
D's fresh verdict of the same fakes, as ``train_main_loop`` does) with the same ``Generator`` /
``Discriminator`` (identical initial weights), Adam settings, BCEWithLogitsLoss and batch size:
- skeleton: ``torchvision.datasets.MNIST`` with ``ToTensor + Normalize((0.5,), (0.5,))`` PIL
  transforms through a ``DataLoader``, plain ``torch.optim.Adam``, denormals not flushed;
- ours (``hw2_step1_main.py``): the split in one tensor sliced by ``TensorLoader``, denormals
  flushed (``get_device``), fused Adam (``common.training.adam``); fp32, as Step 1 trains.
They are timed side by side in alternating chunks (``common.bench``) and extrapolated to an epoch.
An MLP this small is bound by per-op overhead, not FLOPs, so its share of the fp32 peak is low.

    cd ee8520_hw2 && python bench_step1_gan.py      # about 20 s

Last lines: ``step1 gan epoch share of peak: <percent>%``, ``step1 gan epoch speedup: <ratio>x``.
Needs the MNIST files (``--data-root`` or ``HW_DATA_ROOT``); without them it exits 2 with one line.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from common import data as D
from common.bench import (PeakMeter, TimedLoop, print_side_by_side, reference_loader, side_by_side_parser,
                          time_side_by_side)
from common.cli import run_main
from common.training import adam, get_device
from hw2_step1_main import Step1Config
from models.GAN import Discriminator, Generator, train_discriminator, train_generator

NAME = "step1 gan epoch"
CRITERION = nn.BCEWithLogitsLoss()


def gan_step(G, Dn, opt_G, opt_D, batch, dim_z: int) -> float:
    """The skeleton's per-batch body: D on the real batch and G(z).detach(), then G on D's verdict."""
    real = batch[0]
    fake = G(torch.randn(real.shape[0], dim_z))
    d_loss = train_discriminator(Dn, opt_D, real, fake, CRITERION)[0]
    g_loss = train_generator(G, opt_G, Dn(fake), CRITERION)[0]
    return d_loss.item() + g_loss.item()  # both loops log the losses every step


def models(cfg: Step1Config, make_adam):
    """G, D and their optimizers, the same initial weights for every call."""
    torch.manual_seed(cfg.seed)
    G, Dn = Generator(cfg.dim_z, cfg.g_channels), Discriminator(cfg.d_channels, cfg.dropout)
    return (G, Dn, make_adam(G.parameters(), lr=cfg.lr_g or cfg.lr, betas=(cfg.beta1, 0.999)),
            make_adam(Dn.parameters(), lr=cfg.lr_d or cfg.lr, betas=(cfg.beta1, 0.999)))


def main(argv=None) -> float:
    parser = side_by_side_parser(__doc__.splitlines()[0], batches=200, chunk=50, warmup=10)
    parser.add_argument("--threads", type=int, default=Step1Config.threads, help="CPU threads (Step 1's default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = Step1Config()
    get_device("cpu")  # flushes denormals for our loop, as hw2_step1_main does
    split = D.load_split("mnist", "train", root=args.data_root)  # DataError (exit 2) when absent
    ours_loader = D.TensorLoader(D.images(split, "tanh").reshape(len(split), -1), batch_size=cfg.batch_size)
    step = lambda *state: gan_step(*state, dim_z=cfg.dim_z)  # noqa: E731
    loops = [TimedLoop("skeleton (DataLoader + PIL transforms, Adam, fp32)", step,
                       models(cfg, torch.optim.Adam), reference_loader(args.data_root, cfg.batch_size), False),
             TimedLoop("ours (TensorLoader, fused Adam, denormals flushed, fp32)", step,
                       models(cfg, adam), ours_loader, True)]
    peak = PeakMeter("fp32")
    per_batch = time_side_by_side(loops, args.batches, args.chunk, args.warmup, peak)
    return print_side_by_side(NAME, loops, per_batch, math.ceil(len(split) / cfg.batch_size), "fp32", peak)


if __name__ == "__main__":
    run_main(main)
