"""RDFIA: the models of ``tp2_models.py`` are stock PyTorch, and ``tp2_speedups.prepare`` changes
what bf16 training computes only where it says: the Sigmoid in fp32, and the 4x4-spatial
convolutions' weight gradient as one matmul (the same forward and input gradient, bit-equal; the
weight gradient equal up to bf16 rounding). In fp32 nothing is swapped; the parameters are the same."""
from __future__ import annotations

import ast

import pytest
import torch
import torch.nn as nn

from helpers import ROOT


@pytest.fixture
def M(course_path):
    course_path("rdfia_tp2")
    import tp2_models
    return tp2_models


@pytest.fixture
def S(course_path):
    course_path("rdfia_tp2")
    import tp2_speedups
    return tp2_speedups


def test_graded_models_are_stock_pytorch():
    tree = ast.parse((ROOT / "rdfia_tp2" / "tp2_models.py").read_text())
    bases = {ast.unparse(b) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases}
    assert bases == {"nn.Module"}  # no torch.autograd.Function, no custom layers
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["Generator", "Discriminator", "ConditionalGenerator", "ConditionalDiscriminator"]


def _grads(layer, x, bf16: bool):
    layer.weight.grad = None
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = layer(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, layer.weight.grad.clone()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_layer_matches_stock(S, transposed, channels_last):
    torch.manual_seed(0)
    plain = (nn.ConvTranspose2d if transposed else nn.Conv2d)(24, 16, 4, 2, 1, bias=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    plain.to(memory_format=fmt)
    fast = S.swap_modules(nn.Sequential(plain), S._swapped)[0]
    assert type(fast) is (S.GemmConvTranspose2d if transposed else S.GemmConv2d) and fast.weight is plain.weight
    x = torch.randn(6, 24, 4 if transposed else 8, 4 if transposed else 8).contiguous(memory_format=fmt)
    assert S.gemm_dtype(fast, x) is None  # fp32: the stock layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert S.gemm_dtype(fast, x) == torch.bfloat16
        assert S.gemm_dtype(fast, torch.randn(6, 24, 16, 16)) is None  # not 4x4-spatial
        with torch.no_grad():
            assert S.gemm_dtype(fast, x) is None
    for bf16 in (False, True):
        (o1, gx1, gw1), (o2, gx2, gw2) = _grads(fast, x, bf16), _grads(plain, x, bf16)
        assert torch.equal(o1, o2) and torch.equal(gx1, gx2)  # oneDNN's forward and input gradient
        assert gw1.shape == gw2.shape and gw1.dtype == gw2.dtype
        if not bf16:
            assert torch.equal(gw1, gw2)
        else:  # the same bf16 products summed in another order, rounded to bf16
            assert (gw1 - gw2).abs().max() <= 1e-2 * gw2.abs().max()


def test_fp32_sigmoid(S):
    x = torch.randn(64, dtype=torch.bfloat16) * 6
    assert torch.equal(S.Fp32Sigmoid()(x), torch.sigmoid(x.float()))
    assert S.Fp32Sigmoid()(x).dtype == torch.float32


def _models(M, conditional):
    torch.manual_seed(0)
    G, D = (M.ConditionalGenerator(), M.ConditionalDiscriminator()) if conditional else (M.Generator(), M.Discriminator())
    G.apply(M.weights_init)
    D.apply(M.weights_init)
    return G, D


@pytest.mark.parametrize("conditional", [False, True])
def test_prepare_swaps_only_in_bf16_and_keeps_parameters(M, S, conditional):
    G, D = _models(M, conditional)
    keys = {m: list(m.state_dict()) for m in (G, D)}
    params = {m: list(m.parameters()) for m in (G, D)}
    for m in (G, D):
        types = [type(x) for x in m.modules()]
        assert S.prepare(m, "fp32", "cpu") is m and [type(x) for x in m.modules()] == types
    S.prepare(D, "bf16", "cpu", fast_wgrad=False)
    assert sum(isinstance(x, S.Fp32Sigmoid) for x in D.modules()) == 1
    assert not any(isinstance(x, (S.GemmConv2d, S.GemmConvTranspose2d)) for x in D.modules())
    for m in (G, D):
        S.prepare(m, "bf16", "cpu")
        assert list(m.state_dict()) == keys[m]
        assert all(a is b for a, b in zip(m.parameters(), params[m]))
    # G: its three stride-2 transposed convs; D: its three stride-2 convs (the label branch's too)
    assert sum(isinstance(x, S.GemmConvTranspose2d) for x in G.modules()) == 3
    assert sum(isinstance(x, S.GemmConv2d) for x in D.modules()) == (4 if conditional else 3)


@pytest.mark.parametrize("conditional", [False, True])
def test_models_same_gradients(M, S, conditional):
    z = torch.randn(8, 100, 1, 1)
    cond = (torch.eye(10)[torch.arange(8) % 10],) if conditional else ()

    def grads(fast: bool | None, bf16: bool):
        G, D = _models(M, conditional)
        if fast is not None:
            S.prepare(G, "bf16", "cpu", fast_wgrad=fast)
            S.prepare(D, "bf16", "cpu", fast_wgrad=fast)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = D(G(z, *cond), *cond)
        M.generator_loss_nonsaturating(out).backward()
        return [p.grad.clone() for p in (*G.parameters(), *D.parameters())]

    ref = grads(None, False)  # the stock models in fp32
    sigmoid_only, fast = grads(False, True), grads(True, True)
    assert not all(torch.equal(a, b) for a, b in zip(fast, sigmoid_only))  # the GEMM path was taken
    for a, b, r in zip(fast, sigmoid_only, ref):
        # the GEMM weight gradient differs from oneDNN's bf16 one by far less than bf16 from fp32
        assert (a - b).abs().max() <= 0.25 * (b - r).abs().max() + 1e-3 * r.abs().max()
