"""Step 2: PixelCNN and class-conditional PixelCNN for binarized MNIST.

The model is the gated PixelCNN of van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders" (NeurIPS 2016), built from the layers the handout asks for:

- ``MaskedConv2d`` (b): a convolution whose kernel is ``weight * mask``. Mask 'A' hides the centre
  pixel (first layer), 'B' keeps it (later layers); every later pixel in raster order is hidden.
  A third mask, 'V', keeps the whole centre row: the vertical stack below uses it.
- ``ConditionalMaskedConv2d`` (d): the masked convolution plus the class bias ``V y``, broadcast over
  height and width.

Why the gated model rather than a plain stack of masked convolutions: a stack of k x k masked
convolutions never sees the region up and to the right of a pixel (the "blind spot"). The gated
model keeps two stacks per layer. The vertical stack (k x k, mask 'V') sees the rows above; its
output is shifted down one row and passed to the horizontal stack (1 x k, mask 'A' then 'B'),
which sees the pixels to the left in the pixel's own row. Together they see every earlier pixel in
reach. Each stack ends in the gated unit ``tanh(a) * sigmoid(b)``.

No BatchNorm: in training mode it normalizes over all positions, so a pixel's output would depend
(weakly) on later pixels through the batch statistics.

p(x) = prod_i p(x_i | x_1, ..., x_{i-1}) over the 784 pixels in raster order; the training loss is
``BCEWithLogitsLoss``, the NLL divided by 784 (Step 2 (a)). ``sample`` draws the pixels one by one.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order (mask 'A' or 'B'),
    or every pixel of the rows up to and including the centre row (mask 'V')."""

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if mask_type not in ("A", "B", "V"):
            raise ValueError("mask_type must be one of A, B, V")
        self.mask_type = mask_type
        kh, kw = self.kernel_size
        mask = torch.ones(1, 1, kh, kw)
        if mask_type != "V":  # the centre row: from the centre on (A), after the centre (B)
            mask[:, :, kh // 2, kw // 2 + (mask_type == "B"):] = 0
        mask[:, :, kh // 2 + 1:, :] = 0  # every row below the centre
        self.register_buffer("mask", mask)
        with torch.no_grad():  # the masked weights never act: keep them zero
            self.weight.mul_(self.mask)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class ConditionalMaskedConv2d(MaskedConv2d):
    """``W * x + b + V y`` (Step 2 (d)): ``self.class_emb`` is V, a learned map from the one-hot
    label y (N, num_classes) to one value per output channel, added at every pixel. Integer
    labels (N,) are one-hot encoded first."""

    def __init__(self, mask_type, in_channels, out_channels, kernel_size, num_classes, stride=1, padding=0,
                 bias=True):
        super().__init__(mask_type, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        self.num_classes = num_classes
        self.class_emb = nn.Linear(num_classes, out_channels, bias=False)

    def forward(self, x, y):
        if not torch.is_floating_point(y):
            y = F.one_hot(y.long(), self.num_classes)
        out = super().forward(x)
        return out + self.class_emb(y.to(self.class_emb.weight.dtype)).to(out.dtype)[:, :, None, None]


def gate(t):
    """The gated unit: tanh of the first half of the channels times sigmoid of the second half."""
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(t):
    """Row i gets row i - 1, row 0 gets zeros: the vertical stack as seen from one row below."""
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1]


def _conv(layer, x, y):
    return layer(x) if y is None else layer(x, y)


class GatedLayer(nn.Module):
    """One layer of the gated PixelCNN (Fig. 2 of van den Oord et al., NeurIPS 2016):

        v' = gate(V-masked k x k conv of v  [+ V_v y])
        h' = h + 1x1(gate(1 x k masked conv of h  [+ V_h y]  + 1x1(shift_down(v'))))

    The first layer reads the image in both stacks, uses mask 'A' in the horizontal stack and has no
    residual connection."""

    def __init__(self, conv, in_channels, channels, kernel, first=False):
        super().__init__()
        p = kernel // 2
        self.first = first
        self.v_conv = conv("V", in_channels, 2 * channels, (kernel, kernel), (p, p))
        self.h_conv = conv("A" if first else "B", in_channels, 2 * channels, (1, kernel), (0, p))
        self.v_to_h = nn.Conv2d(channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v, h, y=None):
        v = gate(_conv(self.v_conv, v, y))
        h_new = self.h_out(gate(_conv(self.h_conv, h, y) + self.v_to_h(shift_down(v))))
        return v, h_new if self.first else h + h_new


class _PixelCNNBase(nn.Module):
    """``n_layers`` gated layers (the first with a ``first_kernel`` kernel), then ReLU, 1x1 conv,
    ReLU, 1x1 conv to one logit per pixel. With the defaults the horizontal stack sees 3 + 11 = 14
    pixels to the left in a pixel's own row, the vertical stack 15 rows above and 14 columns to
    either side."""

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
        # 1x1 convolutions (a 1x1 'B' mask keeps everything), masked so that the head takes V y too
        self.head = nn.ModuleList([conv("B", channels, channels, 1, 0), conv("B", channels, 1, 1, 0)])

    def _forward(self, x, y=None):
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        h = _conv(self.head[0], F.relu(h), y)
        return _conv(self.head[1], F.relu(h), y)


class PixelCNN(_PixelCNNBase):
    """Unconditional PixelCNN: ``forward(x)``, x (N, 1, 28, 28) in {0, 1} -> logits (N, 1, 28, 28);
    ``sigmoid(logits[:, :, i, j])`` is p(x_ij = 1 | the pixels before (i, j))."""

    def __init__(self, channels=32, n_layers=12, kernel=3, first_kernel=7):
        super().__init__(channels, n_layers, kernel, first_kernel)

    def forward(self, x):
        return self._forward(x)


class ConditionalPixelCNN(_PixelCNNBase):
    """Class-conditional PixelCNN: every masked convolution adds ``V_l y``; ``forward(x, y)`` with y
    one-hot (N, num_classes) or integer labels (N,)."""

    conditional = True

    def __init__(self, num_classes=10, channels=32, n_layers=12, kernel=3, first_kernel=7):
        super().__init__(channels, n_layers, kernel, first_kernel, num_classes)
        self.num_classes = num_classes

    def forward(self, x, y):
        return self._forward(x, y)


def nll_nats_per_image(logits, x):
    """-log p(x) = -sum_i [x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))] in nats, per image (N,):
    the binary cross-entropy summed over the pixels (Step 2 (a): NLL = CE)."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


@torch.no_grad()
def sample(model, uniforms, y=None):
    """Raster-order sampling: for each pixel (i, j), one forward pass over the image drawn so far and
    ``x_ij = 1`` with probability ``sigmoid(logits[:, :, i, j])``, drawn as ``u_ij < p`` from the
    given uniforms (N, 1, H, W), so that the same uniforms give the same samples. ``y``: labels of a
    conditional model."""
    model.eval()
    x = torch.zeros_like(uniforms)
    _, _, height, width = x.shape
    for i in range(height):
        for j in range(width):
            logits = model(x) if y is None else model(x, y)
            x[:, :, i, j] = (uniforms[:, :, i, j] < torch.sigmoid(logits[:, :, i, j].float())).to(x.dtype)
    return x


def draw_uniforms(n, seed, height=28, width=28, device="cpu"):
    """The fixed noise of a sample grid: U(0, 1) draws for every pixel of n images, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, height, width, generator=g).to(device)
