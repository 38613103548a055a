"""Step 2: masked convolutions, causality of the whole PixelCNN by gradients, the class-conditional
bias, the speed paths against the plain code (torch.compile, the cached sampler) and quick runs of the
script."""
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

from models.AR import (ConditionalMaskedConv2d, ConditionalPixelCNN, MaskedConv2d, PixelCNN,  # noqa: E402
                       draw_uniforms, nll_nats_per_image, sample)
from models.fast_sampling import sample_fast  # noqa: E402


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
def test_causality_every_pixel_small_model(conditional):
    torch.manual_seed(0)
    model = ConditionalPixelCNN(channels=8, n_layers=3) if conditional else PixelCNN(channels=8, n_layers=3)
    _check_causal(model.train(), list(range(28 * 28)), conditional=conditional)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_causality_default_architecture(conditional):
    torch.manual_seed(1)
    model = (ConditionalPixelCNN() if conditional else PixelCNN()).train()
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
    # no blind spot: every earlier pixel within the vertical stack's reach (r + 1 rows up, r columns
    # to either side) and the horizontal stack's (r columns to the left) is in the receptive field
    first, later = model.layers[0].h_conv.kernel_size[1], model.layers[1].h_conv.kernel_size[1]
    r = first // 2 + (len(model.layers) - 1) * (later // 2)
    assert r == 14  # the documented reach of the default model
    for k, p in enumerate(corners + extra):
        i, j = divmod(p, 28)
        reach = [q for q in range(p) if (q // 28 < i and i - q // 28 <= r + 1 and abs(q % 28 - j) <= r)
                 or (q // 28 == i and j - q % 28 <= r)]
        assert earlier[k, reach].all()


# ------------------------------------------------------------------------------------------------
# Speed paths against the plain code


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_compiled_model_matches_the_plain_model(conditional):
    """What ``hw2_step2_main.py`` trains by default (``torch.compile`` of the model, channels-last):
    the same logits and gradients as the plain eager model, up to rounding."""
    torch.manual_seed(0)
    model = ConditionalPixelCNN(channels=8, n_layers=2) if conditional else PixelCNN(channels=8, n_layers=2)
    model.to(memory_format=torch.channels_last)
    x = (torch.rand(4, 1, 28, 28) > 0.5).float().contiguous(memory_format=torch.channels_last)
    y = _one_hot([0, 3, 5, 9])

    def grads(fwd):
        model.zero_grad()
        logits = fwd(x, y) if conditional else fwd(x)
        nn.BCEWithLogitsLoss()(logits, x).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    plain_logits, plain_grads = grads(model)
    fast_logits, fast_grads = grads(torch.compile(model))
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_train_falls_back_to_the_plain_model_where_compiling_fails(capfd):
    import hw2_step2_main as main_mod
    from common.data import TensorLoader

    def broken(*args):
        raise RuntimeError("no C++ compiler\nsecond line")

    torch.manual_seed(0)
    model = PixelCNN(channels=8, n_layers=2)
    x = (torch.rand(32, 1, 28, 28) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = main_mod.train(TensorLoader(x, _one_hot(torch.arange(32) % 10), batch_size=16), model, opt, 2, x,
                            nn.BCEWithLogitsLoss(), 16, False, torch.device("cpu"), forward=broken)
    assert len(losses) == 2 and losses[1] < losses[0]
    err = capfd.readouterr().err
    assert err.count("torch.compile does not work here (RuntimeError: no C++ compiler)") == 1


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_fast_sampler_matches_the_raster_loop(conditional):
    torch.manual_seed(0)
    model = (ConditionalPixelCNN(channels=8, n_layers=3) if conditional else PixelCNN(channels=8, n_layers=3)).double()
    with torch.no_grad():  # push logits away from 0 so the samples are not all coin flips
        model.head[1].weight.mul_(4)
    u = draw_uniforms(6, seed=3, height=10, width=10).double()
    y = _one_hot([0, 1, 2, 7, 8, 9]).double() if conditional else None
    fast = sample_fast(model, u, y)
    plain = sample(model, u, y)
    assert fast.shape == (6, 1, 10, 10)
    assert set(fast.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(fast, plain)
    assert not torch.equal(fast, sample_fast(model, draw_uniforms(6, seed=4, height=10, width=10).double(), y))


def test_fast_sampler_matches_the_raster_loop_full_width_fp32():
    torch.manual_seed(5)
    model = ConditionalPixelCNN(channels=4, n_layers=2)
    u = draw_uniforms(2, seed=0, height=5, width=28)
    assert torch.equal(sample_fast(model, u, torch.tensor([2, 5])), sample(model, u, _one_hot([2, 5])))


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
    # the skeleton's call: positional arguments only
    losses = main_mod.train(loader, model, opt, 3, xb, nn.BCEWithLogitsLoss(), 32, True, torch.device("cpu"))
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 100 < losses[0] < 784  # nats per image, not per pixel


def _step2(out, *flags, threads=("--threads", "1")):
    return subprocess.run([sys.executable, "hw2_step2_main.py", "--quick", "--channels", "8", "--n-layers", "2",
                           "--out-dir", str(out), *threads, *flags], cwd=COURSE,
                          env={**os.environ, "HW_QUICK": "1"}, capture_output=True, text=True, timeout=900)


def test_quick_run_of_both_models_in_parallel_writes_every_figure_and_metric(tmp_path):
    """The default run's shape: both models, each in a process of its own (two threads allowed),
    each in its own folder with its checkpoint; then the figures and metrics of both."""
    out = tmp_path / "step2"
    proc = _step2(out, "--digit", "3", threads=("--threads", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "two processes" in proc.stdout
    assert (out / "imgs" / "pixelcnn_generated.png").is_file()
    for name in ("pixelcnn_generated.png", "pixelcnn_conditional_digit3.png",
                 "pixelcnn_conditional_all_digits.png", "pixelcnn_uncond_vs_cond.png", "pixelcnn_loss_curves.png",
                 "pixelcnn_class_accuracy.png", "pixelcnn_results.md", "pixelcnn_results.csv", "config.json",
                 *(f"{m}/{f}" for m in ("unconditional", "conditional")
                   for f in ("checkpoint.pt", "epochs.csv", "history.csv", "metrics.json", "samples.pt"))):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("unconditional", "conditional"):
        m = metrics[model]
        assert 0 < m["test_nll_nats"] < 784 * 2
        assert m["test_bits_per_dim"] == pytest.approx(m["test_nll_nats"] / (784 * 0.6931471805599453))
        assert "frechet_distance" in m and "class_entropy" in m
        config = json.loads((out / model / "config.json").read_text())
        assert config["model"] == model and config["compiled"] is True
    assert set(metrics["conditional"]["class_accuracy_per_class"]) == {str(d) for d in range(10)}
    assert 0 <= metrics["conditional"]["class_accuracy"] <= 1 and metrics["wall_seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["precision_resolved"] in ("fp32", "bf16") and config["binarize"] == "threshold"
    ckpt = torch.load(out / "conditional" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "scheduler", "loader"} <= set(ckpt["state"]) and ckpt["epoch"] == 1


def test_one_model_plain_trains_and_reports_only_that_model(tmp_path):
    """``--models conditional --no-compile --no-fast-sampling``: the conditional model alone, the
    plain code paths, the same initial weights as in a two-model run, and the warm-up then cosine
    learning rate."""
    out = tmp_path / "cond"
    proc = _step2(out, "--epochs", "2", "--models", "conditional", "--eval-per-digit", "1", "--no-compile",
                  "--no-fast-sampling")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("pixelcnn_conditional_digit7.png", "pixelcnn_conditional_all_digits.png", "pixelcnn_class_accuracy.png",
                 "pixelcnn_loss_curves.png", "pixelcnn_results.md"):
        assert (out / name).is_file(), name
    for name in ("pixelcnn_generated.png", "pixelcnn_uncond_vs_cond.png", "imgs/pixelcnn_generated.png",
                 "unconditional"):
        assert not (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert "conditional" in metrics and "unconditional" not in metrics
    assert metrics["conditional"]["sampled_images"] == 64 + 100 + 10
    assert json.loads((out / "conditional" / "config.json").read_text())["compiled"] is False
    state = torch.load(out / "conditional" / "checkpoint.pt", map_location="cpu", weights_only=False)["state"]
    import hw2_step2_main as main_mod
    cfg = main_mod.Step2Config(channels=8, n_layers=2)
    sched = state["scheduler"]
    assert sched["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # the cosine ends at zero
    fresh = main_mod.build_models(cfg)["conditional"]
    trained = state["model"]
    assert fresh.state_dict().keys() == trained.keys()
    assert not torch.equal(fresh.state_dict()["layers.0.v_conv.weight"], trained["layers.0.v_conv.weight"])
    first = torch.load(out / "conditional" / "checkpoint.pt", weights_only=False)["state"]["history"]["epochs"]
    assert [r["epoch"] for r in first] == [1, 2] and all(r["test_nll"] > 0 for r in first)


def test_a_bad_warmup_is_one_line_and_exit_2(tmp_path):
    proc = _step2(tmp_path / "x", "--warmup-epochs", "5")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --warmup-epochs must be between 0 and --epochs"
    assert not (tmp_path / "x").exists()


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
