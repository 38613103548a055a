"""Speed benchmarks, each against its baseline measured side by side in the same run.

    python -m common.bench data   # in-memory batches vs torchvision's DataLoader (make bench-data)
    python -m common.bench all    # every benchmark -> outputs/bench/results.md (make bench: --record,
                                  # also results/bench.md, which the README shows)

Each benchmark prints ``<name> speedup: <ratio>x`` (a script's last line is one) and, for a training loop,
``<name> share of peak: <percent>%`` before it: the loop's achieved GFLOP/s over the CPU's
matmul peak in the loop's precision, both measured in the same process (``count_flops``,
``PeakMeter``, ``print_share``); ``TimedLoop``, ``time_side_by_side`` and ``print_side_by_side``
time a baseline and our loop in alternating chunks and print both lines. The course benchmarks
live beside their models (``<course>/bench_*.py``); this module runs them and collects the lines.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.utils._python_dispatch
import torch.utils._pytree
from torch.utils.flop_counter import FlopCounterMode

from . import data as D
from .cli import run_main
from .courses import courses
from .paths import OUTPUTS, ROOT, data_root, shown
from .summary import cpu_model
from .training import resolve_precision

LINE = re.compile(r"^(?P<name>[a-z0-9 -]+) speedup: (?P<ratio>[0-9.]+)x\s*$")
SHARE_LINE = re.compile(r"^(?P<name>[a-z0-9 -]+) share of peak: (?P<percent>[0-9.]+)%\s*$")
MEMORY_LINE = re.compile(r"^(?P<name>[a-z0-9 -]+) share of memory roofline: (?P<percent>[0-9.]+)%\s*$")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEAK_N = 2048  # the peak is an N x N by N x N matmul


# --------------------------------------------------------------------------------------------
# Share of peak: FLOPs of one training step over the matmul peak, both measured in this process


class _TotalsOnly:
    """Stands in for FlopCounterMode's ModuleTracker, which attributes FLOPs to modules through
    autograd hooks that ``torch.autograd.grad`` rejects (a gradient penalty fails with "A leaf
    node was passed to _will_engine_execute_node"); the total needs no attribution."""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step``, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts the matrix products and convolutions that run, forward and backward (a multiply-add
    is 2 FLOPs; a backward counts only the input/weight gradients it computes; a double backward
    is counted too); elementwise ops, normalization and the optimizer's update count nothing, so an
    optimizer step adds 0."""
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _TotalsOnly()
    with counter:
        step()
    return int(counter.get_total_flops())


def count_step_flops(step: Callable[..., Any], *state) -> int:
    """FLOPs of ``step(*copies)`` run on deep copies of ``state`` (models, optimizers, ...), so
    that counting does not move the benchmarked loop on by a step. The objects are copied
    together, so an optimizer's copy points at its model's copied parameters."""
    copies = copy.deepcopy(state)
    return count_flops(lambda: step(*copies))


def matmul_gflops(dtype: torch.dtype, n: int = PEAK_N, repeats: int = 3) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` on one thread (best of ``repeats``,
    after one untimed product), restoring the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n ** 3 / best / 1e9


def hardware_precisions(device: torch.device | str = "cpu") -> tuple[str, ...]:
    """The precisions ``device`` computes at hardware speed: fp32, and bf16 where ``--precision
    auto`` picks it (``common.training.resolve_precision``). On a CPU without bf16 instructions
    (AVX2 only) a bf16 matmul is emulated hundreds of times slower than fp32 (0.29 against 79
    GFLOP/s for a 2048 matmul on an AVX2-only AMD EPYC, one thread), so no benchmark measures a
    bf16 peak or times a bf16 loop there unless asked."""
    return tuple(dict.fromkeys(("fp32", resolve_precision("auto", torch.device(device)))))


class PeakMeter:
    """The CPU's matmul GFLOP/s per precision, one thread, sampled between a benchmark's timing
    rounds (call ``sample`` after each): ``gflops`` is the median of the samples, so that the peak
    and the loop, timed alternately, see the same load from other processes (the best sample
    alone, ``best``, would pit an idle moment's peak against a loop timed under load)."""

    def __init__(self, *precisions: str):
        self.precisions = precisions
        self.samples: dict[str, list[float]] = {}

    def sample(self) -> None:
        for p in self.precisions:
            self.samples.setdefault(p, []).append(matmul_gflops(PRECISION_DTYPES[p]))

    def gflops(self, precision: str) -> float:
        if precision not in self.samples:
            self.precisions = tuple(dict.fromkeys((*self.precisions, precision)))
            self.sample()
        return statistics.median(self.samples[precision])

    def best(self, precision: str) -> float:
        self.gflops(precision)
        return max(self.samples[precision])


def share_of_peak(flops: float, seconds: float, precision: str, peak: PeakMeter,
                  threads: int | None = None) -> tuple[float, float]:
    """(achieved GFLOP/s, its share of ``threads`` x the one-thread matmul peak in ``precision``)."""
    threads = threads or torch.get_num_threads()
    achieved = flops / seconds / 1e9
    return achieved, achieved / (peak.gflops(precision) * threads)


def print_share(name: str, flops: float, seconds: float, precision: str, peak: PeakMeter,
                what: str = "step") -> float:
    """Print the loop's FLOPs, time and GFLOP/s, then ``<name> share of peak: <percent>%``;
    returns the share (0..1)."""
    threads = torch.get_num_threads()
    achieved, share = share_of_peak(flops, seconds, precision, peak, threads)
    print(f"{name}: {flops / 1e9:.2f} GFLOP per {what} (FlopCounterMode: forward + backward, optimizer "
          f"counts 0) in {seconds * 1000:.1f} ms = {achieved:.1f} GFLOP/s; {precision} {PEAK_N} x {PEAK_N} matmul "
          f"{peak.gflops(precision):.1f} GFLOP/s per thread (median of {len(peak.samples[precision])} samples "
          f"between the rounds; best {peak.best(precision):.1f}), {threads} thread(s)")
    print(f"{name} share of peak: {100 * share:.1f}%")
    return share


# --------------------------------------------------------------------------------------------
# Memory roofline: for narrow layers the bound is the bytes a step moves, not its FLOPs


def copy_bandwidth(n_bytes: int = 1 << 28, repeats: int = 3) -> float:
    """GB/s of a one-thread copy of an ``n_bytes`` tensor into another (read + write counted, best
    of ``repeats`` after one untimed copy): the memory bandwidth one core reaches."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        src = torch.ones(n_bytes // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n_bytes / best / 1e9


class _ByteCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Sums the bytes of every tensor each ATen op reads (its tensor arguments) and writes (its
    tensor results): what the op moves if every tensor goes through memory once."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = torch.utils._pytree.tree_leaves((args, kwargs or {}, out))
        self.bytes += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
        return out


def count_step_bytes(step: Callable[..., Any], *state) -> int:
    """Bytes one eager call of ``step(*copies)`` moves, op by op (:class:`_ByteCounter`), on deep
    copies of ``state`` as in :func:`count_step_flops`. A compiled step fuses element-wise ops and
    moves fewer bytes, so for it this is an upper bound of the traffic."""
    copies = copy.deepcopy(state)
    counter = _ByteCounter()
    with counter:
        step(*copies)
    return counter.bytes


def print_memory_roofline(name: str, n_bytes: float, seconds: float, bandwidth: float, what: str = "step") -> float:
    """Print the bytes a ``what`` moves, the time they take at ``bandwidth`` GB/s (one thread), and
    ``<name> share of memory roofline: <percent>%`` (that time over the measured one); returns it."""
    bound = n_bytes / (bandwidth * 1e9)
    print(f"{name}: {n_bytes / 1e9:.2f} GB per {what} (each eager op's tensors read and written once) at "
          f"{bandwidth:.1f} GB/s (one-thread copy of 256 MB, measured in this run) = {bound * 1000:.0f} ms; "
          f"measured {seconds * 1000:.0f} ms")
    print(f"{name} share of memory roofline: {100 * bound / seconds:.1f}%")
    return bound / seconds


# --------------------------------------------------------------------------------------------
# Side-by-side timing of training loops


def reference_loader(root, batch_size: int = 128, drop_last: bool = False):
    """What a plain script trains on: ``torchvision.datasets.MNIST`` with ``ToTensor`` and
    ``Normalize((0.5,), (0.5,))`` PIL transforms through a shuffled ``DataLoader`` without workers;
    batches of (images (N, 1, 28, 28) in [-1, 1], integer labels)."""
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    ds = torchvision.datasets.MNIST(str(data_root(root)), train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, num_workers=0)


class TimedLoop:
    """One training loop under test: ``step(*state, batch)`` on batches drawn round and round from
    ``loader``, with its own denormal setting (a plain script keeps PyTorch's default; ours flushes
    them, as ``common.training.get_device`` does). ``state`` holds what the step updates (models,
    optimizers), so that :meth:`flops` can count a step on copies of it."""

    def __init__(self, name: str, step: Callable[..., Any], state: tuple, loader, flush_denormal: bool):
        self.name, self.step, self.state, self.loader, self.flush = name, step, state, loader, flush_denormal
        self.it = iter(loader)
        self.seconds = 0.0

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, n: int, timed: bool = True) -> None:
        """``n`` steps, data loading included; their seconds are added when ``timed``."""
        torch.set_flush_denormal(self.flush)
        start = time.perf_counter()
        for _ in range(n):
            self.step(*self.state, self.next_batch())
        if timed:
            self.seconds += time.perf_counter() - start

    def flops(self) -> int:
        """FLOPs of one step, counted on copies of the state (the loop is not moved on)."""
        torch.set_flush_denormal(self.flush)
        batch = self.next_batch()
        return count_step_flops(lambda *state: self.step(*state, batch), *self.state)


def side_by_side_parser(description: str, batches: int, chunk: int, warmup: int) -> argparse.ArgumentParser:
    """The flags of a benchmark timed with :func:`time_side_by_side`, with its defaults:
    ``--batches``, ``--chunk``, ``--warmup`` and ``--data-root``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, default=batches, help="timed batches per loop")
    parser.add_argument("--chunk", type=int, default=chunk, help="batches per alternating chunk")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed batches per loop first")
    parser.add_argument("--data-root", default=None)
    return parser


def time_side_by_side(loops: list[TimedLoop], batches: int, chunk: int, warmup: int,
                      peak: PeakMeter) -> dict[str, float]:
    """Seconds per batch of each loop: ``warmup`` untimed steps each, then ``batches`` timed ones
    in alternating chunks of ``chunk``, so that load from other processes hits every loop alike;
    the peak is sampled before the first chunk and after each round."""
    for loop in loops:
        loop.run(warmup, timed=False)
    peak.sample()
    done = 0
    while done < batches:
        n = min(chunk, batches - done)
        for loop in loops:
            loop.run(n)
        done += n
        peak.sample()
    return {loop.name: loop.seconds / batches for loop in loops}


def print_side_by_side(name: str, loops: list[TimedLoop], per_batch: dict[str, float], epoch_batches: int,
                       precision: str, peak: PeakMeter) -> float:
    """Each loop's time per batch and per (extrapolated) epoch; then the last loop's (ours)
    ``<name> share of peak`` and, last, ``<name> speedup: <ratio>x`` over the first (the
    baseline). Returns the speedup."""
    for loop in loops:
        t = per_batch[loop.name]
        print(f"{loop.name:<56} {t * 1000:8.2f} ms/batch  ~{t * epoch_batches:7.1f} s/epoch")
    print(f"({epoch_batches} batches an epoch; {torch.get_num_threads()} thread(s))")
    ours, baseline = per_batch[loops[-1].name], per_batch[loops[0].name]
    print_share(name, loops[-1].flops(), ours, precision, peak, what="batch")
    ratio = baseline / ours
    print(f"{name} speedup: {ratio:.2f}x")
    return ratio


def bench_data(root=None, batch_size: int = 128, repeats: int = 3) -> float:
    """One MNIST train epoch of batches of 128 in [-1, 1]: TensorLoader vs DataLoader(ToTensor + Normalize)."""
    root = data_root(root)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    split = D.load_split("mnist", "train", root=root)
    x = D.images(split, scale="tanh")
    load_s = time.perf_counter() - t0
    ours = D.TensorLoader(x, split.y, batch_size=batch_size, seed=0)
    baseline = reference_loader(root, batch_size)

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


def parse_summary(stdout: str) -> dict[str, dict[str, float]]:
    """``{name: {"ratio": x, "share": fraction, "memory": fraction}}`` from a benchmark's speedup,
    share-of-peak and share-of-memory-roofline lines."""
    out: dict[str, dict[str, float]] = {}
    for line in stdout.splitlines():
        if m := LINE.match(line.strip()):
            out.setdefault(m["name"], {})["ratio"] = float(m["ratio"])
        elif m := SHARE_LINE.match(line.strip()):
            out.setdefault(m["name"], {})["share"] = float(m["percent"]) / 100
        elif m := MEMORY_LINE.match(line.strip()):
            out.setdefault(m["name"], {})["memory"] = float(m["percent"]) / 100
    return out


def run_course_benchmark(folder: str, script: str) -> tuple[dict[str, dict[str, float]], str]:
    """Run ``<folder>/<script>``; its parsed summary lines and '' or a one-line problem."""
    path = ROOT / folder / script
    if not path.exists():
        return {}, f"{folder}/{script} is missing"
    proc = subprocess.run([sys.executable, script], cwd=ROOT / folder, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    print(proc.stdout, end="")
    if proc.returncode != 0 or not lines or not LINE.match(lines[-1]):
        return {}, f"failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
    return parse_summary(proc.stdout), ""


def course_benchmarks() -> list[tuple[str, str, dict[str, float]]]:
    """(course folder, script, {summary-line name: target speedup}) from every ``course.toml``."""
    return [(c.folder, b.script, b.targets) for c in courses() for b in c.benches]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["data", "all"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--record", action="store_true",
                        help="also write the table to results/bench.md, which the README's benchmark section shows")
    args = parser.parse_args(argv)
    if args.which == "data":
        bench_data(args.data_root)
        return
    start = time.perf_counter()
    rows = [("data loader", bench_data(args.data_root), None, None, 10.0, "")]
    seconds = {"data loader": time.perf_counter() - start}  # each script's wall time, on its first row
    for folder, script, targets in course_benchmarks():
        print(f"\n== {', '.join(targets)} ({folder}/{script})", flush=True)
        t0 = time.perf_counter()
        found, problem = run_course_benchmark(folder, script)
        seconds[next(iter(targets))] = time.perf_counter() - t0
        for name, target in targets.items():
            got = found.get(name, {})
            rows.append((name, got.get("ratio"), got.get("share"), got.get("memory"), target,
                         problem or ("" if "ratio" in got else "no speedup line")))
    peak = PeakMeter(*hardware_precisions())
    for _ in range(3):
        peak.sample()
    peaks = ", ".join(f"{peak.best(p):.0f} GFLOP/s {p}" for p in peak.precisions)
    if "bf16" not in peak.precisions:
        peaks += " (no bf16 on this CPU: every loop ran in fp32)"
    out = OUTPUTS / "bench"
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    lines = ["# Benchmarks", "", f"Machine: {cpu_model()} ({os.cpu_count()} cores, {threads} thread"
             f"{'s' if threads != 1 else ''} used), torch {torch.__version__}, "
             f"{torch.backends.cpu.get_cpu_capability()}; one-thread matmul peak at the end {peaks} (best of 3). "
             f"Total {time.perf_counter() - start:.0f} s.", "",
             "| benchmark | speedup | share of matmul peak | share of memory roofline | target | met "
             "| seconds (its script) |",
             "|---|---|---|---|---|---|---|"]

    def pct(x):
        return "" if x is None else f"{100 * x:.1f}%"

    for name, ratio, share, memory, target, problem in rows:
        speedup = f"{ratio:.2f}x" if ratio is not None else problem
        took = f"{seconds[name]:.0f}" if name in seconds else ""
        lines.append(f"| {name} | {speedup} | {pct(share)} | {pct(memory)} | {target:g}x "
                     f"| {'yes' if ratio and ratio >= target else 'no'} | {took} |")
    written = [out / "results.md"] + ([ROOT / "results" / "bench.md"] if args.record else [])
    for path in written:
        path.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {' and '.join(str(shown(p)) for p in written)}; total: {time.perf_counter() - start:.0f} s")
    for name, ratio, share, memory, target, problem in rows:
        if share is not None:
            print(f"{name} share of peak: {100 * share:.1f}%")
        if memory is not None:
            print(f"{name} share of memory roofline: {100 * memory:.1f}%")
        print(f"{name} speedup: {ratio:.2f}x" if ratio is not None else f"{name}: {problem}")


if __name__ == "__main__":
    run_main(main)
