"""EE 8520 HW2 Steps 1 (MLP GAN) and 3 (MLP VAE): the skeleton's interfaces, the handout's
architectures and losses, and one quick end-to-end run of each script and mode."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import ROOT

COURSE = ROOT / "ee8520_hw2"


@pytest.fixture
def ee(course_path):
    """The course modules, imported with the course folder on sys.path (as the scripts run)."""
    course_path("ee8520_hw2")
    import hw2_step1_main
    import hw2_step3_main
    from models import GAN, VAE
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the scripts do: these MLPs are fastest on one thread
    yield {"GAN": GAN, "VAE": VAE, "step1": hw2_step1_main, "step3": hw2_step3_main}
    torch.set_num_threads(threads)


def linear_shapes(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def count(module, cls):
    return sum(isinstance(m, cls) for m in module.modules())


# --------------------------------------------------------------------------------------------
# Step 1: models


def test_generator_follows_the_handout(ee):
    G = ee["GAN"].Generator()
    assert linear_shapes(G) == [(100, 64), (64, 128), (128, 256), (256, 784)]
    assert count(G, nn.LeakyReLU) == 3 and count(G, nn.Dropout) == 0 and count(G, nn.BatchNorm1d) == 0
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    out = G(torch.randn(5, 100, 1, 1))  # reshaped to (N, dim_z)
    assert out.shape == (5, 784) and out.abs().max() <= 1


def test_discriminator_follows_the_handout(ee):
    D = ee["GAN"].Discriminator()
    assert linear_shapes(D) == [(784, 256), (256, 128), (128, 64), (64, 1)]
    assert count(D, nn.LeakyReLU) == 3 and count(D, nn.Dropout) == 3
    assert count(D, nn.Sigmoid) == 0 and count(D, nn.BatchNorm1d) == 0
    assert D(torch.randn(6, 1, 28, 28)).shape == (6, 1)
    assert isinstance(list(D.modules())[-1], nn.Linear)  # a raw logit for BCEWithLogitsLoss
    with torch.no_grad():
        list(D.modules())[-1].bias.fill_(10.0)
    assert (D.eval()(torch.zeros(3, 784)) > 1).all()  # not squeezed into (0, 1)


def test_train_discriminator_without_device(ee):
    GAN = ee["GAN"]
    torch.manual_seed(0)
    G, D = GAN.Generator(), GAN.Discriminator(dropout=0.0)
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    real, fake = torch.rand(8, 784) * 2 - 1, G(torch.randn(8, 100))
    before = [p.detach().clone() for p in D.parameters()]
    crit = nn.BCEWithLogitsLoss()
    with torch.no_grad():
        expected_real = crit(D(real), torch.ones(8, 1))
        expected_fake = crit(D(fake), torch.zeros(8, 1))
    d_loss, out_real, out_fake, fake_loss = GAN.train_discriminator(D, opt, real, fake, crit)
    assert out_real.shape == out_fake.shape == (8, 1)
    assert torch.allclose(fake_loss, expected_fake) and torch.allclose(d_loss, expected_real + expected_fake)
    assert any(not torch.equal(a, b) for a, b in zip(before, D.parameters()))
    assert all(p.grad is None for p in G.parameters())  # fakes were detached


def test_train_generator_without_device(ee):
    GAN = ee["GAN"]
    torch.manual_seed(0)
    G, D = GAN.Generator(), GAN.Discriminator()
    opt = torch.optim.SGD(G.parameters(), lr=0.1)
    before = [p.detach().clone() for p in G.parameters()]
    outputs = D(G(torch.randn(8, 100)))
    crit = nn.BCEWithLogitsLoss()
    g_loss, g_loss_fake = GAN.train_generator(G, opt, outputs, crit)
    assert torch.allclose(g_loss, crit(outputs, torch.ones(8, 1)))
    assert torch.allclose(g_loss_fake, crit(outputs, torch.zeros(8, 1)))
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_train_main_loop_updates_g_every_d_freq_batches(ee, tmp_path):
    GAN, s1 = ee["GAN"], ee["step1"]
    from common.data import TensorLoader
    from common.training import EpochSamples
    torch.manual_seed(0)
    G, D = GAN.Generator(), GAN.Discriminator()
    opt_d, opt_g = torch.optim.Adam(D.parameters(), 2e-4), torch.optim.Adam(G.parameters(), 2e-4)
    loader = TensorLoader(torch.rand(70, 784) * 2 - 1, batch_size=10)  # 7 batches
    noise = torch.randn(64, 100)
    snaps = EpochSamples(keep=10)
    d, d_fake, g, g_fake = s1.train_main_loop(G, D, opt_d, opt_g, noise, 2, 3, loader, 100, nn.BCEWithLogitsLoss(),
                                              images_path=tmp_path / "g.png", snapshots=snaps)
    assert len(d) == len(d_fake) == 14
    assert len(g) == len(g_fake) == 6  # batches 0, 3, 6 of each epoch
    assert snaps.epochs == [1, 2] and [len(r) for r in snaps.rows] == [10, 10] and (tmp_path / "g.png").exists()
    assert s1.monitor_losses(d, d_fake, g, g_fake, 10, path=tmp_path / "l.png").exists()


def test_ablations_change_what_they_say(ee):
    s1, GAN = ee["step1"], ee["GAN"]
    assert s1.resolve_ablations("all") == list(s1.ABLATIONS) and len(s1.ABLATIONS) == 10
    assert s1.resolve_ablations("dropout_0.3,d_freq_1,lr_g_x2") == ["baseline"]
    with pytest.raises(SystemExit):
        s1.resolve_ablations("no_such_thing")
    base = s1.Step1Config()
    assert (base.epochs, base.batch_size, base.dim_z, base.d_freq, base.dropout) == (100, 128, 100, 1, 0.3)
    changes = {n: c for n, (_, c) in s1.ABLATIONS.items()}
    assert GAN.Generator(100, changes["g_channels_x2"]["g_channels"]).channels == [2 * c for c in base.g_channels]
    assert count(GAN.Generator(100, changes["g_extra_layer"]["g_channels"]), nn.Linear) == 5
    assert count(GAN.Discriminator(changes["d_extra_layer"]["d_channels"]), nn.Linear) == 5
    assert {changes[f"dropout_{p}"]["dropout"] for p in ("0.1", "0.5")} == {0.1, 0.5}
    assert base.lr_g > (base.lr_d or base.lr)  # the default: G learns faster
    assert changes["lr_d_x2"]["lr_d"] > changes["lr_d_x2"]["lr_g"] and changes["equal_lr"]["lr_d"] == changes["equal_lr"]["lr_g"]
    assert [changes[f"d_freq_{k}"]["d_freq"] for k in (2, 3)] == [2, 3]


# --------------------------------------------------------------------------------------------
# Step 3: model and loss


def test_vae_architecture(ee):
    VAE = ee["VAE"]
    m = VAE.VAE_model(784, [256, 128, 64, 4])
    assert m.z_size == 2
    assert linear_shapes(m.encoder) == [(784, 256), (256, 128), (128, 64), (64, 4)]
    assert linear_shapes(m.decoder) == [(2, 64), (64, 128), (128, 256), (256, 784)]
    assert count(m.encoder, nn.LeakyReLU) == 3 and count(m.decoder, nn.LeakyReLU) == 3
    assert isinstance(m.decoder[-1], nn.Sigmoid) and not isinstance(m.encoder[-1], nn.LeakyReLU)
    out = m(torch.rand(5, 1, 28, 28))
    assert set(out) == {"imgs", "z", "mean", "logvar"}
    assert out["imgs"].shape == (5, 784) and out["z"].shape == out["mean"].shape == out["logvar"].shape == (5, 2)
    assert 0 <= out["imgs"].min() and out["imgs"].max() <= 1
    assert VAE.VAE_model(784, [32, 16, 16, 8], decode_dim=100)(torch.rand(3, 784))["imgs"].shape == (3, 100)


def test_reparameterize_is_differentiable_and_centred(ee):
    m = ee["VAE"].VAE_model(784, [32, 32, 16, 4])
    mean = torch.randn(4, 2, requires_grad=True)
    logvar = torch.zeros(4, 2, requires_grad=True)
    m.reparameterize(mean, logvar).sum().backward()
    assert mean.grad is not None and logvar.grad is not None
    assert torch.allclose(m.reparameterize(mean, torch.full((4, 2), -60.0)), mean, atol=1e-6)


def test_closed_form_kl_matches_torch_distributions(ee):
    s3 = ee["step3"]
    from torch.distributions import Normal, kl_divergence
    mean, logvar = torch.randn(7, 3), torch.randn(7, 3)
    expected = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(s3.kl_divergence(mean, logvar), expected, atol=1e-5)
    assert s3.kl_divergence(torch.zeros(2, 2), torch.zeros(2, 2)).abs().max() == 0


def test_loss_func_is_recon_plus_coeff_kl(ee):
    s3 = ee["step3"]
    m = ee["VAE"].VAE_model(784, [32, 32, 16, 4])
    x = torch.rand(6, 784)
    torch.manual_seed(3)
    loss, recon, kl = s3.loss_func(m, x, 0.25, return_terms=True)
    torch.manual_seed(3)
    out = m(x)
    bce = F.binary_cross_entropy(out["imgs"], x, reduction="sum") / 6
    kl_ref = 0.5 * (out["logvar"].exp() + out["mean"] ** 2 - 1 - out["logvar"]).sum() / 6
    assert torch.allclose(recon, bce) and torch.allclose(kl, kl_ref) and torch.allclose(loss, bce + 0.25 * kl_ref)
    torch.manual_seed(3)
    assert torch.allclose(s3.loss_func(m, x, 0.25), loss)  # the skeleton's call returns the scalar


def test_vae_figures_functions(ee, tmp_path):
    s3 = ee["step3"]
    m = ee["VAE"].VAE_model(784, [32, 32, 16, 4])
    assert s3.plot_latent_images(m, 5, "cpu", path=tmp_path / "gen.png").exists()
    assert s3.eval(m, torch.rand(40, 1, 28, 28), "cpu", path=tmp_path / "rec.png").exists()
    stats = s3.evaluate(m, torch.rand(30, 784))
    assert math.isclose(stats["elbo"], -(stats["recon"] + stats["kl"]), rel_tol=1e-9)
    assert stats["means"].shape == (30, 2)


# --------------------------------------------------------------------------------------------
# End-to-end quick runs


def run_script(script: str, out: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    proc = subprocess.run([sys.executable, script, "--quick", "--out-dir", str(out), *args], cwd=COURSE, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


JUDGE_KEYS = {"frechet_distance", "frechet_floor_train_vs_test", "class_entropy", "judge_confidence"}


def test_step1_quick_run(tmp_path):
    out = tmp_path / "s1"
    run_script("hw2_step1_main.py", out)
    for name in ("imgs/generated_images.png", "imgs/loss_monitoring.png", "generated_images.png",
                 "loss_monitoring.png", "samples_across_epochs.png", "config.json", "checkpoint.pt", "history.csv"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert JUDGE_KEYS | {"final_d_loss", "final_g_loss", "mean_D_x", "mean_D_G_z"} <= set(metrics)
    assert metrics["epochs"] == 2 and 0 <= metrics["mean_D_x"] <= 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


def test_step1_ablation_quick_run(tmp_path):
    out = tmp_path / "abl"
    run_script("hw2_step1_main.py", out, "--ablation", "baseline,d_freq_2")
    for name in ("ablation_losses.png", "ablation_samples.png", "ablation_table.md", "ablation_table.csv",
                 "baseline/metrics.json", "d_freq_2/samples_across_epochs.png"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "ablation_table.csv")))
    assert [r["ablation"] for r in rows] == ["baseline", "d_freq_2"]
    assert all(r["Frechet (judge)"] and r["class entropy (nats, max 2.303)"] for r in rows)
    assert json.loads((out / "d_freq_2" / "config.json").read_text())["d_freq"] == 2


def test_step3_quick_run_and_resume(tmp_path):
    out = tmp_path / "s3"
    run_script("hw2_step3_main.py", out)
    for name in ("imgs/VAE_recon.png", "imgs/VAE_generated.png", "VAE_generated_20x20.png", "loss_curves.png",
                 "latent_means.png", "prior_samples.png", "checkpoint.pt"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_elbo_nats", "test_recon_nats", "test_kl_nats"} <= set(metrics) and JUDGE_KEYS <= set(metrics["prior_samples"])
    assert metrics["test_elbo_nats"] < 0
    assert math.isclose(metrics["test_elbo_nats"], -(metrics["test_recon_nats"] + metrics["test_kl_nats"]), rel_tol=1e-6)
    stdout = run_script("hw2_step3_main.py", out, "--resume", "--epochs", "3")
    assert "continuing after epoch 2" in stdout
    assert len(list(csv.DictReader(open(out / "epochs.csv")))) == 3


def test_step3_sweep_quick_run(tmp_path):
    out = tmp_path / "sweep"
    run_script("hw2_step3_main.py", out, "--sweep", "--sweep-runs", "default,coeff_0.1")
    rows = list(csv.DictReader(open(out / "sweep_table.csv")))
    assert [r["run"] for r in rows] == ["default", "coeff_0.1"]
    assert sum(r["chosen"] == "yes" for r in rows) == 1
    assert (out / "sweep_elbo_curves.png").exists() and (out / "chosen.txt").exists()
    assert (out / "coeff_0.1" / "latent_means.png").exists()


def test_step3_nan_stops_a_run_but_the_study_keeps_its_last_good_epoch(ee, tmp_path, monkeypatch):
    from common.training import NonFiniteLoss

    s3 = ee["step3"]
    assert torch.isnan(s3.reconstruction_loss(torch.full((2, 784), float("nan")), torch.rand(2, 784))).all()
    real_loss, calls = s3.loss_func, {"n": 0}

    def loss_nan_in_epoch_2(model, x, coeff, return_terms=False):  # 4 batches per epoch below
        calls["n"] += 1
        loss, recon, kl = real_loss(model, x, coeff, return_terms=True)
        if calls["n"] == 6:
            loss = loss * float("nan")
        return (loss, recon, kl) if return_terms else loss

    monkeypatch.setattr(s3, "loss_func", loss_nan_in_epoch_2)
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.rand(256, 784, generator=g), torch.rand(64, 784, generator=g)
    cfg = s3.Step3Config(epochs=3, batch_size=64, hidden_dims=[32, 16, 4])
    with pytest.raises(NonFiniteLoss, match="last good checkpoint is kept"):
        s3.train_vae(cfg, tmp_path / "plain", train_x, test_x, "cpu")
    calls["n"] = 0
    model, run = s3.train_vae(cfg, tmp_path / "study", train_x, test_x, "cpu", keep_last_good=True)
    assert len(run.history.epochs) == 1  # stopped in epoch 2, evaluated at epoch 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
