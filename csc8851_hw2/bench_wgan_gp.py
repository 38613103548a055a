"""CSC 8851 HW2 benchmark: one WGAN-GP training epoch, our loop against a reference-style loop.

Both sides run the same model (``wgan_gp_model.Generator``/``Critic``, identical initial weights), the
same batch size (128), the same step functions (``wgan_gp.critic_step``/``generator_step``, n_critic
critic updates per generator update) on the same number of batches, timed side by side in
alternating chunks so that load from other processes hits both alike, then extrapolated to an epoch.

- reference-style: ``torchvision.datasets.MNIST`` through a ``DataLoader`` with PIL transforms
  (``Pad(2)`` or ``Resize(32)``, ``ToTensor``, ``Normalize``), fp32, denormal floats not flushed
  (what a plain PyTorch script does);
- ours: the split in one tensor sliced by ``TensorLoader``, ``get_device`` (flushes denormals) and
  the precision ``--precision auto`` resolves to (``common.training.resolve_precision``: bf16 on a bf16 CPU),
  channels-last memory format on a CPU (``wgan_gp.memory_format``), fused Adam (``common.training.adam``).
  ``--compare-precision`` times our loop in the other precision too, in the same rounds.

``--quality-steps N`` also trains fp32 and bf16 from the same weights, data order and noise for N
critic steps each and reports the judge's Frechet distance and class accuracy of both generators:
the evidence behind ``auto`` choosing bf16 (see README).

Share of peak (``common.bench``): the FLOPs of our loop per batch (``FlopCounterMode``
on one ``critic_step`` plus one ``generator_step`` / n_critic, forward and backward, the gradient
penalty's double backward included) over our time per batch, against the one-thread matmul peak in
our precision, sampled between the chunks in this process.

The last lines are ``wgan-gp epoch share of peak: <percent>%`` and
``wgan-gp epoch speedup: <ratio>x`` (``make bench`` collects them).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import wgan_gp as W  # noqa: E402
import wgan_gp_model as M  # noqa: E402
from common import data as D  # noqa: E402
from common.bench import PeakMeter, count_step_flops, print_share  # noqa: E402
from common.cli import run_main  # noqa: E402
from common.paths import data_root, run_dir, shown  # noqa: E402
from common.training import adam, get_device, resolve_precision, seed_everything  # noqa: E402


def reference_loader(root: Path, batch_size: int, resize: bool):
    """torchvision MNIST -> PIL transforms -> DataLoader, as the course's reference code would load it."""
    import torchvision
    from torchvision import transforms

    info = D.dataset_info("mnist")
    if not (root / info.folder).exists():
        raise D.DataError(f"MNIST not found in {root / info.folder}: the benchmark needs the full set "
                          f"(point --data-root or HW_DATA_ROOT at it)")
    size = transforms.Resize(32) if resize else transforms.Pad(2)
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False,
                                    transform=transforms.Compose([size, transforms.ToTensor(),
                                                                  transforms.Normalize((0.5,), (0.5,))]))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0)


class Side:
    """One training loop under test: its own copy of the models, optimizers and batch iterator."""

    def __init__(self, name, models, loader, cfg, device, precision, flush_denormal, fmt=torch.contiguous_format):
        self.name, self.cfg, self.device, self.precision, self.fmt = name, cfg, device, precision, fmt
        self.G, self.G_ema, self.D = (copy.deepcopy(m).to(memory_format=fmt) for m in models)
        make_adam = torch.optim.Adam if name == "reference" else adam  # ours: fused Adam, as wgan_gp.train
        self.opt_G = make_adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_D = make_adam(self.D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.loader, self.it = loader, iter(loader)
        self.flush = flush_denormal
        self.batches, self.seconds = 0, 0.0

    def run(self, n: int, timed: bool = True) -> None:
        torch.set_flush_denormal(self.flush)
        start = time.perf_counter()
        for _ in range(n):
            try:
                x, y = next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                x, y = next(self.it)
            x, y = x.to(self.device).contiguous(memory_format=self.fmt), y.to(self.device)
            W.critic_step(self.G, self.D, self.opt_D, x, y, self.cfg, self.device, self.precision)
            self.batches += 1
            if self.batches % self.cfg.n_critic == 0:
                W.generator_step(self.G, self.G_ema, self.D, self.opt_G, y, self.cfg, self.device, self.precision)
        if timed:
            self.seconds += time.perf_counter() - start
        else:
            self.batches = 0

    def flops_per_batch(self) -> float:
        """FLOPs of one critic step plus 1/n_critic of a generator step, on copies of the models."""
        x, y = next(iter(self.loader))
        x, y = x.to(self.device).contiguous(memory_format=self.fmt), y.to(self.device)
        state = (self.G, self.G_ema, self.D, self.opt_G, self.opt_D)
        critic = count_step_flops(lambda G, G_ema, D, opt_G, opt_D: W.critic_step(
            G, D, opt_D, x, y, self.cfg, self.device, self.precision), *state)
        gen = count_step_flops(lambda G, G_ema, D, opt_G, opt_D: W.generator_step(
            G, G_ema, D, opt_G, y, self.cfg, self.device, self.precision), *state)
        return critic + gen / self.cfg.n_critic


def speed(args, cfg, device, precision) -> dict:
    root = data_root(args.data_root)
    seed_everything(0)
    models = W.build(W.Config(channels_last=False), device)  # NCHW master copy; each side converts
    fmt = W.memory_format(cfg, device)
    split = D.load_split("mnist", "train", root=root)
    x = D.images(split, "tanh", size=32, resize=cfg.resize, device=device).contiguous(memory_format=fmt)
    ours_loader = D.TensorLoader(x, split.y.to(device), batch_size=cfg.batch_size, drop_last=True, seed=0)
    ref = Side("reference", models, reference_loader(root, cfg.batch_size, cfg.resize), cfg, device, "fp32", False)
    ours = Side("ours", models, ours_loader, cfg, device, precision, True, fmt)
    sides = [ref, ours]
    if args.compare_precision:  # the other precision on our loader, timed in the same rounds
        other = "fp32" if precision == "bf16" else "bf16"
        loader2 = D.TensorLoader(x, split.y.to(device), batch_size=cfg.batch_size, drop_last=True, seed=0)
        sides.append(Side(f"ours_{other}", models, loader2, cfg, device, other, True, fmt))
    for side in sides:
        side.run(cfg.n_critic, timed=False)  # warm-up (allocator, oneDNN kernels)
    peak = PeakMeter(precision)
    peak.sample()
    done = 0
    while done < args.batches:  # alternate chunks so both sides share the same background load
        n = min(args.chunk, args.batches - done)
        for side in sides:
            side.run(n)
        done += n
        peak.sample()
        print(f"  {done}/{args.batches} batches: " + ", ".join(f"{s.name} {s.seconds:.1f}s" for s in sides), flush=True)
    per_epoch = len(ours_loader)
    out = {"batches_timed": args.batches, "batches_per_epoch": per_epoch, "n_critic": cfg.n_critic,
           "batch_size": cfg.batch_size, "precision_ours": precision, "threads": torch.get_num_threads()}
    for side in sides:
        out[side.name] = {"seconds": round(side.seconds, 3), "s_per_batch": side.seconds / args.batches,
                          "epoch_seconds_extrapolated": round(side.seconds / args.batches * per_epoch, 1)}
    out["speedup"] = ref.seconds / ours.seconds
    out["flops_per_batch"] = ours.flops_per_batch()
    out["peak_gflops_per_thread"] = peak.gflops(precision)
    print(f"reference-style (DataLoader + PIL Pad/ToTensor/Normalize, fp32, denormals kept): "
          f"{out['reference']['s_per_batch']:.3f} s/batch -> {out['reference']['epoch_seconds_extrapolated']:.0f} s/epoch")
    print(f"ours (TensorLoader, {precision}, {'channels-last, ' if fmt == torch.channels_last else ''}denormals flushed): {out['ours']['s_per_batch']:.3f} s/batch -> "
          f"{out['ours']['epoch_seconds_extrapolated']:.0f} s/epoch ({per_epoch} batches of {cfg.batch_size}, "
          f"n_critic {cfg.n_critic})")
    for side in sides[2:]:
        print(f"ours with {side.precision} instead: {out[side.name]['s_per_batch']:.3f} s/batch "
              f"({ours.seconds / side.seconds:.2f}x the speed of {precision})")
    out["share_of_peak"] = print_share("wgan-gp epoch", out["flops_per_batch"], out["ours"]["s_per_batch"],
                                       precision, peak, what="batch")
    return out


def quality(args, cfg, device) -> dict:
    """fp32 vs bf16 after the same budget from the same start: judge FD and class accuracy of G."""
    from common.metrics import Evaluator

    seed_everything(0)
    models = W.build(cfg, device)
    fmt = W.memory_format(cfg, device)
    split = D.load_split("mnist", "train", root=args.data_root)
    x = D.images(split, "tanh", size=32, resize=cfg.resize, device=device).contiguous(memory_format=fmt)
    ev = Evaluator("mnist", device, data_root=args.data_root)
    y_eval = torch.arange(args.n_eval) % 10
    z_eval = M.noise(args.n_eval, cfg.z_dim, 123)
    out = {"critic_steps": args.quality_steps, "n_eval": args.n_eval}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # same noise draws on both sides
        loader = D.TensorLoader(x, split.y.to(device), batch_size=cfg.batch_size, drop_last=True, seed=0)
        side = Side(precision, models, loader, cfg, device, precision, True, fmt)
        side.run(args.quality_steps)
        rep = ev.report(M.generate(side.G, z_eval, y_eval), y_eval, resized=cfg.resize)
        out[precision] = {"frechet_distance": rep["frechet_distance"], "class_accuracy": rep["class_accuracy"],
                          "seconds": round(side.seconds, 1)}
        out["frechet_floor_train_vs_test"] = rep["frechet_floor_train_vs_test"]
        print(f"  {precision}: {args.quality_steps} critic steps in {side.seconds:.0f}s, FD {rep['frechet_distance']:.4g}, "
              f"class accuracy {rep['class_accuracy']:.4f}", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per side")
    parser.add_argument("--chunk", type=int, default=10, help="batches per alternating chunk")
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"], help="our side's precision")
    parser.add_argument("--compare-precision", action="store_true",
                        help="also time our loop in the other precision (fp32 vs bf16) in the same rounds")
    parser.add_argument("--quality-steps", type=int, default=0, help="also compare fp32 vs bf16 quality after N critic steps")
    parser.add_argument("--n-eval", type=int, default=2000, help="samples judged per side in the quality check")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cfg = W.Config()
    device = get_device(args.device)
    precision = resolve_precision(args.precision, device)
    results = {"device": str(device), "torch": torch.__version__}
    if args.quality_steps:
        results["quality"] = quality(args, cfg, device)
    results["speed"] = speed(args, cfg, device, precision)
    folder = run_dir(W.COURSE, "bench", "wgan_gp")
    (folder / "bench_wgan_gp.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {shown(folder / 'bench_wgan_gp.json')}")
    print(f"wgan-gp epoch speedup: {results['speed']['speedup']:.2f}x")


if __name__ == "__main__":
    run_main(main)
