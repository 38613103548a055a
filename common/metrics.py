"""Evaluation: judge classifiers, Frechet distance on their features, class accuracy and
diversity of samples, and test NLL of Bernoulli-pixel models.

Judges are small CNNs trained by the project (``make judges``) and cached under the data
folder's ``cache/`` (or ``data/cache/`` when the data folder is read-only). The Frechet distance
is computed on the judge's penultimate 128-d features, like FID on Inception features but with a
judge that knows the domain; it is always reported beside its floor (real train vs real test),
so a number can be read without knowing the scale.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data as D
from .data import TensorLoader, resize_to
from .paths import cache_dir, shown
from .loop import train_epochs
from .training import autocast, isolated_rng, progress

JUDGE_DATASETS = ("mnist", "fashion")
JUDGE_TARGETS = {"mnist": 0.993, "fashion": 0.92}
JUDGE_EPOCHS = {"mnist": 4, "fashion": 8}


class Judge(nn.Module):
    """A small VGG-style CNN on 28x28 images in [0, 1]; ``features`` is the 128-d penultimate layer."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                                  *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def judge_input(images: torch.Tensor, value_range=(-1.0, 1.0), resized: bool = False) -> torch.Tensor:
    """Any generated batch -> (N, 1, 28, 28) in [0, 1]: flat MLP outputs are reshaped, 32x32
    images are center-cropped (padded data) or resized back (``resized=True``)."""
    x = images.float()
    if x.dim() == 2:
        x = x.view(-1, 1, 28, 28)
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    if x.shape[-1] != 28:
        x = resize_to(x, 28) if resized else x[..., 2:30, 2:30]
    return x


def _judge_path(dataset: str, quick: bool, data_root=None) -> Path:
    return cache_dir(data_root) / f"judge_{dataset}{'_quick' if quick else ''}.pt"


@torch.no_grad()
def judge_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """The share of images ``x`` the model classifies as ``y``, in eval mode."""
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def judge_setup(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0):
    """A fresh :class:`Judge` (seeded), Adam with a one-cycle schedule peaking at 2e-3 over
    ``epochs``, and the shuffled loader of images ``x`` (N, 1, 28, 28) in [0, 1] and labels ``y``."""
    torch.manual_seed(seed)
    model = Judge().to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = TensorLoader(x, y, batch_size=batch_size, seed=seed)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * len(loader))
    return model, opt, sched, loader


def judge_step(model: Judge, opt, sched, xb: torch.Tensor, yb: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """One update on a batch shifted by a random pixel along each axis (augmentation); returns the loss."""
    shift = torch.randint(-1, 2, (2,)).tolist()
    xb = torch.roll(xb, shifts=shift, dims=(2, 3))
    with autocast(xb.device, precision):
        loss = F.cross_entropy(model(xb).float(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss


def fit_judge(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0,
              precision: str = "fp32", on_epoch=None, desc: str = "judge") -> Judge:
    """A :class:`Judge` trained on images ``x`` (N, 1, 28, 28) in [0, 1] with labels ``y`` by
    :func:`judge_step`; ``on_epoch(epoch, model)`` runs after each epoch. The submitted notebooks'
    plain loop (they cannot import ``common.loop``); :func:`train_judge` trains the same way
    through the shared loop."""
    model, opt, sched, loader = judge_setup(x, y, epochs, batch_size, seed)
    for epoch in range(epochs):
        model.train()
        for xb, yb in progress(loader, desc=f"{desc} {epoch + 1}/{epochs}"):
            judge_step(model, opt, sched, xb, yb, precision)
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model.eval()


def train_judge(dataset: str, device="cpu", quick: bool = False, data_root=None, epochs: int | None = None,
                seed: int = 0) -> tuple[Judge, dict]:
    """Train a judge on the train split of ``dataset`` (:func:`judge_step` through the shared
    epoch loop); report its test accuracy."""
    device = torch.device(device)
    # A quick judge sees the whole shipped sample (2,000 images), not just a quick run's few hundred.
    train, test = (D.load_split(dataset, s, root=data_root, quick=quick, seed=seed, quick_size=n)
                   for s, n in (("train", 2000), ("test", 1000)))
    x, y = D.to_float(train.x, "unit").to(device), train.y.to(device)
    xt, yt = D.to_float(test.x, "unit").to(device), test.y.to(device)
    epochs = epochs or (8 if quick else JUDGE_EPOCHS[dataset])
    start = time.time()
    model, opt, sched, loader = judge_setup(x, y, epochs, batch_size=64 if quick else 128, seed=seed)

    def report(ep):
        print(f"[judge] {dataset} epoch {ep.number}/{epochs}: test accuracy {judge_accuracy(model, xt, yt):.4f}")

    train_epochs(lambda batch, i: {"loss": judge_step(model, opt, sched, *batch)}, loader, epochs, models=(model,),
                 on_epoch=[report], desc=f"judge {dataset}", line=lambda ep: None)
    info = {"dataset": dataset, "test_accuracy": judge_accuracy(model, xt, yt), "epochs": epochs,
            "quick": quick, "data_source": train.source, "train_seconds": round(time.time() - start, 1)}
    return model.eval(), info


def save_judge(model: Judge, info: dict, path: Path) -> None:
    """Write judge weights atomically (several runs may train and cache one at the same time)."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state": model.state_dict(), "info": info}, tmp)
    os.replace(tmp, path)


def get_judge(dataset: str, device="cpu", quick: bool = False, data_root=None) -> tuple[Judge, dict]:
    """The cached judge for ``dataset``, trained first if missing.

    A full judge is used whenever it exists; quick runs without one train a quick judge on the
    quick data in seconds (its accuracy is written next to every metric it produces).
    """
    if dataset not in JUDGE_DATASETS:
        raise ValueError(f"no judge for {dataset!r} (judges exist for {JUDGE_DATASETS})")
    full = _judge_path(dataset, False, data_root)
    path = full if full.exists() or not quick else _judge_path(dataset, True, data_root)
    if not path.exists():
        print(f"[judge] no {dataset} judge cached at {shown(path)}: training one"
              + (" (quick)" if quick else " (a few minutes, once: it is cached for later runs)"))
        model, info = train_judge(dataset, device=device, quick=quick, data_root=data_root)
        save_judge(model, info, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = Judge()
    model.load_state_dict(ckpt["state"])
    return model.to(device).eval(), {**ckpt["info"], "path": str(shown(path))}


@torch.no_grad()
def judge_outputs(judge: Judge, x_unit: torch.Tensor, batch: int = 1000) -> tuple[np.ndarray, torch.Tensor]:
    """The judge's penultimate features (N, 128) as an array and its class probabilities (N, 10) on
    the CPU, for images (N, 1, 28, 28) in [0, 1] (see :func:`judge_input`)."""
    device = next(judge.parameters()).device
    feats = torch.cat([judge.features(x_unit[i:i + batch].to(device)).float() for i in range(0, len(x_unit), batch)])
    return feats.cpu().numpy(), judge.head(feats).softmax(1).cpu()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two sets of feature rows."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr (S_a S_b)^(1/2) = sum of square roots of the eigenvalues of S_a S_b (real, >= 0 up to noise)
    eig = np.linalg.eigvals(sa @ sb)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


class Evaluator:
    """Judge-based quality of generated images for one dataset.

        ev = Evaluator("mnist", device, quick=cfg.quick)
        ev.report(samples, labels=None, value_range=(-1, 1))  # -> dict for metrics.json

    Building it (the judge's weight init, or its training when none is cached) and every
    measurement run in :func:`common.training.isolated_rng`: evaluation draws nothing from the
    training's random streams, so a resumed run stays bit-exact with evaluation on, wherever a
    script builds its evaluator.
    """

    def __init__(self, dataset: str = "mnist", device="cpu", quick: bool = False, data_root=None,
                 n_real: int = 10000):
        with isolated_rng():
            self._build(dataset, device, quick, data_root, n_real)

    def _build(self, dataset, device, quick, data_root, n_real) -> None:
        self.device = torch.device(device)
        self.dataset = dataset
        self.judge, self.judge_info = get_judge(dataset, self.device, quick, data_root)
        test = D.load_split(dataset, "test", root=data_root, quick=quick)
        train = D.load_split(dataset, "train", root=data_root, quick=quick)
        n = min(n_real, len(test))
        self.n_real = n
        self.real_test = self.features(D.to_float(test.x[:n], "unit"), (0.0, 1.0))
        idx = D.stratified_subset(train.y, n, seed=1)[:n]
        self.floor = frechet_distance(self.features(D.to_float(train.x[idx], "unit"), (0.0, 1.0)), self.real_test)

    def _outputs(self, images, value_range, resized: bool) -> tuple[np.ndarray, torch.Tensor]:
        with isolated_rng():
            return judge_outputs(self.judge, judge_input(images, value_range, resized))

    def features(self, images, value_range=(-1.0, 1.0), resized: bool = False) -> np.ndarray:
        return self._outputs(images, value_range, resized)[0]

    def probabilities(self, images, value_range=(-1.0, 1.0), resized: bool = False) -> torch.Tensor:
        return self._outputs(images, value_range, resized)[1]

    def frechet(self, images, value_range=(-1.0, 1.0), resized: bool = False) -> float:
        return frechet_distance(self.features(images, value_range, resized), self.real_test)

    def report(self, images, labels=None, value_range=(-1.0, 1.0), resized: bool = False) -> dict:
        """Frechet distance (with its floor), judge confidence, class diversity and, for
        conditional samples, the share classified as the label asked for (overall and per class)."""
        feats, probs = self._outputs(images, value_range, resized)
        out = {"frechet_distance": frechet_distance(feats, self.real_test),
               "frechet_floor_train_vs_test": self.floor,
               **sample_stats(probs),
               "n_samples": len(images), "n_real": self.n_real,
               "judge_test_accuracy": self.judge_info["test_accuracy"], "judge_quick": self.judge_info["quick"]}
        if labels is not None:
            out.update(class_accuracy(probs, labels))
        return out


def sample_stats(probs: torch.Tensor) -> dict:
    """Mean judge confidence, and class diversity: entropy (nats) of the predicted-class
    histogram (ln 10 = 2.303 when all ten classes are equally frequent; 0 when collapsed)."""
    hist = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    p = hist / hist.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item() + 0.0  # + 0.0: no "-0.0" for a collapsed set
    return {"judge_confidence": probs.max(1).values.mean().item(), "class_entropy": entropy,
            "class_entropy_max": math.log(probs.shape[1]), "class_histogram": hist.long().tolist()}


def class_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Share of samples the judge assigns to the class they were generated for, and per class."""
    labels = labels.cpu()
    hit = probs.argmax(1) == labels
    per = {int(c): hit[labels == c].float().mean().item() for c in labels.unique()}
    return {"class_accuracy": hit.float().mean().item(), "class_accuracy_per_class": per}


# --------------------------------------------------------------------------------------------
# Likelihood of Bernoulli-pixel models


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) in nats per image for independent Bernoulli pixels given ``logits`` (N, ...)."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def nats_to_bits_per_dim(nats_per_image: float, dims: int = 784) -> float:
    return nats_per_image / (dims * math.log(2))


def fixed_binarization(x_unit: torch.Tensor, seed: int = 1234) -> torch.Tensor:
    """The same Bernoulli binarization of a test set every time (seeded), for comparable NLLs."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x_unit.cpu().float(), generator=g).to(x_unit.device)
