"""Datasets as tensors: MNIST, Fashion-MNIST, KMNIST and CIFAR-10, fast batches and splits.

A whole split lives in one tensor (on the training device when it fits, which MNIST-family data
always does); batches are slices of a ``randperm``; every transform is a tensor op. This is an
order of magnitude faster than a torchvision ``DataLoader`` that goes through PIL per image
(``make bench-data`` measures it).

Files are read through torchvision, so its on-disk layout is the cache layout, and a missing
dataset is downloaded when a network exists. When it cannot be, :class:`DataError` carries one
line that names the folder searched and how to provide the data; scripts turn it into exit code 2.

Before :func:`load_split` reads a split, its files are checked against known sums: the sha256 of
a known-good copy of each extracted MNIST / Fashion-MNIST file (``KNOWN_SHA256``) and
torchvision's md5 of each archive (``<class>.resources``) that lies next to them. A file is hashed
once: a match is cached in ``<cache>/checksums.json`` under its path, size and mtime. A mismatch
is a :class:`ChecksumError` that names the file, so a file with a valid header and random pixels
never trains silently. (:func:`read_torchvision`, which the submitted notebooks inline, reads
without the check.)

Quick runs (``--quick``) use a few hundred images. When the full set is absent they fall back to
the sample shipped in ``common/sample_data/`` (real MNIST and Fashion-MNIST images) or, for
KMNIST and CIFAR-10 which are not shipped, to small generated data, and say so.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .paths import cache_dir, data_root, is_writable

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
QUICK_SIZES = {"train": 512, "test": 256}
SAMPLED = ("mnist", "fashion")  # datasets with a real sample in SAMPLE_DIR; the others fall back to generated data


class DataError(RuntimeError):
    """Data is missing or broken; the message is one line that says what to do."""

    def _render_traceback_(self):  # IPython shows this line instead of a traceback
        return [f"DataError: {self}"]


class ChecksumError(DataError):
    """A data file that does not match its known sum. Quick runs do not fall back to the sample
    over it: the file is there and wrong, and the user should know."""


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    title: str
    torchvision_class: str
    folder: str  # the folder torchvision keeps it in, under the data root
    channels: int
    size: int
    counts: tuple[int, int]  # train, test
    classes: tuple[str, ...]


DIGITS = tuple(str(i) for i in range(10))
DATASETS = {
    "mnist": DatasetInfo("mnist", "MNIST", "MNIST", "MNIST", 1, 28, (60000, 10000), DIGITS),
    "fashion": DatasetInfo(
        "fashion", "Fashion-MNIST", "FashionMNIST", "FashionMNIST", 1, 28, (60000, 10000),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "kmnist": DatasetInfo(
        "kmnist", "KMNIST", "KMNIST", "KMNIST", 1, 28, (60000, 10000),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", "CIFAR10", "cifar-10-batches-py", 3, 32, (50000, 10000),
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck")),
}
ALIASES = {"fashion-mnist": "fashion", "fashionmnist": "fashion", "cifar": "cifar10", "cifar-10": "cifar10"}


def dataset_info(name: str) -> DatasetInfo:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[key]


@dataclass
class Split:
    """One split of a dataset: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,), and where it came from."""

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo
    split: str
    source: str  # "full", "sample" (shipped real images) or "synthetic"

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], self.y[index], self.info, self.split, self.source)


# --------------------------------------------------------------------------------------------
# Checksums

# sha256 of the extracted files torchvision reads, from the known-good copy the project trains on
# (its SHA256SUMS). Paths relative to the data root.
KNOWN_SHA256 = {
    "MNIST/raw/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "MNIST/raw/train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "MNIST/raw/t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "MNIST/raw/t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "FashionMNIST/raw/train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "FashionMNIST/raw/train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "FashionMNIST/raw/t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "FashionMNIST/raw/t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _known_sums(info: DatasetInfo, split: str, root: Path) -> list[tuple[Path, str, str]]:
    """(path, algorithm, expected digest) for each file of ``split`` that is present and has a known sum."""
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    raw = root / info.folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    sums = []
    for archive, md5 in getattr(cls, "resources", ()):
        if not archive.startswith(prefix):
            continue
        extracted = raw / archive.removesuffix(".gz")
        sha = KNOWN_SHA256.get(f"{info.folder}/raw/{extracted.name}")
        sums += [(extracted, "sha256", sha)] if sha else []
        sums += [(raw / archive, "md5", md5)]
    return [(path, alg, digest) for path, alg, digest in sums if path.is_file()]


def verify_files(info: DatasetInfo, split: str, root: Path) -> bool:
    """Check the files of a split against their known sums, hashing each file only once: a match
    is remembered by path, size and mtime in ``checksums.json`` under the cache folder. Whether
    there was any file to check."""
    sums = _known_sums(info, split, root)
    if not sums:
        return False
    try:
        cache_file = cache_dir(root) / "checksums.json"
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    except (OSError, ValueError):  # no writable cache folder, or a damaged cache: hash again
        cache_file, cache = None, {}
    changed = False
    for path, algorithm, expected in sums:
        st = path.stat()
        key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns, expected]
        if cache.get(key) == stamp:
            continue
        actual = file_digest(path, algorithm)
        if actual != expected:
            raise ChecksumError(
                f"{path} is corrupt or truncated: its {algorithm} {actual[:12]}... is not that of the "
                f"{info.title} file ({expected[:12]}...); delete it and download again, or point "
                f"--data-root / HW_DATA_ROOT at a good copy.")
        cache[key], changed = stamp, True
    if changed and cache_file is not None:
        try:  # written whole, then renamed: a concurrent reader never sees half a file
            with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, suffix=".tmp", delete=False) as f:
                json.dump(cache, f, indent=0)
            os.replace(f.name, cache_file)
        except OSError:  # the cache could not be written: the files are hashed again next time
            pass
    return True


# --------------------------------------------------------------------------------------------
# Reading files


def _read_torchvision(info: DatasetInfo, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    train = split == "train"
    where = root / info.folder
    how = (f"put torchvision's {info.title} files there, or point --data-root / HW_DATA_ROOT at a "
           f"folder that has them")
    has_files = where.is_dir() and any(p.is_file() for p in where.rglob("*"))
    try:
        ds = cls(root=str(root), train=train, download=False)
    except Exception as exc:  # noqa: BLE001 - absent, incomplete or unreadable
        if has_files:
            raise DataError(f"{info.title} files in {where} are incomplete, corrupt or truncated "
                            f"({type(exc).__name__}: {str(exc).strip()[:120]}); delete them and download "
                            f"again, or {how}.") from None
        if not is_writable(root):
            raise DataError(f"{info.title} ({split}) not found in {where}, and {root} is read-only so it "
                            f"cannot be downloaded there: {how}.")
        try:  # not there: try to download, keeping torchvision's chatter quiet
            root.mkdir(parents=True, exist_ok=True)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ds = cls(root=str(root), train=train, download=True)
        except Exception as exc2:  # noqa: BLE001 - any failure here means "could not download"
            raise DataError(
                f"{info.title} ({split}) not found in {where} and the download failed "
                f"({type(exc2).__name__}; no network?): {how}.") from None
    x = torch.as_tensor(np.asarray(ds.data))
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)
    expected = info.counts[0 if train else 1]
    shape = (info.channels, info.size, info.size)
    if len(x) != expected or tuple(x.shape[1:]) != shape or len(y) != len(x):
        raise DataError(f"{info.title} files in {where} look truncated: {tuple(x.shape)} images and "
                        f"{len(y)} labels, expected {expected} of {shape}; delete them and download again.")
    return x.contiguous(), y


def read_torchvision(name: str, split: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split through torchvision from ``root`` (downloaded there when missing and a network
    exists): uint8 images (N, C, H, W) and int64 labels; :class:`DataError` when it cannot be had."""
    return _read_torchvision(dataset_info(name), split, Path(root))


def _read_sample(info: DatasetInfo, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    path = SAMPLE_DIR / f"{info.key}.npz.xz"
    if not path.exists():
        return None
    with lzma.open(path) as f, np.load(io.BytesIO(f.read())) as npz:
        return torch.from_numpy(npz[f"x_{split}"]).unsqueeze(1), torch.from_numpy(npz[f"y_{split}"]).long()


def synthetic(info: DatasetInfo, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Small generated data of the right shape: each class is a bright bar at its own angle.

    Used by tests and by quick runs of datasets that cannot be downloaded here (KMNIST, CIFAR-10).
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(info.classes)
    s = info.size
    coords = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = y.float()[:, None, None] * (torch.pi / len(info.classes))
    jitter = 0.15 * torch.randn(n, 1, 1, generator=g)
    dist = (xx * torch.sin(angle) - yy * torch.cos(angle) - jitter).abs()
    img = (1 - dist / 0.25).clamp(0, 1) * ((xx**2 + yy**2) < 0.8).float()
    img = img + 0.1 * torch.rand(n, s, s, generator=g)
    x = (img.clamp(0, 1) * 255).to(torch.uint8).unsqueeze(1).repeat(1, info.channels, 1, 1)
    return x, y


_ANNOUNCED: set = set()


def _announce_fallback(title: str, root: Path, source: str) -> None:
    """Say once per process (not once per split or per load) that a quick run uses stand-in data."""
    key = (title, str(root), source)
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(f"[data] {title} not found under {root}: quick runs use the {source} data")


def load_split(name: str, split: str = "train", root=None, quick: bool = False, seed: int = 0,
               quick_size: int | None = None) -> Split:
    """Load one split as uint8 tensors.

    ``quick`` keeps a stratified few hundred images (``quick_size``, default ``QUICK_SIZES``) and,
    when the full set is missing, falls back to the shipped sample (MNIST, Fashion-MNIST) or to
    generated data (KMNIST, CIFAR-10).
    """
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    info = dataset_info(name)
    root = data_root(root)
    try:
        checked = verify_files(info, split, root)  # before reading: the message names the bad file
        x, y = _read_torchvision(info, split, root)
        if not checked:  # just downloaded
            verify_files(info, split, root)
        source = "full"
    except DataError as exc:
        if not quick or isinstance(exc, ChecksumError):
            raise
        sample = _read_sample(info, split)
        if sample is not None:
            (x, y), source = sample, "sample"
        elif info.key in SAMPLED:  # a copy without the sample (a submission zip): the data is needed
            raise
        else:
            x, y = synthetic(info, quick_size or QUICK_SIZES[split], seed=seed + (split == "test"))
            source = "synthetic"
        _announce_fallback(info.title, root, source)
    data = Split(x, y, info, split, source)
    size = quick_size or QUICK_SIZES[split]
    if quick and len(data) > size:
        data = data.subset(stratified_subset(data.y, size, seed=seed))
    return data


# --------------------------------------------------------------------------------------------
# Transforms (tensor ops on whole splits or batches)


def to_float(x: torch.Tensor, scale: str = "tanh") -> torch.Tensor:
    """uint8 -> float in [-1, 1] (``scale='tanh'``, i.e. Normalize((0.5,), (0.5,))) or [0, 1] ('unit')."""
    x = x.float().div_(255)
    if scale == "tanh":
        return x.mul_(2).sub_(1)
    if scale == "unit":
        return x
    raise ValueError("scale must be 'tanh' or 'unit'")


def pad_to_32(x: torch.Tensor, value: float | None = None) -> torch.Tensor:
    """28x28 -> 32x32 by a 2-pixel border of background (torchvision's Pad(2)); keeps digit size."""
    if value is None:
        value = -1.0 if x.is_floating_point() and x.min() < 0 else 0.0
    return F.pad(x, (2, 2, 2, 2), value=value)


def resize_to(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Bilinear resize of float images (antialiased when shrinking)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def binarize(x: torch.Tensor, method: str = "threshold", generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary pixels from [0, 1] floats: ``x > 0.5`` or a Bernoulli draw with p = x."""
    if method == "threshold":
        return (x > 0.5).float()
    if method == "bernoulli":
        if generator is not None and generator.device != x.device:
            return torch.bernoulli(x.cpu(), generator=generator).to(x.device)
        return torch.bernoulli(x, generator=generator)
    raise ValueError("method must be 'threshold' or 'bernoulli'")


def one_hot(y: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    return F.one_hot(y.long(), num_classes).float()


def images(split: Split, scale: str = "tanh", size: int | None = None, resize: bool = False,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """A split as float images on ``device``: scaled, and padded (or resized) to ``size``."""
    x = to_float(split.x.to(device), scale)
    if size and size != x.shape[-1]:
        x = resize_to(x, size) if resize else pad_to_32(x, value=-1.0 if scale == "tanh" else 0.0)
    return x


# --------------------------------------------------------------------------------------------
# Subsets and splits


def stratified_subset(labels: torch.Tensor, size: float | int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded subset with the label proportions of ``labels``.

    ``size`` is a fraction (0 < size < 1) or a count; the subset has exactly
    ``round(fraction * N)`` (or ``count``) indices, split across classes by largest remainder.
    Sorted indices, the same for the same seed.
    """
    labels = labels.cpu()
    n = len(labels)
    total = round(size * n) if isinstance(size, float) and size < 1 else min(int(size), n)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * total / n
    take = exact.floor().long()
    short = total - int(take.sum())
    take[(exact - take).argsort(descending=True)[:short]] += 1
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, k in zip(classes, take.tolist()):
        idx = (labels == c).nonzero().squeeze(1)
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def train_val_split(labels: torch.Tensor, val_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split of indices into (train, validation)."""
    val = stratified_subset(labels, val_fraction, seed=seed)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val] = False
    return mask.nonzero().squeeze(1), val


# --------------------------------------------------------------------------------------------
# Batches


class TensorLoader:
    """Batches sliced from tensors held in memory, reshuffled with ``randperm`` every epoch.

    Yields tuples like a ``DataLoader`` over a ``TensorDataset``. ``transform`` (if given) is
    applied to the first tensor of each batch, e.g. a seeded dynamic binarization. The shuffling
    generator is part of ``state_dict()`` so a resumed run sees the same batches.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, transform=None):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorLoader needs tensors of equal length")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def dataset_size(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        n, b = self.dataset_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n, device = self.dataset_size, self.tensors[0].device
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = [t[idx] for t in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield tuple(batch)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def make_sample(root=None, n_train: int = 2000, n_test: int = 1000) -> None:
    """Write the shipped samples (``common/sample_data/<name>.npz.xz``) from the full sets."""
    SAMPLE_DIR.mkdir(exist_ok=True)
    for key in ("mnist", "fashion"):
        arrays = {}
        for split, n in (("train", n_train), ("test", n_test)):
            full = load_split(key, split, root=root)
            idx = stratified_subset(full.y, n, seed=0)[:n]
            arrays[f"x_{split}"] = full.x[idx, 0].numpy()
            arrays[f"y_{split}"] = full.y[idx].numpy().astype(np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (SAMPLE_DIR / f"{key}.npz.xz").write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
        print(f"wrote {SAMPLE_DIR / f'{key}.npz.xz'}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Data utilities.")
    parser.add_argument("--make-sample", action="store_true", help="rebuild common/sample_data from the full sets")
    parser.add_argument("--data-root", default=None)
    if parser.parse_args().make_sample:
        make_sample(parser.parse_args().data_root)
