"""CSC 8851 HW2 (conditional WGAN-GP): architecture against the handout, GP and EMA against
hand-computed values, losses, interpolation, a quick end-to-end run with resume and missing data
(the notebook: tests/test_notebooks.py)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.utils._python_dispatch  # noqa: F401 (TorchDispatchMode)

FOLDER = Path(__file__).resolve().parents[1] / "csc8851_hw2"
sys.path.insert(0, str(FOLDER))
import fast_critic  # noqa: E402
import wgan_gp as W  # noqa: E402
import wgan_gp_model as M  # noqa: E402

from common.training import ema_update, gradient_penalty, make_ema  # noqa: E402


def layer_sequence(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children())]


# --------------------------------------------------------------------------------------------
# Part 1: architecture


def test_generator_layers_match_handout(capsys):
    G = M.Generator()
    print(G)  # the module tree, shown with -s
    layers = layer_sequence(G)
    assert isinstance(layers[0], nn.Embedding) and (layers[0].num_embeddings, layers[0].embedding_dim) == (10, 32)
    assert isinstance(layers[1], nn.Linear) and (layers[1].in_features, layers[1].out_features) == (64 + 32, 4 * 4 * 128)
    rest = layers[2:]
    assert len(rest) == 3 * 4 + 2
    for b, (cin, cout) in enumerate([(128, 64), (64, 32), (32, 16)]):
        up, conv, bn, act = rest[4 * b:4 * b + 4]
        assert isinstance(up, nn.Upsample) and up.mode == "nearest" and up.scale_factor == 2
        assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (cin, cout)
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == cout
        assert isinstance(act, nn.ReLU)
    last, tanh = rest[-2:]
    assert isinstance(last, nn.Conv2d) and (last.in_channels, last.out_channels, last.kernel_size) == (16, 1, (3, 3))
    assert isinstance(tanh, nn.Tanh)
    # spatial sizes 4 -> 8 -> 16 -> 32
    sizes = []
    hooks = [blk.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for blk in G.blocks]
    out = G(torch.randn(5, 64), torch.arange(5))
    for h in hooks:
        h.remove()
    assert sizes == [(64, 8, 8), (32, 16, 16), (16, 32, 32)]
    assert out.shape == (5, 1, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert "Generator" in capsys.readouterr().out


def test_kaiming_normal_init():
    torch.manual_seed(0)
    G, D = M.Generator(), M.Critic()
    fc_std = G.fc.weight.std().item()
    assert abs(fc_std - math.sqrt(2 / 96)) < 0.1 * math.sqrt(2 / 96)  # He normal, fan_in 96
    conv = D.trunk[4]  # 64 -> 128, fan_in 64*16
    gain = math.sqrt(2 / (1 + 0.2 ** 2))
    assert abs(conv.weight.std().item() - gain / math.sqrt(64 * 16)) < 0.05 * gain / math.sqrt(64 * 16)
    assert all(m.bias.detach().abs().max().item() == 0 for m in G.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_critic_layers_and_projection(capsys):
    D = M.Critic()
    print(D)
    layers = layer_sequence(D.trunk)
    assert len(layers) == 6
    for k, (cin, cout) in enumerate([(1, 32), (32, 64), (64, 128)]):
        conv, act = layers[2 * k:2 * k + 2]
        assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (cin, cout)
        assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1)
        assert type(act) is nn.LeakyReLU and act.negative_slope == 0.2  # stock, as graded
    norms = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.Sigmoid)
    assert not any(isinstance(m, norms) for m in D.modules())
    assert not any("weight_orig" in n or "parametrizations" in n for n, _ in D.named_parameters())
    x, y = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 3, 9, 9])
    h = D.trunk(x)
    assert h.shape == (6, 128, 4, 4)
    score = D(x, y)
    assert score.shape == (6,)
    f = h.sum(dim=(2, 3))  # global sum pool
    by_hand = f @ D.linear.weight[0] + (f * D.embed.weight[y]).sum(1)  # w^T f + <f, e(y)>
    torch.testing.assert_close(score, by_hand)
    # the label changes the score only through <f, e(y)>
    torch.testing.assert_close(D(x, torch.zeros_like(y)) - score,
                               (f * (D.embed.weight[0] - D.embed.weight[y])).sum(1))
    assert "Critic" in capsys.readouterr().out


def test_generator_and_critic_take_integer_labels_or_one_hot():
    torch.manual_seed(0)
    G, Dc = M.Generator().eval(), M.Critic().eval()
    labels = torch.tensor([3, 7, 0, 9])  # as torchvision's MNIST gives them
    one_hot = torch.eye(10)[labels]
    z = torch.randn(4, 64)
    with torch.no_grad():
        x = G(z, labels)
        assert torch.equal(G(z, one_hot), x)
        assert torch.equal(Dc(x, one_hot), Dc(x, labels))
        assert not torch.equal(Dc(x, labels.flip(0)), Dc(x, labels))


# --------------------------------------------------------------------------------------------
# Part 1: losses, GP and EMA against hand-computed values


class LinearCritic(nn.Module):
    """D(x, y) = <w, x>: its input gradient is w everywhere, so GP = (||w|| - 1)^2 exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y):
        return (x.flatten(1) * self.w).sum(1)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_gradient_penalty_of_linear_critic(batch):
    torch.manual_seed(batch)
    w = torch.zeros(16)
    w[:4] = torch.tensor([1.0, 2.0, 2.0, 4.0])  # ||w|| = 5
    critic = LinearCritic(w)
    real, fake = torch.randn(batch, 1, 4, 4), torch.randn(batch, 1, 4, 4)
    gp = gradient_penalty(critic, real, fake, torch.zeros(batch, dtype=torch.long))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)  # 16, for any batch size (per-sample norms)
    gp.backward()  # create_graph: the penalty trains the critic, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 2 * (5.0 - 1.0) * w / 5.0)


def test_gradient_penalty_zero_for_unit_norm_and_real_critic_runs():
    w = torch.zeros(16)
    w[0] = 1.0
    gp = gradient_penalty(LinearCritic(w), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4),
                                   torch.zeros(3, dtype=torch.long))
    assert gp.item() == pytest.approx(0.0, abs=1e-12)
    D = M.Critic()
    gp = gradient_penalty(D, torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.arange(4))
    assert gp.dim() == 0 and gp.item() >= 0 and gp.requires_grad


class _CountConvBackward(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.ops.aten.convolution_backward.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("bf16", [False, True])
def test_fast_leaky_relu_same_updates_and_no_backward_on_zeros(bf16):
    """fast_critic's module swap: the forward, the gradients and the gradient penalty's double
    backward bit-equal to the stock critic's (fp32 and bf16 autocast, channels-last), and the
    double backward runs no convolution backward through the penalty's forward pass (which
    nn.LeakyReLU feeds with zeros): the critic loss's backward runs the scores' pass's 3, where
    the stock critic adds 3 more on zeros."""
    torch.manual_seed(0)
    plain = M.Critic().to(memory_format=torch.channels_last)
    fast = copy.deepcopy(plain)
    fast_critic.use_fast_leaky_relu(fast)
    assert sum(isinstance(m, fast_critic.LeakyReLU) for m in fast.modules()) == 3
    assert not any(isinstance(m, fast_critic.LeakyReLU) for m in plain.modules())
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    fake = torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8)

    def grads(D):
        D.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same eps in the penalty
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = D(torch.cat([x, fake]), torch.cat([y, y])).float()
            gp = gradient_penalty(D, x, fake, y).float()
            loss = M.critic_loss(*scores.split(8), gp)
        with _CountConvBackward() as count:
            loss.backward()
        return scores, gp, [p.grad for p in D.parameters()], count.calls

    (s1, gp1, g1, n1), (s2, gp2, g2, n2) = grads(fast), grads(plain)
    assert torch.equal(s1, s2) and torch.equal(gp1, gp2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert (n1, n2) == (3, 6)


def test_script_applies_the_speed_path_from_outside_and_its_flag_turns_it_off():
    device = torch.device("cpu")
    _, _, fast = W.build(W.Config(), device)
    _, _, plain = W.build(W.Config(fast_leaky_relu=False), device)
    assert sum(isinstance(m, fast_critic.LeakyReLU) for m in fast.modules()) == 3
    assert all(type(m) is nn.LeakyReLU for m in plain.trunk if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, fast_critic.LeakyReLU) for m in plain.modules())
    cfg = W.parse_config(W.Config, ["--no-fast-leaky-relu"])
    assert cfg.fast_leaky_relu is False


def test_losses_match_equations():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    # L_C = -(2 - (-0.5)) + 10 * 0.3
    assert M.critic_loss(d_real, d_fake, torch.tensor(0.3), 10.0).item() == pytest.approx(-2.5 + 3.0)
    assert M.generator_loss(d_fake).item() == pytest.approx(0.5)


def test_samplers_lay_out_the_grids_by_class():
    torch.manual_seed(0)
    G = M.Generator()
    grid = M.class_samples(G, n=4, seed=3)
    assert grid.shape == (40, 1, 32, 32)
    interp = M.interpolation_samples(G, k=5, seed=3)
    assert interp.shape == (50, 1, 32, 32)
    trunc = M.truncation_samples(G, psis=(1.0, 0.0), seed=3)
    assert trunc.shape == (20, 1, 32, 32)
    # psi = 0 gives z = 0 for every class: row c, column 2 is G(0, c)
    torch.testing.assert_close(trunc[1::2], M.generate(G, torch.zeros(10, 64), torch.arange(10)))
    # the interpolation's first and last columns are G at its two endpoints z_0 and z_1
    z0, z1 = M.noise(20, 64, 3).view(2, 10, 64)
    torch.testing.assert_close(interp[0::5], M.generate(G, z0, torch.arange(10)))
    torch.testing.assert_close(interp[4::5], M.generate(G, z1, torch.arange(10)), atol=1e-5, rtol=1e-4)


def test_ema_update_by_hand():
    G = M.Generator()
    ema = make_ema(G)
    assert all(not p.requires_grad for p in ema.parameters())
    assert all(p.requires_grad for p in G.parameters())
    with torch.no_grad():
        for p in G.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(3.0)
    G.train()
    G(torch.randn(8, 64), torch.arange(8))  # BN: running stats move, num_batches_tracked 0 -> 1
    G(torch.randn(8, 64), torch.arange(8))
    bn = G.blocks[0][2]
    assert bn.num_batches_tracked.item() == 2
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(G, ema, decay=0.9)
    esd, msd = ema.state_dict(), G.state_dict()
    torch.testing.assert_close(ema.fc.weight, torch.full_like(ema.fc.weight, 0.9 * 3.0 + 0.1 * 1.0))
    torch.testing.assert_close(esd["blocks.0.2.running_mean"],
                               0.9 * before["blocks.0.2.running_mean"] + 0.1 * msd["blocks.0.2.running_mean"])
    # the integer counter is copied, not averaged
    assert esd["blocks.0.2.num_batches_tracked"].dtype == torch.long
    assert esd["blocks.0.2.num_batches_tracked"].item() == 2


def test_generator_step_updates_ema_and_critic_step_trains_critic():
    torch.manual_seed(0)
    cfg = W.Config(batch_size=8)
    device = torch.device("cpu")
    G, G_ema, D = W.build(cfg, device)
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.9))
    x, y = torch.rand(8, 1, 32, 32) * 2 - 1, torch.arange(8)
    d0 = D.embed.weight.clone()
    scalars = W.critic_step(G, D, opt_D, x, y, cfg, device, "fp32")
    assert set(scalars) == {"d_real", "d_fake", "gp", "loss_C"}
    assert not torch.equal(d0, D.embed.weight)
    e0, g0 = G_ema.fc.weight.clone(), G.fc.weight.clone()
    d_grads = [p.grad.clone() for p in D.parameters()]
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)  # the same update by a backward to every parameter
    opt_G2 = torch.optim.Adam(G2.parameters(), lr=1e-3, betas=(0.0, 0.9))
    torch.manual_seed(1)
    W.generator_step(G, G_ema, D, opt_G, y, cfg, device, "fp32")
    torch.manual_seed(1)
    M.generator_loss(D2(G2(torch.randn(8, cfg.z_dim), y), y)).backward()
    opt_G2.step()
    assert all(torch.equal(a, b) for a, b in zip(G.parameters(), G2.parameters()))
    assert all(torch.equal(p.grad, g) for p, g in zip(D.parameters(), d_grads))  # D's gradients untouched
    torch.testing.assert_close(G_ema.fc.weight, 0.999 * e0 + 0.001 * G.fc.weight)
    assert not torch.equal(g0, G.fc.weight)


# --------------------------------------------------------------------------------------------
# End to end


def _env(tmp_path, quick: bool):
    env = dict(os.environ)
    env.pop("HW_QUICK", None)
    if quick:
        env["HW_QUICK"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["HW_OUT_DIR"] = str(tmp_path / "nb_out")
    return env


def test_quick_run_every_figure_and_resume(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "wgan_gp.py", "--quick", "--out-dir", str(out)]
    first = subprocess.run(base + ["--epochs", "1"], cwd=FOLDER, env=_env(tmp_path, False),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(base + ["--epochs", "2", "--resume"], cwd=FOLDER, env=_env(tmp_path, False),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing after epoch 1" in second.stdout
    for name in W.FIGURES + ("samples_epoch_01.png", "samples_epoch_02.png"):
        assert (out / name).stat().st_size > 1000, name
    for name in ("config.json", "history.csv", "epochs.csv", "checkpoint.pt", "quality_table.md",
                 "quality_table.csv", "truncation_table.md", "truncation_table.csv"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("quality", "truncation", "precision", "train_seconds", "seconds_per_epoch", "iterations", "figures"):
        assert key in metrics, key
    for gen in ("G", "G_ema"):
        q = metrics["quality"][gen]
        assert 0 <= q["class_accuracy"] <= 1 and q["frechet_distance"] > 0 and q["frechet_floor_train_vs_test"] >= 0
        assert sorted(map(float, metrics["truncation"][gen])) == sorted(W.PSIS)
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    # the training time covers both epochs, the one before --resume included
    assert metrics["train_seconds"] == round(sum(e["seconds"] for e in history["epochs"]), 1)
    assert all(math.isfinite(s["loss_C"]) and s["gp"] >= 0 for s in history["steps"])
    assert {"d_real", "d_fake", "gp", "loss_C", "loss_G"} <= set(history["steps"][0])
    config = json.loads((out / "config.json").read_text())
    assert config["precision_resolved"] in ("fp32", "bf16") and config["n_critic"] == 3
    table = (out / "quality_table.md").read_text()
    assert "| G |" in table and "| G_ema |" in table


def test_missing_data_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "wgan_gp.py", "--data-root", str(tmp_path / "nowhere"),
                           "--out-dir", str(tmp_path / "o")], cwd=FOLDER, env=_env(tmp_path, False),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
