"""common.data: loading, fallbacks, clear errors, transforms, splits and the in-memory loader."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from common import data as D
from helpers import full_data_available


def test_quick_load_falls_back_to_shipped_sample(empty_data_root):
    for name in ("mnist", "fashion"):
        train = D.load_split(name, "train", quick=True)
        test = D.load_split(name, "test", quick=True)
        assert train.source == "sample" and test.source == "sample"
        assert train.x.shape == (D.QUICK_SIZES["train"], 1, 28, 28) and train.x.dtype == torch.uint8
        assert test.x.shape == (D.QUICK_SIZES["test"], 1, 28, 28)
        assert set(train.y.unique().tolist()) == set(range(10))
        assert train.x.float().mean() > 10  # real images, not blank


def test_quick_load_of_unshipped_dataset_uses_generated_data(empty_data_root):
    split = D.load_split("cifar10", "train", quick=True)
    assert split.source == "synthetic" and split.x.shape[1:] == (3, 32, 32)
    assert D.load_split("kmnist", "test", quick=True).x.shape[1:] == (1, 28, 28)


def test_missing_data_raises_one_clear_line(empty_data_root):
    with pytest.raises(D.DataError) as info:
        D.load_split("mnist", "train")
    message = str(info.value)
    assert "\n" not in message
    assert str(empty_data_root / "MNIST") in message and "HW_DATA_ROOT" in message


def test_missing_data_script_exits_2_without_traceback(empty_data_root):
    code = ("from common.cli import run_main\nfrom common.data import load_split\n"
            "run_main(lambda argv: load_split('fashion', 'test'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: Fashion-MNIST (test) not found in") and str(empty_data_root) in lines[0]


@pytest.mark.skipif(not full_data_available(), reason="full MNIST not available (set HW_DATA_ROOT)")
def test_full_mnist_and_truncated_copy(tmp_path):
    import os
    from pathlib import Path

    full = D.load_split("mnist", "test")
    assert full.source == "full" and full.x.shape == (10000, 1, 28, 28)
    raw = Path(os.environ["HW_DATA_ROOT"]) / "MNIST" / "raw"
    broken = tmp_path / "MNIST" / "raw"
    broken.mkdir(parents=True)
    for f in raw.iterdir():
        shutil.copy(f, broken / f.name)
    images = broken / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: 16 + 784 * 5000])  # half the test images
    with pytest.raises(D.DataError, match="corrupt or truncated|look truncated"):
        D.load_split("mnist", "test", root=tmp_path)


def _noise_mnist(root, seed=0):
    """A data root whose MNIST test files have valid IDX headers and the full count of random
    pixels and labels (torchvision reads them without complaint); the train files are stubs,
    there only because torchvision wants all four before it reads either split."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = 10000
    header = lambda magic, *dims: np.array([magic, *dims], dtype=">u4").tobytes()  # noqa: E731
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        header(0x803, n, 28, 28) + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        header(0x801, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    return raw


def test_random_pixels_with_a_valid_header_fail_in_one_line(tmp_path):
    raw = _noise_mnist(tmp_path)
    with pytest.raises(D.ChecksumError):  # not the shipped sample in its place, either
        D.load_split("mnist", "test", root=tmp_path, quick=True)
    code = ("from common.cli import run_main\nfrom common.data import load_split\n"
            "run_main(lambda argv: load_split('mnist', 'test'))\n")
    env = {**os.environ, "HW_DATA_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(raw / "t10k-images-idx3-ubyte") in lines[0] and "sha256" in lines[0]


def test_a_good_file_is_hashed_once(tmp_path, monkeypatch):
    raw = _noise_mnist(tmp_path)
    files = [raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"]
    # these files play the known-good copy
    monkeypatch.setattr(D, "KNOWN_SHA256", {f"MNIST/raw/{f.name}": D.file_digest(f) for f in files})
    hashed = []

    def counting(path, algorithm="sha256"):
        hashed.append(path.name)
        return real(path, algorithm)

    real = D.file_digest
    monkeypatch.setattr(D, "file_digest", counting)
    first = D.load_split("mnist", "test", root=tmp_path)
    assert first.source == "full" and sorted(hashed) == sorted(f.name for f in files)
    assert (tmp_path / "cache" / "checksums.json").exists()
    D.load_split("mnist", "test", root=tmp_path)
    assert len(hashed) == 2  # cached: not hashed again
    os.utime(files[1], ns=(0, files[1].stat().st_mtime_ns + 10**9))
    D.load_split("mnist", "test", root=tmp_path)
    assert hashed[2:] == [files[1].name]  # a changed file is checked again


def test_scaling_padding_resizing():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8).repeat(2, 1, 28, 14)
    tanh, unit = D.to_float(x, "tanh"), D.to_float(x, "unit")
    assert tanh.min() == -1 and tanh.max() == 1 and unit.min() == 0 and unit.max() == 1
    padded = D.pad_to_32(tanh)
    assert padded.shape == (2, 1, 32, 32) and padded[0, 0, 0, 0] == -1 and padded[0, 0, 0, 31] == -1
    assert torch.equal(padded[..., 2:30, 2:30], tanh)
    assert D.resize_to(unit, 32).shape == (2, 1, 32, 32)
    split = D.Split(x, torch.zeros(2, dtype=torch.long), D.dataset_info("mnist"), "train", "full")
    assert D.images(split, "unit", size=32).shape == (2, 1, 32, 32)
    assert D.images(split, "tanh", size=32)[0, 0, 0, 0] == -1


def test_binarization_threshold_and_seeded_bernoulli():
    x = torch.rand(100, 1, 28, 28)
    t = D.binarize(x, "threshold")
    assert torch.equal(t, (x > 0.5).float())
    a = D.binarize(x, "bernoulli", torch.Generator().manual_seed(3))
    b = D.binarize(x, "bernoulli", torch.Generator().manual_seed(3))
    c = D.binarize(x, "bernoulli", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - x.mean().item()) < 0.01
    assert torch.equal(D.one_hot(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))


def test_stratified_subset_and_split():
    y = torch.arange(1000) % 10
    y[:300] = 0  # unbalanced: class 0 holds 370 of 1000
    idx = D.stratified_subset(y, 0.1, seed=0)
    assert len(idx) == 100 and len(idx.unique()) == 100
    assert (y[idx] == 0).sum().item() == 37
    assert torch.equal(idx, D.stratified_subset(y, 0.1, seed=0))
    assert not torch.equal(idx, D.stratified_subset(y, 0.1, seed=1))
    train, val = D.train_val_split(y, 0.2, seed=0)
    assert len(train) + len(val) == 1000 and len(set(train.tolist()) & set(val.tolist())) == 0
    assert abs(len(val) - 200) <= 5


def test_tensor_loader_covers_reshuffles_and_resumes():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    loader = D.TensorLoader(x, y, batch_size=4, seed=0)
    assert len(loader) == 3
    epoch1 = [b for b in loader]
    assert [len(b[0]) for b in epoch1] == [4, 4, 2]
    order1 = torch.cat([b[1] for b in epoch1])
    assert sorted(order1.tolist()) == list(range(10))
    assert all(torch.equal(b[0].squeeze(1).long(), b[1]) for b in epoch1)  # x and y stay paired
    state = loader.state_dict()
    order2 = torch.cat([b[1] for b in loader])
    assert not torch.equal(order1, order2)  # reshuffled each epoch
    loader.load_state_dict(state)
    assert torch.equal(torch.cat([b[1] for b in loader]), order2)  # resumed: same next epoch
    same_seed = D.TensorLoader(x, y, batch_size=4, seed=0)
    assert torch.equal(torch.cat([b[1] for b in same_seed]), order1)
    assert len(D.TensorLoader(x, y, batch_size=4, drop_last=True)) == 2
    doubled = D.TensorLoader(x, y, batch_size=5, shuffle=False, transform=lambda t: 2 * t)
    assert torch.equal(next(iter(doubled))[0].squeeze(1), 2 * torch.arange(5).float())
