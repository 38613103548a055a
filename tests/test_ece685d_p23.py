"""ECE 685D HW5, Problems 2 and 3: the Gaussian-Bernoulli RBM (template interface, free energy,
conditionals, CD-5), the VAE and C-VAE (template interface and layers, loss, best-validation
checkpoint), quick end-to-end runs of problem2_rbm.py and problem3_vae.py, and the offline
KMNIST error path."""
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

COURSE = Path(__file__).resolve().parents[1] / "ece685d_hw5"
sys.path.insert(0, str(COURSE))

import cvae as cv  # noqa: E402
import gb_rbm as gb  # noqa: E402


def _env() -> dict:
    env = dict(os.environ)
    env.pop("HW_QUICK", None)
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest on a shared CPU
    return env


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COURSE / script), *args], cwd=COURSE, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------
# Problem 2: Gaussian-Bernoulli RBM


def _random_rbm(D: int, F: int, seed: int = 0, sigma: float = 1.0) -> gb.RBM:
    torch.manual_seed(seed)
    rbm = gb.RBM(D, F, k=5, sigma=sigma)
    with torch.no_grad():
        rbm.W.normal_(0, 0.5)
        rbm.b.normal_(0, 0.5)
        rbm.c.normal_(0, 0.5)
    return rbm


def test_rbm_template_initialisation_and_shapes():
    torch.manual_seed(42)
    rbm = gb.RBM(784, 64, 5)
    assert rbm.W.shape == (64, 784) and rbm.c.shape == (784,) and rbm.b.shape == (64,)
    assert rbm.k == 5
    assert abs(rbm.W.std().item() - 1e-2) < 1e-3
    assert torch.count_nonzero(rbm.c) == 0 and torch.count_nonzero(rbm.b) == 0
    x = torch.randn(7, 784)
    ph = rbm.P_h_x(x)
    assert ph.shape == (7, 64) and (ph > 0).all() and (ph < 1).all()
    h = rbm.sample(ph)
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    assert rbm.P_x_h(h).shape == (7, 784)
    assert rbm.free_energy(x).shape == (7,)
    x_neg, pxh = rbm(x)
    assert x_neg.shape == (7, 784) and pxh.shape == (7, 784)
    # x_k is a unit-variance Gaussian draw around the mean it came from
    assert 0.8 < (x_neg - pxh).std().item() < 1.2
    assert rbm.reconstruct(x).shape == (7, 784)


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_free_energy_matches_brute_force_sum_over_hidden_states(sigma):
    rbm = _random_rbm(D=5, F=4, sigma=sigma)
    x = torch.randn(6, 5)
    with torch.no_grad():
        torch.testing.assert_close(rbm.free_energy(x), gb.brute_force_free_energy(rbm, x))
        # and the brute force itself, from the handout's energy written out for one (v, h) pair
        v = x[0]
        terms = []
        for s in range(2 ** 4):
            h = torch.tensor([(s >> j) & 1 for j in range(4)], dtype=torch.float)
            energy = -((v[:, None] / sigma * rbm.W.t() * h[None, :]).sum()
                       - ((v - rbm.c) ** 2).sum() / (2 * sigma ** 2) + (rbm.b * h).sum())
            terms.append(-energy)
        assert math.isclose(-torch.logsumexp(torch.stack(terms), 0).item(), rbm.free_energy(x[:1]).item(),
                            rel_tol=1e-5)


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_conditionals_match_the_energy(sigma):
    """p(h_j = 1 | v) from P_h_x equals the marginal of exp(-E(v, h)) over the other hidden units,
    and p(v | h) is the Gaussian N(c + sigma W^T h, sigma^2) read off the energy."""
    rbm = _random_rbm(D=4, F=3, seed=1, sigma=sigma)
    x = torch.randn(5, 4)
    states = torch.tensor([[(s >> j) & 1 for j in range(3)] for s in range(8)], dtype=torch.float)
    with torch.no_grad():
        neg_energy = (x / sigma) @ rbm.W.t() @ states.t() + states @ rbm.b  # the v-only term cancels
        p = neg_energy.softmax(dim=1)  # p(h | v) over the 8 states
        torch.testing.assert_close(p @ states, rbm.P_h_x(x))
        # -E is quadratic in v with leading coefficient -1/(2 sigma^2) and maximum at the mean
        h = states[5:6]
        mean = rbm.P_x_h(h)
        def neg_e(v):
            return (v / sigma) @ rbm.W.t() @ h.t() - ((v - rbm.c) ** 2).sum(1, keepdim=True) / (2 * sigma ** 2)
        eps = 1e-2
        for i in range(4):
            step = torch.zeros(1, 4)
            step[0, i] = eps
            assert abs((neg_e(mean + step) - neg_e(mean - step)).item()) < 1e-4  # stationary at the mean
        torch.manual_seed(0)
        draws = rbm.sample_gaussian(mean.expand(20000, 4))
        assert abs((draws - mean).std().item() - sigma) < 0.02 * sigma


def test_cd_loss_gradient_is_positive_minus_negative_phase():
    rbm = _random_rbm(D=6, F=3, seed=2)
    x, x_neg = torch.randn(10, 6), torch.randn(10, 6)
    gb.cd_loss(rbm, x, x_neg).backward()
    with torch.no_grad():
        positive = rbm.P_h_x(x).t() @ x / 10
        negative = rbm.P_h_x(x_neg).t() @ x_neg / 10
    torch.testing.assert_close(rbm.W.grad, -(positive - negative))


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread avoids oversubscription on a shared CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cd5_training_reduces_reconstruction_mse_on_tiny_data(one_thread):
    torch.manual_seed(0)
    D = 64
    prototypes = (torch.rand(4, D) > 0.6).float()
    x = (prototypes[torch.randint(0, 4, (512,))] + 0.05 * torch.randn(512, D)).clamp(0, 1)
    st = gb.Standardizer.fit(x)
    rbm = gb.RBM(D, 16, k=5)
    opt = torch.optim.Adam(rbm.parameters(), lr=1e-2)
    from common.data import TensorLoader

    loader = TensorLoader(x, batch_size=64, seed=0)
    before = gb.reconstruction_mse(rbm, x, st)
    for _ in range(15):
        stats = gb.train_epoch(rbm, opt, loader, st)
    after = gb.reconstruction_mse(rbm, x, st)
    assert math.isfinite(stats["cd_loss"])
    assert after["mse_std"] < 0.5 * before["mse_std"], (before, after)
    # [0, 1] pixels: MSE in standardized units times the variance
    assert math.isclose(after["mse_unit"], after["mse_std"] * st.std ** 2, rel_tol=1e-4)


def test_standardizer_global_and_batch():
    x = torch.rand(100, 10) * 3 + 1
    g = gb.Standardizer.fit(x, "global")
    z, mean, std = g(x[:10])
    assert (mean, std) == (g.mean, g.std)
    zb, _, _ = gb.Standardizer.fit(x, "batch")(x[:10])
    assert abs(zb.mean().item()) < 1e-5 and abs(zb.std().item() - 1) < 1e-5
    with pytest.raises(ValueError):
        gb.Standardizer("pixel")


# ------------------------------------------------------------------------------------------
# Problem 3: VAE and C-VAE


def test_vae_template_layers_and_interface():
    torch.manual_seed(0)
    m = cv.VAE(n_in=784, n_hid=400, z_dim=20)
    shapes = {name: tuple(mod.weight.shape) for name, mod in m.named_children()}
    assert shapes == {"fc1": (400, 784), "fc21": (20, 400), "fc22": (20, 400), "fc3": (400, 20), "fc4": (784, 400)}
    x, c = torch.rand(5, 1, 28, 28), torch.eye(10)[:5]
    mu, logvar = m.encode(x, c)
    assert mu.shape == logvar.shape == (5, 20)
    z = m.reparameterize(mu, logvar)
    assert z.shape == (5, 20)
    out = m.decode(z, c)
    assert out.shape == (5, 784) and (out > 0).all() and (out < 1).all()
    recon, mu2, logvar2 = m(x, c)
    assert recon.shape == (5, 784)
    # the unconditional VAE ignores c
    torch.testing.assert_close(m.encode(x, torch.eye(10)[5:])[0], mu)
    torch.testing.assert_close(m.decode(z, None), out)


def test_cvae_conditions_encoder_and_decoder_on_the_class():
    torch.manual_seed(0)
    m = cv.CVAE()
    assert m.fc1.in_features == 784 + 10 and m.fc3.in_features == 20 + 10
    assert m.fc21.out_features == m.fc22.out_features == 20 and m.fc4.out_features == 784
    x, z = torch.rand(3, 784), torch.randn(3, 20)
    c1, c2 = torch.eye(10)[[0, 1, 2]], torch.eye(10)[[7, 8, 9]]
    assert not torch.allclose(m.encode(x, c1)[0], m.encode(x, c2)[0])
    assert not torch.allclose(m.decode(z, c1), m.decode(z, c2))
    recon, mu, logvar = m(x, c1)
    assert recon.shape == (3, 784) and mu.shape == (3, 20)
    with pytest.raises(ValueError):
        m.encode(x, None)
    labels = torch.tensor([7, 8, 9])  # integer labels as torchvision's Fashion-MNIST yields them
    assert torch.equal(m.encode(x, labels)[0], m.encode(x, c2)[0])
    assert torch.equal(m.decode(z, labels), m.decode(z, c2))


def test_evaluate_draws_the_same_noise_on_every_device_and_leaves_the_rng_alone():
    import problem3_vae as p3

    torch.manual_seed(0)
    model, x, c = cv.CVAE(), torch.rand(50, 784), torch.eye(10)[torch.arange(50) % 10]
    state = torch.get_rng_state()
    first = p3.evaluate(model, x, c, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)
    assert p3.evaluate(model, x, c, batch_size=16) == first
    assert p3.evaluate(model, x, c, seed=5, batch_size=16) != first
    if torch.cuda.is_available():  # the run may evaluate on CUDA and a test reload on the CPU
        on_gpu = p3.evaluate(model.cuda(), x.cuda(), c.cuda(), batch_size=16)
        assert math.isclose(on_gpu["loss"], first["loss"], rel_tol=1e-5)


def test_loss_function_is_bce_plus_gaussian_kl():
    x = torch.rand(4, 784)
    recon = torch.rand(4, 784) * 0.98 + 0.01
    mu, logvar = torch.randn(4, 20), torch.randn(4, 20) * 0.3
    loss, bce, kld = cv.loss_function(recon, x, mu, logvar)
    ref_bce = -(x * recon.log() + (1 - x) * (1 - recon).log()).sum()
    var = logvar.exp()
    ref_kld = 0.5 * (var + mu ** 2 - 1 - logvar).sum()
    torch.testing.assert_close(bce, ref_bce, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(kld, ref_kld, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(loss, bce + kld)
    assert cv.loss_function(recon, x, torch.zeros(4, 20), torch.zeros(4, 20))[2].item() == 0.0


def test_best_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = cv.CVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, c = torch.rand(32, 784), torch.eye(10)[torch.arange(32) % 10]
    for _ in range(3):
        recon, mu, logvar = model(x, c)
        loss = cv.loss_function(recon, x, mu, logvar)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    cv.save_best(tmp_path / "cvae_best.pt", model, epoch=3, val_loss=123.5)
    fresh = cv.CVAE()
    info = cv.load_best(tmp_path / "cvae_best.pt", fresh)
    assert info["epoch"] == 3 and info["val_loss"] == 123.5 and info["kind"] == "CVAE"
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


# ------------------------------------------------------------------------------------------
# End-to-end quick runs


def test_problem2_quick_end_to_end(tmp_path):
    out = tmp_path / "p2"
    res = _run("problem2_rbm.py", "--quick", "--out-dir", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for m in (16, 64, 256):
        for split in ("train", "test"):
            assert (out / f"recon_{split}_M{m}.png").stat().st_size > 0
        assert (out / f"M{m}" / "checkpoint.pt").exists()
        assert (out / f"M{m}" / "epochs.csv").exists()
    for name in ("recon_train_all_M.png", "recon_test_all_M.png", "mse_vs_pca.png", "mse_curves.png",
                 "mse_table.md", "mse_table.csv", "config.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "kmnist" and metrics["std"] > 0
    assert set(metrics["per_M"]) == {"16", "64", "256"}
    for row in metrics["per_M"].values():
        for key in ("train_mse_std", "test_mse_std", "train_mse_unit", "test_mse_unit",
                    "pca_test_mse_unit", "seconds_per_epoch"):
            assert math.isfinite(row[key]), key
        assert math.isclose(row["test_mse_unit"], row["test_mse_std"] * metrics["std"] ** 2, rel_tol=1e-3)
        assert row["epochs"] == 2
    # PCA is the optimal linear reconstruction: more components never reconstruct worse
    pca = [metrics["per_M"][m]["pca_test_mse_unit"] for m in ("16", "64", "256")]
    assert pca[0] >= pca[1] >= pca[2]
    with open(out / "mse_table.csv") as f:
        assert [r["M"] for r in csv.DictReader(f)] == ["16", "64", "256", "mean image"]
    # the mean image is the zero-component PCA reconstruction: PCA with 16 components beats it
    assert metrics["mean_image_mse_unit"]["test"] > pca[0]


def test_problem2_resume_continues_the_history(tmp_path):
    out = tmp_path / "p2r"
    flags = ("--quick", "--hidden", "16", "--visible-bias-init", "zeros", "--out-dir", str(out))
    first = _run("problem2_rbm.py", *flags, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run("problem2_rbm.py", *flags, "--epochs", "2", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing after epoch 1" in second.stdout
    with open(out / "M16" / "epochs.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_problem2_without_kmnist_exits_2_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _run("problem2_rbm.py", "--data-root", str(empty), "--out-dir", str(tmp_path / "out"), timeout=300)
    assert res.returncode == 2, (res.stdout[-2000:], res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "KMNIST" in lines[0] and str(empty / "KMNIST") in lines[0] and "--dataset mnist" in lines[0]
    assert "Traceback" not in res.stderr


def test_problem3_quick_end_to_end_and_best_weights(tmp_path):
    out = tmp_path / "p3"
    res = _run("problem3_vae.py", "--quick", "--out-dir", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("loss_curves.png", "tsne_mu.png", "recon_vae.png", "recon_cvae.png", "cvae_samples.png",
                 "vae_samples.png", "test_elbo.md", "test_elbo.csv", "vae_best.pt", "cvae_best.pt",
                 "config.json", "vae/checkpoint.pt", "cvae/checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for kind in ("vae", "cvae"):
        m = metrics[kind]
        assert m["test_elbo"] < 0 and math.isfinite(m["test_elbo"])
        assert math.isclose(-m["test_elbo"], -m["test_recon_log_lik"] + m["test_kl"], rel_tol=1e-4)
        assert 1 <= m["best_epoch"] <= m["epochs"] == 2
        hist = json.loads((out / kind / "history.json").read_text())["epochs"]
        assert math.isclose(min(r["val_loss"] for r in hist), m["best_val_loss"], rel_tol=1e-6)
    assert metrics["n_tsne"] == 200
    judge = metrics["cvae_samples_judge"]
    assert judge["n_samples"] == 1000 and 0 <= judge["class_accuracy"] <= 1

    # The saved best weights are what was evaluated: reloading them reproduces the validation
    # loss recorded at that epoch and the test ELBO.
    import problem3_vae as p3
    from common.data import images, load_split, one_hot, train_val_split

    train = load_split("fashion", "train", quick=True, seed=0)
    test = load_split("fashion", "test", quick=True, seed=0)
    _, val_idx = train_val_split(train.y, 0.2, seed=0)
    x_val, c_val = images(train, "unit").flatten(1)[val_idx], one_hot(train.y[val_idx])
    x_test, c_test = images(test, "unit").flatten(1), one_hot(test.y)
    for kind, cls in (("vae", cv.VAE), ("cvae", cv.CVAE)):
        model = cls()
        info = cv.load_best(out / f"{kind}_best.pt", model)
        assert info["epoch"] == metrics[kind]["best_epoch"]
        assert math.isclose(p3.evaluate(model, x_val, c_val)["loss"], info["val_loss"], rel_tol=1e-4)
        assert math.isclose(-p3.evaluate(model, x_test, c_test)["loss"], metrics[kind]["test_elbo"], rel_tol=1e-4)
