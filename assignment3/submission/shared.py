"""Plain pieces that the three Part II scripts share: MNIST as Part I loads it, and a figure of
generated digits. The submission build writes the ones a script names into it."""
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torchvision
from torch.utils.data import Subset
from torchvision import transforms

DATA = Path(__file__).resolve().parent / "data"  # torchvision's MNIST/ folder goes here


def mnist(train: bool, quick: bool = False):
    """MNIST from ./data (downloaded when missing), pixels in [-1, 1]; the first 2,000 images if ``quick``."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    data = torchvision.datasets.MNIST(DATA, train=train, download=True, transform=transform)
    return Subset(data, range(min(2000, len(data)))) if quick else data


def save_sample_rows(rows: dict, path, title: str) -> None:
    """A figure with one row of digits per entry of ``rows`` (label -> images (N, 784) in [-1, 1])."""
    images = torch.cat(list(rows.values())).view(-1, 1, 28, 28)
    per_row = len(images) // len(rows)
    grid = torchvision.utils.make_grid((images + 1) / 2, nrow=per_row, padding=2, pad_value=1)
    plt.figure(figsize=(0.9 * per_row, 0.9 * len(rows) + 0.6))
    plt.imshow(grid.permute(1, 2, 0))
    plt.yticks([16 + 30 * i for i in range(len(rows))], list(rows))  # the middle of each row
    plt.xticks([])
    plt.title(title)
    plt.savefig(path, bbox_inches="tight", dpi=120)
    plt.close()
