"""Benchmark (EE 8520 HW2 Step 2, issues 3 and 8): PixelCNN sampling, cached vs naive.

The naive sampler runs 784 full forward passes (one per pixel, as the skeleton does); ours
(``models.AR.sample_fast``) computes every layer at one position per step from cached activations.
Both draw each pixel as ``u < sigmoid(logit)`` from the same pre-drawn seeded uniforms, so their
samples must be identical; the script fails (exit 1) if they are not. A random-init model of the
default architecture is enough for timing and identity (``--checkpoint`` loads a trained one from a
``hw2_step2_main.py`` run instead).

    cd ee8520_hw2 && python bench_sampling.py      # or: make bench-pixelcnn-sampling

The last line is ``pixelcnn sampling speedup: <ratio>x`` (targets: 5x issue 3, 10x issue 8).
"""
from __future__ import annotations

import argparse
import time

import torch

from common.cli import run_main
from common.data import one_hot
from common.training import get_device, seed_everything
from models.AR import ConditionalPixelCNN, PixelCNN, draw_uniforms, sample_fast, sample_naive, set_conv_impl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="samples drawn in one batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditional", action="store_true", help="benchmark the conditional model")
    parser.add_argument("--checkpoint", default=None, help="checkpoint.pt of a hw2_step2_main.py run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-rows", type=int, default=2, help=(
        "run the naive loop over the first R rows only and scale its time by 28/R (every naive step is "
        "the same full-image forward pass, so the time is linear in R; the whole loop of the gated model "
        "takes about 20 min on one AVX2 core); identity is then checked on those rows (the tests check "
        "whole images on smaller models). 28 = the whole loop"))
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(args.seed)
    model = ConditionalPixelCNN() if args.conditional else PixelCNN()
    name = "conditional" if args.conditional else "unconditional"
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state"][name]
        model.load_state_dict(state)
    set_conv_impl(model, "masked")  # the textbook layer: full kernel times mask
    model.to(device).eval()
    u = draw_uniforms(args.n, args.seed, device=device)
    y = one_hot(torch.arange(args.n) % 10).to(device) if args.conditional else None
    print(f"{name} PixelCNN ({sum(p.numel() for p in model.parameters())} parameters, "
          f"{'trained' if args.checkpoint else 'random init'}), {args.n} samples of 28x28, seed {args.seed}, "
          f"{torch.get_num_threads()} threads, device {device}")

    sample_fast(model, u[:2, :, :2], y[:2] if y is not None else None)  # warm-up
    t0 = time.perf_counter()
    fast = sample_fast(model, u, y)
    t_fast = time.perf_counter() - t0
    print(f"ours, cached activations (one position per layer per step): {t_fast:.2f} s")
    rows = max(1, min(28, args.naive_rows))
    t0 = time.perf_counter()
    naive = sample_naive(model, u, y, rows=rows)
    t_naive = time.perf_counter() - t0
    if rows < 28:  # every naive step is the same full forward pass: scale the prefix's time
        t_naive *= 28 / rows
        naive, fast = naive[:, :, :rows], fast[:, :, :rows]
        print(f"naive, the first {rows * 28} of the 784 full forward passes, time scaled to 784: {t_naive:.2f} s "
              f"(samples compared on the first {rows} rows)")
    else:
        print(f"naive, 784 full forward passes: {t_naive:.2f} s")
    same = torch.equal(naive, fast)
    print(f"identical samples: {same} (mean pixel {fast.mean().item():.4f}; "
          f"{int((naive != fast).sum())} of {naive.numel()} pixels differ)")
    if not same:
        raise SystemExit("the cached sampler's samples differ from the naive sampler's")
    print(f"pixelcnn sampling speedup: {t_naive / t_fast:.1f}x")


if __name__ == "__main__":
    run_main(main)
