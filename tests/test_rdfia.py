"""RDFIA TP2: the course's DCGAN / conditional DCGAN architecture, init, losses, the closing
grid's layout, and quick end-to-end runs of tp2_dcgan.py (default, an experiment list with the
comparison, CIFAR-10 on generated data and its offline error path), tp2_cgan.py and bench_dcgan.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

COURSE = Path(__file__).resolve().parents[1] / "rdfia_tp2"
sys.path.insert(0, str(COURSE))

import tp2_models as M  # noqa: E402


def _layers(seq: nn.Sequential):
    out = []
    for m in seq:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0],
                        m.padding[0], m.bias is not None))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        else:
            out.append(type(m).__name__)
    return out


def test_generator_layers_and_shape():
    G = M.Generator(nz=100, ngf=32, nc=1)
    assert _layers(G.main) == [
        ("ConvTranspose2d", 100, 128, 4, 1, 0, False), "BatchNorm2d", "ReLU",
        ("ConvTranspose2d", 128, 64, 4, 2, 1, False), "BatchNorm2d", "ReLU",
        ("ConvTranspose2d", 64, 32, 4, 2, 1, False), "BatchNorm2d", "ReLU",
        ("ConvTranspose2d", 32, 1, 4, 2, 1, False), "Tanh"]
    out = G(torch.randn(5, 100, 1, 1))
    assert out.shape == (5, 1, 32, 32) and out.abs().max() <= 1
    assert M.Generator(nz=10, ngf=8, nc=3)(torch.randn(2, 10)).shape == (2, 3, 32, 32)


def test_discriminator_layers_and_shape():
    D = M.Discriminator(ndf=32, nc=1)
    assert _layers(D.main) == [
        ("Conv2d", 1, 32, 4, 2, 1, False), ("LeakyReLU", 0.2),
        ("Conv2d", 32, 64, 4, 2, 1, False), "BatchNorm2d", ("LeakyReLU", 0.2),
        ("Conv2d", 64, 128, 4, 2, 1, False), "BatchNorm2d", ("LeakyReLU", 0.2),
        ("Conv2d", 128, 1, 4, 1, 0, False), "Sigmoid"]
    p = D(torch.randn(6, 1, 32, 32))
    assert p.shape == (6,) and ((p > 0) & (p < 1)).all()
    assert M.Discriminator(ndf=256, nc=3)(torch.randn(2, 3, 32, 32)).shape == (2,)


def test_conditional_layers_and_shapes():
    G, D = M.ConditionalGenerator(100, 10, 1), M.ConditionalDiscriminator(10, 1)
    assert _layers(G.z_branch)[0] == ("ConvTranspose2d", 100, 256, 4, 1, 0, False)
    assert _layers(G.y_branch)[0] == ("ConvTranspose2d", 10, 256, 4, 1, 0, False)
    assert [layer[:3] for layer in _layers(G.main) if isinstance(layer, tuple)] == [
        ("ConvTranspose2d", 512, 256), ("ConvTranspose2d", 256, 128), ("ConvTranspose2d", 128, 1)]
    assert _layers(D.x_branch) == [("Conv2d", 1, 64, 4, 2, 1, False), ("LeakyReLU", 0.2)]
    assert _layers(D.y_branch) == [("Conv2d", 10, 64, 4, 2, 1, False), ("LeakyReLU", 0.2)]
    assert _layers(D.main) == [
        ("Conv2d", 128, 256, 4, 2, 1, False), "BatchNorm2d", ("LeakyReLU", 0.2),
        ("Conv2d", 256, 512, 4, 2, 1, False), "BatchNorm2d", ("LeakyReLU", 0.2),
        ("Conv2d", 512, 1, 4, 1, 0, False), "Sigmoid"]
    y = torch.eye(10)[torch.arange(4) % 10]
    x = G(torch.randn(4, 100, 1, 1), y)
    assert x.shape == (4, 1, 32, 32)
    assert D(x, y).shape == (4,)


def test_conditional_generator_uses_the_label():
    torch.manual_seed(0)
    G = M.ConditionalGenerator(100, 10, 1).eval()
    G.apply(M.weights_init)
    z = torch.randn(1, 100, 1, 1).repeat(2, 1, 1, 1)
    out = G(z, torch.eye(10)[[3, 7]])
    assert not torch.allclose(out[0], out[1])


def test_conditional_pair_takes_labels_as_the_practical_passes_them():
    """The practical's loop gives D label maps already expanded to 10 x 32 x 32 and G one-hot
    (N, 10, 1, 1); a loop over torchvision's MNIST may pass the integer labels as they come."""
    torch.manual_seed(0)
    G, D = M.ConditionalGenerator(100, 10, 1).eval(), M.ConditionalDiscriminator(10, 1).eval()
    labels = torch.tensor([3, 7, 0, 9])
    one_hot = torch.eye(10)[labels]
    maps = one_hot.view(4, 10, 1, 1).expand(-1, -1, 32, 32).contiguous()  # the practical's fill[y]
    z = torch.randn(4, 100, 1, 1)
    with torch.no_grad():
        x = G(z, one_hot)
        for y in (labels, one_hot.view(4, 10, 1, 1)):
            assert torch.equal(G(z, y), x)
        expected = D(x, one_hot)
        for y in (labels, one_hot.view(4, 10, 1, 1), maps):
            assert torch.equal(D(x, y), expected)
        assert not torch.equal(D(x, labels.flip(0)), expected)  # the label still counts


def test_weights_init_statistics():
    torch.manual_seed(0)
    G = M.Generator(100, 128, 1)
    G.apply(M.weights_init)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    bn = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    gamma = torch.cat([m.weight.flatten() for m in bn])
    assert abs(gamma.mean() - 1) < 5e-3 and abs(gamma.std() - 0.02) < 5e-3
    assert all((m.bias == 0).all() for m in bn)
    # PyTorch's default init is different (the "pytorch_init" experiment)
    default = torch.cat([m.weight.flatten() for m in M.Generator(100, 128, 1).modules()
                         if isinstance(m, nn.ConvTranspose2d)])
    assert abs(default.std() - 0.02) > 5e-3


def test_losses():
    d_real, d_fake = torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.3])
    expected = -(torch.log(d_real) + torch.log(1 - d_fake)).mean()
    assert torch.allclose(M.discriminator_loss(d_real, d_fake), expected)
    assert torch.allclose(M.generator_loss_nonsaturating(d_fake), -torch.log(d_fake).mean())
    assert torch.allclose(M.generator_loss_saturating(d_fake), torch.log(1 - d_fake).mean())
    # the saturating loss has a vanishing gradient where D rejects the fakes, the other does not
    p = torch.tensor([1e-3], requires_grad=True)
    (g_sat,) = torch.autograd.grad(M.generator_loss_saturating(p), p)
    (g_ns,) = torch.autograd.grad(M.generator_loss_nonsaturating(p), p)
    assert abs(g_ns.item()) > 100 * abs(g_sat.item())


def test_conditional_grid_columns_share_z():
    z, y = M.conditional_grid_inputs(nz=16, n_classes=10, n_per_class=10, generator=torch.Generator().manual_seed(0))
    assert z.shape == (100, 16, 1, 1) and y.shape == (100,)
    grid_z, grid_y = z.view(10, 10, 16), y.view(10, 10)
    assert (grid_y == torch.arange(10)[:, None]).all()  # each row one class
    assert torch.equal(grid_z, grid_z[:1].expand(10, -1, -1))  # each column one z
    assert not torch.allclose(grid_z[0, 0], grid_z[0, 1])


# ------------------------------------------------------------------------------------------
# End-to-end quick runs

RUN_FILES = ["config.json", "history.csv", "epochs.csv", "metrics.json", "checkpoint.pt", "losses.png",
             "samples_over_training.png", "samples.png", "interpolation.png"]


def _run(script, *args, data_root=None):
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    # no downloads from tests, even where a network exists: a dead proxy makes them fail at once
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    if data_root is not None:
        env["HW_DATA_ROOT"] = str(data_root)
    return subprocess.run([sys.executable, script, *args], cwd=COURSE, env=env, capture_output=True,
                          text=True, timeout=600)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_dcgan_quick_default_and_cgan(tmp_path):
    out = tmp_path / "dcgan"
    _ok(_run("tp2_dcgan.py", "--quick", "--epochs", "1", "--threads", "1", "--out-dir", str(out)))
    run = out / "default"
    for name in RUN_FILES + ["fd_over_training.png"]:
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in ("frechet_distance", "frechet_floor_train_vs_test", "class_entropy", "final_epoch",
                "seconds_per_epoch", "frechet_per_epoch", "precision"):
        assert key in m, key
    assert m["quick"] is True and m["epochs"] == 1 and m["frechet_per_epoch_epochs"] == [0, 1]
    assert set(m["final_epoch"]) == {"d_loss", "g_loss", "D_x", "D_G_z"}
    assert json.loads((run / "config.json").read_text())["precision_resolved"] in ("fp32", "bf16")

    cg = tmp_path / "cgan"
    _ok(_run("tp2_cgan.py", "--quick", "--epochs", "1", "--n-eval", "200", "--threads", "1",
             "--out-dir", str(cg), "--dcgan-run", str(run)))
    for name in ["config.json", "metrics.json", "checkpoint.pt", "losses.png", "samples_over_training.png",
                 "conditional_grid.png", "class_accuracy.png", "comparison_unconditional.md",
                 "comparison_unconditional.csv", "comparison_verdict.txt"]:
        assert (cg / name).is_file(), name
    m = json.loads((cg / "metrics.json").read_text())
    assert set(m["class_accuracy_per_class"]) == {str(c) for c in range(10)}
    assert set(m["grid_class_accuracy_per_row"]) == {str(c) for c in range(10)}
    for key in ("frechet_distance", "class_entropy", "class_accuracy", "seconds_per_epoch"):
        assert key in m, key
    table = (cg / "comparison_unconditional.md").read_text()
    assert "conditional DCGAN" in table and "unconditional DCGAN" in table and "not run" not in table
    verdict = (cg / "comparison_verdict.txt").read_text()
    assert f"FD {min(m['frechet_distance'], json.loads((run / 'metrics.json').read_text())['frechet_distance']):.1f} against" in verdict


def test_cgan_comparison_verdict_names_the_lower_fd():
    import tp2_cgan as C
    cg, dc = {"frechet_distance": 50.0, "class_entropy": 2.30}, {"frechet_distance": 150.0, "class_entropy": 2.25}
    assert "the conditional model was the more successful" in C.comparison_verdict(cg, dc)
    assert "FD 50.0 against 150.0 for the unconditional model, 3.00x" in C.comparison_verdict(cg, dc)
    assert "the unconditional model was the more successful" in C.comparison_verdict(dc, cg)
    assert "missing" in C.comparison_verdict(cg, None)


def test_dcgan_experiments_comparison_and_cifar_quick(tmp_path):
    out = tmp_path / "exp"
    proc = _run("tp2_dcgan.py", "--quick", "--epochs", "1", "--threads", "1", "--n-eval", "128",
                "--n-eval-epoch", "0", "--experiment", "nz10,cifar10", "--out-dir", str(out))
    _ok(proc)
    for name in ("nz10", "cifar10"):
        for f in RUN_FILES:
            assert (out / name / f).is_file(), (name, f)
    cifar = json.loads((out / "cifar10" / "metrics.json").read_text())
    # generated data unless CIFAR-10 happens to be in the data root (downloads are blocked)
    assert cifar["dataset"] == "cifar10" and cifar["data_source"] in ("synthetic", "full")
    assert cifar["frechet_distance"] is None and "no judge" in cifar["frechet_note"]
    assert json.loads((out / "nz10" / "metrics.json").read_text())["nz"] == 10
    for f in ("comparison_samples.png", "comparison_fd.png", "comparison_losses.png", "comparison.md", "comparison.csv"):
        assert (out / "comparison" / f).is_file(), f
    table = (out / "comparison" / "comparison.md").read_text()
    assert all(name in table for name in ("nz10", "cifar10")) and "n/a (no judge)" in table
    assert not (out / "nz10" / "fd_over_training.png").exists()  # --n-eval-epoch 0: no per-epoch FD


def test_cifar_offline_exits_2_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run("tp2_dcgan.py", "--experiment", "cifar10", "--data-root", str(empty), "--out-dir", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "CIFAR-10" in lines[0]


def test_unknown_experiment_is_rejected(tmp_path):
    proc = _run("tp2_dcgan.py", "--quick", "--experiment", "nz7", "--out-dir", str(tmp_path))
    assert proc.returncode != 0 and "unknown experiment" in proc.stderr


def test_bench_quick(tmp_path):
    raw = Path(os.environ.get("HW_DATA_ROOT") or COURSE.parent / "data") / "MNIST" / "raw"
    has_mnist = (raw / "train-images-idx3-ubyte").is_file() or (raw / "train-images-idx3-ubyte.gz").is_file()
    proc = _run("bench_dcgan.py", "--quick", "--threads", "1", "--out-dir", str(tmp_path))
    if not has_mnist:
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")
        return
    _ok(proc)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("dcgan epoch speedup: ") and last.endswith("x")
    assert float(last.split(": ")[1][:-1]) > 0
    assert (tmp_path / "results.md").is_file() and (tmp_path / "metrics.json").is_file()


def test_experiment_registry_and_defaults():
    import tp2_dcgan as T
    from common.cli import parse_config

    assert T.experiment_names("all") == list(T.EXPERIMENTS)
    expected = {"default": {}, "nz10": {"nz": 10}, "nz1000": {"nz": 1000}, "nz10000": {"nz": 10000},
                "pytorch_init": {"init": "pytorch"}, "ngf128_ndf256": {"ngf": 128, "ndf": 256},
                "saturating": {"g_loss": "saturating"}, "cifar10": {"dataset": "cifar10"}}
    for name, change in expected.items():
        assert T.EXPERIMENTS[name] == change
    assert {e["lr"] for n, e in T.EXPERIMENTS.items() if n.startswith("lr")} == {1e-3, 5e-5}
    cfg = parse_config(T.DCGANConfig, [])
    if not cfg.quick:  # HW_QUICK unset: the course's full defaults
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.beta1, cfg.nz, cfg.ngf, cfg.ndf) == (20, 128, 2e-4, 0.5, 100, 32, 32)
        assert cfg.lr_decay_epochs == [11, 16] and cfg.g_loss == "nonsaturating" and cfg.init == "course"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gan_step_updates_both_players(precision):
    import tp2_dcgan
    import tp2_training as T

    torch.manual_seed(0)
    G, D = M.Generator(16, 8, 1), M.Discriminator(8, 1)
    G.apply(M.weights_init)
    D.apply(M.weights_init)
    G, D = T.channels_last(G, D)
    opt_G, opt_D, _ = T.make_optimizers(tp2_dcgan.DCGANConfig(nz=16), G, D)
    g0, d0 = [p.detach().clone() for p in G.parameters()], [p.detach().clone() for p in D.parameters()]
    out = T.gan_step(G, D, opt_G, opt_D, torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 16, 1, 1),
                     M.generator_loss_nonsaturating, torch.device("cpu"), precision)
    assert all(torch.isfinite(v) for v in out.values())
    assert 0 < out["D_x"] < 1 and 0 < out["D_G_z"] < 1
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))


def test_gan_step_freezing_d_gives_the_same_updates():
    """freeze_d only skips D's discarded weight gradients in G's update: identical weights after 2 steps."""
    import copy

    from common.training import adam
    from tp2_training import gan_step
    from tp2_models import Discriminator, Generator, generator_loss_nonsaturating, weights_init

    torch.manual_seed(0)
    G0, D0 = Generator(100, 8, 1), Discriminator(8, 1)
    G0.apply(weights_init)
    D0.apply(weights_init)
    real = torch.rand(2, 6, 1, 32, 32) * 2 - 1
    z = torch.randn(2, 6, 100, 1, 1)
    weights = []
    for freeze in (False, True):
        G, Dn = copy.deepcopy(G0), copy.deepcopy(D0)
        opt_G, opt_D = adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999)), adam(Dn.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for i in range(2):
            gan_step(G, Dn, opt_G, opt_D, real[i], z[i], generator_loss_nonsaturating, torch.device("cpu"), "fp32",
                     freeze_d=freeze)
        assert all(p.requires_grad for p in Dn.parameters())
        weights.append([p.detach().clone() for p in [*G.parameters(), *Dn.parameters()]])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
