"""Benchmark: one training epoch of the Assignment 3 MLP GAN, ours against a
reference-style loop, timed side by side on the same number of batches.

* reference: ``torchvision.datasets.MNIST`` with ``ToTensor() + Normalize((0.5,), (0.5,))`` PIL
  transforms through a ``DataLoader`` (batch 128, shuffled, no workers), fp32, default denormal
  handling, and the usual tutorial step (one G forward reused for the D and G updates, no freezing);
* ours: the whole split in one tensor sliced by ``TensorLoader``, denormals flushed
  (``get_device``), the precision ``--precision auto`` resolves to (bf16 autocast on a bf16 CPU,
  ``common.training.resolve_precision``; the other precision is timed beside it), the handout's step with
  freezing from ``mlp_gan.train_step`` (D reads real and fake rows in one pass), and fused Adam
  (``common.training.adam``).

Both use the same Generator/Discriminator, Adam, BCE and batch size. Each is timed on ``--batches``
batches after ``--warmup`` untimed ones, in alternating rounds (so a load change on a shared machine
hits both), and the per-batch time is extrapolated to an epoch of 469 batches. The last line is
``mlp gan epoch speedup: <ratio>x``; before it, ``mlp gan epoch share of peak: <percent>%``: the
FLOPs of one of our steps (``FlopCounterMode``, forward and backward) over our time per batch,
against the one-thread matmul peak in our precision sampled between the rounds (``common.bench``).
An MLP this small is bound by per-op overhead, not by FLOPs, so its share is low.

    python bench_mlp_gan.py                # about a minute on an idle 2-core CPU
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn

import mlp_gan as M
from common import data as D
from common.bench import PeakMeter, count_step_flops, hardware_precisions, print_share
from common.cli import run_main
from common.data import DataError
from common.paths import data_root
from common.training import get_device, resolve_precision


def reference_step(G, Dn, opt_G, opt_D, criterion, images: torch.Tensor, latent_dim: int = 100) -> None:
    """The tutorial loop: D on real and on G(z).detach(), then G through D on the same G(z)."""
    real = images.view(images.size(0), -1)
    n = real.size(0)
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    opt_D.zero_grad()
    loss_real = criterion(Dn(real), ones)
    fake = G(torch.randn(n, latent_dim))
    loss_fake = criterion(Dn(fake.detach()), zeros)
    (loss_real + loss_fake).backward()
    opt_D.step()
    opt_G.zero_grad()
    criterion(Dn(fake), ones).backward()
    opt_G.step()


def models(ours: bool, seed: int = 0):
    """Same weights on both sides; ours steps with ``mlp_gan.make_optimizers`` (fused Adam), the
    reference with the tutorial's plain ``torch.optim.Adam``."""
    torch.manual_seed(seed)
    G, Dn = M.Generator(), M.Discriminator()
    if ours:
        opt_G, opt_D = M.make_optimizers(G, Dn)
    else:
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (G, Dn))
    return G, Dn, opt_G, opt_D, nn.BCELoss()


def time_reference(root, batch_size: int, n: int, warmup: int, state: dict) -> float:
    """Seconds for ``n`` reference batches (the loader and models persist in ``state``)."""
    import torchvision
    from torchvision import transforms

    torch.set_flush_denormal(False)  # what a plain script runs with
    if "loader" not in state:
        try:
            ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
        except RuntimeError:
            raise DataError(f"MNIST not found in {root / 'MNIST'}: the benchmark needs the full set "
                            "(point --data-root or HW_DATA_ROOT at it)") from None
        state["loader"] = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
        state["models"] = models(ours=False)
        state["it"] = iter(state["loader"])
        for _ in range(warmup):
            reference_step(*state["models"], next(state["it"])[0])
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        try:
            images, _ = next(state["it"])
        except StopIteration:
            state["it"] = iter(state["loader"])
            images, _ = next(state["it"])
        reference_step(*state["models"], images)
    return time.perf_counter() - t, time.process_time() - c


def time_ours(root, batch_size: int, n: int, warmup: int, state: dict, precision: str = "fp32",
              compiled: bool = False) -> float:
    """Seconds for ``n`` of our batches; with ``compiled``, G and D go through ``torch.compile`` and
    the seconds of the warm-up batches, which include the compilation, go to ``state["setup"]``."""
    device = get_device("cpu")  # flushes denormals
    if "loader" not in state:
        split = D.load_split("mnist", "train", root=root)
        x = D.images(split, "tanh").view(len(split), -1)
        state["loader"] = M.make_loader(x, batch_size, seed=0)
        G, Dn, *rest = models(ours=True)
        if compiled:
            G, Dn = torch.compile(G), torch.compile(Dn)
        state["models"] = (G, Dn, *rest)
        state["it"] = iter(state["loader"])
        start = time.perf_counter()
        for _ in range(warmup):
            M.train_step(*state["models"], next(state["it"])[0], precision=precision)
        state["setup"] = time.perf_counter() - start
    G, Dn, opt_G, opt_D, criterion = state["models"]
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        try:
            (real,) = next(state["it"])
        except StopIteration:
            state["it"] = iter(state["loader"])
            (real,) = next(state["it"])
        M.train_step(G, Dn, opt_G, opt_D, criterion, real, precision=precision)
    del device
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per loop")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the batches are split into")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"], help="our loop's precision")
    parser.add_argument("--other-precision", action=argparse.BooleanOptionalAction, default=None,
                        help="also time our loop in the other precision (fp32 vs bf16), reported beside the headline "
                             "(default: where this CPU has bf16)")
    parser.add_argument("--compile", action="store_true",
                        help="also time our loop with torch.compile'd G and D, compile time included (reported)")
    args = parser.parse_args(argv)
    root = data_root(args.data_root)
    precision = resolve_precision(args.precision, get_device("cpu"))
    other = "fp32" if precision == "bf16" else "bf16"
    if args.other_precision is None:
        args.other_precision = other in hardware_precisions()
        if not args.other_precision:
            print(f"ours in {other}: not timed, this CPU has no {other} instructions ({other} is emulated)")
    per_round = max(1, args.batches // args.rounds)
    ref_state, our_state, other_state, comp_state = {}, {}, {}, {}
    t_ref = t_ours = t_other = c_ref = c_ours = c_other = t_comp = 0.0
    peak = PeakMeter(precision)
    peak.sample()
    for r in range(args.rounds):
        w, c = time_reference(root, args.batch_size, per_round, args.warmup, ref_state)
        t_ref, c_ref = t_ref + w, c_ref + c
        w, c = time_ours(root, args.batch_size, per_round, args.warmup, our_state, precision)
        t_ours, c_ours = t_ours + w, c_ours + c
        if args.other_precision:
            w, c = time_ours(root, args.batch_size, per_round, args.warmup, other_state, other)
            t_other, c_other = t_other + w, c_other + c
        if args.compile:
            t_comp += time_ours(root, args.batch_size, per_round, args.warmup, comp_state, precision, compiled=True)[0]
        peak.sample()
        print(f"round {r + 1}/{args.rounds}: reference {t_ref:.2f} s, ours ({precision}) {t_ours:.2f} s"
              + (f", ours {other} {t_other:.2f} s" if args.other_precision else "") + " (cumulative)", flush=True)
    n = per_round * args.rounds
    per_epoch = math.ceil(60000 / args.batch_size)
    ref_epoch, our_epoch = t_ref / n * per_epoch, t_ours / n * per_epoch
    print(f"threads: {torch.get_num_threads()}; {n} batches of {args.batch_size} each, extrapolated to {per_epoch} batches")
    print(f"reference (DataLoader + PIL transforms, fp32, no denormal flush): {t_ref / n * 1000:.1f} ms/batch, "
          f"{ref_epoch:.1f} s/epoch")
    print(f"ours (TensorLoader, denormals flushed, {precision}, freezing, one D pass): {t_ours / n * 1000:.1f} ms/batch, "
          f"{our_epoch:.1f} s/epoch")
    if args.other_precision:
        print(f"ours in {other} instead: {t_other / n * 1000:.1f} ms/batch, "
              f"{t_other / n * per_epoch:.1f} s/epoch, {t_ref / t_other:.2f}x the reference")
    print(f"CPU time (process_time; steadier than wall time on a shared machine): reference "
          f"{c_ref / n * 1000:.1f} ms/batch, ours {c_ours / n * 1000:.1f} ms/batch ({c_ref / c_ours:.2f}x)"
          + (f", ours {other} {c_other / n * 1000:.1f} ms/batch ({c_ref / c_other:.2f}x)" if args.other_precision else ""))
    if args.compile:
        # Eager warm-up batches cost about what timed ones do; the rest of compiled warm-up is compilation.
        compile_s = comp_state["setup"] - args.warmup * t_ours / n
        comp_epoch = t_comp / n * per_epoch
        print(f"ours with torch.compile (G and D): {t_comp / n * 1000:.1f} ms/batch, {comp_epoch:.1f} s/epoch, "
              f"plus {compile_s:.1f} s of compilation: one epoch {comp_epoch + compile_s:.1f} s vs {our_epoch:.1f} s "
              f"eager, 30 epochs {(30 * comp_epoch + compile_s) / 60:.1f} vs {30 * our_epoch / 60:.1f} min")
    real = next(iter(our_state["loader"]))[0]
    flops = count_step_flops(lambda G, Dn, opt_G, opt_D, crit: M.train_step(G, Dn, opt_G, opt_D, crit, real,
                                                                            precision=precision),
                             *our_state["models"])
    print_share("mlp gan epoch", flops, t_ours / n, precision, peak, what="batch")
    ratio = ref_epoch / our_epoch
    print(f"mlp gan epoch speedup: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    run_main(main)
