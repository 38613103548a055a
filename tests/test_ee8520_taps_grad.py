"""EE 8520 PixelCNN data movement (issue 20): cropping the taps convolution's extra output row
with ``models.AR._CropRows``, and the vertical stack's one-row shift, give the same output and
gradients as plain padding and slicing (bit-equal) and keep a channels-last tensor channels-last."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def AR(course_path):
    course_path("ee8520_hw2")
    import models.AR as AR
    return AR


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_rows_matches_slicing(AR, bf16, channels_last):
    torch.manual_seed(0)
    conv = AR.MaskedConv2d("B", 8, 8, 3, padding=1)
    conv.causal_taps = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv.to(memory_format=fmt)
    x0 = torch.randn(4, 8, 10, 10).contiguous(memory_format=fmt)

    def run(fn):
        conv.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fn(x)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), x.grad, conv.weight.grad, conv.bias.grad

    def sliced(x):
        w = (conv.weight * conv.mask)[:, :, :2]
        return F.conv2d(x, w, conv.bias, padding=(1, 1))[:, :, :x.shape[2]]

    ours, ref = run(conv), run(sliced)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_crop_rows_gradient_keeps_channels_last(AR):
    y = torch.randn(2, 3, 5, 4).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = AR._CropRows.apply(y, 4)
    assert out.shape == (2, 3, 4, 4) and torch.equal(out, y[:, :, :4])
    out.backward(torch.ones(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    assert y.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.grad[:, :, :4], torch.ones(2, 3, 4, 4)) and not y.grad[:, :, 4].any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_down_matches_pad_and_slice(AR, channels_last):
    """The one-row shift of the vertical stack: the same values and gradient as padding on top and
    slicing the last row off, in one copy that keeps the input's memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t0 = torch.randn(3, 4, 6, 5).contiguous(memory_format=fmt)
    g = torch.randn(3, 4, 6, 5).contiguous(memory_format=fmt)
    a, b = t0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    ours, ref = AR.shift_down(a), F.pad(b, (0, 0, 1, 0))[:, :, :6]
    assert torch.equal(ours, ref) and ours.is_contiguous(memory_format=fmt)
    ours.backward(g)
    ref.backward(g)
    assert torch.equal(a.grad, b.grad) and a.grad.is_contiguous(memory_format=fmt)
    assert torch.equal(ours[:, :, 0], torch.zeros(3, 4, 5))
