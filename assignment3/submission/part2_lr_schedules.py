"""Assignment 3, Part II.3: Step Decay and Warmup + Cosine Annealing against the instability of II.2.

At the least stable batch size of Part II.2 (from results/batch_sizes.json; 128 without it), three
runs of 25 epochs that differ only in the learning rate of G and D, set after every batch: constant
2e-4 as in Part I; Step Decay (x 0.1 every 10 epochs); Warmup + Cosine (linear from 1% over 3
epochs, then a cosine decay to 0). Convergence is read from the Frechet distance (FD) between 2,000
samples and 2,000 real test digits on the pixels, after every epoch; stability as in II.2.
"""
import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

SEED = 0
BATCH_SIZE = 128  # when II.2's results are missing
LATENT_DIM = 100  # size of z
LR, BETA1 = 2e-4, 0.5  # Adam, as in Part I
DROPOUT = 0.3  # after each hidden layer of D
EPOCHS = 25
STEP_EVERY, GAMMA = 10, 0.1  # Step Decay: lr x 0.1 every 10 epochs
WARMUP = 3  # Warmup + Cosine: epochs of linear warmup
SCHEDULES = {"constant": "constant", "step_decay": "Step Decay", "warmup_cosine": "Warmup + Cosine"}
N_SHOW, N_EVAL = 10, 2000  # digits per row of the figure of samples; samples per FD


# The GAN of Part I: the two networks, the optimizers, the training loop and sampling
#| inline: assignment3/mlp_gan.py: Generator, Discriminator, make_optimizers, train_epoch, sample
#| inline: assignment3/mlp_gan.py: epoch_stability


# Warmup + Cosine Annealing (Step Decay is torch's StepLR, in main); the data, the FD and a figure of digits
#| inline: common/training.py: warmup_cosine
#| inline: assignment3/submission/shared.py: mnist, save_sample_rows
#| inline: common/metrics.py: frechet_distance


def main():
    parser = argparse.ArgumentParser(description="Part II.3: Step Decay and Warmup + Cosine")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 2,000 images, into results_quick/")
    args = parser.parse_args()
    epochs, step_every, warmup, n_eval = (2, 1, 1, 500) if args.quick else (EPOCHS, STEP_EVERY, WARMUP, N_EVAL)
    out = Path(__file__).resolve().parent / ("results_quick" if args.quick else "results")
    out.mkdir(exist_ok=True)
    saved = out / "batch_sizes.json"  # written by part2_batch_sizes.py
    batch_size = json.loads(saved.read_text())["least_stable"] if saved.exists() else BATCH_SIZE
    device = torch.device("cuda" if torch.cuda.is_available() else
                          "mps" if torch.backends.mps.is_available() else "cpu")
    plt.switch_backend("agg")

    train_set, test_set = mnist(True, args.quick), mnist(False, args.quick)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    n = len(loader)  # batches per epoch
    real = next(iter(DataLoader(test_set, batch_size=n_eval)))[0].view(-1, 784).numpy()  # the first test digits
    floor = frechet_distance(next(iter(DataLoader(train_set, batch_size=n_eval)))[0].view(-1, 784).numpy(), real)
    print(f"batch size {batch_size} (" + ("the least stable of Part II.2" if saved.exists() else f"{saved} is missing")
          + f"), {len(train_set):,} training images, {epochs} epochs per schedule on {device}; FD floor {floor:.1f}")
    criterion = nn.BCELoss()
    z_show = noise(N_SHOW, LATENT_DIM, device, torch.Generator().manual_seed(1))  # the same noise every time
    z_eval = noise(n_eval, LATENT_DIM, device, torch.Generator().manual_seed(2))

    # One run per schedule, from the same initial weights
    runs = {}
    for kind, name in SCHEDULES.items():
        torch.manual_seed(SEED)
        G, D = Generator(LATENT_DIM).to(device), Discriminator(DROPOUT).to(device)
        opt_G, opt_D = make_optimizers(G, D, LR, BETA1)
        schedulers = []  # each built only for its own run: building one sets the optimizer's lr
        if kind == "step_decay":
            schedulers = [torch.optim.lr_scheduler.StepLR(opt, step_every * n, GAMMA) for opt in (opt_G, opt_D)]
        elif kind == "warmup_cosine":
            schedulers = [warmup_cosine(opt, warmup * n, epochs * n) for opt in (opt_G, opt_D)]
        r = runs[kind] = {"lr": [], "d_loss": [], "g_loss": [], "gap": [], "fd": []}  # lr per batch, others per epoch
        for epoch in range(1, epochs + 1):
            log = train_epoch(G, D, opt_G, opt_D, criterion, loader, device, LATENT_DIM, schedulers)
            r["lr"] += log["lr"]
            r["d_loss"].append(np.mean(log["d_loss"]))
            r["g_loss"].append(np.mean(log["g_loss"]))
            r["gap"].append(np.mean(log["d_real"]) - np.mean(log["d_fake"]))
            r["fd"].append(frechet_distance(sample(G, z_eval).numpy(), real))
            print(f"{name}, epoch {epoch:2d}: lr {log['lr'][-1]:.2e}  D loss {r['d_loss'][-1]:.3f}  "
                  f"G loss {r['g_loss'][-1]:.3f}  D(x) - D(G(z)) {r['gap'][-1]:.2f}  FD {r['fd'][-1]:.1f}")
        r["spread"], r["diverged"] = epoch_stability(r["d_loss"], r["g_loss"])
        r["digits"] = sample(G, z_show)

    # Figures: the learning rate, G's loss, D's gap and the FD for each schedule; the final digits
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
    for kind, r in runs.items():
        axes[0].plot(np.arange(1, len(r["lr"]) + 1) / n, r["lr"], label=SCHEDULES[kind])
        for ax, key in zip(axes[1:], ("g_loss", "gap", "fd")):
            ax.plot(range(1, epochs + 1), r[key], "o-", ms=3, label=SCHEDULES[kind])
    axes[3].axhline(floor, color="gray", ls="--", label="floor: real train vs test")
    titles = (f"Learning rate, batch size {batch_size}", "G loss per epoch", "D(x) - D(G(z)) per epoch", "FD on pixels")
    ylabels = ("learning rate of G and D", "BCE loss", "probability gap", "FD (lower is better)")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(out / "lr_schedules_curves.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    save_sample_rows({SCHEDULES[k]: r["digits"] for k, r in runs.items()}, out / "lr_schedules_samples.png",
                     f"Digits of the same noise after {epochs} epochs at batch size {batch_size}")

    # What the numbers say
    print(f"\nBatch size {batch_size}, {epochs} epochs (FD floor {floor:.1f}):")
    print("schedule          final FD  best FD (epoch)  spread  diverged  converged (final within 5% of best)")
    for kind, r in runs.items():
        best = int(np.argmin(r["fd"]))
        print(f"{SCHEDULES[kind]:16s}  {r['fd'][-1]:8.1f}  {r['fd'][best]:7.1f} ({best + 1:2d})    {r['spread']:6.3f}  "
              f"{r['diverged']:8d}  " + ("yes" if r["fd"][-1] <= 1.05 * r["fd"][best] else "no"))
    c = runs["constant"]
    steadiest = min(runs, key=lambda k: (runs[k]["diverged"], runs[k]["spread"]))  # fewest diverged, least spread
    s = runs[steadiest]
    print(f"Verdict at batch size {batch_size}: " + (
        f"neither schedule steadied training: the constant rate ranks steadiest (fewest diverged epochs, "
        f"{c['diverged']}, then the smallest spread, {c['spread']:.3f})." if steadiest == "constant" else
        f"{SCHEDULES[steadiest]} steadied training the most ({s['diverged']} diverged epochs against {c['diverged']} "
        f"with a constant rate, spread {s['spread']:.3f} against {c['spread']:.3f}); its final FD is "
        f"{s['fd'][-1]:.1f} against {c['fd'][-1]:.1f}, so steadier training "
        + ("also gave better digits." if s["fd"][-1] < c["fd"][-1] else "did not give better digits.")))
    print(f"Figures lr_schedules_curves.png and lr_schedules_samples.png in {out}")


if __name__ == "__main__":
    main()
