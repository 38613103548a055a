"""EE 8520 HW2, Step 2: PixelCNN and class-conditional PixelCNN for binarized MNIST.

The model is the gated PixelCNN of van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders" (NeurIPS 2016), built from the handout's layers (Step 2 (b)-(d)):

- ``MaskedConv2d`` with mask type 'A' (centre hidden: the first layer) and 'B' (centre kept: every
  later layer), as in "Pixel Recurrent Neural Networks" (ICML 2016); and 'V', the mask of the
  vertical stack below (every row up to and including the centre row);
- ``ConditionalMaskedConv2d``: the masked convolution plus the class bias ``V y`` (handout (d)).

Each gated layer keeps two stacks. The **vertical stack** ('V' masks, k x k) sees the rows above
a pixel; its output is shifted down one row before a 1x1 convolution passes it to the
**horizontal stack** (1 x k masks, 'A' in the first layer, 'B' after), which sees the pixels to
the left in the pixel's own row. Together they cover every earlier pixel in reach: no blind spot,
unlike a stack of k x k masked convolutions, which never sees the region up and to the right. Each
stack's output is a gated unit ``tanh(W_f * x + V_f y) * sigmoid(W_g * x + V_g y)``; the
horizontal stack has residual connections. A 1x1 head (ReLU, 1x1, ReLU, 1x1) gives one logit per
pixel. The conditional model adds its class bias ``V y`` in every masked convolution.

The model factorizes p(x) = prod_i p(x_i | x_1, ..., x_{i-1}) over the 784 pixels in raster order;
each output logit at pixel i may only see input pixels before i. The masks and the one-row shift
enforce that; ``tests/test_ee8520_step2.py`` checks it by gradients through the whole network.

No BatchNorm on purpose: in training mode it normalizes with statistics over all positions, so the
output at a pixel would (weakly) depend on later pixels through the batch mean.

Speed paths, each equal to the plain version up to rounding (the tests check them against it):
- training: a masked convolution skips the kernel rows and columns its mask zeroes (a (p+1) x k
  convolution for 'V' and 'B', 1 x (p+1) for the horizontal 'B'), on the input padded on the top
  or left only, as PixelCNN++'s shifted convolutions do (``set_conv_impl(model, "taps")``);
- training, with taps: in every layer after the first, the horizontal 1 x 2 convolution and the
  1x1 link from the vertical stack as one 1x1 convolution over h shifted by 1 and 0 columns and v
  shifted by one row (``GatedLayer._h_and_link``): the same FLOPs in one larger convolution;
- training: each gate, with the class bias and link added before it, as one compiled pass
  (``set_gate_impl(model, "compiled")``, ``torch.compile``);
- sampling (``sample_fast``): the vertical stack of a row is computed once, when the row above is
  complete, and the horizontal stack at one position per step from cached activations of the
  earlier pixels of the row, instead of 784 full forward passes (``sample_naive``).
"""
from __future__ import annotations

import logging
import sys

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


MASK_TYPES = ("A", "B", "V")


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel sees only pixels before the centre in raster order.

    ``mask_type='A'`` also hides the centre (first layer: the output at pixel i must not see x_i);
    ``'B'`` keeps the centre (later layers: position i there already summarizes x_{<i} only);
    ``'V'`` keeps the whole centre row (the gated PixelCNN's vertical stack, whose output is used
    one row further down). The mask is a buffer of shape ``(1, 1, kH, kW)`` (all-ones rows above
    the centre, the centre row up to the centre for A/B, zeros after) and the effective kernel is
    ``weight * mask``. A 1 x k kernel with mask A or B is the horizontal stack's convolution.
    """

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {', '.join(MASK_TYPES)}")
        self.mask_type = mask_type
        kh, kw = self.kernel_size
        mask = torch.ones(1, 1, kh, kw)
        if mask_type != "V":  # the centre row from the centre (A) or after it (B)
            mask[:, :, kh // 2, kw // 2 + (mask_type == "B"):] = 0
        mask[:, :, kh // 2 + 1:, :] = 0  # every row below the centre
        self.register_buffer("mask", mask)
        with torch.no_grad():  # masked weights are never used: keep them zero so the weight itself is causal
            self.weight.mul_(self.mask)
        rows, cols = mask[0, 0].any(1).nonzero(), mask[0, 0].any(0).nonzero()
        self._box = (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))  # taps the mask keeps
        self.causal_taps = False  # set by set_conv_impl(model, "taps")

    def taps_supported(self) -> bool:
        kh, kw = self.kernel_size
        return (kh % 2 == 1 and kw % 2 == 1 and kh * kw > 1 and self.stride == (1, 1)
                and self.dilation == (1, 1) and self.groups == 1 and self.padding == (kh // 2, kw // 2)
                and self.padding_mode == "zeros")

    def forward(self, x):
        if self.causal_taps and self.taps_supported():
            return self._forward_taps(x)
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def _forward_taps(self, x):
        """The same result over the kept taps only: rows r0..r1 and columns c0..c1 of the kernel,
        on the input padded so that output (i, j) still sees input (i + r - ph, j + c - pw); the
        padding is negative (a crop) where the kept box ends before the kernel does. For a 3x3 'B'
        kernel that is 6 of 9 taps, 7x7 'A' 28 of 49, a 1x3 horizontal 'B' 2 of 3.

        One row of padding on top (3 x k kernels): symmetric padding and dropping the one extra
        output row is cheaper than copying the input into a padded tensor.
        """
        (r0, r1, c0, c1), (ph, pw) = self._box, self.padding
        w = (self.weight * self.mask)[:, :, r0:r1 + 1, c0:c1 + 1]
        if (r0, r1, c0, c1) == (0, 1, 0, self.kernel_size[1] - 1) and ph == 1:
            return _CropRows.apply(F.conv2d(x, w, self.bias, padding=(1, pw)), x.shape[2])
        return F.conv2d(F.pad(x, (pw - c0, c1 - pw, ph - r0, r1 - ph)), w, self.bias)


class ConditionalMaskedConv2d(MaskedConv2d):
    """``W * x + b + V y``: the masked convolution plus a class-dependent bias (handout Step 2 (d)).

    ``self.class_emb`` is V, a learned map from the one-hot label y (N, num_classes) to one value
    per output channel; ``V y`` is broadcast over height and width and added channel-wise. Integer
    labels (N,), as torchvision's datasets give them, are one-hot encoded first.
    """

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, num_classes, stride=1, padding=0,
                 bias=True):
        super().__init__(mask_type, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        self.num_classes = num_classes
        self.class_emb = nn.Linear(num_classes, out_channels, bias=False)

    def class_bias(self, y):
        """V y, shape (N, out_channels)."""
        if not torch.is_floating_point(y):
            y = F.one_hot(y.long(), self.num_classes)
        return self.class_emb(y.to(self.class_emb.weight.dtype))

    def forward(self, x, y):
        return _plus_class_bias(super().forward(x), self.class_bias(y))


def _plus_class_bias(t, c):
    """``t`` (N, C, H, W) plus the class bias ``c`` (N, C), broadcast over height and width."""
    return t + c.to(t.dtype)[:, :, None, None]


def _is_channels_last(t):
    """A 4-d tensor laid out channels-last (and not also contiguous, as 1-pixel or 1-channel ones are)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def gate(t):
    """The gated unit: tanh of the first half of the channels times sigmoid of the second half."""
    a, b = t.chunk(2, dim=1)
    if _is_channels_last(t):
        # the halves of a channels-last tensor are strided views, on which sigmoid and tanh take a
        # slow path on the CPU (bf16: 8x a contiguous pass; fp32: about 2x): copying them first is cheaper
        a, b = (z.contiguous(memory_format=torch.channels_last) for z in (a, b))
    return torch.tanh(a) * torch.sigmoid(b)


def _gate_input(t, u=None, c=None):
    """``t + c + u``, in the eager layer's order: the convolution's output, its class bias ``c``
    (N, 2C) if conditional, the vertical stack's link ``u`` in the horizontal stack."""
    if c is not None:
        t = _plus_class_bias(t, c)
    return t if u is None else t + u


def _fused_gate(t, u=None, c=None):
    """``gate(_gate_input(t, u, c))`` with tanh(a) written as 2 sigmoid(2a) - 1: equal up to
    rounding (about 1e-7), and a fused kernel computes it faster (tanh costs about 4x sigmoid on
    the CPU)."""
    a, b = _gate_input(t, u, c).chunk(2, dim=1)
    return (2 * torch.sigmoid(2 * a) - 1) * torch.sigmoid(b)


class _CompiledGate:
    """``torch.compile`` of :func:`_fused_gate`: the class bias, link, tanh, sigmoid and product of a
    gate in one pass forward and one backward, instead of a pass over the 25 MB activations for
    each (the training step's gate where ``set_gate_impl(model, "compiled")`` asks for it).
    Compiled on first use (about 6 s once PyTorch has the C++ kernels in its disk cache, 20-30 s
    before), with the batch dimension dynamic from the start: one kernel per call pattern (first
    layer or not, conditional or not) serves every batch size, so a run's last, smaller batch
    compiles nothing new, every process (a resumed run's too) runs the same kernels, and the
    patterns stay under dynamo's recompile limit (8 per function; the other dimensions are static,
    so each model width compiles its own). Where compiling fails (no C++
    compiler, an unsupported device) it prints one line and falls back to the eager gate, for
    good."""

    def __init__(self):
        self.fn = None
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                if self.fn is None:
                    # a CPU-only PyTorch logs "No CUDA runtime is found" when the compiler loads
                    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
                    # without the FX graph cache: its entries pickle torch.channels_last by reference
                    # to whichever loaded module holds ``torch`` (a test module, say), and another
                    # process fails to load them with a traceback; the compiled C++ kernels are still
                    # cached on disk, so a warm start takes about 6 s either way
                    self.fn = torch.compile(_fused_gate, options={"fx_graph_cache": False})
                for a in args:
                    if a is not None:
                        if a.shape[0] > 1:
                            torch._dynamo.mark_dynamic(a, 0)
                        # channels, height and width static: a model of another width in the same
                        # process would otherwise recompile them dynamic, and inductor fails on the
                        # chunk of a symbolic channel count in the backward pass, where this try
                        # cannot catch it (test_compiled_gate_serves_two_widths)
                        for d in range(1, a.dim()):
                            torch._dynamo.mark_static(a, d)
                return self.fn(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager gate is exact
                self.failed = True
                reason = (str(e).strip().splitlines() or [""])[0][:160]
                print(f"note: the compiled gate is not available here ({type(e).__name__}: {reason}); "
                      "training uses the eager gate", file=sys.stderr)
        return gate(_gate_input(*args))


compiled_gate = _CompiledGate()
GATE_IMPLS = ("eager", "compiled")


def _memory_format(t):
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


def _shift_into(dst, src, dy, dx):
    """``dst`` = ``src`` moved down ``dy`` rows and right ``dx`` columns, zeros shifted in."""
    height, width = src.shape[2:]
    dst[:, :, :dy].zero_()
    dst[:, :, :, :dx].zero_()
    dst[:, :, dy:, dx:].copy_(src[:, :, :height - dy, :width - dx])


def _shifted_up(grad):
    """A new tensor in ``grad``'s memory format: row i gets row i + 1, the last row zeros (the
    gradient of a one-row shift down)."""
    out = torch.empty_like(grad, memory_format=_memory_format(grad))
    out[:, :, -1:].zero_()
    out[:, :, :-1].copy_(grad[:, :, 1:])
    return out


class _ShiftDown(torch.autograd.Function):
    """Row i gets row i - 1, row 0 zeros; forward and backward are one copy each into a new tensor
    of the input's memory format. (Padding on top and slicing the bottom row off gives a strided
    view, which the next convolution copies again, and an NCHW gradient.)"""

    @staticmethod
    def forward(ctx, t):
        out = torch.empty_like(t, memory_format=_memory_format(t))
        _shift_into(out, t, 1, 0)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _shifted_up(grad)


class _ShiftedStack(torch.autograd.Function):
    """The channels of h shifted right by each of ``h_shifts`` columns (one of them 0), then v
    shifted down one row (zeros shifted in): the input of :meth:`GatedLayer._h_and_link`. One write
    per group forward; backward, each group's gradient shifted back and summed."""

    @staticmethod
    def forward(ctx, h, v, h_shifts):
        n, c, height, width = h.shape
        groups = [(h, 0, s) for s in h_shifts] + [(v, 1, 0)]
        out = torch.empty((n, len(h_shifts) * c + v.shape[1], height, width), dtype=h.dtype, device=h.device,
                          memory_format=_memory_format(h))
        for k, (t, dy, dx) in enumerate(groups):
            _shift_into(out[:, k * c:k * c + t.shape[1]], t, dy, dx)
        ctx.h_shifts, ctx.channels, ctx.dtypes = h_shifts, c, (h.dtype, v.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        c, shifts, width = ctx.channels, ctx.h_shifts, grad.shape[3]
        k0 = shifts.index(0)  # the unshifted group starts the sum: one copy instead of zeros + add
        gh = grad[:, k0 * c:(k0 + 1) * c].clone(memory_format=_memory_format(grad))
        for k, dx in enumerate(shifts):
            if dx:
                gh[:, :, :, :width - dx].add_(grad[:, k * c:(k + 1) * c, :, dx:])
        gv = _shifted_up(grad[:, len(shifts) * c:])
        return gh.to(ctx.dtypes[0]), gv.to(ctx.dtypes[1]), None


def shift_down(t):
    """Row i gets row i - 1 (row 0 gets zeros): the vertical stack's output as seen one row below."""
    return _ShiftDown.apply(t)


class GatedLayer(nn.Module):
    """One layer of the gated PixelCNN (Fig. 2 of van den Oord et al., NeurIPS 2016).

    v' = gate(V-masked k x k conv of v (+ V_v y)); h' = h + 1x1(gate(horizontal 1 x k conv of h
    (+ V_h y) + 1x1(shift_down(v')))). The first layer reads the image in both stacks, uses mask
    'A' in the horizontal stack and has no residual connection.
    """

    def __init__(self, conv, in_channels, channels, kernel, first=False):
        super().__init__()
        p = kernel // 2
        self.first = first
        self.v_conv = conv("V", in_channels, 2 * channels, (kernel, kernel), (p, p))
        self.h_conv = conv("A" if first else "B", in_channels, 2 * channels, (1, kernel), (0, p))
        self.v_to_h = nn.Conv2d(channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    gate_impl = "eager"  # set by set_gate_impl(model, "compiled")
    stacked_link = True  # with taps convolutions in training: see _h_and_link (False: the two convolutions)

    def forward(self, v, h, y=None):
        gate_fn = compiled_gate if self.gate_impl == "compiled" and self.training and not compiled_gate.failed \
            else _eager_gate
        v = gate_fn(MaskedConv2d.forward(self.v_conv, v), None, _class_bias(self.v_conv, y))
        if self._stacks_link():
            t, u = self._h_and_link(h, v), None
        else:
            t, u = MaskedConv2d.forward(self.h_conv, h), self.v_to_h(shift_down(v))
        h_new = self.h_out(gate_fn(t, u, _class_bias(self.h_conv, y)))
        return v, h_new if self.first else h + h_new

    def _stacks_link(self) -> bool:
        c = self.h_conv
        return (self.stacked_link and self.training and c.causal_taps and c.taps_supported()
                and c.mask_type == "B" and c.kernel_size[0] == 1)

    def _h_and_link(self, h, v):
        """``h_conv(h) + v_to_h(shift_down(v))`` without class bias, as ONE 1x1 convolution over
        the stack of h shifted right by p, ..., 1, 0 columns (the 1 x (p+1) taps of the 'B' mask)
        and v shifted down one row: the same FLOPs, with a 96-channel input instead of a 2-tap and
        a 1x1 convolution of 32 channels each, and no link for the gate to add. Equal up to
        rounding; training mode only, so evaluation and sampling keep the two convolutions."""
        conv, link = self.h_conv, self.v_to_h
        p = conv.padding[1]
        w = (conv.weight * conv.mask)[:, :, 0, :p + 1]  # (2C, C_in, taps), tap k shifted by p - k
        w = torch.cat([w.permute(0, 2, 1).reshape(w.shape[0], -1), link.weight[:, :, 0, 0]], 1)
        b = link.bias if conv.bias is None else conv.bias + link.bias
        return F.conv2d(_ShiftedStack.apply(h, v, tuple(range(p, -1, -1))), w[:, :, None, None], b)


def _eager_gate(t, u=None, c=None):
    return gate(_gate_input(t, u, c))


def _apply(layer, x, y):
    return layer(x) if y is None else layer(x, y)


def _class_bias(layer, y):
    return None if y is None else layer.class_bias(y)


class _PixelCNNBase(nn.Module):
    """Shared body: ``n_layers`` gated layers (the first with a ``first_kernel`` kernel), then
    ReLU, 1x1 conv, ReLU, 1x1 conv to one logit per pixel.

    Reach (the default in brackets): the horizontal stack sees r = first_kernel // 2 +
    (n_layers - 1) * (kernel // 2) pixels to the left in the pixel's own row [14]; the vertical stack
    r + 1 rows above [15], r columns to either side.
    """

    conditional = False

    def __init__(self, channels=32, n_layers=12, kernel=3, first_kernel=7, num_classes=10):
        super().__init__()
        self.channels = channels

        def conv(mask_type, cin, cout, k, padding):
            if self.conditional:
                return ConditionalMaskedConv2d(mask_type, cin, cout, k, num_classes, padding=padding)
            return MaskedConv2d(mask_type, cin, cout, k, padding=padding)

        self.layers = nn.ModuleList([GatedLayer(conv, 1 if i == 0 else channels, channels,
                                                first_kernel if i == 0 else kernel, first=i == 0)
                                     for i in range(n_layers)])
        # 1x1 convolutions: a 1x1 type-B mask is all ones; kept masked so the head takes V y too
        self.head = nn.ModuleList([conv("B", channels, channels, 1, 0), conv("B", channels, 1, 1, 0)])

    def _forward(self, x, y=None):
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        h = _apply(self.head[0], F.relu(h), y)
        return _apply(self.head[1], F.relu(h), y)


class PixelCNN(_PixelCNNBase):
    """Unconditional PixelCNN: ``forward(x)`` with x (N, 1, 28, 28) in {0, 1} -> logits (N, 1, 28, 28).

    ``sigmoid(logits[:, :, i, j])`` is p(x_ij = 1 | pixels before (i, j)). Defaults: 32 channels
    per stack, twelve gated layers (7x7 first, then 3x3), a 1x1 head (0.31 M parameters).
    """

    def __init__(self, channels=32, n_layers=12, kernel=3, first_kernel=7):
        super().__init__(channels, n_layers, kernel, first_kernel)

    def forward(self, x):
        return self._forward(x)


class ConditionalPixelCNN(_PixelCNNBase):
    """Class-conditional PixelCNN: every masked conv adds ``V_l y``; ``forward(x, y)`` with y
    one-hot (N, num_classes) or integer labels (N,)."""

    conditional = True

    def __init__(self, num_classes=10, channels=32, n_layers=12, kernel=3, first_kernel=7):
        super().__init__(channels, n_layers, kernel, first_kernel, num_classes)
        self.num_classes = num_classes

    def forward(self, x, y):
        return self._forward(x, y)


def set_conv_impl(model: nn.Module, impl: str) -> nn.Module:
    """``'taps'``: masked convolutions computed without their all-masked kernel rows and columns;
    ``'masked'``: the full kernel times the mask. Same parameters and (up to rounding) the same outputs."""
    if impl not in ("taps", "masked"):
        raise ValueError("impl must be 'taps' or 'masked'")
    for m in model.modules():
        if isinstance(m, MaskedConv2d):
            m.causal_taps = impl == "taps"
    return model


def resolve_gate_impl(impl: str, device: torch.device) -> str:
    """``'auto'``: ``'compiled'`` on the CPU, where it was measured (one fp32 step 4.26 against
    5.28 s on an AVX2-only CPU, ``bench_training.py``); ``'eager'`` on CUDA and MPS, not yet
    measured there. Any other name is kept."""
    if impl == "auto":
        return "compiled" if device.type == "cpu" else "eager"
    return impl


def set_gate_impl(model: nn.Module, impl: str) -> nn.Module:
    """``'compiled'``: the gated layers' training-mode forward uses ``compiled_gate`` (the same gate
    up to rounding, one fused pass); ``'eager'``: :func:`gate`. Evaluation and sampling always use
    :func:`gate`, so the cached sampler stays exactly equal to the naive one."""
    if impl not in GATE_IMPLS:
        raise ValueError(f"impl must be one of {', '.join(GATE_IMPLS)}")
    for m in model.modules():
        if isinstance(m, GatedLayer):
            m.gate_impl = impl
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


@torch.no_grad()
def sample_fast(model, uniforms, y=None):
    """Exact sampling with cached activations.

    Every activation at pixel t depends only on input pixels before t, so it is final once
    computed and can be cached. The vertical stack of row i (which the horizontal stack reads one
    row further down) is computed for the whole row, layer by layer, as soon as row i is complete;
    the horizontal stack and the head at ONE position per step, from the cached vertical row and
    the row's earlier horizontal activations. Work per step is a few (N, window) x (window, C)
    products instead of a forward pass over all 784 positions. ``uniforms`` (N, 1, H, W) in
    [0, 1); y one-hot (or integer labels) for a conditional model.
    """
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-step products are small: extra threads only add sync cost
    try:
        return _Sampler(model, uniforms.shape[0], y).run(uniforms)
    finally:
        torch.set_num_threads(threads)


class _Sampler:
    """The caches of :func:`sample_fast`: per layer, the vertical stack's input rows (channels
    last, padded like the convolution), the current row's horizontal input, and the 1x1 link
    from the row above; the weights as matrices over those windows."""

    def __init__(self, model, n, y):
        first = model.layers[0].v_conv
        self.model, self.n, self.y = model, n, y
        self.dtype, self.device = first.weight.dtype, first.weight.device
        self.cond = getattr(model, "conditional", False)
        for layer in model.layers:
            for c in (layer.v_conv, layer.h_conv):
                if not c.taps_supported():
                    raise ValueError("sample_fast expects stride-1 'same' masked convolutions")

    def bias(self, layer):
        """(N, out) bias of ``layer`` (plus V y for a conditional model)."""
        b = layer.bias if layer.bias is not None else torch.zeros(layer.out_channels, device=self.device,
                                                                  dtype=self.dtype)
        b = b.expand(self.n, -1)
        return b + layer.class_bias(self.y).to(self.dtype) if self.cond else b

    def run(self, uniforms):
        n, _, height, width = uniforms.shape
        layers, head = self.model.layers, self.model.head
        pads = [layer.v_conv.kernel_size[0] // 2 for layer in layers]
        # vertical: input rows of each layer (N, H + p, W + 2p, C_in), rows/columns padded like the conv
        v_in = [torch.zeros(n, height + p, width + 2 * p, layer.v_conv.in_channels, device=self.device,
                            dtype=self.dtype) for layer, p in zip(layers, pads)]
        v_w = [(layer.v_conv.weight * layer.v_conv.mask)[:, :, :p + 1] for layer, p in zip(layers, pads)]
        v_b = [self.bias(layer.v_conv)[:, :, None, None] for layer in layers]
        # the 1x1 link from the vertical stack for the current row: row 0 sees the zero padding
        links = [layer.v_to_h.bias.expand(n, width, -1).clone() for layer in layers]
        # horizontal: the current row's input of each layer (N, p + W, C_in), left-padded
        h_in = [torch.zeros(n, p + width, layer.h_conv.in_channels, device=self.device, dtype=self.dtype)
                for layer, p in zip(layers, pads)]
        h_w, h_b, out_w, out_b = [], [], [], []
        for layer in layers:
            c0, c1 = layer.h_conv._box[2:]
            w = (layer.h_conv.weight * layer.h_conv.mask)[:, :, 0, c0:c1 + 1]  # (2C, C_in, taps)
            h_w.append(w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous())
            h_b.append(self.bias(layer.h_conv))
            out_w.append(layer.h_out.weight[:, :, 0, 0].t().contiguous())
            out_b.append(layer.h_out.bias.expand(n, -1))
        taps = [layer.h_conv._box[3] - layer.h_conv._box[2] + 1 for layer in layers]
        starts = [p + layer.h_conv._box[2] - layer.h_conv.padding[1] for layer, p in zip(layers, pads)]
        head_w = [h.weight[:, :, 0, 0].t().contiguous() for h in head]
        head_b = [self.bias(h) for h in head]
        u = uniforms.to(device=self.device, dtype=torch.float32)
        x = torch.zeros(n, 1, height, width, device=self.device, dtype=self.dtype)
        for i in range(height):
            for j in range(width):
                h = None
                for k, layer in enumerate(layers):
                    s = j + starts[k]
                    win = h_in[k][:, s:s + taps[k]].reshape(n, -1)
                    h_new = torch.addmm(out_b[k], gate(torch.addmm(h_b[k], win, h_w[k]) + links[k][:, j]), out_w[k])
                    h = h_new if layer.first else h + h_new
                    if k + 1 < len(layers):
                        h_in[k + 1][:, j + pads[k + 1]] = h
                h = torch.addmm(head_b[0], F.relu(h), head_w[0])
                logit = torch.addmm(head_b[1], F.relu(h), head_w[1])
                pix = (u[:, 0, i, j] < torch.sigmoid(logit[:, 0].float())).to(self.dtype)
                x[:, 0, i, j] = pix
                h_in[0][:, j + pads[0], 0] = pix
                v_in[0][:, i + pads[0], j + pads[0], 0] = pix
            # row i is complete: the vertical stack of row i, layer by layer, for row i + 1
            for k, (layer, p) in enumerate(zip(layers, pads)):
                strip = v_in[k][:, i:i + p + 1].permute(0, 3, 1, 2)  # input rows i - p .. i
                v = gate(F.conv2d(strip, v_w[k]) + v_b[k])  # (N, C, 1, W)
                row = v[:, :, 0].transpose(1, 2)  # (N, W, C)
                if k + 1 < len(layers):
                    v_in[k + 1][:, i + pads[k + 1], pads[k + 1]:pads[k + 1] + width] = row
                links[k] = torch.addmm(layer.v_to_h.bias, row.reshape(n * width, -1),
                                       layer.v_to_h.weight[:, :, 0, 0].t()).reshape(n, width, -1)
        return x


def draw_uniforms(n, seed, height=28, width=28, device="cpu"):
    """The fixed noise of a sample grid: U(0, 1) draws for every pixel of n images, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, height, width, generator=g).to(device)
