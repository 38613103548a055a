"""Benchmark (EE 8520 HW2 Step 2, issue 8): one PixelCNN training step, ours vs the plain baseline.

Same architecture (``PixelCNN()``: the gated PixelCNN, 32 channels per stack, twelve layers), same
batch of 128, same Adam step, side by side in this run:
- baseline: fp32, NCHW, every masked conv as a full-kernel convolution with ``weight * mask``;
- ours: bf16 autocast (where the CPU supports it), channels_last, masked convs computed over
  their causal taps only (``set_conv_impl(model, "taps")``) and the gated units as one compiled
  pass (``set_gate_impl(model, "compiled")``, where ``hw2_step2_main.py`` uses it: the CPU); plus
  the intermediate variants, so the table shows what each switch buys.
Steps of the variants are interleaved in rounds so a change in machine load hits all alike; the
median step time counts. Then baseline and ours train from the same initialization on the same
batches for the same number of steps, and both are scored by fp32 test NLL (nats per image): the
speed-up only counts if ours is within 0.3 nats of the baseline (or better). Early in training
two runs drift apart by more than rounding alone explains, so the script also scores the same
baseline weights under bf16 autocast: the precision effect without training noise. That check is
of bf16: on a CPU without bf16, where ours trains in fp32 too, it is skipped unless ``--steps``
asks for it.

    cd ee8520_hw2 && python bench_training.py [--steps 30] [--rounds 3]

Share of peak (issue 20, ``common.bench``): the FLOPs of one step of each variant
(``FlopCounterMode``, forward and backward; the taps variants run fewer FLOPs than the full
kernels) over its median step time, against the one-thread matmul peak in its precision, sampled
between the timing rounds in this process; ``pixelcnn training share of peak`` is ours.

Issue 19 replaced the model of the first sessions (a 7x7 A conv and six residual 3x3 B blocks,
64 channels, with a blind spot) by the gated one; that model (``ResidualPixelCNN`` below, used only
here) is timed in the same rounds, in our mode, so ``pixelcnn step vs the residual model`` says
what a training epoch costs now against then, on this machine.

Last lines: ``pixelcnn step vs the residual model: <ratio>x``, ``pixelcnn training share of peak:
<percent>%``, then ``pixelcnn training speedup: <ratio>x`` (target 2.5x).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn as nn

from common import data as D
from common.bench import PeakMeter, count_step_flops, print_share, share_of_peak
from common.cli import run_main
from common.training import autocast, get_device, resolve_precision, seed_everything
from hw2_step2_main import train_step
from models.AR import MaskedConv2d, PixelCNN, nll_nats_per_image, resolve_gate_impl, set_conv_impl, set_gate_impl

LOSS = nn.BCEWithLogitsLoss()  # the training loss of hw2_step2_main.py


class ResidualPixelCNN(nn.Module):
    """The Step 2 model before issue 19, for the time comparison only: a 7x7 'A' masked conv, six
    residual 3x3 'B' blocks ``h + conv(ReLU(h))`` of 64 channels, ReLU, 1x1, ReLU, 1x1."""

    def __init__(self, channels=64, n_blocks=6):
        super().__init__()
        self.input_conv = MaskedConv2d("A", 1, channels, 7, padding=3)
        self.blocks = nn.ModuleList([MaskedConv2d("B", channels, channels, 3, padding=1) for _ in range(n_blocks)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, x):
        h = self.input_conv(x)
        for block in self.blocks:
            h = h + block(torch.relu(h))
        return self.head(h)


class Variant:
    def __init__(self, name, precision, channels_last, impl, model, gate="eager"):
        self.name, self.precision, self.channels_last, self.impl = name, precision, channels_last, impl
        self.model = set_gate_impl(set_conv_impl(model, impl), gate)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.times: list[float] = []

    def prep(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x, device, model=None, opt=None):
        """One BCEWithLogitsLoss training step (of ``model``/``opt``, copies of ours, if given);
        returns the loss (nats per image)."""
        model = self.model if model is None else model
        opt = self.opt if opt is None else opt
        return train_step(model, opt, LOSS, x, None, False, device, self.precision, self.channels_last).item()

    def flops(self, x, device) -> int:
        return count_step_flops(lambda m, o: self.step(x, device, m, o), self.model, self.opt)

    @torch.no_grad()
    def test_nll(self, x_test, batch=500, precision="fp32"):
        """Mean test NLL (nats per image), evaluated in ``precision`` (fp32 unless asked)."""
        self.model.eval()
        total = 0.0
        for i in range(0, len(x_test), batch):
            xb = x_test[i:i + batch]
            with autocast(xb.device, precision):
                total += nll_nats_per_image(self.model(self.prep(xb)), xb).sum().item()
        self.model.train()
        return total / len(x_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help=(
        "training steps of baseline and ours for the NLL check (default: 30 where ours trains in bf16, "
        "0 = skipped where it trains in fp32 like the baseline)"))
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (each times every variant)")
    parser.add_argument("--per-round", type=int, default=1, help="timed steps per variant per round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(args.seed)
    try:
        train, test = (D.load_split("mnist", s, root=args.data_root) for s in ("train", "test"))
    except D.DataError:
        train, test = (D.load_split("mnist", s, root=args.data_root, quick=True) for s in ("train", "test"))
        print(f"full MNIST not found: using the {train.source} data ({len(train)} train images)")
    x_train = (D.images(train, "unit", device=device) > 0.5).float()  # the skeleton's threshold binarization
    x_test = (D.images(test, "unit", device=device)[:args.test_images] > 0.5).float()
    bf16 = resolve_precision("auto", device)  # ours: bf16 where the hardware has it
    print(f"PixelCNN() training step, batch {args.batch_size}, {torch.get_num_threads()} threads, device {device}, "
          f"bf16 {'supported' if bf16 == 'bf16' else 'NOT supported: ours stays fp32'}")

    torch.manual_seed(args.seed)
    init = PixelCNN()
    gate = resolve_gate_impl("auto", device)  # hw2_step2_main.py's default
    specs = [("baseline: fp32 NCHW, full kernel x mask", "fp32", False, "masked", "eager"),
             ("fp32 NCHW, causal taps", "fp32", False, "taps", "eager"),
             (f"{bf16} channels_last, causal taps", bf16, True, "taps", "eager"),
             (f"ours: {bf16} channels_last, causal taps, {gate} gate", bf16, True, "taps", gate)]
    variants = [Variant(n, p, cl, impl, copy.deepcopy(init).to(device), g) for n, p, cl, impl, g in specs]
    base, ours = variants[0], variants[-1]
    residual = Variant(f"the residual model (before issue 19), {bf16} channels_last, taps", bf16, True, "taps",
                       ResidualPixelCNN().to(device))
    variants.append(residual)

    # Timing: interleaved rounds, fixed batches (the optimizer state moves on, which does not matter here)
    g = torch.Generator().manual_seed(args.seed)
    batches = [x_train[torch.randint(len(x_train), (args.batch_size,), generator=g)] for _ in range(args.per_round)]
    for v in variants:  # warm-up (oneDNN primitive creation; compiling the gate, timed)
        t0 = time.perf_counter()
        v.step(batches[0], device)
        if v is ours and gate == "compiled":
            print(f"first step of ours, compiling the gate: {time.perf_counter() - t0:.1f} s")
    peak = PeakMeter(*dict.fromkeys(v.precision for v in variants))
    peak.sample()
    for _ in range(args.rounds):
        for v in variants:
            for xb in batches:
                t0 = time.perf_counter()
                v.step(xb, device)
                v.times.append(time.perf_counter() - t0)
        peak.sample()
    print("\nmedian time per training step (GFLOP/s; share of the one-thread matmul peak in its precision):")
    med = {v.name: statistics.median(v.times) for v in variants}
    by_impl: dict[tuple, int] = {}  # precision and memory format do not change what FlopCounterMode counts
    for v in variants:
        key = (type(v.model).__name__, v.impl)
        if key not in by_impl:
            by_impl[key] = v.flops(batches[0], device)
    flops = {v.name: by_impl[(type(v.model).__name__, v.impl)] for v in variants}
    for v in variants:
        achieved, share = share_of_peak(flops[v.name], med[v.name], v.precision, peak)
        print(f"  {v.name:<44} {med[v.name]:.3f} s  ({med[base.name] / med[v.name]:.2f}x)  "
              f"{flops[v.name] / 1e9:.1f} GFLOP, {achieved:.0f} GFLOP/s, {100 * share:.0f}% of {v.precision} peak")

    # Quality: baseline and ours from the same init, same batches, same number of steps. It checks
    # bf16: where ours trains in fp32 too, taps, channels-last and the compiled gate change only
    # rounding (tests/test_ee8520_step2.py: test_taps_and_masked_agree_on_default_models,
    # test_compiled_gate_matches_eager), so it is skipped
    # unless --steps asks for it (30 steps of both cost about 5 min in fp32 on an AVX2-only CPU).
    steps = args.steps if args.steps is not None else (30 if bf16 == "bf16" else 0)
    if not steps:
        print("\nNLL check skipped: ours trains in fp32 like the baseline (no bf16 here), so its updates differ "
              "only by rounding; --steps 30 runs it")
    else:
        seed_everything(args.seed)
        base = Variant(specs[0][0], "fp32", False, "masked", copy.deepcopy(init).to(device))
        ours = Variant(specs[-1][0], bf16, True, "taps", copy.deepcopy(init).to(device), gate)
        loader = D.TensorLoader(x_train, batch_size=args.batch_size, seed=args.seed, drop_last=True)
        done, t_train = 0, {base.name: 0.0, ours.name: 0.0}
        while done < steps:
            for (xb,) in loader:
                for v in (base, ours):
                    t0 = time.perf_counter()
                    v.step(xb, device)
                    t_train[v.name] += time.perf_counter() - t0
                done += 1
                if done == steps:
                    break
        nll_base, nll_ours = base.test_nll(x_test), ours.test_nll(x_test)
        print(f"\nafter {steps} steps from the same init on the same batches, fp32 test NLL on {len(x_test)} images:")
        print(f"  baseline {nll_base:.2f} nats/image ({t_train[base.name]:.1f} s of training)")
        print(f"  ours     {nll_ours:.2f} nats/image ({t_train[ours.name]:.1f} s of training)")
        gap = nll_ours - nll_base
        verdict = ("within 0.3 nats" if abs(gap) <= 0.3 else
                   "ours lower by more than 0.3 nats: no loss of quality" if gap < 0 else "ours WORSE by more than 0.3 nats")
        print(f"  difference {gap:+.2f} nats: {verdict}")
        # The precision effect alone, free of training noise: the same weights scored both ways
        nll_bf16_eval = base.test_nll(x_test, precision=bf16)
        print(f"  the baseline's weights evaluated under {bf16} autocast: {nll_bf16_eval:.2f} nats/image "
              f"({nll_bf16_eval - nll_base:+.2f} against its fp32 evaluation)")
    print(f"pixelcnn step vs the residual model: {med[ours.name] / med[residual.name]:.2f}x "
          f"({flops[ours.name] / flops[residual.name]:.2f}x its FLOPs)")
    print_share("pixelcnn training", flops[specs[-1][0]], med[specs[-1][0]], bf16, peak)
    print(f"pixelcnn training speedup: {med[base.name] / med[ours.name]:.2f}x")


if __name__ == "__main__":
    run_main(main)
