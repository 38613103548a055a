"""common.training: lerp and slerp, gradient penalty, EMA, schedules, checkpoints and resume, the NaN guard."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from common import training as T


class LinearCritic(nn.Module):
    """D(x, y) = <w, x>: its gradient is w everywhere, so GP = (||w|| - 1)^2 exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y=None):
        return (x.flatten(1) * self.w).sum(1)


def _slerp_by_formula(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """White (2016), one pair of vectors, float64."""
    w = math.acos(float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return (math.sin((1 - t) * w) * a + math.sin(t * w) * b) / math.sin(w)


def test_lerp_and_slerp_against_the_formulas():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 1, 64, generator=g), torch.randn(3, 1, 64, generator=g)
    t = torch.linspace(0, 1, 5).view(1, 5, 1)  # CSC 8851's shapes: a path per row
    lin, sph = T.lerp(z0, z1, t), T.slerp(z0, z1, t)
    assert lin.shape == sph.shape == (3, 5, 64)
    for i in range(3):
        a, b = z0[i, 0].double().numpy(), z1[i, 0].double().numpy()
        for k, tk in enumerate(t.flatten().tolist()):
            np.testing.assert_allclose(lin[i, k].numpy(), (1 - tk) * a + tk * b, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(sph[i, k].numpy(), _slerp_by_formula(a, b, tk), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sph[:, 0], z0[:, 0])
    torch.testing.assert_close(sph[:, -1], z1[:, 0], rtol=1e-4, atol=1e-5)
    u, v = (torch.nn.functional.normalize(torch.randn(2, 1, 64, generator=g), dim=-1) for _ in range(2))
    torch.testing.assert_close(T.slerp(u, v, t).norm(dim=-1), torch.ones(2, 5))  # stays on the sphere
    # parallel endpoints: no angle to walk, so the straight line (not 0/0)
    torch.testing.assert_close(T.slerp(z0, 2 * z0, t), T.lerp(z0, 2 * z0, t))
    # RDFIA's shapes: one (nz, 1, 1) pair flattened, t a column of K steps
    a, b = torch.randn(2, 8, 1, 1, generator=g)
    path = T.slerp(a.view(1, -1), b.view(1, -1), torch.linspace(0, 1, 4).view(-1, 1)).view(-1, *a.shape)
    assert path.shape == (4, 8, 1, 1)
    torch.testing.assert_close(path[1].flatten().double(),
                               torch.from_numpy(_slerp_by_formula(a.flatten().double().numpy(),
                                                                  b.flatten().double().numpy(), 1 / 3)),
                               rtol=1e-5, atol=1e-5)


def test_gradient_penalty_of_linear_critic_is_known():
    torch.manual_seed(0)
    w = torch.full((1 * 4 * 4,), 0.5)  # ||w|| = 0.5 * 4 = 2
    critic = LinearCritic(w)
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    gp = T.gradient_penalty(critic, real, fake, torch.zeros(8))
    assert gp.item() == pytest.approx((2.0 - 1.0) ** 2, rel=1e-5)
    gp.backward()  # create_graph: the penalty trains the critic
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 0.5 per entry
    assert torch.allclose(critic.w.grad, torch.full_like(w, 0.5), atol=1e-5)


def test_gradient_penalty_is_per_sample_not_batch_norm():
    # Critic sum_i x_i^2 / 2: gradient is x itself; per-sample norms differ.
    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * (x.flatten(1) ** 2).sum(1)

    real = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    gp = T.gradient_penalty(Quadratic(), real, real.clone())  # x_hat = real whatever eps
    expected = ((2.0 - 1) ** 2 + (4.0 - 1) ** 2) / 2  # norms 2 and 4
    assert gp.item() == pytest.approx(expected, rel=1e-5)


def test_ema_rule_averages_floats_and_copies_integers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = T.make_ema(model)
    assert all(not p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    T.ema_update(model, ema, decay=0.9)
    msd = model.state_dict()
    for k, v in ema.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * msd[k])
        else:
            assert torch.equal(v, msd[k])
    assert ema[1].num_batches_tracked.item() == 7


def test_step_decay_and_warmup_cosine_curves():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = T.step_decay(opt, step_size=3, gamma=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = T.warmup_cosine(opt, warmup_steps=5, total_steps=25, start_factor=0.2)
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2)
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))  # rising warmup
    assert lrs[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))  # cosine decay
    assert lrs[15] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert lrs[-1] < 0.01


def test_epoch_decay_divides_from_the_named_1_based_epochs():
    """``[3, 5]`` over 6 epochs, the scheduler stepped after each: epochs 1-2 at lr, 3-4 at lr / 10,
    5-6 at lr / 100; epoch 1 or less names no decay (the run starts at lr)."""
    for decay, want in (([3, 5], [1, 1, 0.1, 0.1, 0.01, 0.01]), ([5, 3, 1], [1, 1, 0.1, 0.1, 0.01, 0.01]),
                        ([], [1] * 6)):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = T.epoch_decay(opt, decay)
        lrs = []
        for _ in range(6):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs == pytest.approx(want), decay


def _make():
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, opt


def _train(model, opt, steps):
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_resume_reproduces_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    model, opt = _make()
    run = T.Run(tmp_path / "a", {"lr": 0.1})
    _train(model, opt, 5)
    run.history.log_epoch(epoch=1, loss=1.0, seconds=2.5)
    run.checkpoint(1, {"model": model, "opt": opt})
    _train(model, opt, 5)  # the uninterrupted second epoch
    expected = model.weight.detach().clone()

    model2, opt2 = _make()
    run2 = T.Run(tmp_path / "a", {"lr": 0.1})
    assert run2.resume({"model": model2, "opt": opt2}) == 1
    assert run2.history.epochs == [{"epoch": 1, "loss": 1.0, "seconds": 2.5}]
    run2.history.log_epoch(epoch=2, loss=0.5, seconds=1.5)
    assert run2.history.training_seconds() == 4.0  # summed over the resume
    assert run2.history.seconds_per_epoch() == 2.0 and T.History().seconds_per_epoch() is None
    _train(model2, opt2, 5)  # RNG state restored: same batches as above
    assert torch.allclose(model2.weight, expected)
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == {"lr": 0.1}
    assert (tmp_path / "a" / "epochs.csv").read_text().startswith("epoch,loss,seconds")
    assert not list((tmp_path / "a").glob("*.tmp"))  # atomic writes leave no temporaries


def test_epoch_samples_round_trip_through_a_checkpoint(tmp_path):
    store = T.EpochSamples(keep=2, dtype=torch.float16)
    store.add(0, torch.rand(5, 4))
    store.add(1, torch.rand(5, 4, requires_grad=True))
    store.record(epoch=0, fd=3.0, step=0)
    store.record(epoch=0.5, step=7)
    store.record(epoch=1, fd=2.0, step=14)
    assert [r.shape for r in store.rows] == [(2, 4), (2, 4)] and store.rows[1].dtype == torch.float16
    assert store.series("fd") == ([0, 1], [3.0, 2.0]) and list(store.by_epoch()) == [0, 1]
    T.save_checkpoint(tmp_path / "c.pt", {"samples": store})
    back = T.EpochSamples()
    T.load_checkpoint(tmp_path / "c.pt", {"samples": back})
    assert back.epochs == [0, 1] and back.values == store.values
    torch.testing.assert_close(back.rows, store.rows, rtol=0, atol=0)


def test_resume_without_checkpoint_starts_at_zero(tmp_path):
    model, opt = _make()
    assert T.Run(tmp_path / "b", {}).resume({"model": model, "opt": opt}) == 0


def test_nan_guard_stops_with_message_and_keeps_checkpoint(tmp_path):
    model, opt = _make()
    run = T.Run(tmp_path / "c", {})
    run.checkpoint(1, {"model": model, "opt": opt})
    good = (tmp_path / "c" / "checkpoint.pt").read_bytes()
    run.guard(1, d_loss=torch.tensor(0.5))  # finite: nothing happens
    with pytest.raises(T.NonFiniteLoss, match=r"g_loss became nan at epoch 2.*last good checkpoint is kept"):
        run.guard(1, d_loss=torch.tensor(0.5), g_loss=torch.tensor(float("nan")))
    with pytest.raises(T.NonFiniteLoss, match="inf"):
        T.check_finite("here", None, loss=float("inf"))
    assert (tmp_path / "c" / "checkpoint.pt").read_bytes() == good


def test_nan_guard_exits_3_from_a_script(tmp_path):
    import subprocess
    import sys

    code = ("from common.cli import run_main\nfrom common.training import check_finite\n"
            "run_main(lambda argv: check_finite('step 3', None, loss=float('nan')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: loss became nan at step 3")


def test_bf16_asked_for_on_a_cpu_without_it_is_kept_with_one_warning(monkeypatch, capsys):
    cpu = torch.device("cpu")
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: False)
    assert T.resolve_precision("bf16", cpu) == "bf16" and T.resolve_precision("auto", cpu) == "fp32"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --precision bf16 on a CPU without bf16")
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: True)
    assert T.resolve_precision("bf16", cpu) == "bf16" and T.resolve_precision("auto", cpu) == "bf16"
    assert capsys.readouterr().err == ""


def test_precision_and_device_choices():
    cpu = torch.device("cpu")
    assert T.resolve_precision("fp32", cpu) == "fp32"
    assert T.resolve_precision("bf16", cpu) == "bf16"
    assert T.resolve_precision("auto", cpu) == ("bf16" if T.cpu_supports_bf16() else "fp32")
    assert T.get_device("cpu").type == "cpu"
    with T.autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with T.autocast(cpu, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_adam_is_fused_on_cpu_and_matches_plain_adam():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused, plain = T.adam(a.parameters(), lr=1e-2, betas=(0.5, 0.9)), torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.9))
    assert fused.defaults["fused"] is True
    start, x = a.weight.detach().clone(), torch.randn(16, 8)
    for _ in range(5):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert (a.weight - start).abs().max() > 1e-3  # it did train
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)


def test_quick_runs_never_share_a_full_runs_folders(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from common import paths
    monkeypatch.setattr(paths, "OUTPUTS", tmp_path / "outputs")
    full, quick = paths.run_dir("c", "p", "gan"), paths.run_dir("c", "p", "gan", quick=True)
    assert full == tmp_path / "outputs/c/p/gan" and quick == tmp_path / "outputs/c/p/gan_quick" and quick.is_dir()
    assert paths.run_dir("c", "p", "gan", out_dir=tmp_path / "mine", quick=True) == tmp_path / "mine"
    course = tmp_path / "course"
    assert paths.skeleton_imgs_dir(course, full, SimpleNamespace(out_dir=None, quick=False)) == course / "imgs"
    assert paths.skeleton_imgs_dir(course, quick, SimpleNamespace(out_dir=None, quick=True)) == quick / "imgs"
    mine = tmp_path / "mine"
    assert paths.skeleton_imgs_dir(course, mine, SimpleNamespace(out_dir=str(mine), quick=False)) == mine / "imgs"


def test_resume_reads_the_checkpoint_first_and_names_what_is_wrong(tmp_path):
    model, opt = _make()
    T.Run(tmp_path / "r", {"width": 3, "lr": 0.1}).checkpoint(1, {"model": model, "opt": opt})
    config = (tmp_path / "r" / "config.json").read_bytes()
    ckpt = tmp_path / "r" / "checkpoint.pt"
    good = ckpt.read_bytes()

    wide = torch.nn.Linear(3, 5)  # another architecture: --width 5
    run = T.Run(tmp_path / "r", {"width": 5, "lr": 0.1, "resume": True})
    with pytest.raises(T.ConfigError, match=r"checkpoint.pt does not fit .*saved with --width 3, this run has --width 5"):
        run.resume({"model": wide, "opt": torch.optim.SGD(wide.parameters(), lr=0.1)})
    assert (tmp_path / "r" / "config.json").read_bytes() == config

    ckpt.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(T.ConfigError, match=r"checkpoint.pt cannot be read"):
        T.Run(tmp_path / "r", {"width": 3, "lr": 0.1, "resume": True})
    assert (tmp_path / "r" / "config.json").read_bytes() == config and ckpt.read_bytes() == good[: len(good) // 2]


def test_a_learning_rate_given_with_resume_takes_effect(tmp_path):
    model, opt = _make()
    sched = T.step_decay(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()  # lr 0.1 -> 0.05 after two steps
    T.Run(tmp_path / "lr", {"lr": 0.1}).checkpoint(1, {"model": model, "opt": opt, "sched": sched})

    model2, opt2 = _make()  # the new run builds its optimizer with --lr 0.01
    for g in opt2.param_groups:
        g["lr"] = 0.01
    sched2 = T.step_decay(opt2, step_size=2, gamma=0.5)
    T.Run(tmp_path / "lr", {"lr": 0.01, "resume": True}).resume({"model": model2, "opt": opt2, "sched": sched2})
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.005)  # the schedule goes on, at the new scale
    assert sched2.base_lrs == [pytest.approx(0.01)]
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.0025)

    model3, opt3 = _make()  # same lr: the optimizer continues exactly as saved
    sched3 = T.step_decay(opt3, step_size=2, gamma=0.5)
    T.Run(tmp_path / "lr", {"lr": 0.1, "resume": True}).resume({"model": model3, "opt": opt3, "sched": sched3})
    assert opt3.param_groups[0]["lr"] == 0.05


def test_decay_epochs_given_with_resume_take_effect_from_the_checkpoint(tmp_path):
    """A run saved after 3 epochs at a constant lr, resumed with ``lr_decay_epochs [3]``: the rate is
    lr / 10 from epoch 4 on, as the new schedule gives it there (the fork of a study); resumed with
    the schedule it was saved with, the rate is the saved one, bit for bit."""
    model, opt = _make()
    sched = T.epoch_decay(opt, [])
    for _ in range(3):
        opt.step()
        sched.step()
    T.Run(tmp_path / "d", {"lr": 0.1, "lr_decay_epochs": []}).checkpoint(3, {"model": model, "opt": opt, "sched": sched})

    model2, opt2 = _make()
    sched2 = T.epoch_decay(opt2, [3])
    T.Run(tmp_path / "d", {"lr": 0.1, "lr_decay_epochs": [3], "resume": True}).resume(
        {"model": model2, "opt": opt2, "sched": sched2})
    assert opt2.param_groups[0]["lr"] == 0.1 * 0.1 and sched2.milestones == {2: 1}
    for _ in range(3):
        sched2.step()
    assert opt2.param_groups[0]["lr"] == 0.1 * 0.1  # no second decay

    model3, opt3 = _make()
    sched3 = T.epoch_decay(opt3, [])
    T.Run(tmp_path / "d", {"lr": 0.1, "lr_decay_epochs": [], "resume": True}).resume(
        {"model": model3, "opt": opt3, "sched": sched3})
    assert opt3.param_groups[0]["lr"] == 0.1 and not sched3.milestones


def test_diverged_weights_stop_the_run_before_the_checkpoint(tmp_path):
    model, opt = _make()
    run = T.Run(tmp_path / "w", {"lr": 0.1, "precision": "fp32"})
    run.checkpoint(1, {"model": model, "opt": opt})
    good = (tmp_path / "w" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        model.weight[0, 0] = 1e7
    with pytest.raises(T.NonFiniteLoss, match=r"weights of model \(weight\) became as large as 1e\+07") as err:
        run.checkpoint(2, {"model": model, "opt": opt})
    assert "--precision" not in str(err.value) and "Lower --lr" in str(err.value)
    assert (tmp_path / "w" / "checkpoint.pt").read_bytes() == good
    with pytest.raises(T.NonFiniteLoss, match="diverged"):
        T.check_finite("here", None, loss=3e9)


def test_a_quick_run_under_outputs_gets_its_own_folder(tmp_path, monkeypatch):
    from common import paths
    monkeypatch.setattr(paths, "OUTPUTS", tmp_path / "outputs")
    full = tmp_path / "outputs" / "c" / "p" / "default"
    assert paths.quick_folder(full, True) == full.with_name("default_quick")
    assert paths.quick_folder(full, False) == full
    assert paths.quick_folder(full, True, out_dir=str(full)) == full  # --out-dir is taken as given
    assert paths.quick_folder(tmp_path / "outputs" / "c" / "p_quick" / "x", True).name == "x"
    assert T.Run(full, {"quick": True}).dir == full.with_name("default_quick")
