"""EE 8520 HW2 Step 2: masked convolutions, causality of the whole PixelCNN by gradients, the
class-conditional bias, the cached sampler against the naive one, and a quick end-to-end run."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

COURSE = Path(__file__).resolve().parents[1] / "ee8520_hw2"
if str(COURSE) not in sys.path:
    sys.path.insert(0, str(COURSE))

import models.AR as AR  # noqa: E402
from models.AR import (ConditionalMaskedConv2d, ConditionalPixelCNN, MaskedConv2d, PixelCNN,  # noqa: E402
                       draw_uniforms, nll_nats_per_image, sample_fast, sample_naive, set_conv_impl, set_gate_impl)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread avoids OpenMP spin-waits on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_hot(labels):
    return F.one_hot(torch.as_tensor(labels), 10).float()


def _logits(model, x, y):
    return model(x, y) if isinstance(model, ConditionalPixelCNN) else model(x)


# ------------------------------------------------------------------------------------------------
# Masks


def test_mask_types_a_and_b():
    a = MaskedConv2d("A", 1, 4, 3, padding=1)
    b = MaskedConv2d("B", 4, 4, 3, padding=1)
    assert isinstance(a, nn.Conv2d) and "mask" in dict(a.named_buffers())
    assert a.mask.shape == b.mask.shape == (1, 1, 3, 3)
    assert a.mask[0, 0].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.mask[0, 0].tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    a7, b7 = MaskedConv2d("A", 1, 2, 7, padding=3), MaskedConv2d("B", 2, 2, 7, padding=3)
    assert a7.mask.shape == (1, 1, 7, 7) and a7.mask.sum() == 24 and b7.mask.sum() == 25
    assert a7.mask[0, 0, 3, 3] == 0 and b7.mask[0, 0, 3, 3] == 1
    assert a7.mask[0, 0, 4:].sum() == 0 and b7.mask[0, 0, 3, 4:].sum() == 0
    v = MaskedConv2d("V", 2, 2, 3, padding=1)  # the vertical stack: the whole centre row too
    assert v.mask[0, 0].tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    h_a, h_b = MaskedConv2d("A", 1, 2, (1, 3), padding=(0, 1)), MaskedConv2d("B", 2, 2, (1, 3), padding=(0, 1))
    assert h_a.mask[0, 0].tolist() == [[1, 0, 0]] and h_b.mask[0, 0].tolist() == [[1, 1, 0]]
    with pytest.raises(ValueError):
        MaskedConv2d("C", 1, 1, 3)


def test_masked_conv_ignores_future_pixels():
    conv = MaskedConv2d("A", 1, 3, 5, padding=2)
    x = torch.rand(2, 1, 8, 8)
    x2 = x.clone()
    x2[:, :, 4, 4:] = torch.rand(2, 1, 4)  # change the centre and everything after it in its row
    x2[:, :, 5:] = torch.rand(2, 1, 3, 8)
    assert torch.allclose(conv(x)[:, :, 4, 4], conv(x2)[:, :, 4, 4])
    x3 = x.clone()
    x3[:, :, 4, 3] += 1.0  # the pixel just before the centre does matter
    assert not torch.allclose(conv(x)[:, :, 4, 4], conv(x3)[:, :, 4, 4])


def test_conditional_bias_is_vy_broadcast_over_height_and_width():
    conv = ConditionalMaskedConv2d("B", 2, 5, 3, num_classes=10, padding=1)
    assert isinstance(conv, MaskedConv2d) and isinstance(conv.class_emb, nn.Module)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    x = torch.rand(3, 2, 6, 7)
    y = _one_hot([0, 4, 9])
    out = conv(x, y)
    assert out.shape == (3, 5, 6, 7)
    vy = y @ conv.class_emb.weight.t()  # V y: one value per sample and output channel
    assert torch.allclose(out, vy[:, :, None, None].expand(3, 5, 6, 7))
    assert not torch.allclose(out[0], out[1])  # different labels, different bias
    with torch.no_grad():
        conv.weight.normal_()
    base = MaskedConv2d("B", 2, 5, 3, padding=1)
    base.load_state_dict({k: v for k, v in conv.state_dict().items() if not k.startswith("class_emb")})
    assert torch.allclose(conv(x, y) - base(x), vy[:, :, None, None].expand(3, 5, 6, 7), atol=1e-6)


def test_model_interfaces():
    x = (torch.rand(2, 1, 28, 28) > 0.5).float()
    assert PixelCNN()(x).shape == (2, 1, 28, 28)
    m = ConditionalPixelCNN(num_classes=10)
    assert m(x, _one_hot([3, 7])).shape == (2, 1, 28, 28)
    layers = [mod for mod in m.modules() if isinstance(mod, MaskedConv2d)]
    assert all(isinstance(mod, ConditionalMaskedConv2d) for mod in layers)  # V y in every layer
    layers = PixelCNN().layers
    assert layers[0].h_conv.mask_type == "A" and all(layer.h_conv.mask_type == "B" for layer in layers[1:])
    assert all(layer.v_conv.mask_type == "V" for layer in layers)
    # integer labels (as torchvision's datasets give them) are the same as one-hot vectors
    with torch.no_grad():
        assert torch.equal(m(x, torch.tensor([3, 7])), m(x, _one_hot([3, 7])))


# ------------------------------------------------------------------------------------------------
# Causality of the whole network, by gradients


def _check_causal(model, positions, size=28, conditional=False):
    """One copy of a random binary image per output pixel p; d logit_p / d input must vanish at
    every input pixel at or after p in raster order and be nonzero somewhere before p."""
    n = len(positions)
    x = (torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    x = x.repeat(n, 1, 1, 1).requires_grad_(True)
    y = _one_hot(torch.arange(n) % 10) if conditional else None
    logits = _logits(model, x, y)
    idx = torch.as_tensor(positions)
    logits.flatten(1)[torch.arange(n), idx].sum().backward()  # copy k only feeds the gradient of pixel p_k
    grad = x.grad.flatten(1)
    order = torch.arange(size * size)
    future = order[None, :] >= idx[:, None]
    assert grad[future].abs().max() == 0, "an output depends on its own or a later input pixel"
    earlier = (grad.abs() > 0) & ~future
    has_dep = earlier[idx > 0].any(1)
    assert has_dep.float().mean() > 0.9, "outputs should depend on earlier pixels"
    return earlier


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("impl", ["masked", "taps"])
def test_causality_every_pixel_small_model(conditional, impl):
    torch.manual_seed(0)
    model = ConditionalPixelCNN(channels=8, n_layers=3) if conditional else PixelCNN(channels=8, n_layers=3)
    set_conv_impl(model, impl).train()
    _check_causal(model, list(range(28 * 28)), conditional=conditional)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_causality_default_architecture(conditional):
    torch.manual_seed(1)
    model = ConditionalPixelCNN() if conditional else PixelCNN()
    set_conv_impl(model, "taps").train()
    corners = [0, 1, 27, 28, 29, 55, 56, 392, 406, 419, 783]
    extra = torch.randperm(784, generator=torch.Generator().manual_seed(2))[:21].tolist()
    earlier = _check_causal(model, corners + extra, conditional=conditional)
    # the pixel just left of p (same row) is always in the receptive field, and so is the one up
    # and to the right, the blind spot of a plain stack of masked k x k convolutions
    for k, p in enumerate(corners + extra):
        if p % 28:
            assert earlier[k, p - 1]
        if p >= 28 and p % 28 < 27:
            assert earlier[k, p - 27]
    # no blind spot: every earlier pixel within the vertical stack's reach (15 rows up, 14 columns
    # to either side) and the horizontal stack's (14 columns to the left) is in the receptive field
    for k, p in enumerate(corners + extra):
        i, j = divmod(p, 28)
        reach = [q for q in range(p) if (q // 28 < i and i - q // 28 <= 15 and abs(q % 28 - j) <= 14)
                 or (q // 28 == i and j - q % 28 <= 14)]
        assert earlier[k, reach].all()


def test_taps_and_masked_agree_on_default_models():
    torch.manual_seed(0)
    x = (torch.rand(4, 1, 28, 28) > 0.5).float()
    y = _one_hot([0, 1, 2, 3])
    for model in (PixelCNN(), ConditionalPixelCNN()):
        with torch.no_grad():
            a = _logits(set_conv_impl(model, "masked"), x, y)
            b = _logits(set_conv_impl(model, "taps"), x, y)
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_stacked_link_matches_two_convolutions(channels_last):
    """In training with taps convolutions, a later layer's horizontal 1 x 2 convolution and its 1x1
    link from the vertical stack run as one 1x1 convolution over shifted copies: the same logits
    and gradients up to rounding; evaluation keeps the two convolutions."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.rand(6, 1, 28, 28) > 0.5).float().contiguous(memory_format=fmt)
    y = _one_hot([0, 1, 2, 3, 8, 9])
    for model in (PixelCNN(), ConditionalPixelCNN()):
        stacked = set_conv_impl(model, "taps").to(memory_format=fmt).train()
        assert [layer._stacks_link() for layer in stacked.layers] == [False] + [True] * 11
        separate = copy.deepcopy(stacked)
        for layer in separate.layers:
            layer.stacked_link = False
        (la, ga), (lb, gb) = _step_outputs(separate, x, y), _step_outputs(stacked, x, y)
        assert not torch.equal(la, lb)  # the stacked path did run: a different rounding
        assert torch.allclose(la, lb, atol=1e-5)
        for a, b in zip(ga, gb):
            assert (a - b).norm() <= 1e-4 * a.norm() + 1e-8
        assert not any(layer._stacks_link() for layer in stacked.eval().layers)


@pytest.fixture
def fresh_dynamo():
    """Compiled-gate tests start from empty dynamo caches, so that the models of earlier tests (other
    widths) do not use up the recompile limit; yields the compile counters."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_causality_with_the_compiled_gate(conditional, fresh_dynamo):
    torch.manual_seed(0)
    model = ConditionalPixelCNN(channels=8, n_layers=3) if conditional else PixelCNN(channels=8, n_layers=3)
    set_gate_impl(set_conv_impl(model, "taps"), "compiled").train()
    _check_causal(model, list(range(28 * 28)), conditional=conditional)
    assert not AR.compiled_gate.failed and fresh_dynamo["stats"]["unique_graphs"] >= 2


def _step_outputs(model, x, y):
    """Logits and parameter gradients of one BCE step in training mode, channels-last."""
    model.zero_grad(set_to_none=True)
    logits = _logits(model, x, y)
    F.binary_cross_entropy_with_logits(logits, x).backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_compiled_gate_matches_eager(fresh_dynamo):
    """Training with the compiled gate (tanh as 2 sigmoid(2a) - 1, the class bias and link added in
    the same pass) gives the eager gate's logits and gradients up to rounding; evaluation uses the
    eager gate, bit for bit."""
    torch.manual_seed(0)
    x = (torch.rand(6, 1, 28, 28) > 0.5).float().contiguous(memory_format=torch.channels_last)
    y = _one_hot([0, 1, 2, 3, 8, 9])
    for model in (PixelCNN(), ConditionalPixelCNN()):
        eager = set_conv_impl(model, "taps").to(memory_format=torch.channels_last).train()
        fused = set_gate_impl(copy.deepcopy(eager), "compiled")
        (la, ga), (lb, gb) = _step_outputs(eager, x, y), _step_outputs(fused, x, y)
        assert not torch.equal(la, lb)  # the compiled path did run: a different rounding
        assert torch.allclose(la, lb, atol=1e-5)
        for a, b in zip(ga, gb):
            assert (a - b).norm() <= 1e-4 * a.norm() + 1e-8
        with torch.no_grad():
            assert torch.equal(_logits(eager.eval(), x, y), _logits(fused.eval(), x, y))
    # six call patterns, within the limit of 8: per model, the vertical gate of the first layer and
    # of the later ones (a cropped view), and the first layer's horizontal gate, which adds its link
    # (the later layers' gate input comes whole from the stacked convolution, like the first vertical)
    assert not AR.compiled_gate.failed and fresh_dynamo["stats"]["unique_graphs"] == 6
    assert not fresh_dynamo["frames"].get("recompile_limit_hit")
    # a batch of another size reuses them (the batch dimension is dynamic)
    _step_outputs(fused.train(), x[:3], y[:3])
    assert fresh_dynamo["stats"]["unique_graphs"] == 6


def test_compiled_gate_serves_two_widths(fresh_dynamo):
    """Two model widths trained in one process (a benchmark, a study): the second width compiles
    kernels of its own instead of recompiling the channels as a symbolic size, on which inductor
    failed in the backward pass, out of reach of the eager fallback."""
    torch.manual_seed(0)
    x = (torch.rand(4, 1, 28, 28) > 0.5).float().contiguous(memory_format=torch.channels_last)
    y = _one_hot([0, 1, 2, 3])
    for channels in (8, 16):
        model = set_gate_impl(set_conv_impl(ConditionalPixelCNN(10, channels, 3), "taps"), "compiled")
        _step_outputs(model.to(memory_format=torch.channels_last).train(), x, y)
    assert not AR.compiled_gate.failed and fresh_dynamo["stats"]["unique_graphs"] == 6
    assert not fresh_dynamo["frames"].get("recompile_limit_hit")


def test_compiled_gate_falls_back_to_eager_where_compiling_fails(monkeypatch, capfd):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(AR, "compiled_gate", AR._CompiledGate())
    monkeypatch.setattr(torch, "compile", no_compiler)
    torch.manual_seed(0)
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    y = _one_hot([1, 4, 7])
    eager = ConditionalPixelCNN(channels=8, n_layers=3).train()
    fused = set_gate_impl(copy.deepcopy(eager), "compiled")
    (la, ga), (lb, gb) = _step_outputs(eager, x, y), _step_outputs(fused, x, y)
    assert torch.allclose(la, lb, atol=1e-6) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ga, gb))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: no C++ compiler found" in err[0] and "eager gate" in err[0]
    assert AR.compiled_gate.failed
    _step_outputs(fused, x, y)  # later steps go the eager way without another line
    assert capfd.readouterr().err == ""


def test_set_gate_impl_rejects_unknown_names():
    with pytest.raises(ValueError):
        set_gate_impl(PixelCNN(channels=4, n_layers=2), "fast")


# ------------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_fast_sampler_matches_naive(conditional):
    torch.manual_seed(0)
    model = (ConditionalPixelCNN(channels=8, n_layers=3) if conditional else PixelCNN(channels=8, n_layers=3)).double()
    with torch.no_grad():  # push logits away from 0 so the samples are not all coin flips
        model.head[1].weight.mul_(4)
    u = draw_uniforms(6, seed=3, height=10, width=10).double()
    y = _one_hot([0, 1, 2, 7, 8, 9]).double() if conditional else None
    fast = sample_fast(model, u, y)
    naive = sample_naive(model, u, y)
    assert fast.shape == (6, 1, 10, 10)
    assert set(fast.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(fast, naive)
    assert not torch.equal(fast, sample_fast(model, draw_uniforms(6, seed=4, height=10, width=10).double(), y))


def test_fast_sampler_matches_naive_full_width_fp32():
    torch.manual_seed(5)
    model = ConditionalPixelCNN(channels=4, n_layers=2)
    u = draw_uniforms(2, seed=0, height=5, width=28)
    y = _one_hot([2, 5])
    assert torch.equal(sample_fast(model, u, y), sample_naive(model, u, y))


def test_nll_equals_summed_bce():
    logits = torch.randn(3, 1, 28, 28)
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    mean_bce = nn.BCEWithLogitsLoss()(logits, x)
    assert torch.allclose(nll_nats_per_image(logits, x).mean(), mean_bce * 784, rtol=1e-5)
    p = torch.sigmoid(logits)
    direct = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(nll_nats_per_image(logits, x), direct, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# The script


def test_binarizations_and_train_function():
    import hw2_step2_main as main_mod

    t = torch.tensor([0.0, 0.5, 0.51, 1.0])
    assert main_mod.binarize_image(t).tolist() == [0.0, 0.0, 1.0, 1.0]
    x = torch.rand(64, 1, 28, 28)
    a, b = main_mod.DynamicBinarizer(3), main_mod.DynamicBinarizer(3)
    first = a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, a(x))  # seeded, fresh each call
    state = a.state_dict()
    nxt = a(x)
    a.load_state_dict(state)
    assert torch.equal(a(x), nxt)

    from common.data import TensorLoader
    torch.manual_seed(0)
    model = ConditionalPixelCNN(channels=8, n_layers=2)
    xb = main_mod.binarize_image(x)
    loader = TensorLoader(xb, _one_hot(torch.arange(64) % 10), batch_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = main_mod.train(loader, model, opt, 3, xb, nn.BCEWithLogitsLoss(), 32, True, torch.device("cpu"))
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 100 < losses[0] < 784  # nats per image, not per pixel


def test_quick_run_writes_every_figure_and_metric(tmp_path):
    out = tmp_path / "step2"
    env = {**os.environ, "HW_QUICK": "1"}
    proc = subprocess.run([sys.executable, "hw2_step2_main.py", "--quick", "--out-dir", str(out), "--digit", "3", "--threads", "1"],
                          cwd=COURSE, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "imgs" / "pixelcnn_generated.png").is_file()
    for name in ("pixelcnn_generated.png", "pixelcnn_conditional_digit3.png",
                 "pixelcnn_conditional_all_digits.png", "pixelcnn_uncond_vs_cond.png", "pixelcnn_loss_curves.png",
                 "pixelcnn_class_accuracy.png", "pixelcnn_results.md", "pixelcnn_results.csv", "config.json",
                 "checkpoint.pt", "epochs.csv", "history.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("unconditional", "conditional"):
        m = metrics[model]
        assert 0 < m["test_nll_nats"] < 784 * 2
        assert m["test_bits_per_dim"] == pytest.approx(m["test_nll_nats"] / (784 * 0.6931471805599453))
        assert "frechet_distance" in m and "class_entropy" in m
    assert set(metrics["conditional"]["class_accuracy_per_class"]) == {str(d) for d in range(10)}
    assert 0 <= metrics["conditional"]["class_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["precision_resolved"] in ("fp32", "bf16") and config["binarize"] == "threshold"
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert {"unconditional", "conditional", "opt_unconditional", "opt_conditional"} <= set(ckpt["state"])
    assert ckpt["epoch"] == 1


def test_one_model_with_an_lr_decay_trains_and_reports_only_that_model(tmp_path):
    """``--models conditional --lr-decay-epochs 2``: the conditional model alone (its figures, its
    metrics, its checkpoint with the scheduler) and the learning rate divided by 10 from epoch 2."""
    out = tmp_path / "cond"
    proc = subprocess.run([sys.executable, "hw2_step2_main.py", "--quick", "--epochs", "2", "--models", "conditional",
                           "--lr-decay-epochs", "2", "--eval-per-digit", "2", "--out-dir", str(out), "--threads", "1"],
                          cwd=COURSE, env={**os.environ, "HW_QUICK": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("pixelcnn_conditional_digit7.png", "pixelcnn_conditional_all_digits.png", "pixelcnn_class_accuracy.png",
                 "pixelcnn_loss_curves.png", "pixelcnn_results.md"):
        assert (out / name).is_file(), name
    for name in ("pixelcnn_generated.png", "pixelcnn_uncond_vs_cond.png", "imgs/pixelcnn_generated.png"):
        assert not (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert "conditional" in metrics and "unconditional" not in metrics
    assert metrics["sampled_images"] == 64 + 100 + 20
    epochs = (out / "epochs.csv").read_text().splitlines()
    lr = [float(row.split(",")[epochs[0].split(",").index("lr")]) for row in epochs[1:]]
    assert lr == pytest.approx([1e-3, 1e-4])
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["state"]
    assert {"conditional", "opt_conditional", "sched_conditional"} <= set(state) and "unconditional" not in state


def _step2(out, *flags):
    """A small quick Step 2 run (8 channels, 3 layers) into ``out``, as a started process."""
    return subprocess.Popen([sys.executable, "hw2_step2_main.py", "--quick", "--channels", "8", "--n-layers", "3",
                             "--eval-per-digit", "2", "--threads", "1", "--out-dir", str(out), *flags],
                            cwd=COURSE, env={**os.environ, "HW_QUICK": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=600)
    return proc.returncode, stdout, stderr


def test_join_makes_the_two_model_run_from_two_one_model_runs(tmp_path):
    """``--join``: a --models unconditional and a --models conditional run, trained side by side,
    become one run of both models with the same weights, optimizer states and per-epoch history as
    a run that trained both, its epoch seconds summed; it then writes every figure of both models.
    Joining two runs of the same model, or into a folder that holds a checkpoint, stops with one
    line and exit code 2, and leaves the files as they were."""
    u, c, both, joined = (tmp_path / n for n in ("u", "c", "both", "joined"))
    procs = [_step2(u, "--models", "unconditional"), _step2(c, "--models", "conditional"), _step2(both)]
    for proc in procs:
        rc, _, stderr = _finish(proc)
        assert rc == 0, stderr[-3000:]
    rc, stdout, stderr = _finish(_step2(joined, "--join", str(u), str(c)))
    assert rc == 0, stderr[-3000:]
    assert "joined" in stdout
    for name in ("pixelcnn_uncond_vs_cond.png", "pixelcnn_conditional_all_digits.png", "imgs/pixelcnn_generated.png",
                 "epochs.csv", "pixelcnn_loss_curves.png"):
        assert (joined / name).is_file(), name
    a = torch.load(joined / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(both / "checkpoint.pt", map_location="cpu", weights_only=False)
    for key in ("unconditional", "conditional", "opt_unconditional", "opt_conditional", "loader"):
        assert key in a["state"]
        flat_a, flat_b = (torch.utils._pytree.tree_leaves(ck["state"][key]) for ck in (a, b))
        assert len(flat_a) == len(flat_b)
        assert all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(flat_a, flat_b)), key
    epochs_a, epochs_b = a["state"]["history"]["epochs"], b["state"]["history"]["epochs"]
    for key in ("unconditional_test_nll", "conditional_test_nll", "conditional_train_nll"):
        assert [r[key] for r in epochs_a] == [r[key] for r in epochs_b]
    seconds = [torch.load(f / "checkpoint.pt", weights_only=False)["state"]["history"]["epochs"][0]["seconds"]
               for f in (u, c)]
    assert epochs_a[0]["seconds"] == pytest.approx(sum(seconds)) and epochs_a[0]["seconds_wall"] == max(seconds)
    metrics = json.loads((joined / "metrics.json").read_text())
    assert metrics["train_seconds_wall"] == pytest.approx(max(seconds), abs=0.1)
    assert metrics["conditional"]["test_nll_nats_threshold"] == json.loads(
        (both / "metrics.json").read_text())["conditional"]["test_nll_nats_threshold"]

    before = (joined / "checkpoint.pt").read_bytes()
    for flags in (["--join", str(u), str(c)], ["--name", "x", "--join", str(c), str(c)]):
        target = joined if flags[0] == "--join" else tmp_path / "twice"
        rc, stdout, stderr = _finish(_step2(target, *flags))
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "already holds a checkpoint" in _finish(_step2(joined, "--join", str(u), str(c)))[2]
    assert (joined / "checkpoint.pt").read_bytes() == before


_ALLOC_CHECK = ("import sys, torch; sys.path.insert(0, 'ee8520_hw2'); import hw2_step2_main; "
                "print(all(torch.empty(1 << 20).data_ptr() % 4096 == 0 for _ in range(4)))")


@pytest.mark.skipif(sys.platform != "linux", reason="PyTorch advises huge pages on Linux only")
@pytest.mark.parametrize("env, huge", [(None, True), ("0", False)])
def test_step2_script_puts_large_tensors_on_huge_pages(env, huge):
    """The Step 2 script opts in (``use_huge_pages`` at import, before any tensor): after importing
    it, 4 MB buffers come page aligned, as PyTorch allocates them under THP_MEM_ALLOC_ENABLE;
    =0 in the environment wins."""
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env is not None:
        environ["THP_MEM_ALLOC_ENABLE"] = env
    out = subprocess.run([sys.executable, "-c", _ALLOC_CHECK], cwd=Path(__file__).resolve().parents[1], env=environ,
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    assert out == str(huge)
