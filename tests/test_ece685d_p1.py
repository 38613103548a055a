"""ECE 685D HW5, Problem 1: DCGAN shapes and losses, the feature extractor, the linear probe,
and one quick end-to-end run of problem1_dcgan.py."""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

COURSE = Path(__file__).resolve().parents[1] / "ece685d_hw5"


@pytest.fixture
def dm(course_path):
    """The course module ``dcgan_mnist`` (its folder on sys.path for the test only)."""
    course_path("ece685d_hw5")
    return importlib.import_module("dcgan_mnist")


def test_generator_shape_and_range(dm):
    torch.manual_seed(0)
    G = dm.Generator()
    out = G(torch.randn(5, dm.NZ))
    assert out.shape == (5, 1, 28, 28)
    assert out.min() >= -1 and out.max() <= 1
    assert isinstance(G.project[0], nn.Linear) and G.project[0].out_features == 7 * 7 * 256
    assert isinstance(G.deconv[-1], nn.Tanh)


def test_discriminator_shape_range_and_logits(dm):
    torch.manual_seed(0)
    D = dm.Discriminator().eval()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    p = D(x)
    assert p.shape == (6, 1)
    assert (p > 0).all() and (p < 1).all()
    torch.testing.assert_close(torch.sigmoid(D.logits(x)), p)
    assert D.features(x).shape == (6, dm.FEATURE_DIM)


def test_feature_extractor_drops_exactly_the_last_linear_layer(dm):
    torch.manual_seed(0)
    D = dm.Discriminator()
    ext = dm.remove_last_layer(D)
    d_params = sum(p.numel() for p in D.parameters())
    e_params = sum(p.numel() for p in ext.parameters())
    assert d_params - e_params == dm.FEATURE_DIM + 1  # the Linear(6272 -> 1) weight and bias
    assert not any(isinstance(m, nn.Linear) for m in ext.modules())
    assert [type(m) for m in ext] == [type(m) for m in D.features]
    assert not ext.training and not any(p.requires_grad for p in ext.parameters())
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    D.eval()
    torch.testing.assert_close(torch.sigmoid(D.head(ext(x))), D(x))
    # a frozen copy: training D afterwards does not change the extractor
    with torch.no_grad():
        D.features[0].weight.add_(1.0)
    assert not torch.allclose(ext(x), D.features(x))


def test_losses_match_the_minmax_objective(dm):
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0], [0.3]])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = -(d_real.log().mean() + (1 - d_fake).log().mean())
    torch.testing.assert_close(dm.discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(dm.generator_loss(fake), -d_fake.log().mean())
    torch.testing.assert_close(dm.generator_loss(fake, "minimax"), (1 - d_fake).log().mean())
    with pytest.raises(ValueError):
        dm.generator_loss(fake, "wgan")


def test_train_step_updates_both_networks(dm):
    torch.manual_seed(0)
    G, D = dm.Generator(), dm.Discriminator()
    opt_G = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    g0, d0 = G.deconv[0].weight.clone(), D.head.weight.clone()
    import contextlib
    out = dm.train_step(G, D, torch.rand(8, 1, 28, 28) * 2 - 1, opt_G, opt_D, contextlib.nullcontext)
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(float(v)) for v in out.values())
    assert not torch.equal(G.deconv[0].weight, g0) and not torch.equal(D.head.weight, d0)


def test_probe_beats_chance_on_the_embedded_sample(dm, empty_data_root):
    from common.data import images, load_split, stratified_subset

    train = load_split("mnist", "train", quick=True)
    test = load_split("mnist", "test", quick=True)
    assert train.source in ("sample", "synthetic")
    idx = stratified_subset(train.y, 200, seed=0)
    f_tr = images(train.subset(idx)).flatten(1)
    f_te = images(test).flatten(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread avoids thread-sync stalls on a shared CPU
    try:
        r = dm.linear_probe(f_tr, train.y[idx], f_te, test.y, weight_decays=(1e-2, 1e-1), max_iter=50)
    finally:
        torch.set_num_threads(threads)
    assert r["test_accuracy"] > 0.5  # chance is 0.1
    assert r["train_accuracy"] >= r["test_accuracy"]
    assert r["weight_decay"] in (1e-2, 1e-1) and r["feature_dim"] == 784 and r["n_train"] == len(idx)


def test_standardize_uses_train_statistics(dm):
    a = torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    b = torch.tensor([[4.0, 6.0]])
    sa, sb = dm.standardize(a, b)
    torch.testing.assert_close(sa.mean(0), torch.zeros(2))
    assert sb[0, 0].item() == pytest.approx((4 - 1) / a[:, 0].std().item())
    assert sb[0, 1].item() == pytest.approx(1.0)  # constant column keeps std 1


FIGURES = ["generated_samples.png", "loss_curves.png", "samples_over_epochs.png", "probe_test_error.png"]
TABLES = ["probe_accuracy.md", "probe_accuracy.csv"]
METRIC_KEYS = ["frechet_distance", "frechet_floor_train_vs_test", "class_entropy", "judge_confidence",
               "seconds_per_epoch", "probe"]
PROBES = ["raw pixels", "random D (untrained, same architecture)", "trained D (DCGAN)"]


def test_quick_end_to_end(tmp_path):
    out = tmp_path / "p1"
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    proc = subprocess.run([sys.executable, "problem1_dcgan.py", "--quick", "--threads", "1", "--out-dir", str(out)],
                          cwd=COURSE, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in FIGURES + TABLES + ["config.json", "history.csv", "epochs.csv", "checkpoint.pt", "metrics.json"]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    assert set(metrics["probe"]) == set(PROBES)
    for r in metrics["probe"].values():
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1
    table = (out / "probe_accuracy.md").read_text()
    assert all(p in table for p in PROBES)
    config = json.loads((out / "config.json").read_text())
    assert config["quick"] and config["epochs"] == 1
