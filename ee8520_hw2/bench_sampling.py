"""Benchmark: PixelCNN sampling with cached activations against the plain raster loop.

The plain loop (``models.AR.sample``) runs 784 full forward passes, one per pixel, as the skeleton
does; ours (``models.fast_sampling.sample_fast``) computes every layer at one position per step from
cached activations. Both draw each pixel as ``u < sigmoid(logit)`` from the same seeded uniforms, so
their samples must be identical; the script fails (exit 1) if they are not. A random-init model of
the default architecture is enough for timing and identity (``--checkpoint`` loads a trained one
from a ``hw2_step2_main.py`` run instead: its ``<model>/checkpoint.pt``).

    cd ee8520_hw2 && python bench_sampling.py

The last line is ``pixelcnn sampling speedup: <ratio>x``.
"""
from __future__ import annotations

import argparse
import time

import torch

from common.cli import run_main
from common.data import one_hot
from common.training import get_device, seed_everything
from models.AR import ConditionalPixelCNN, PixelCNN, draw_uniforms, sample
from models.fast_sampling import sample_fast


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="samples drawn in one batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditional", action="store_true", help="benchmark the conditional model")
    parser.add_argument("--checkpoint", default=None, help="checkpoint.pt of a hw2_step2_main.py run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-rows", type=int, default=2, help=(
        "time the plain loop's first R rows of full-image forward passes and scale by 28/R (every step is "
        "the same forward pass, so the time is linear in R); identity is checked on those rows (by "
        "causality the first R rows of a sample do not depend on the rows below). 28 = the whole loop"))
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(args.seed)
    model = ConditionalPixelCNN() if args.conditional else PixelCNN()
    name = "conditional" if args.conditional else "unconditional"
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state"]["model"])
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
    x = torch.zeros_like(u)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(rows * 28):  # the plain loop's forward passes, on the full image
            model(x, y) if args.conditional else model(x)
    t_naive = (time.perf_counter() - t0) * 28 / rows
    naive = sample(model, u[:, :, :rows], y)
    fast = fast[:, :, :rows]
    print(f"plain raster loop: {rows * 28} of its 784 full forward passes timed, scaled to 784: {t_naive:.2f} s "
          f"(samples compared on the first {rows} rows)")
    same = torch.equal(naive, fast)
    print(f"identical samples: {same} (mean pixel {fast.mean().item():.4f}; "
          f"{int((naive != fast).sum())} of {naive.numel()} pixels differ)")
    if not same:
        raise SystemExit("the cached sampler's samples differ from the plain loop's")
    print(f"pixelcnn sampling speedup: {t_naive / t_fast:.1f}x")


if __name__ == "__main__":
    run_main(main)
