"""Exact PixelCNN sampling with cached activations: the same samples as ``models.AR.sample``, faster.

``models.AR.sample`` runs one forward pass over the whole image per pixel: 784 passes, each
recomputing every earlier position. Here every activation is computed once. An activation at pixel
t depends only on input pixels before t, so it is final as soon as it is computed:

- the vertical stack of row i (which the horizontal stack reads one row further down) is computed
  for the whole row, layer by layer, once row i is complete;
- the horizontal stack and the head run at ONE position per step, from the cached vertical row and
  the row's earlier horizontal activations: a few (N, window) x (window, C) products per layer.

Both draw pixel (i, j) as ``u_ij < sigmoid(logit_ij)`` from the same uniforms, so the samples are
identical. ``hw2_step2_main.py --no-fast-sampling`` uses the plain loop instead.
"""
import torch
import torch.nn.functional as F

from .AR import gate


def _kept_columns(conv):
    """First and last kernel column that the mask of a 1 x k convolution keeps."""
    cols = conv.mask[0, 0].any(0).nonzero()
    return int(cols[0]), int(cols[-1])


@torch.no_grad()
def sample_fast(model, uniforms, y=None):
    """Samples of ``model`` (a ``PixelCNN`` or ``ConditionalPixelCNN``) for uniforms (N, 1, H, W) in
    [0, 1); ``y``: one-hot or integer labels of a conditional model."""
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-step products are small: more threads only add sync cost
    try:
        return _Sampler(model, uniforms.shape[0], y).run(uniforms)
    finally:
        torch.set_num_threads(threads)


class _Sampler:
    """The caches: per layer, the vertical stack's input rows (channels last, padded like the
    convolution), the current row's horizontal input, and the 1x1 link from the row above; the
    weights as matrices over those windows."""

    def __init__(self, model, n, y):
        first = model.layers[0].v_conv
        self.model, self.n = model, n
        self.dtype, self.device = first.weight.dtype, first.weight.device
        self.y = None
        if getattr(model, "conditional", False):
            self.y = y if torch.is_floating_point(y) else F.one_hot(y.long(), model.num_classes)
        for layer in model.layers:
            for c in (layer.v_conv, layer.h_conv):
                kh, kw = c.kernel_size
                if c.stride != (1, 1) or c.dilation != (1, 1) or c.padding != (kh // 2, kw // 2):
                    raise ValueError("sample_fast expects stride-1 'same' masked convolutions")

    def bias(self, conv):
        """(N, out) bias of ``conv`` plus V y for a conditional model."""
        b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=self.device,
                                                                dtype=self.dtype)
        b = b.expand(self.n, -1)
        return b if self.y is None else b + conv.class_emb(self.y.to(self.dtype))

    def run(self, uniforms):
        n, _, height, width = uniforms.shape
        layers, head = self.model.layers, self.model.head
        pads = [layer.v_conv.kernel_size[0] // 2 for layer in layers]
        # vertical: input rows of each layer (N, H + p, W + 2p, C_in), padded like the convolution
        v_in = [torch.zeros(n, height + p, width + 2 * p, layer.v_conv.in_channels, device=self.device,
                            dtype=self.dtype) for layer, p in zip(layers, pads)]
        v_w = [(layer.v_conv.weight * layer.v_conv.mask)[:, :, :p + 1] for layer, p in zip(layers, pads)]
        v_b = [self.bias(layer.v_conv)[:, :, None, None] for layer in layers]
        # the 1x1 link from the vertical stack for the current row: row 0 sees the zero padding
        links = [layer.v_to_h.bias.expand(n, width, -1).clone() for layer in layers]
        # horizontal: the current row's input of each layer (N, p + W, C_in), left-padded
        h_in = [torch.zeros(n, p + width, layer.h_conv.in_channels, device=self.device, dtype=self.dtype)
                for layer, p in zip(layers, pads)]
        h_w, h_b, out_w, out_b, taps, starts = [], [], [], [], [], []
        for layer, p in zip(layers, pads):
            c0, c1 = _kept_columns(layer.h_conv)
            w = (layer.h_conv.weight * layer.h_conv.mask)[:, :, 0, c0:c1 + 1]  # (2C, C_in, taps)
            h_w.append(w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous())
            h_b.append(self.bias(layer.h_conv))
            out_w.append(layer.h_out.weight[:, :, 0, 0].t().contiguous())
            out_b.append(layer.h_out.bias.expand(n, -1))
            taps.append(c1 - c0 + 1)
            starts.append(p + c0 - layer.h_conv.padding[1])
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
