"""Benchmark (issue 8): one RDFIA DCGAN training epoch, our loop against a reference-style loop.

Reference-style loop, as the course's notebook and pytorch/examples write it: a torchvision
``DataLoader`` over ``torchvision.datasets.MNIST`` with ``Pad(2) + ToTensor + Normalize`` PIL
transforms, fp32, PyTorch's default denormal handling. Ours (``tp2_dcgan.py``): the whole split
as one padded tensor sliced by ``TensorLoader``, denormals flushed (``get_device``), and the
precision ``--precision auto`` resolves to (bf16 autocast on a bf16 CPU). Same model, same batch
size, same training step (``tp2_dcgan.gan_step``), the same number of batches for both, timed
side by side in one process (interleaved blocks of 10 batches, so a busy shared CPU slows both
alike) and extrapolated to an epoch (469 batches of 128). Ours also keeps weights and batches
channels-last (NHWC), oneDNN's fast layout for bf16 convolutions, steps with fused Adam
(``common.training.adam``) where the reference uses plain ``torch.optim.Adam``, and freezes D
during G's update (``gan_step(freeze_d=True)``: D's weight gradients, which the course's loop
computes there and discards, are skipped; the updates are the same).

The last line is ``dcgan epoch speedup: <ratio>x``. Needs the MNIST files (``--data-root`` or
``HW_DATA_ROOT``); without them it exits 2 with one line.
"""
from __future__ import annotations

import math
import time
import typing
from dataclasses import dataclass, field

import torch

from common import data as D
from common.cli import BaseConfig, parse_config, run_main
from common.paths import data_root, run_dir
from common.tables import write_table
from common.training import adam, get_device, resolve_precision, seed_everything, write_json
from tp2_dcgan import channels_last, gan_step
from tp2_models import Discriminator, Generator, generator_loss_nonsaturating, weights_init


@dataclass
class BenchConfig(BaseConfig):
    batches: int = field(default=40, metadata={"help": "timed batches per loop (after warm-up)"})
    warmup: int = field(default=3, metadata={"help": "untimed batches per loop"})
    QUICK: typing.ClassVar[dict] = {"batches": 4, "warmup": 1}


def _models(device, nhwc: bool):
    torch.manual_seed(0)
    G, Dn = Generator(100, 32, 1).to(device), Discriminator(32, 1).to(device)
    G.apply(weights_init)
    Dn.apply(weights_init)
    if nhwc:  # before the optimizers see the parameters
        G, Dn = channels_last(G, Dn)
    # Ours steps with tp2_dcgan's optimizers (fused Adam); the reference with plain torch.optim.Adam.
    adam_ = adam if nhwc else torch.optim.Adam
    opts = [adam_(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (G, Dn)]
    return G, Dn, opts


class Loop:
    """One training loop (models, optimizers, batch source, numerics) that can run a few batches at a time."""

    def __init__(self, batches, device, precision: str, flush_denormal: bool, nhwc: bool = False,
                 freeze_d: bool = False):
        self.G, self.D, (self.opt_G, self.opt_D) = _models(device, nhwc)
        self.batches, self.device, self.precision, self.flush = batches, device, precision, flush_denormal
        self.freeze_d = freeze_d
        self.it = iter(batches)
        self.seconds = 0.0

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.batches)
            return next(self.it)

    def run(self, n: int, timed: bool = True) -> None:
        """``n`` batches, data loading included; the time is added when ``timed``."""
        torch.set_flush_denormal(self.flush)
        start = time.perf_counter()
        for _ in range(n):
            real = self._next()[0].to(self.device)
            z = torch.randn(real.shape[0], 100, 1, 1, device=self.device)
            out = gan_step(self.G, self.D, self.opt_G, self.opt_D, real, z, generator_loss_nonsaturating,
                           self.device, self.precision, freeze_d=self.freeze_d)
            float(out["d_loss"])  # the reference prints losses too; forces the step to finish
        if timed:
            self.seconds += time.perf_counter() - start
        torch.set_flush_denormal(True)


def reference_loader(root, batch_size: int):
    import torchvision
    import torchvision.transforms as T

    tf = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.splitlines()[0])
    seed_everything(cfg.seed)
    root = data_root(cfg.data_root)
    split = D.load_split("mnist", "train", root=cfg.data_root)  # DataError (exit 2) when absent
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    n_epoch_batches = math.ceil(len(split) / cfg.batch_size)

    x = D.images(split, "tanh", size=32, device=device).contiguous(memory_format=torch.channels_last)
    loops = {
        # Reference: PIL DataLoader, fp32, denormals not flushed (torch's default).
        "reference (DataLoader, fp32)": Loop(reference_loader(root, cfg.batch_size), device, "fp32", False),
        # The reference's data path with flushed denormals: shows where the gain comes from.
        "reference + flush denormals": Loop(reference_loader(root, cfg.batch_size), device, "fp32", True),
        # Ours: padded tensor in memory, flushed denormals, resolved precision.
        f"ours (TensorLoader, {precision}, NHWC)": Loop(D.TensorLoader(x, batch_size=cfg.batch_size, seed=cfg.seed),
                                                        device, precision, True, nhwc=True, freeze_d=True),
    }
    for loop in loops.values():
        loop.run(cfg.warmup, timed=False)
    # Interleaved blocks, so a busy shared CPU slows every loop alike.
    block = max(1, min(10, cfg.batches))
    done = 0
    while done < cfg.batches:
        n = min(block, cfg.batches - done)
        for loop in loops.values():
            loop.run(n)
        done += n

    per = {k: loop.seconds / cfg.batches for k, loop in loops.items()}
    rows = [{"loop": k, "seconds_per_batch": v, "epoch_seconds_extrapolated": v * n_epoch_batches} for k, v in per.items()]
    t = list(per.values())
    speedup = t[0] / t[-1]
    folder = run_dir("rdfia_tp2", "bench", "dcgan_epoch", cfg.out_dir)
    write_table(rows, folder / "results", title=f"DCGAN epoch ({cfg.batches} timed batches of {cfg.batch_size}, "
                                                 f"extrapolated to {n_epoch_batches})")
    result = {"timed_batches": cfg.batches, "batch_size": cfg.batch_size, "epoch_batches": n_epoch_batches,
              "precision_ours": precision, "threads": torch.get_num_threads(), "speedup": speedup,
              "rows": rows, "quick": cfg.quick}
    write_json(folder / "metrics.json", result)
    for r in rows:
        print(f"{r['loop']:<36} {r['seconds_per_batch'] * 1000:8.1f} ms/batch   "
              f"~{r['epoch_seconds_extrapolated']:7.1f} s/epoch")
    print(f"dcgan epoch speedup: {speedup:.2f}x")
    return result


if __name__ == "__main__":
    run_main(main)
