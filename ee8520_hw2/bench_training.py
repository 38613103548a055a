"""Benchmark: one PixelCNN training step as ``hw2_step2_main.py`` runs it, against the plain step.

Same model (``ConditionalPixelCNN()``, the default architecture), same batch of 128, same Adam step,
timed side by side in this run:
- baseline: the plain eager model in fp32, NCHW (what ``--no-compile --precision fp32`` trains);
- bf16 channels_last, eager: the precision and memory layout alone;
- ours: bf16 autocast (where the CPU has bf16), channels_last, ``torch.compile`` of the model.
Steps of the variants are interleaved in rounds, so a change in machine load hits all alike; the
median step time counts. Then baseline and ours train from the same initialization on the same
batches for the same number of steps and are scored by fp32 test NLL (nats per image): the speedup
counts only if ours is within 0.3 nats of the baseline (or better).

Two rooflines, both measured in this process:
- FLOPs (``FlopCounterMode``, forward and backward) over the one-thread matmul peak in the step's
  precision (``pixelcnn training share of peak``);
- bytes: with 32 channels the step is mostly element-wise work (the gates, the class biases, the
  residual adds), so its bound is the memory traffic. The bytes each op of the eager bf16 step
  reads and writes, over the bandwidth of a large one-thread copy (``pixelcnn training share of
  memory roofline``). The compiled step fuses element-wise ops and moves fewer bytes than that
  count, so this share is an upper estimate.

    cd ee8520_hw2 && python bench_training.py [--steps 30] [--rounds 3]

Last line: ``pixelcnn training speedup: <ratio>x``.
"""
import argparse
import copy
import logging
import statistics
import time

import torch
import torch.nn as nn

from common import data as D
from common.bench import (PeakMeter, copy_bandwidth, count_step_bytes, count_step_flops, print_memory_roofline,
                          print_share, share_of_peak)
from common.cli import run_main
from common.training import get_device, resolve_precision, seed_everything
from hw2_step2_main import test_nll, train_step
from models.AR import ConditionalPixelCNN

LOSS = nn.BCEWithLogitsLoss()  # the training loss of hw2_step2_main.py


class Variant:
    def __init__(self, name, precision, channels_last, compiled, model, device):
        self.name, self.precision, self.channels_last, self.device = name, precision, channels_last, device
        self.model = model.to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.times: list[float] = []

    def step(self, x, y, forward=None, opt=None):
        """One training step (of ``forward``/``opt``, copies of this variant's, if given)."""
        return train_step(forward or self.forward, opt or self.opt, LOSS, x, y, True, self.device, self.precision,
                          self.channels_last).item()

    def test_nll(self, x, y):
        return test_nll(self.model, x, y, True, self.device, "fp32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help=(
        "training steps of baseline and ours for the NLL check (default: 30 where ours trains in bf16, "
        "0 = skipped where it trains in fp32 like the baseline)"))
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (each times every variant)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(args.seed)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        train, test = (D.load_split("mnist", s, root=args.data_root) for s in ("train", "test"))
    except D.DataError:
        train, test = (D.load_split("mnist", s, root=args.data_root, quick=True) for s in ("train", "test"))
        print(f"full MNIST not found: using the {train.source} data ({len(train)} train images)")
    x_train = (D.images(train, "unit", device=device) > 0.5).float()  # the skeleton's threshold binarization
    y_train = D.one_hot(train.y).to(device)
    x_test = (D.images(test, "unit", device=device)[:args.test_images] > 0.5).float()
    y_test = D.one_hot(test.y[:args.test_images]).to(device)
    bf16 = resolve_precision("auto", device)  # ours: bf16 where the hardware has it
    compiled = device.type == "cpu"  # as hw2_step2_main.py decides
    print(f"ConditionalPixelCNN() training step, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"device {device}, bf16 {'supported' if bf16 == 'bf16' else 'NOT supported: ours stays fp32'}")

    torch.manual_seed(args.seed)
    init = ConditionalPixelCNN()
    specs = [("baseline: plain model, fp32 NCHW", "fp32", False, False),
             (f"{bf16} channels_last, eager", bf16, True, False),
             (f"ours: {bf16} channels_last, {'torch.compile' if compiled else 'eager'}", bf16, True, compiled)]
    variants = [Variant(n, p, cl, c, copy.deepcopy(init), device) for n, p, cl, c in specs]
    base, eager, ours = variants

    g = torch.Generator().manual_seed(args.seed)
    index = torch.randint(len(x_train), (args.batch_size,), generator=g)
    xb, yb = x_train[index], y_train[index]
    for v in variants:  # warm-up: oneDNN primitives; the compile of ours, timed
        t0 = time.perf_counter()
        v.step(xb, yb)
        v.step(xb, yb)
        if v is ours and compiled:
            print(f"first two steps of ours, compiling forward and backward: {time.perf_counter() - t0:.1f} s")
    peak = PeakMeter(*dict.fromkeys(v.precision for v in variants))
    peak.sample()
    bandwidth = [copy_bandwidth()]
    for _ in range(args.rounds):
        for v in variants:
            t0 = time.perf_counter()
            v.step(xb, yb)
            v.times.append(time.perf_counter() - t0)
        peak.sample()
        bandwidth.append(copy_bandwidth())
    med = {v.name: statistics.median(v.times) for v in variants}
    flops = count_step_flops(lambda m, o: base.step(xb, yb, m, o), base.model, base.opt)
    print("\nmedian time per training step (GFLOP/s; share of the one-thread matmul peak in its precision):")
    for v in variants:
        achieved, share = share_of_peak(flops, med[v.name], v.precision, peak)
        print(f"  {v.name:<40} {med[v.name]:.3f} s  ({med[base.name] / med[v.name]:.2f}x)  "
              f"{flops / 1e9:.1f} GFLOP, {achieved:.0f} GFLOP/s, {100 * share:.0f}% of {v.precision} peak")

    # Quality: baseline and ours from the same init, on the same batches, for the same number of steps
    steps = args.steps if args.steps is not None else (30 if bf16 == "bf16" else 0)
    if not steps:
        print("\nNLL check skipped: ours trains in fp32 like the baseline (no bf16 here), so its updates differ "
              "only by rounding (tests/test_ee8520_step2.py checks the compiled model against the plain one); "
              "--steps 30 runs it")
    else:
        seed_everything(args.seed)
        base_q = Variant(specs[0][0], "fp32", False, False, copy.deepcopy(init), device)
        ours_q = Variant(specs[-1][0], bf16, True, compiled, copy.deepcopy(init), device)
        loader = D.TensorLoader(x_train, y_train, batch_size=args.batch_size, seed=args.seed, drop_last=True)
        for i, (x, y) in enumerate(loader):
            if i == steps:
                break
            base_q.step(x, y)
            ours_q.step(x, y)
        nll_base, nll_ours = base_q.test_nll(x_test, y_test), ours_q.test_nll(x_test, y_test)
        gap = nll_ours - nll_base
        verdict = ("within 0.3 nats" if abs(gap) <= 0.3 else
                   "ours lower by more than 0.3 nats: no loss of quality" if gap < 0 else "ours WORSE by more than 0.3 nats")
        print(f"\nafter {steps} steps from the same init on the same batches, fp32 test NLL on {len(x_test)} images: "
              f"baseline {nll_base:.2f}, ours {nll_ours:.2f} nats/image; difference {gap:+.2f} nats: {verdict}")
    print()
    print_share("pixelcnn training", flops, med[ours.name], ours.precision, peak)
    n_bytes = count_step_bytes(lambda m, o: eager.step(xb, yb, m, o), eager.model, eager.opt)
    print_memory_roofline("pixelcnn training", n_bytes, med[ours.name], statistics.median(bandwidth))
    print(f"pixelcnn training speedup: {med[base.name] / med[ours.name]:.2f}x")


if __name__ == "__main__":
    run_main(main)
