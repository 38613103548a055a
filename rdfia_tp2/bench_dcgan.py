"""Benchmark: an RDFIA DCGAN and a conditional DCGAN training epoch, ours against a reference-style loop.

Also our loop's share of the CPU's peak.

Reference-style loop, as the course's notebook and pytorch/examples write it: a torchvision
``DataLoader`` over ``torchvision.datasets.MNIST`` with ``Pad(2) + ToTensor + Normalize`` PIL
transforms, fp32, PyTorch's default denormal handling. Ours (``tp2_dcgan.py``, ``tp2_cgan.py``):
the whole split as one padded tensor sliced by ``TensorLoader``, denormals flushed
(``get_device``), and the precision ``--precision auto`` resolves to (bf16 autocast on a bf16
CPU). Same model, same batch size, same training step (``tp2_training.gan_step``), the same number of
batches for both, timed side by side in one process (interleaved blocks of batches, so a busy
shared CPU slows both alike) and extrapolated to an epoch (469 batches of 128). Ours also trains the
models as ``tp2_training.prepare_models`` makes them (in bf16: ``tp2_speedups``, the Sigmoid in fp32
and the 4x4 convolutions' weight gradient as one matmul), keeps
weights and batches channels-last (NHWC), oneDNN's fast layout for bf16 convolutions, steps with
fused Adam (``common.training.adam``) where the reference uses plain ``torch.optim.Adam``, and
freezes D during G's update (``gan_step(freeze_d=True)``: D's weight gradients, which the course's
loop computes there and discards, are skipped; the updates are the same).

Share of peak (``common.bench``): the FLOPs of one of our steps (``FlopCounterMode``, forward and
backward) over our time per batch, against the one-thread matmul peak in our precision, sampled
between the rounds in this process.

The conditional DCGAN (``--cgan-batches``, 0 skips it) is timed first, then the DCGAN. The output
ends with ``cgan epoch share of peak: <percent>%``, ``dcgan epoch share of peak``, ``cgan epoch
speedup: <ratio>x`` and, last, ``dcgan epoch speedup: <ratio>x``. Needs the MNIST files (``--data-root`` or
``HW_DATA_ROOT``); without them it exits 2 with one line.
"""
from __future__ import annotations

import math
import typing
from types import SimpleNamespace
from dataclasses import dataclass, field

import torch

from common import data as D
from common.bench import PeakMeter, TimedLoop, print_share, time_side_by_side
from common.cli import BaseConfig, parse_config, run_main
from common.paths import data_root, run_dir
from common.tables import write_table
from common.training import adam, get_device, resolve_precision, seed_everything, write_json
from tp2_training import gan_step, prepare_models
from tp2_models import (ConditionalDiscriminator, ConditionalGenerator, Discriminator, Generator,
                        generator_loss_nonsaturating, weights_init)

N_CLASSES = 10


@dataclass
class BenchConfig(BaseConfig):
    batches: int = field(default=40, metadata={"help": "timed DCGAN batches per loop (after warm-up)"})
    cgan_batches: int = field(default=6, metadata={
        "help": "timed conditional DCGAN batches per loop (0: skip it; its reference step takes seconds)"})
    warmup: int = field(default=3, metadata={"help": "untimed batches per loop"})
    QUICK: typing.ClassVar[dict] = {"batches": 4, "cgan_batches": 1, "warmup": 1, "batch_size": 32}


def _models(device, nhwc: bool, cond: bool = False, precision: str = "fp32"):
    torch.manual_seed(0)
    if cond:  # tp2_cgan.py's pair
        G, Dn = ConditionalGenerator(100, N_CLASSES, 1).to(device), ConditionalDiscriminator(N_CLASSES, 1).to(device)
    else:
        G, Dn = Generator(100, 32, 1).to(device), Discriminator(32, 1).to(device)
    G.apply(weights_init)
    Dn.apply(weights_init)
    if nhwc:  # ours, as tp2_training.prepare_models makes it, before the optimizers see the parameters
        G, Dn = prepare_models(SimpleNamespace(fast_wgrad=True), device, precision, G, Dn)
    # Ours steps with tp2_dcgan's optimizers (fused Adam); the reference with plain torch.optim.Adam.
    adam_ = adam if nhwc else torch.optim.Adam
    opts = [adam_(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (G, Dn)]
    return G, Dn, opts


class Loop(TimedLoop):
    """One training loop (models, optimizers, batch source, numerics) that runs a few batches at a
    time (``common.bench.TimedLoop``)."""

    def __init__(self, batches, device, precision: str, flush_denormal: bool, nhwc: bool = False,
                 freeze_d: bool = False, cond: bool = False):
        G, Dn, (opt_G, opt_D) = _models(device, nhwc, cond, precision)
        self.device, self.precision, self.freeze_d, self.cond = device, precision, freeze_d, cond
        super().__init__("", self.gan_step, (G, Dn, opt_G, opt_D), batches, flush_denormal)

    def gan_step(self, G, Dn, opt_G, opt_D, batch) -> None:
        """One training step on a loader batch, as tp2_dcgan.py / tp2_cgan.py take it."""
        real = batch[0].to(self.device)
        z = torch.randn(real.shape[0], 100, 1, 1, device=self.device)
        cond_real = cond_fake = ()
        if self.cond:  # real labels (one-hot; the PIL loader gives indices), fakes for uniform labels
            y = batch[1].to(self.device)
            y_real = y if y.dim() == 2 else D.one_hot(y, N_CLASSES)
            y_fake = D.one_hot(torch.randint(0, N_CLASSES, (len(real),), device=self.device), N_CLASSES)
            cond_real, cond_fake = (y_real,), (y_fake,)
        out = gan_step(G, Dn, opt_G, opt_D, real, z, generator_loss_nonsaturating, self.device, self.precision,
                       cond_real=cond_real, cond_fake=cond_fake, freeze_d=self.freeze_d)
        float(out["d_loss"])  # the reference prints losses too; forces the step to finish


def reference_loader(root, batch_size: int):
    import torchvision
    import torchvision.transforms as T

    tf = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)


def bench(name: str, cfg, root, split, x, device, precision: str, cond: bool, batches: int, warmup: int,
          block: int) -> dict:
    """Time the reference, (for the DCGAN) the reference with flushed denormals, and ours on
    ``batches`` batches each in interleaved blocks; print the table and the share of peak."""
    n_epoch_batches = math.ceil(len(split) / cfg.batch_size)
    ours_loader = (D.TensorLoader(x, D.one_hot(split.y, N_CLASSES).to(device), batch_size=cfg.batch_size,
                                  seed=cfg.seed) if cond else D.TensorLoader(x, batch_size=cfg.batch_size, seed=cfg.seed))
    loops = {
        # Reference: PIL DataLoader, fp32, denormals not flushed (torch's default).
        "reference (DataLoader, fp32)": Loop(reference_loader(root, cfg.batch_size), device, "fp32", False,
                                             cond=cond),
        # The reference's data path with flushed denormals: shows where the gain comes from
        # (the DCGAN only: a conditional step takes seconds, and make bench has 10 minutes).
        **({} if cond else {"reference + flush denormals": Loop(reference_loader(root, cfg.batch_size), device,
                                                                "fp32", True)}),
        # Ours: padded tensor in memory, flushed denormals, resolved precision.
        f"ours (TensorLoader, {precision}, NHWC)": Loop(ours_loader, device, precision, True, nhwc=True,
                                                        freeze_d=True, cond=cond),
    }
    for k, loop in loops.items():
        loop.name = k  # its row in the table
    # Interleaved blocks, so a busy shared CPU slows every loop alike; the peak is sampled between them.
    peak = PeakMeter(precision)  # this model's rounds only: the load changes between the two models
    per = time_side_by_side(list(loops.values()), batches, max(1, min(block, batches)), warmup, peak)
    rows = [{"loop": k, "seconds_per_batch": v, "epoch_seconds_extrapolated": v * n_epoch_batches} for k, v in per.items()]
    t = list(per.values())
    speedup = t[0] / t[-1]
    ours = list(loops.values())[-1]
    flops = ours.flops()
    for r in rows:
        print(f"{r['loop']:<36} {r['seconds_per_batch'] * 1000:8.1f} ms/batch   "
              f"~{r['epoch_seconds_extrapolated']:7.1f} s/epoch")
    share = print_share(name, flops, t[-1], precision, peak, what="batch")
    return {"timed_batches": batches, "epoch_batches": n_epoch_batches, "speedup": speedup, "rows": rows,
            "flops_per_batch": flops, "share_of_peak": share, "peak_gflops_per_thread": peak.gflops(precision)}


def main(argv=None) -> dict:
    cfg = parse_config(BenchConfig, argv, description=__doc__.splitlines()[0])
    seed_everything(cfg.seed)
    root = data_root(cfg.data_root)
    split = D.load_split("mnist", "train", root=cfg.data_root)  # DataError (exit 2) when absent
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    x = D.images(split, "tanh", size=32, device=device).contiguous(memory_format=torch.channels_last)
    result = {"batch_size": cfg.batch_size, "precision_ours": precision, "threads": torch.get_num_threads(),
              "quick": cfg.quick}
    if cfg.cgan_batches:
        result["cgan"] = bench("cgan epoch", cfg, root, split, x, device, precision, True, cfg.cgan_batches,
                               min(1, cfg.warmup), 3)
    result["dcgan"] = bench("dcgan epoch", cfg, root, split, x, device, precision, False, cfg.batches,
                            cfg.warmup, 10)
    result["speedup"] = result["dcgan"]["speedup"]
    folder = run_dir("rdfia_tp2", "bench", "dcgan_epoch", cfg.out_dir, quick=cfg.quick)
    rows = [{"model": m, **r} for m in ("cgan", "dcgan") if m in result for r in result[m]["rows"]]
    write_table(rows, folder / "results", title=f"DCGAN and conditional DCGAN epoch (batches of {cfg.batch_size}, "
                                                 f"extrapolated to an epoch)")
    write_json(folder / "metrics.json", result)
    for m in ("cgan", "dcgan"):  # the DCGAN's line last
        if m in result:
            print(f"{m} epoch speedup: {result[m]['speedup']:.2f}x")
    return result


if __name__ == "__main__":
    run_main(main)
