"""Every figure type the courses need, one look across courses.

Functions take numbers and tensors (never models, except the decoder of a latent grid) and a
path; each figure has a title and labelled axes, is saved as PNG and closed. Agg backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

DPI = 120


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _to_unit(images: torch.Tensor, value_range=(-1.0, 1.0)) -> torch.Tensor:
    lo, hi = value_range
    x = images.detach().float().cpu()
    if x.dim() == 2:  # flat (N, 784) MLP output
        side = int(round(x.shape[1] ** 0.5))
        x = x.view(-1, 1, side, side)
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def grid_image(images: torch.Tensor, nrow: int = 8, value_range=(-1.0, 1.0), padding: int = 2) -> np.ndarray:
    """An (H, W, 3) array of the images tiled ``nrow`` per row."""
    from torchvision.utils import make_grid  # here: importing torchvision costs ~2 s, a failing flag needs none

    grid = make_grid(_to_unit(images, value_range), nrow=nrow, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def save_grid(images: torch.Tensor, path, nrow: int = 8, title: str = "", value_range=(-1.0, 1.0),
              row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
              xlabel: str = "", ylabel: str = "", cell_inches: float = 0.55) -> Path:
    """A titled grid of images; optional labels for rows (e.g. classes, epochs) and columns (e.g. psi)."""
    n = len(images)
    rows = -(-n // nrow)
    arr = grid_image(images, nrow, value_range)
    fig, ax = plt.subplots(figsize=(max(3.0, nrow * cell_inches + 1.2), max(2.5, rows * cell_inches + 0.9)))
    ax.imshow(arr, cmap="gray", interpolation="nearest")
    h, w = arr.shape[:2]
    if row_labels:
        ax.set_yticks([(i + 0.5) * h / rows for i in range(len(row_labels))], list(row_labels))
    else:
        ax.set_yticks([])
    if col_labels:
        ax.set_xticks([(j + 0.5) * w / nrow for j in range(len(col_labels))], list(col_labels))
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < 2:
        return v
    window = min(window, len(v))
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:window] / np.arange(1, window)  # growing window at the start
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


Series = Mapping[str, "Sequence[float] | tuple[Sequence[float], Sequence[float]]"]


def _draw_series(ax, series: Series, window: int) -> None:
    for i, (name, values) in enumerate(series.items()):
        if isinstance(values, tuple):
            x, y = np.asarray(values[0], dtype=float), np.asarray(values[1], dtype=float)
        else:
            y = np.asarray(values, dtype=float)
            x = np.arange(1, len(y) + 1)
        color = f"C{i % 10}"
        if window > 1 and len(y) > window:
            ax.plot(x, y, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(x, moving_average(y, window), color=color, label=name, linewidth=1.6)
        else:
            ax.plot(x, y, color=color, label=name, linewidth=1.6, marker="o" if len(y) <= 30 else None,
                    markersize=3)


def plot_panels(panels: Mapping[str, Series], path, title: str = "", xlabel: str = "step",
                ylabels: Mapping[str, str] | None = None, window: int = 0, ncols: int | None = None,
                logy: Sequence[str] = ()) -> Path:
    """Several axes of curves; each panel holds several series with a smoothed line over a
    faint raw one (``window`` > 1). A series is a list of values or an ``(x, y)`` pair."""
    n = len(panels)
    ncols = ncols or min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels.items()):
        _draw_series(ax, series, window)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel((ylabels or {}).get(name, name))
        if name in logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1 or any(len(s) for s in series):
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(series: Series, path, title: str, xlabel: str = "step", ylabel: str = "loss",
                window: int = 0, logy: bool = False) -> Path:
    """One axes of curves (losses, metrics, overlays of several runs)."""
    return plot_panels({title: series}, path, xlabel=xlabel, ylabels={title: ylabel}, window=window,
                       logy=[title] if logy else ())


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path, title: str,
                         value_range=(0.0, 1.0), nrow: int = 8) -> Path:
    """Originals (left) beside their reconstructions (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(2 * nrow * 0.55 + 1.5, (-(-len(originals) // nrow)) * 0.55 + 1.2))
    for ax, imgs, name in zip(axes, (originals, reconstructions), ("original", "reconstruction")):
        ax.imshow(grid_image(imgs, nrow, value_range), cmap="gray", interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


@torch.no_grad()
def plot_latent_grid(decode: Callable[[torch.Tensor], torch.Tensor], path, n: int = 20, limit: float = 2.0,
                     title: str = "", device="cpu", value_range=(0.0, 1.0), side: int = 28) -> Path:
    """Decode an n x n grid of 2-D latents over [-limit, limit]^2 (z2 grows upwards)."""
    lin = torch.linspace(-limit, limit, n)
    z2, z1 = torch.meshgrid(lin.flip(0), lin, indexing="ij")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(device)
    imgs = decode(z).float().cpu().reshape(-1, 1, side, side)
    arr = grid_image(imgs, n, value_range, padding=0)
    fig, ax = plt.subplots(figsize=(max(4, n * 0.4), max(4, n * 0.4)))
    ax.imshow(arr, cmap="gray", extent=(-limit, limit, -limit, limit))
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title or f"decoded {n}x{n} grid over $[-{limit:g}, {limit:g}]^2$")
    return _save(fig, path)


def plot_embeddings(embeddings: Mapping[str, np.ndarray], labels, path, class_names: Sequence[str],
                    title: str = "", xlabel: str = "dim 1", ylabel: str = "dim 2") -> Path:
    """2-D points (latent means, t-SNE) coloured by class, one panel per model, shared legend."""
    labels = np.asarray(labels)
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n + 1.8, 5.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, pts) in zip(axes[0], embeddings.items()):
        pts = np.asarray(pts)
        for c, cname in enumerate(class_names):
            m = labels == c
            ax.scatter(pts[m, 0], pts[m, 1], s=3, color=cmap(c % 10), label=cname, alpha=0.7)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", markerscale=4, fontsize=9, title="class")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (5.5 * n + 1.8), 1))
    return _save(fig, path)


def plot_bars(values: Mapping[str, float], path, title: str, ylabel: str, xlabel: str = "",
              log: bool = False, fmt: str | None = None) -> Path:
    """One bar per named value (per class accuracy, per run metric). ``log``: a log y-axis, for
    values spanning orders of magnitude; ``fmt`` (e.g. ``"%.0f"``): each value written on its bar."""
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(values) + 2), 3.6))
    bars = ax.bar(list(values), list(values.values()), color="C0")
    if log:
        ax.set_yscale("log")
    if fmt:
        ax.bar_label(bars, fmt=fmt, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="x", rotation=30 if max(map(len, values), default=0) > 4 else 0)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
