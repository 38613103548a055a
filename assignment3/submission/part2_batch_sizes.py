"""Assignment 3, Part II.2: how the batch size (128, 256, 512, 1024) affects the GAN's stability.

Four runs of the GAN of Part I that differ only in the batch size: same seed and initial weights,
25 epochs each (the same data seen; a larger batch makes fewer updates). Measured for each run:
  spread    the standard deviation of G's per-epoch loss over the last 20% of the epochs;
  diverged  epochs whose mean D loss is below 0.1 (D wins outright) or mean G loss above 5;
  gap       D(x) - D(G(z)) in the last epoch (0: D cannot tell them apart; 1: D always can);
  FD        the Frechet distance between 2,000 samples and 2,000 real test digits, on the pixels.
The least stable batch size (most diverged epochs, then the largest spread) is written to
results/batch_sizes.json, where part2_lr_schedules.py reads it.
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
BATCH_SIZES = [128, 256, 512, 1024]
LATENT_DIM = 100  # size of z
LR, BETA1 = 2e-4, 0.5  # Adam, as in Part I
DROPOUT = 0.3  # after each hidden layer of D
EPOCHS = 25
N_SHOW, N_EVAL = 10, 2000  # digits per row of the figure of samples; samples per FD


# The GAN of Part I: the two networks, the optimizers, the training loop and sampling
#| inline: assignment3/mlp_gan.py: Generator, Discriminator, make_optimizers, train_epoch, sample
#| inline: assignment3/mlp_gan.py: epoch_stability


# Data, the Frechet distance and a figure of digits
#| inline: assignment3/submission/shared.py: mnist, save_sample_rows
#| inline: common/metrics.py: frechet_distance


def main():
    parser = argparse.ArgumentParser(description="Part II.2: batch sizes 128 to 1024")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 2,000 images, into results_quick/")
    args = parser.parse_args()
    epochs, n_eval = (2, 500) if args.quick else (EPOCHS, N_EVAL)
    out = Path(__file__).resolve().parent / ("results_quick" if args.quick else "results")
    out.mkdir(exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else
                          "mps" if torch.backends.mps.is_available() else "cpu")
    plt.switch_backend("agg")

    train_set, test_set = mnist(True, args.quick), mnist(False, args.quick)
    real = next(iter(DataLoader(test_set, batch_size=n_eval)))[0].view(-1, 784).numpy()  # the first test digits
    floor = frechet_distance(next(iter(DataLoader(train_set, batch_size=n_eval)))[0].view(-1, 784).numpy(), real)
    print(f"{len(train_set):,} training images, {epochs} epochs per batch size on {device}; FD floor {floor:.1f}")
    criterion = nn.BCELoss()
    z_show = noise(N_SHOW, LATENT_DIM, device, torch.Generator().manual_seed(1))  # the same noise every time
    z_eval = noise(n_eval, LATENT_DIM, device, torch.Generator().manual_seed(2))

    # One run per batch size, from the same initial weights
    runs = {}
    for bs in BATCH_SIZES:
        torch.manual_seed(SEED)
        loader = DataLoader(train_set, batch_size=bs, shuffle=True)
        G, D = Generator(LATENT_DIM).to(device), Discriminator(DROPOUT).to(device)
        opt_G, opt_D = make_optimizers(G, D, LR, BETA1)
        r = runs[bs] = {"d_steps": [], "g_steps": [], "d_loss": [], "g_loss": [], "gap": []}  # per batch / epoch
        for epoch in range(1, epochs + 1):
            log = train_epoch(G, D, opt_G, opt_D, criterion, loader, device, LATENT_DIM)
            r["d_steps"] += log["d_loss"]
            r["g_steps"] += log["g_loss"]
            r["d_loss"].append(np.mean(log["d_loss"]))
            r["g_loss"].append(np.mean(log["g_loss"]))
            r["gap"].append(np.mean(log["d_real"]) - np.mean(log["d_fake"]))
            print(f"batch {bs:4d}, epoch {epoch:2d}: D loss {r['d_loss'][-1]:.3f}  G loss {r['g_loss'][-1]:.3f}  "
                  f"D(x) - D(G(z)) {r['gap'][-1]:.2f}")
        r["spread"], r["diverged"] = epoch_stability(r["d_loss"], r["g_loss"])
        r.update(updates=epochs * len(loader), per_epoch=len(loader), digits=sample(G, z_show),
                 fd=frechet_distance(sample(G, z_eval).numpy(), real))

    # Figures: the losses of every batch and D's gap per epoch; the final digits of each run
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for bs, r in runs.items():
        window = max(1, r["per_epoch"] // 2)  # half an epoch
        for ax, key in zip(axes, ("d_steps", "g_steps")):
            x = np.arange(window, len(r[key]) + 1) / r["per_epoch"]
            ax.plot(x, np.convolve(r[key], np.ones(window) / window, mode="valid"), label=f"batch {bs}")
        axes[2].plot(range(1, epochs + 1), r["gap"], "o-", ms=3, label=f"batch {bs}")
    axes[0].set(title="D loss (mean over half an epoch)", ylabel="BCE loss")
    axes[1].set(title="G loss (mean over half an epoch)", ylabel="BCE loss")
    axes[2].set(title="D(x) - D(G(z)) per epoch", ylabel="probability gap")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(out / "batch_sizes_losses.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    save_sample_rows({f"batch {bs}": r["digits"] for bs, r in runs.items()}, out / "batch_sizes_samples.png",
                     f"Digits of the same noise after {epochs} epochs")

    # What the numbers say
    print(f"\nAfter {epochs} epochs (FD floor {floor:.1f}):")
    print("batch  updates      FD  spread  diverged    gap")
    for bs, r in runs.items():
        print(f"{bs:5d}  {r['updates']:7d}  {r['fd']:6.1f}  {r['spread']:6.3f}  {r['diverged']:8d}  "
              f"{r['gap'][-1]:5.2f}")
    least = max(BATCH_SIZES, key=lambda bs: (runs[bs]["diverged"], runs[bs]["spread"]))
    steadiest = min(BATCH_SIZES, key=lambda bs: (runs[bs]["diverged"], runs[bs]["spread"]))
    best = min(BATCH_SIZES, key=lambda bs: runs[bs]["fd"])
    small, large = runs[min(BATCH_SIZES)], runs[max(BATCH_SIZES)]
    print(f"Least stable: batch {least} ({runs[least]['diverged']} diverged epochs, spread "
          f"{runs[least]['spread']:.3f}); steadiest: batch {steadiest} ({runs[steadiest]['diverged']}, "
          f"{runs[steadiest]['spread']:.3f}).")
    if not any(r["diverged"] for r in runs.values()):
        print("No run diverged, so this ranking rests on the spread of G's loss alone.")
    print(f"Lowest FD: batch {best} ({runs[best]['fd']:.1f}). The smallest batch made "
          f"{small['updates'] / large['updates']:.0f} times the updates of the largest and ended "
          + ("below" if small["fd"] < large["fd"] else "at or above") + f" it ({small['fd']:.1f} against "
          f"{large['fd']:.1f}).")
    keep = ("updates", "fd", "spread", "diverged")
    (out / "batch_sizes.json").write_text(json.dumps({"epochs": epochs, "least_stable": least, "runs": {
        bs: {k: r[k] for k in keep} | {"gap": r["gap"][-1]} for bs, r in runs.items()}}, indent=1))
    print(f"Figures batch_sizes_losses.png and batch_sizes_samples.png, numbers batch_sizes.json in {out}")


if __name__ == "__main__":
    main()
