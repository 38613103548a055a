"""Speed benchmarks, each against its baseline measured side by side in the same run.

    python -m common.bench data   # in-memory batches vs torchvision's DataLoader (make bench-data)
    python -m common.bench all    # every benchmark (make bench) -> outputs/bench/results.md

Each benchmark prints as its last line ``<name> speedup: <ratio>x``. The course benchmarks live
beside their models (``<course>/bench_*.py``); this module runs them and collects those lines.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import torch

from . import data as D
from .cli import run_main
from .paths import OUTPUTS, ROOT, data_root

# name, course folder, script, target ratio
COURSE_BENCHMARKS = [
    ("pixelcnn training", "ee8520_hw2", "bench_training.py", 2.5),
    ("pixelcnn sampling", "ee8520_hw2", "bench_sampling.py", 10.0),
    ("mlp gan epoch", "assignment3", "bench_mlp_gan.py", 2.0),
    ("dcgan epoch", "rdfia_tp2", "bench_dcgan.py", 2.0),
    ("wgan-gp epoch", "csc8851_hw2", "bench_wgan_gp.py", 2.0),
]
LINE = re.compile(r"^(?P<name>[a-z0-9 -]+) speedup: (?P<ratio>[0-9.]+)x\s*$")


def bench_data(root=None, batch_size: int = 128, repeats: int = 3) -> float:
    """One MNIST train epoch of batches of 128 in [-1, 1]: TensorLoader vs DataLoader(ToTensor + Normalize)."""
    import torchvision
    from torchvision import transforms

    root = data_root(root)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    split = D.load_split("mnist", "train", root=root)
    x = D.images(split, scale="tanh")
    load_s = time.perf_counter() - t0
    ours = D.TensorLoader(x, split.y, batch_size=batch_size, seed=0)
    tv = torchvision.datasets.MNIST(str(root), train=True, download=False,
                                    transform=transforms.Compose([transforms.ToTensor(),
                                                                  transforms.Normalize((0.5,), (0.5,))]))
    baseline = torch.utils.data.DataLoader(tv, batch_size=batch_size, shuffle=True, num_workers=0)

    def epoch(loader) -> float:
        start, total = time.perf_counter(), 0.0
        for xb, yb in loader:
            total += float(xb[0, 0, 0, 0]) + int(yb[0])  # touch every batch
        return time.perf_counter() - start

    t_ours = min(epoch(ours) for _ in range(repeats))
    t_base = min(epoch(baseline) for _ in range(max(1, repeats - 2)))
    ratio = t_base / t_ours
    print(f"one-time load of MNIST train into one tensor: {load_s:.2f} s")
    print(f"baseline DataLoader(torchvision MNIST, ToTensor+Normalize, num_workers=0): {t_base:.2f} s/epoch")
    print(f"ours TensorLoader (randperm slices of one tensor): {t_ours:.3f} s/epoch")
    print(f"data loader speedup: {ratio:.1f}x")
    return ratio


def run_course_benchmark(folder: str, script: str) -> tuple[float | None, str]:
    path = ROOT / folder / script
    if not path.exists():
        return None, f"{folder}/{script} is missing"
    proc = subprocess.run([sys.executable, script], cwd=ROOT / folder, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    print(proc.stdout, end="")
    if proc.returncode != 0 or not lines or not LINE.match(lines[-1]):
        return None, f"failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
    return float(LINE.match(lines[-1])["ratio"]), ""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["data", "all"])
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    if args.which == "data":
        bench_data(args.data_root)
        return
    rows = [("data loader", bench_data(args.data_root), 10.0, "")]
    for name, folder, script, target in COURSE_BENCHMARKS:
        print(f"\n== {name} ({folder}/{script})", flush=True)
        ratio, problem = run_course_benchmark(folder, script)
        rows.append((name, ratio, target, problem))
    out = OUTPUTS / "bench"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Benchmarks", "", f"Machine: {torch.get_num_threads()} threads, torch {torch.__version__}.", "",
             "| benchmark | speedup | target | met |", "|---|---|---|---|"]
    for name, ratio, target, problem in rows:
        shown = f"{ratio:.1f}x" if ratio is not None else problem
        lines.append(f"| {name} | {shown} | {target:g}x | {'yes' if ratio and ratio >= target else 'no'} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {out / 'results.md'}")
    for name, ratio, target, problem in rows:
        print(f"{name} speedup: {ratio:.1f}x" if ratio is not None else f"{name}: {problem}")


if __name__ == "__main__":
    run_main(main)
