"""EE 8520 HW2, Step 2: PixelCNN and class-conditional PixelCNN for binarized MNIST.

References: van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks" (ICML 2016)
for the masked convolutions (mask A for the first layer, mask B after it), and van den Oord et al.,
"Conditional Image Generation with PixelCNN Decoders" (NeurIPS 2016) for the class-dependent bias
``W * x + b + V y`` (handout Step 2 (d)).

The model factorizes p(x) = prod_i p(x_i | x_1, ..., x_{i-1}) over the 784 pixels in raster order;
each output logit at pixel i may only see input pixels before i. The masks enforce that; the test
``tests/test_ee8520_step2.py`` checks it by gradients through the whole network.

No BatchNorm on purpose: in training mode it normalizes with statistics over all positions, so the
output at a pixel would (weakly) depend on later pixels through the batch mean. Residual
connections keep the 7-layer stack easy to train instead.

Two speed paths, both exact (the test checks them against the plain versions):
- training: a masked convolution can skip the kernel rows below the centre, which the mask
  zeroes: a (p+1) x k convolution of the input shifted down (top padding only), as PixelCNN++'s
  shifted convolutions do (``set_conv_impl(model, "taps")``);
- sampling (``sample_fast``): every pixel's activations are computed once, at the step that creates
  them, from cached activations of earlier pixels, instead of 784 full forward passes (``sample_naive``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.metrics import bernoulli_nll


class _CropRows(torch.autograd.Function):
    """``y[:, :, :rows]`` whose backward zero-pads the gradient with ``F.pad``, which keeps its
    memory format. Plain slicing's backward writes into ``zeros`` in the default (NCHW) format, so
    a channels-last training step gets an NCHW gradient: a transposing copy per layer and a
    mixed-format convolution backward (about 11% of a bf16 PixelCNN step; the gradients are
    bit-equal either way)."""

    @staticmethod
    def forward(ctx, y, rows: int):
        ctx.extra = y.shape[2] - rows
        return y[:, :, :rows]

    @staticmethod
    def backward(ctx, grad):
        return F.pad(grad, (0, 0, 0, ctx.extra)), None


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel sees only pixels before the centre in raster order.

    ``mask_type='A'`` also hides the centre (first layer: the output at pixel i must not see x_i);
    ``'B'`` keeps the centre (later layers: position i there already summarizes x_{<i} only).
    The mask is a buffer of shape ``(1, 1, kH, kW)`` (all-ones rows above the centre, the centre row
    up to the centre, zeros after) and the effective kernel is ``weight * mask``.
    """

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if mask_type not in ("A", "B"):
            raise ValueError("mask_type must be 'A' or 'B'")
        self.mask_type = mask_type
        kh, kw = self.kernel_size
        mask = torch.ones(1, 1, kh, kw)
        mask[:, :, kh // 2, kw // 2 + (mask_type == "B"):] = 0  # the centre row from the centre (A) or after it (B)
        mask[:, :, kh // 2 + 1:, :] = 0  # every row below the centre
        self.register_buffer("mask", mask)
        with torch.no_grad():  # masked weights are never used: keep them zero so the weight itself is causal
            self.weight.mul_(self.mask)
        self.causal_taps = False  # set by set_conv_impl(model, "taps")

    def taps_supported(self) -> bool:
        kh, kw = self.kernel_size
        return (kh == kw and kh % 2 == 1 and kh > 1 and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1 and self.padding == (kh // 2, kw // 2) and self.padding_mode == "zeros")

    def forward(self, x):
        if self.causal_taps and self.taps_supported():
            return self._forward_taps(x)
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def _forward_taps(self, x):
        """The same result without the kernel rows below the centre (all masked): a (p+1) x k
        convolution of x padded p rows on top only (p = k // 2), so the output at row i sees
        input rows i-p..i. For 3x3 kernels that is 6 of 9 taps, for 7x7 28 of 49.

        p = 1: symmetric padding and dropping the one extra output row is cheaper than copying
        the input into a padded tensor; wider kernels pad the input instead.
        """
        p = self.kernel_size[0] // 2
        w = (self.weight * self.mask)[:, :, :p + 1]
        if p == 1:
            return _CropRows.apply(F.conv2d(x, w, self.bias, padding=(p, p)), x.shape[2])
        return F.conv2d(F.pad(x, (p, p, p, 0)), w, self.bias)


class ConditionalMaskedConv2d(MaskedConv2d):
    """``W * x + b + V y``: the masked convolution plus a class-dependent bias (handout Step 2 (d)).

    ``self.class_emb`` is V, a learned map from the one-hot label y (N, num_classes) to one value
    per output channel; ``V y`` is broadcast over height and width and added channel-wise.
    """

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, num_classes, stride=1, padding=0,
                 bias=True):
        super().__init__(mask_type, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        self.num_classes = num_classes
        self.class_emb = nn.Linear(num_classes, out_channels, bias=False)

    def class_bias(self, y):
        """V y, shape (N, out_channels)."""
        return self.class_emb(y.to(self.class_emb.weight.dtype))

    def forward(self, x, y):
        out = super().forward(x)
        return out + self.class_bias(y).to(out.dtype)[:, :, None, None]


class _PixelCNNBase(nn.Module):
    """Shared body: a 7x7 type-A masked conv, ``n_blocks`` residual 3x3 type-B blocks
    ``h <- h + conv_B(ReLU(h))``, then ReLU, 1x1 conv, ReLU, 1x1 conv to one logit per pixel.

    Every vertical receptive field adds up to 3 + n_blocks rows above a pixel (9 by default).
    """

    conditional = False

    def __init__(self, channels=64, n_blocks=6, first_kernel=7, kernel=3, num_classes=10):
        super().__init__()
        self.channels = channels

        def conv(mask_type, cin, cout, k):
            if self.conditional:
                return ConditionalMaskedConv2d(mask_type, cin, cout, k, num_classes, padding=k // 2)
            return MaskedConv2d(mask_type, cin, cout, k, padding=k // 2)

        self.input_conv = conv("A", 1, channels, first_kernel)
        self.blocks = nn.ModuleList([conv("B", channels, channels, kernel) for _ in range(n_blocks)])
        # 1x1 convolutions: a 1x1 type-B mask is all ones; kept masked so every layer takes V y
        self.head = nn.ModuleList([conv("B", channels, channels, 1), conv("B", channels, 1, 1)])

    def _layer(self, layer, h, y):
        return layer(h) if y is None else layer(h, y)

    def _forward(self, x, y=None):
        h = self._layer(self.input_conv, x, y)
        for block in self.blocks:
            h = h + self._layer(block, F.relu(h), y)
        h = self._layer(self.head[0], F.relu(h), y)
        return self._layer(self.head[1], F.relu(h), y)


class PixelCNN(_PixelCNNBase):
    """Unconditional PixelCNN: ``forward(x)`` with x (N, 1, 28, 28) in {0, 1} -> logits (N, 1, 28, 28).

    ``sigmoid(logits[:, :, i, j])`` is p(x_ij = 1 | pixels before (i, j)). Defaults: 64 channels,
    one 7x7 A layer, six residual 3x3 B blocks, two 1x1 layers (about 0.2 M parameters).
    """

    def __init__(self, channels=64, n_blocks=6, first_kernel=7, kernel=3):
        super().__init__(channels, n_blocks, first_kernel, kernel)

    def forward(self, x):
        return self._forward(x)


class ConditionalPixelCNN(_PixelCNNBase):
    """Class-conditional PixelCNN: every layer adds ``V_l y``; ``forward(x, y)`` with y one-hot (N, num_classes)."""

    conditional = True

    def __init__(self, num_classes=10, channels=64, n_blocks=6, first_kernel=7, kernel=3):
        super().__init__(channels, n_blocks, first_kernel, kernel, num_classes)
        self.num_classes = num_classes

    def forward(self, x, y):
        return self._forward(x, y)


def set_conv_impl(model: nn.Module, impl: str) -> nn.Module:
    """``'taps'``: masked convolutions computed without their all-masked kernel rows (rows above and
    the centre row only); ``'masked'``: the full kernel times the mask. Same parameters and (up to rounding) the same outputs."""
    if impl not in ("taps", "masked"):
        raise ValueError("impl must be 'taps' or 'masked'")
    for m in model.modules():
        if isinstance(m, MaskedConv2d):
            m.causal_taps = impl == "taps"
    return model


# --------------------------------------------------------------------------------------------
# Losses


def nll_nats_per_image(logits, x):
    """-log p(x) = -sum_i [x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))], nats per image (N,).

    The binary cross-entropy summed over the 784 pixels (handout Step 2 (a): NLL = CE);
    ``BCEWithLogitsLoss()`` (the training loss) is this divided by 784, averaged over the batch.
    The skeleton's name for ``common.metrics.bernoulli_nll``, which every course's NLL uses.
    """
    return bernoulli_nll(logits, x)


# --------------------------------------------------------------------------------------------
# Sampling: pixels in raster order, p(x_ij = 1) = sigmoid(logit_ij), drawn as u_ij < p with
# pre-drawn uniforms u (so two samplers with the same u make the same draws).


def _logits(model, x, y):
    return model(x, y) if getattr(model, "conditional", False) else model(x)


@torch.no_grad()
def sample_naive(model, uniforms, y=None, rows=None):
    """The textbook loop: 784 full forward passes over the whole image, one pixel kept each time.

    ``rows`` stops after that many rows (the benchmark times a prefix of the loop); later rows stay 0.
    """
    model.eval()
    x = torch.zeros_like(uniforms)
    _, _, height, width = x.shape
    for i in range(height if rows is None else min(rows, height)):
        for j in range(width):
            p = torch.sigmoid(_logits(model, x, y)[:, :, i, j].float())
            x[:, :, i, j] = (uniforms[:, :, i, j] < p).to(x.dtype)
    return x


def _window_weight(conv):
    """The masked kernel's rows 0..p (rows below the centre are all masked) as a (out, (p+1)*k*in) matrix
    matching a channels-last window (N, p+1, k, in)."""
    p = conv.kernel_size[0] // 2
    w = (conv.weight * conv.mask)[:, :, :p + 1, :]
    return w.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)


@torch.no_grad()
def sample_fast(model, uniforms, y=None):
    """Exact sampling with cached activations: each step computes every layer at ONE position.

    The activation of any layer at pixel t depends only on input pixels before t, so it is final
    at the step that samples pixel t and can be cached. For pixel t, each masked conv needs its
    input only in the (p+1) x k window ending at t, made of cached earlier positions (and t itself
    for type B). Work per step is a few (N, window) x (window, C) products instead of a forward
    pass over all 784 positions. ``uniforms`` (N, 1, H, W) in [0, 1); y one-hot for a conditional model.
    """
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-step products are small: extra threads only add sync cost
    try:
        return _sample_fast(model, uniforms, y)
    finally:
        torch.set_num_threads(threads)


def _sample_fast(model, uniforms, y):
    n, _, height, width = uniforms.shape
    dtype, device = model.input_conv.weight.dtype, model.input_conv.weight.device
    convs = [model.input_conv, *model.blocks]
    pads = [c.kernel_size[0] // 2 for c in convs]
    if any(c.stride != (1, 1) or c.padding != (p, p) for c, p in zip(convs, pads)):
        raise ValueError("sample_fast expects stride-1 'same' masked convolutions")
    cond = getattr(model, "conditional", False)

    def bias(layer):
        b = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels, device=device, dtype=dtype)
        b = b.expand(n, -1)
        return b + layer.class_bias(y).to(dtype) if cond else b

    # Inputs of every k x k conv, channels last, zero-padded p rows on top and p columns each side
    bufs = [torch.zeros(n, height + p, width + 2 * p, c.in_channels, device=device, dtype=dtype)
            for c, p in zip(convs, pads)]
    weights = [_window_weight(c).t().contiguous() for c in convs]
    biases = [bias(c) for c in convs]
    head_w = [h.weight[:, :, 0, 0].t().contiguous() for h in model.head]
    head_b = [bias(h) for h in model.head]
    u = uniforms.to(device=device, dtype=torch.float32)
    x = torch.zeros(n, 1, height, width, device=device, dtype=dtype)
    p0 = pads[0]
    for i in range(height):
        for j in range(width):
            win = bufs[0][:, i:i + p0 + 1, j:j + 2 * p0 + 1].reshape(n, -1)
            h = torch.addmm(biases[0], win, weights[0])
            for buf, w, b, p in zip(bufs[1:], weights[1:], biases[1:], pads[1:]):
                buf[:, i + p, j + p] = F.relu(h)
                h = h + torch.addmm(b, buf[:, i:i + p + 1, j:j + 2 * p + 1].reshape(n, -1), w)
            h = torch.addmm(head_b[0], F.relu(h), head_w[0])
            logit = torch.addmm(head_b[1], F.relu(h), head_w[1])
            pix = (u[:, 0, i, j] < torch.sigmoid(logit[:, 0].float())).to(dtype)
            x[:, 0, i, j] = pix
            bufs[0][:, i + p0, j + p0, 0] = pix
    return x


def draw_uniforms(n, seed, height=28, width=28, device="cpu"):
    """The fixed noise of a sample grid: U(0, 1) draws for every pixel of n images, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, height, width, generator=g).to(device)
