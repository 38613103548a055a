"""Assignment 3: the MLP GAN of the handout (architecture, losses, freezing), the Part II studies'
quick runs (the Part I notebook: tests/test_notebooks.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

COURSE = Path(__file__).resolve().parents[1] / "assignment3"
sys.path.insert(0, str(COURSE))
import mlp_gan as M  # noqa: E402


def _linears(model):
    return [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]


def test_architecture_matches_handout_table():
    G, D = M.Generator(), M.Discriminator()
    assert type(G).__mro__[1] is nn.Sequential and type(D).__mro__[1] is nn.Sequential
    assert _linears(G) == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert _linears(D) == [(784, 1024), (1024, 512), (512, 256), (256, 1)]
    assert isinstance(G[-1], nn.Tanh) and isinstance(D[-1], nn.Sigmoid)
    assert sum(isinstance(m, nn.LeakyReLU) for m in G) == 3
    assert sum(isinstance(m, nn.LeakyReLU) for m in D) == 3
    assert sum(isinstance(m, nn.Dropout) for m in D) == 3
    assert not any(isinstance(m, nn.Dropout) for m in G)


def test_shapes_and_ranges():
    torch.manual_seed(0)
    G, D = M.Generator(), M.Discriminator()
    x = G(torch.randn(6, 100))
    assert x.shape == (6, 784) and x.min() >= -1 and x.max() <= 1
    p = D(x)
    assert p.shape == (6, 1) and ((p > 0) & (p < 1)).all()
    assert D(x.view(6, 1, 28, 28)).shape == (6, 1)


def test_losses_follow_their_equations():
    bce = nn.BCELoss()
    p = torch.tensor([[0.9], [0.2], [0.6]])
    ones, zeros = M.real_fake_labels(3, "cpu")
    assert ones.shape == (3, 1) and ones.eq(1).all() and zeros.eq(0).all()
    assert torch.isclose(M.d_loss_real(bce, p, ones), -p.log().mean())
    assert torch.isclose(M.d_loss_fake(bce, p, zeros), -(1 - p).log().mean())
    assert torch.isclose(M.g_loss_fn(bce, p, ones), -p.log().mean())  # non-saturating


def _setup():
    torch.manual_seed(0)
    G, D = M.Generator(), M.Discriminator()
    opt_G, opt_D = M.make_optimizers(G, D)
    return G, D, opt_G, opt_D, nn.BCELoss()


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_generator_step_leaves_discriminator_unchanged():
    G, D, opt_G, opt_D, bce = _setup()
    g0, d0 = _params(G), _params(D)
    out = M.train_generator_step(G, D, opt_G, bce, 16, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert all(p.grad is None for p in D.parameters())  # frozen: no gradient reached D
    assert not any(p.requires_grad for p in D.parameters()) and all(p.requires_grad for p in G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert out["g_loss"].item() > 0


def test_discriminator_step_leaves_generator_unchanged():
    G, D, opt_G, opt_D, bce = _setup()
    g0, d0 = _params(G), _params(D)
    real = torch.rand(16, 784) * 2 - 1
    out = M.train_discriminator_step(G, D, opt_D, bce, real)
    assert all(torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert all(p.grad is None for p in G.parameters())
    assert not any(p.requires_grad for p in G.parameters()) and all(p.requires_grad for p in D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert torch.isclose(out["d_loss"], out["d_loss_real"] + out["d_loss_fake"])


def test_sampling_is_deterministic_eval_mode_without_grad():
    G = M.Generator()
    G.train()
    z = M.fixed_noise(5, seed=3)
    assert torch.equal(z, M.fixed_noise(5, seed=3))
    a, b = M.sample(G, z), M.sample(G, z)
    assert torch.equal(a, b) and not a.requires_grad and G.training


def test_training_reduces_discriminator_loss_on_a_fixed_batch():
    G, D, opt_G, opt_D, bce = _setup()
    real = torch.rand(64, 784) * 2 - 1
    first = M.train_discriminator_step(G, D, opt_D, bce, real)["d_loss"].item()
    for _ in range(15):
        last = M.train_discriminator_step(G, D, opt_D, bce, real)["d_loss"].item()
    assert last < first


def test_stability_measures_flag_divergence_and_collapse():
    from common.training import History
    h = History()
    for e in range(1, 11):
        for _ in range(5):
            h.log_step(d_loss=0.01 if e > 8 else 1.2, g_loss=9.0 if e > 8 else 0.8, d_real=0.99, d_fake=0.01)
        h.log_epoch(epoch=e, d_loss=0.01 if e > 8 else 1.2, g_loss=9.0 if e > 8 else 0.8)
    evals = [{"epoch": float(e), "class_entropy": 2.2 if e < 7 else 0.5} for e in range(0, 11)]
    m = M.stability_measures(h, evals)
    assert m["divergence_epochs"] == 2
    assert m["collapse_events"] >= 1
    assert m["gap_last"] == pytest.approx(0.98)
    calm = {"divergence_epochs": 0, "collapse_events": 0, "g_loss_epoch_std_last": 0.1}
    assert M.instability_key(m) < M.instability_key(calm)


def test_train_epoch_runs_part_one_loop_with_freezing_and_per_batch_schedulers():
    """The plain loop of the Part II submission scripts: one D and one G update per batch, both
    networks trainable afterwards, each scheduler stepped after every batch."""
    G, D, opt_G, opt_D, bce = _setup()
    g0, d0 = _params(G), _params(D)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(64)), batch_size=16)
    scheduler = torch.optim.lr_scheduler.StepLR(opt_G, step_size=2, gamma=0.1)
    log = M.train_epoch(G, D, opt_G, opt_D, bce, loader, "cpu", schedulers=[scheduler])
    assert {k: len(v) for k, v in log.items()} == dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake", "lr"), 4)
    assert log["lr"] == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5])  # the lr each batch used
    assert all(torch.isfinite(torch.tensor(v)).all() for v in log.values())
    assert all(p.requires_grad for p in [*G.parameters(), *D.parameters()])
    assert all(any(not torch.equal(a, b) for a, b in zip(before, m.parameters())) for before, m in ((g0, G), (d0, D)))


def test_epoch_stability_counts_diverged_epochs_and_the_late_spread_of_g():
    spread, diverged = M.epoch_stability([1.0, 0.05, 1.0, 1.0, 1.0], [1.0, 1.0, 6.0, 1.0, 3.0])
    assert diverged == 2  # D loss below 0.1 in epoch 2, G loss above 5 in epoch 3
    assert spread == pytest.approx(1.0)  # std of the last 2 epochs (20% of 5, at least 2): 1 and 3
    assert M.epoch_stability([float("nan")], [1.0])[1] == 1


def test_bench_reference_step_runs():
    import bench_mlp_gan as B
    G, D, opt_G, opt_D, bce = B.models(ours=False)
    d0 = _params(D)
    B.reference_step(G, D, opt_G, opt_D, bce, torch.rand(8, 1, 28, 28) * 2 - 1)
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))


# ---- quick end-to-end runs ----------------------------------------------------------------------


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only contend
    env.update(extra)
    return env


def _run(script, out, *args, **env):
    proc = subprocess.run([sys.executable, script, "--quick", "--out-dir", str(out), *args], cwd=COURSE,
                          env=_env(**env), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_training_stages_quick(tmp_path):
    out = tmp_path / "stages"
    _run("part2_training_stages.py", out)
    for name in ("stages_grid.png", "stage_metrics.png", "losses.png", "stages.md", "stages.csv",
                 "config.json", "history.csv", "checkpoint.pt", "snapshot_epoch001.pt", "snapshot_epoch002.pt"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("frechet_distance", "judge_confidence", "class_entropy", "stages", "best_epoch"):
        assert key in m, key
    assert [r["epoch"] for r in m["stages"]] == [0, 1, 2]


def test_batch_sizes_then_schedules_quick(tmp_path):
    bs_out, sch_out = tmp_path / "bs", tmp_path / "sch"
    _run("part2_batch_sizes.py", bs_out)
    for name in ("losses_equal_epochs.png", "losses_equal_updates.png", "quality.png", "fd_equal_updates.png", "samples.png",
                 "stability.png", "batch_sizes.md", "batch_sizes.csv", "config.json"):
        assert (bs_out / name).exists(), name
    m = json.loads((bs_out / "metrics.json").read_text())
    assert set(m["runs"]) == {"32", "64", "128", "256"}
    for row in m["runs"].values():
        for key in ("fd_equal_epochs", "g_loss_std_last", "gap_last", "divergence_epochs", "collapse_events"):
            assert key in row, key
    least = m["least_stable_batch_size"]

    _run("part2_lr_schedules.py", sch_out, "--batch-sizes-run", str(bs_out))
    for name in ("lr_schedules.png", "losses.png", "frechet.png", "samples.png", "schedules.md",
                 "schedules.csv", "conclusion.md", "config.json"):
        assert (sch_out / name).exists(), name
    s = json.loads((sch_out / "metrics.json").read_text())
    assert s["batch_size"] == least
    assert set(s["runs"]) == {"constant", "step_decay", "warmup_cosine"}
    assert s["runs"]["step_decay"]["final_lr"] == pytest.approx(2e-5)  # one x0.1 decay after epoch 1
    assert s["runs"]["constant"]["final_lr"] == pytest.approx(2e-4)
    assert "step_decay" in (sch_out / "conclusion.md").read_text()
