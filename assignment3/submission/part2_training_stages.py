"""Assignment 3, Part II.1: the quality of the generated digits across training stages.

The GAN of Part I (same layers, losses and Adam settings) trains for 50 epochs at batch size 128.
Before training and after every 5 epochs, the generator draws the same 10 noise vectors (one row
of stages.png) and 2,000 samples, whose Frechet distance (FD) to 2,000 real test digits is computed
on the pixels: lower is better; the FD between 2,000 real training and test digits is its floor.
"""
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

SEED = 0
BATCH_SIZE = 128
LATENT_DIM = 100  # size of z
LR, BETA1 = 2e-4, 0.5  # Adam, as in Part I
DROPOUT = 0.3  # after each hidden layer of D
EPOCHS, EVERY = 50, 5  # a stage every 5 epochs
N_SHOW, N_EVAL = 10, 2000  # digits per row of stages.png; samples per FD


# The GAN of Part I: the two networks, the optimizers, the training loop and sampling
#| inline: assignment3/mlp_gan.py: Generator, Discriminator, make_optimizers, train_epoch, sample


# Data, the Frechet distance and a figure of digits
#| inline: assignment3/submission/shared.py: mnist, save_sample_rows
#| inline: common/metrics.py: frechet_distance


def main():
    parser = argparse.ArgumentParser(description="Part II.1: sample quality across training stages")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 2,000 images, into results_quick/")
    args = parser.parse_args()
    epochs, every, n_eval = (2, 1, 500) if args.quick else (EPOCHS, EVERY, N_EVAL)
    out = Path(__file__).resolve().parent / ("results_quick" if args.quick else "results")
    out.mkdir(exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else
                          "mps" if torch.backends.mps.is_available() else "cpu")
    plt.switch_backend("agg")

    train_set, test_set = mnist(True, args.quick), mnist(False, args.quick)
    loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    real = next(iter(DataLoader(test_set, batch_size=n_eval)))[0].view(-1, 784).numpy()  # the first test digits
    floor = frechet_distance(next(iter(DataLoader(train_set, batch_size=n_eval)))[0].view(-1, 784).numpy(), real)
    print(f"{len(train_set):,} training images, {epochs} epochs on {device}; FD floor {floor:.1f}")
    torch.manual_seed(SEED)  # the same initial weights and batches as the batch-size 128 run of II.2
    G, D = Generator(LATENT_DIM).to(device), Discriminator(DROPOUT).to(device)
    opt_G, opt_D = make_optimizers(G, D, LR, BETA1)
    criterion = nn.BCELoss()
    z_show = noise(N_SHOW, LATENT_DIM, device, torch.Generator().manual_seed(1))  # the same noise every time
    z_eval = noise(n_eval, LATENT_DIM, device, torch.Generator().manual_seed(2))

    # Training; at every stage, the digits of the fixed noise and the FD
    names = {"d_loss": "D loss", "g_loss": "G loss", "d_real": "D(x)", "d_fake": "D(G(z))"}
    history = {key: [] for key in names}  # one value per batch
    stages = {0: (sample(G, z_show), frechet_distance(sample(G, z_eval).numpy(), real))}
    for epoch in range(1, epochs + 1):
        log = train_epoch(G, D, opt_G, opt_D, criterion, loader, device, LATENT_DIM)
        for key in history:
            history[key] += log[key]
        line = f"epoch {epoch:2d}: " + "  ".join(f"{names[k]} {np.mean(log[k]):.3f}" for k in names)
        if epoch % every == 0 or epoch == epochs:
            stages[epoch] = (sample(G, z_show), frechet_distance(sample(G, z_eval).numpy(), real))
            line += f"  FD {stages[epoch][1]:.1f}"
        print(line)

    # Figures: the digits at every stage; the losses, D's outputs and the FD against the epoch
    save_sample_rows({f"epoch {e}": digits for e, (digits, _) in stages.items()}, out / "stages.png",
                     f"The same {N_SHOW} noise vectors at every training stage")
    fd = {e: value for e, (_, value) in stages.items()}
    window = max(1, len(loader) // 2)
    x = np.arange(window, len(history["d_loss"]) + 1) / len(loader)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, keys in ((axes[0], ("d_loss", "g_loss")), (axes[1], ("d_real", "d_fake"))):
        for key in keys:
            ax.plot(x, np.convolve(history[key], np.ones(window) / window, mode="valid"), label=names[key])
    axes[0].set(title=f"Losses (mean over {window} batches)", ylabel="BCE loss")
    axes[1].set(title=f"Mean output of D (mean over {window} batches)", ylabel="probability of real")
    axes[2].plot(list(fd), list(fd.values()), "o-", label="generated vs real test digits")
    axes[2].axhline(floor, color="gray", ls="--", label="floor: real train vs real test")
    axes[2].set(title="Frechet distance on pixels per stage", ylabel="FD (lower is better)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(out / "stages_curves.png", bbox_inches="tight", dpi=120)
    plt.close(fig)

    # What the numbers say
    first, last = list(fd)[1], list(fd)[-1]
    best = min(list(fd)[1:], key=fd.get)
    print(f"\nFD per stage (floor {floor:.1f}): " + ", ".join(f"epoch {e}: {v:.1f}" for e, v in fd.items()))
    if fd[best] >= 0.9 * fd[0]:
        print(f"FD never fell 10% below that of the untrained generator ({fd[0]:.1f}; best {fd[best]:.1f}).")
    else:
        share = (fd[0] - fd[first]) / (fd[0] - fd[best])
        print(f"The first stage (epoch {first}) brought FD from {fd[0]:.1f} to {fd[first]:.1f}, {100 * share:.0f}% "
              "of the drop to the best stage: " + ("most of the improvement comes first." if share >= 0.5 else
                                                   "the improvement is gradual."))
    if best == last:
        print(f"The last stage was the best (FD {fd[last]:.1f}): quality was still improving when training stopped.")
    else:
        print(f"The best stage was epoch {best} (FD {fd[best]:.1f}), not the last (FD {fd[last]:.1f} at epoch "
              f"{last}): quality does not improve monotonically, as the two networks keep moving.")
    gap = np.mean(history["d_real"][-len(loader):]) - np.mean(history["d_fake"][-len(loader):])
    print(f"In the last epoch D(x) - D(G(z)) was {gap:.2f}: "
          + ("D still tells real from generated digits." if gap > 0.2 else "close to the balance D = 1/2."))
    print(f"Figures stages.png and stages_curves.png in {out}")


if __name__ == "__main__":
    main()
