"""Benchmark (ECE 685D HW5 Problem 1): the DCGAN's training loop, ours against a plain one.

Both loops run ``dcgan_mnist.train_step`` (a D step on a real and a generated batch, then a G step
on the same fakes) with the same ``Generator`` / ``Discriminator`` (identical initial weights),
Adam(2e-4, betas (0.5, 0.999)) and batch size:
- plain: ``torchvision.datasets.MNIST`` with ``ToTensor + Normalize((0.5,), (0.5,))`` PIL
  transforms through a ``DataLoader``, plain ``torch.optim.Adam``, fp32, denormals not flushed;
- ours (``problem1_dcgan.py``): the split in one tensor sliced by ``TensorLoader``, denormals
  flushed (``get_device``), fused Adam (``common.training.adam``), and the script's precision
  (``--precision``, default the script's: fp32, since bf16's sample quality is not checked yet).
They are timed side by side in alternating chunks (``common.bench``) and extrapolated to an epoch;
``ours`` share of peak is against the matmul peak in its precision.

    cd ece685d_hw5 && OMP_NUM_THREADS=1 python bench_dcgan.py      # about 30 s

Last lines: ``ece dcgan epoch share of peak: <percent>%``, ``ece dcgan epoch speedup: <ratio>x``.
Needs the MNIST files (``--data-root`` or ``HW_DATA_ROOT``); without them it exits 2 with one line.
"""
from __future__ import annotations

import contextlib

import torch

from common import data as D
from common.bench import (PeakMeter, TimedLoop, print_side_by_side, reference_loader, side_by_side_parser,
                          time_side_by_side)
from common.cli import run_main
from common.training import adam, autocast, get_device, resolve_precision
from dcgan_mnist import Discriminator, Generator, train_step
from problem1_dcgan import Config

NAME = "ece dcgan epoch"


def models(cfg: Config, make_adam):
    """G, D and their optimizers, the same initial weights for every call."""
    torch.manual_seed(cfg.seed)
    G, Dn = Generator(cfg.nz), Discriminator()
    return (G, Dn, *(make_adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) for m in (G, Dn)))


def step_in(amp, g_loss: str):
    """``problem1_dcgan``'s per-batch step under ``amp``, reading the losses as its loop logs them."""
    def step(G, Dn, opt_G, opt_D, batch):
        out = train_step(G, Dn, batch[0], opt_G, opt_D, amp, g_loss)
        return float(out["d_loss"]) + float(out["g_loss"])
    return step


def main(argv=None) -> float:
    parser = side_by_side_parser(__doc__.splitlines()[0], batches=8, chunk=4, warmup=1)
    parser.add_argument("--precision", default=Config.precision, choices=["fp32", "bf16", "auto"],
                        help="our loop's precision (problem1_dcgan.py's default)")
    args = parser.parse_args(argv)
    cfg = Config()
    device = get_device("cpu")  # flushes denormals for our loop, as problem1_dcgan does
    precision = resolve_precision(args.precision, device)
    split = D.load_split("mnist", "train", root=args.data_root)  # DataError (exit 2) when absent
    ours_loader = D.TensorLoader(D.images(split, "tanh"), batch_size=cfg.batch_size, drop_last=True)
    loops = [TimedLoop("plain (DataLoader + PIL transforms, Adam, fp32)", step_in(contextlib.nullcontext, cfg.g_loss),
                       models(cfg, torch.optim.Adam), reference_loader(args.data_root, cfg.batch_size, True), False),
             TimedLoop(f"ours (TensorLoader, fused Adam, denormals flushed, {precision})",
                       step_in(lambda: autocast(device, precision), cfg.g_loss), models(cfg, adam), ours_loader, True)]
    peak = PeakMeter(precision)
    per_batch = time_side_by_side(loops, args.batches, args.chunk, args.warmup, peak)
    return print_side_by_side(NAME, loops, per_batch, len(split) // cfg.batch_size, precision, peak)


if __name__ == "__main__":
    run_main(main)
