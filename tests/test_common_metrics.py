"""common.metrics: Frechet distance, judge inputs, sample statistics, class accuracy, NLL."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common import metrics as M


def test_frechet_distance_of_a_set_with_itself_is_zero_and_shift_is_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16))
    assert abs(M.frechet_distance(a, a)) < 1e-6
    # Same covariance, mean shifted by 0.5 in every dimension: FD = 16 * 0.25
    assert M.frechet_distance(a, a + 0.5) == pytest.approx(4.0, rel=1e-6)
    # Two Gaussians with scaled covariance: FD = d * (s1 - s2)^2 for isotropic std s
    b = rng.normal(size=(200000, 4))
    assert M.frechet_distance(b, 2 * b) == pytest.approx(4 * (2 - 1) ** 2, rel=0.02)


def test_judge_input_handles_flat_padded_and_resized_images():
    flat = torch.full((3, 784), -1.0)
    assert M.judge_input(flat).shape == (3, 1, 28, 28) and M.judge_input(flat).max() == 0
    padded = torch.full((2, 1, 32, 32), -1.0)
    padded[..., 2:30, 2:30] = 1.0
    assert torch.equal(M.judge_input(padded), torch.ones(2, 1, 28, 28))
    unit = torch.rand(2, 1, 32, 32)
    assert M.judge_input(unit, (0.0, 1.0), resized=True).shape == (2, 1, 28, 28)


def test_sample_stats_and_class_accuracy():
    probs = torch.eye(10)[torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3)]
    stats = M.sample_stats(probs)
    assert stats["class_entropy"] == pytest.approx(math.log(10))
    assert stats["judge_confidence"] == pytest.approx(1.0)
    collapsed = M.sample_stats(torch.eye(10)[torch.zeros(30, dtype=torch.long)])
    assert collapsed["class_entropy"] == pytest.approx(0.0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3)
    labels[:5] = 9  # 5 wrong, all asked-for class 9
    acc = M.class_accuracy(probs, labels)
    assert acc["class_accuracy"] == pytest.approx(25 / 30)
    assert acc["class_accuracy_per_class"][9] == pytest.approx(3 / 8)
    assert acc["class_accuracy_per_class"][0] == pytest.approx(1.0)


def test_bernoulli_nll_in_nats_and_bits():
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    logits = torch.zeros(1, 4)  # p = 0.5 everywhere: 4 ln 2 nats
    assert M.bernoulli_nll(logits, x).item() == pytest.approx(4 * math.log(2))
    assert M.nats_to_bits_per_dim(4 * math.log(2), dims=4) == pytest.approx(1.0)
    p = torch.tensor([[0.9, 0.2, 0.7, 0.6]])
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).sum()
    assert M.bernoulli_nll(torch.logit(p), x).item() == pytest.approx(manual.item(), rel=1e-5)
    u = torch.rand(5, 1, 4, 4)
    assert torch.equal(M.fixed_binarization(u, 1), M.fixed_binarization(u, 1))


def test_quick_judge_and_evaluator_on_the_sample(sample_judge_root, monkeypatch):
    """A quick judge trains in seconds on the sample and already separates real from noise."""
    monkeypatch.setenv("HW_DATA_ROOT", str(sample_judge_root))
    ev = M.Evaluator("mnist", quick=True, n_real=256)
    assert ev.judge_info["quick"] and 0.85 < ev.judge_info["test_accuracy"] <= 1.0
    from common import data as D

    test = D.load_split("mnist", "test", quick=True)
    real = D.images(test, "tanh")[:200]
    real_report = ev.report(real, labels=test.y[:200])
    noise_report = ev.report(torch.rand(200, 1, 28, 28) * 2 - 1)
    assert real_report["frechet_distance"] < noise_report["frechet_distance"]
    assert real_report["class_accuracy"] > 0.5
    for key in ("frechet_floor_train_vs_test", "judge_confidence", "class_entropy", "n_samples"):
        assert key in real_report


def test_evaluation_draws_nothing_from_the_training_rng(sample_judge_root, monkeypatch):
    """Building an evaluator (a judge's init) and measuring leave the global random streams as
    they were, so a resumed run draws the same numbers wherever its evaluator is built."""
    monkeypatch.setenv("HW_DATA_ROOT", str(sample_judge_root))
    fake = torch.rand(32, 1, 28, 28) * 2 - 1
    torch.manual_seed(3)
    np.random.seed(3)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(3)
    np.random.seed(3)
    ev = M.Evaluator("mnist", quick=True, n_real=64)
    ev.report(fake)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
