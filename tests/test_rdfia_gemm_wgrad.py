"""RDFIA models' 4x4-spatial convolutions whose bf16 weight gradient is one matmul (issue 20,
``tp2_models._run``): the same forward and input gradient as the plain layer (bit-equal), the
weight gradient equal up to bf16 rounding, fp32 untouched (bit-equal), the same parameters."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn


@pytest.fixture
def M(course_path):
    course_path("rdfia_tp2")
    import tp2_models
    return tp2_models


def _grads(fn, layer, x, bf16: bool):
    layer.weight.grad = None
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = fn(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, layer.weight.grad


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_layer_matches_plain(M, transposed, channels_last):
    torch.manual_seed(0)
    layer = (nn.ConvTranspose2d if transposed else nn.Conv2d)(24, 16, 4, 2, 1, bias=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer.to(memory_format=fmt)
    x = torch.randn(6, 24, 4 if transposed else 8, 4 if transposed else 8).contiguous(memory_format=fmt)
    assert M._gemm_weight_grad_dtype(layer, x) is None  # fp32: the plain layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert M._gemm_weight_grad_dtype(layer, x) == torch.bfloat16
        assert M._gemm_weight_grad_dtype(layer, torch.randn(6, 24, 16, 16)) is None  # not 4x4-spatial
    seq = nn.Sequential(layer)
    for bf16 in (False, True):
        (o1, gx1, gw1), (o2, gx2, gw2) = _grads(lambda t: M._run(seq, t), layer, x, bf16), _grads(layer, layer, x, bf16)
        assert torch.equal(o1, o2) and torch.equal(gx1, gx2)  # oneDNN's forward and input gradient
        assert gw1.shape == gw2.shape and gw1.dtype == gw2.dtype
        if not bf16:
            assert torch.equal(gw1, gw2)
        else:  # the same bf16 products summed in another order, rounded to bf16
            assert (gw1 - gw2).abs().max() <= 1e-2 * gw2.abs().max()


@pytest.mark.parametrize("conditional", [False, True])
def test_models_same_gradients(M, monkeypatch, conditional):
    torch.manual_seed(0)
    if conditional:
        G, D = M.ConditionalGenerator(), M.ConditionalDiscriminator()
        y = torch.eye(10)[torch.arange(8) % 10]
        cond = (y,)
    else:
        G, D = M.Generator(100, 32, 1), M.Discriminator(32, 1)
        cond = ()
    G.apply(M.weights_init)
    D.apply(M.weights_init)
    z = torch.randn(8, 100, 1, 1)

    def grads(bf16):
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = D(G(z, *cond), *cond)
        M.generator_loss_nonsaturating(out).backward()
        return [p.grad.clone() for p in (*G.parameters(), *D.parameters())]

    ours = {bf16: grads(bf16) for bf16 in (False, True)}
    monkeypatch.setattr(M, "_gemm_weight_grad_dtype", lambda m, x: None)  # every layer plain
    plain = {bf16: grads(bf16) for bf16 in (False, True)}
    assert all(torch.equal(a, b) for a, b in zip(ours[False], plain[False]))
    assert not all(torch.equal(a, b) for a, b in zip(ours[True], plain[True]))  # the path was taken
    for a, b, ref in zip(ours[True], plain[True], plain[False]):
        # ours differs from the plain bf16 gradient by far less than bf16 differs from fp32
        assert (a - b).abs().max() <= 0.25 * (b - ref).abs().max() + 1e-3 * ref.abs().max()
