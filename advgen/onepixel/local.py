"""Receptive-field locality for the interval bounds: propagate only the window a pixel can influence.

A change to one input pixel only reaches a small window of each feature map of the spatial layers
(convolutions, pooling, batch norm, activations). Outside it every activation equals the clean one. So
for each box we carry a fixed-size window per layer. A pooling layer runs on a tile: the clean padded
activations around the window, with the box's window pasted in, evaluated with no padding. A
convolution, being linear, runs on the window's change alone (:class:`ConvMaps`). At the end of the spatial prefix the window is pasted into the clean feature map and the
remaining layers (flatten, linear, ...) run as usual. The result is the same interval as the full-map
computation up to fp32 rounding (which the certification margin covers), at a fraction of the cost.
Like :mod:`.bounds`, it is differentiable in the weights; the exact search calls it without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .rules import IDENTITY, MONOTONE, VALLEY, channelwise_affine, propagate


@dataclass
class _Spatial:
    """Geometry of one conv/pool layer along both axes, and the window tables for every input pixel."""

    layer: nn.Module
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    start: tuple[torch.Tensor, torch.Tensor] = None  # output window start per input pixel row / col
    size: tuple[int, int] = (0, 0)                   # output window size (fixed)
    in_size: tuple[int, int] = (1, 1)                # input window size (fixed)
    offset: tuple[torch.Tensor, torch.Tensor] = None  # per input pixel row / col: where the input window
    #                                                   starts inside the tile its output window reads
    # for a convolution applied as a change (:meth:`LocalBounds.conv_step`): per input pixel row / col,
    # which of the distinct offsets of the input window inside the output window's tile it has, and those
    # offsets; None where the layer runs on tiles
    offset_id: tuple[torch.Tensor, torch.Tensor] | None = None
    offsets: tuple[list[int], list[int]] | None = None


@dataclass
class Tiles:
    """The clean input tiles of one windowed layer, into which the boxes' windows are pasted.

    Eager, for the exact search: every tile cut once, ``table`` (n, starts_h, starts_w, Th, Tw, C), since
    thousands of boxes read each one. Lazy, for certified training: only ``padded``, the padded map
    channels last (n, Hp, Wp, C), and each box's tile cut when asked for. Training bounds a few boxes per
    image with gradients, and the backward of an all-tiles cut cost more than the bound itself (measured:
    unfold's backward alone was 17% of a training bound).
    """

    padded: torch.Tensor
    stride: tuple[int, int]
    size: tuple[int, int]  # (Th, Tw)
    starts: tuple[int, int]
    table: torch.Tensor | None = None

    @classmethod
    def cut(cls, padded: torch.Tensor, size: tuple[int, int], stride: tuple[int, int], eager: bool) -> "Tiles":
        """Tiles of ``padded`` (n, C, Hp, Wp) of ``size`` every ``stride`` cells."""
        starts = ((padded.shape[2] - size[0]) // stride[0] + 1, (padded.shape[3] - size[1]) // stride[1] + 1)
        if eager:
            table = padded.unfold(2, size[0], stride[0]).unfold(3, size[1], stride[1])
            return cls(padded, stride, size, starts, table.permute(0, 2, 3, 4, 5, 1).contiguous())
        return cls(padded.permute(0, 2, 3, 1), stride, size, starts)

    @property
    def channels(self) -> int:
        return self.padded.shape[1] if self.table is not None else self.padded.shape[3]

    def pick(self, img: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, Th, Tw, C) tiles at tile position (top, left) of images ``img``, written to ``out`` if given."""
        if self.table is None:
            dev = img.device
            rows = (top * self.stride[0])[:, None, None] + torch.arange(self.size[0], device=dev)[None, :, None]
            cols = (left * self.stride[1])[:, None, None] + torch.arange(self.size[1], device=dev)[None, None, :]
            got = self.padded[img[:, None, None], rows, cols]
        else:
            flat = self.table.reshape(-1, *self.table.shape[3:])
            index = (img * self.starts[0] + top) * self.starts[1] + left
            if out is not None and not (torch.is_grad_enabled() and flat.requires_grad):  # (out= has no gradient)
                return torch.index_select(flat, 0, index, out=out)
            got = flat.index_select(0, index)
        return got if out is None else out.copy_(got)

    def cell(self, img: torch.Tensor, top: torch.Tensor, left: torch.Tensor, i: torch.Tensor,
             j: torch.Tensor) -> torch.Tensor:
        """(B, C): cell (i, j) of the tile at (top, left) of images ``img``."""
        if self.table is None:
            return self.padded[img, top * self.stride[0] + i, left * self.stride[1] + j]
        return self.table[img, top, left, i, j]


@dataclass
class ConvMaps:
    """A convolution's clean input and output maps, channels last: (n, H, W, C) and (n, H', W', O).

    A convolution is linear, so on a box its output window is the clean output plus the convolution of
    the input window's change, and its radius the convolution of the input radius by the absolute
    weights. Only the window's cells change, so both are one small matrix product per box, with no tile
    to cut or paste (:meth:`LocalBounds.conv_step`). The default CNN's second convolution: 64 inputs to
    512 outputs, where the tile's convolution computes 16 x 6 x 6 to 512.
    """

    inp: torch.Tensor
    out: torch.Tensor

    @staticmethod
    def window(maps: torch.Tensor, img: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
        """(B, sh * sw * C): the ``size`` window at (top, left) of ``maps`` (n, H, W, C), channels last,
        for images ``img``; by ``index_select`` on rows of C, several times faster on CPU than indexing
        with one tensor per axis."""
        n, h, w, c = maps.shape
        dev = img.device
        rows = (top[:, None] + torch.arange(size[0], device=dev))[:, :, None]
        cols = (left[:, None] + torch.arange(size[1], device=dev))[:, None, :]
        cells = ((img[:, None, None] * h + rows) * w + cols).reshape(-1)
        return maps.reshape(n * h * w, c).index_select(0, cells).view(len(img), -1)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _spatial(m: nn.Module) -> _Spatial | None:
    """Geometry for a layer we can evaluate on a tile, or None (the prefix ends there)."""
    if isinstance(m, nn.Conv2d) and isinstance(m.padding, tuple) and m.padding_mode == "zeros":
        return _Spatial(m, _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation), 0.0)
    if isinstance(m, nn.MaxPool2d) and not m.ceil_mode and not m.return_indices:
        return _Spatial(m, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding),
                        _pair(m.dilation), float("-inf"))
    if (isinstance(m, nn.AvgPool2d) and not m.ceil_mode and m.divisor_override is None
            and (m.count_include_pad or _pair(m.padding) == (0, 0))):
        return _Spatial(m, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), (1, 1), 0.0)
    return None


#: Largest convolution, in matrix entries over all offsets, applied as a change (:class:`ConvMaps`);
#: larger ones run on tiles. 4M float32 entries are 16 MB (the default CNN's second convolution: 294k).
_CONV_TABLE_LIMIT = 4_000_000


def _elementwise(m: nn.Module) -> bool:
    return isinstance(m, (*MONOTONE, *VALLEY, *IDENTITY)) or channelwise_affine(m)


class LocalBounds:
    """Windowed interval propagation through the spatial layers at the start of a chain of one-input
    layers (a model's prefix, :meth:`.graph.Traced.prefix`), then the chain's other layers on full maps."""

    def __init__(self, body: list[nn.Module], input_shape: tuple[int, int, int], device: torch.device) -> None:
        self.layers = list(body)
        self.steps: list[_Spatial | nn.Module] = []
        k = 0
        while k < len(body) and (_elementwise(body[k]) or _spatial(body[k]) is not None):
            self.steps.append(body[k] if _elementwise(body[k]) else _spatial(body[k]))
            k += 1
        self.rest = body[k:]
        # elementwise layers before the first spatial one (a normalisation in front, as RobustBench wraps
        # its models): they act on each pixel alone, so they run on the pixel's 1x1 window, read from the input
        self.lead = next((i for i, st in enumerate(self.steps) if isinstance(st, _Spatial)), len(self.steps))
        self.useful = self.lead < len(self.steps)
        _, h, w = input_shape
        sizes = [h, w]
        lo = [torch.arange(h, device=device), torch.arange(w, device=device)]
        hi = [lo[0].clone(), lo[1].clone()]
        top, in_size = [lo[0].clone(), lo[1].clone()], (1, 1)  # the input window: at first the pixel
        self._conv_cache: dict[int, tuple] = {}
        for step in self.steps:
            if not isinstance(step, _Spatial):
                continue
            starts, widths = [], []
            for a in range(2):
                k_, s_, p_, d_ = step.kernel[a], step.stride[a], step.padding[a], step.dilation[a]
                n_out = (sizes[a] + 2 * p_ - d_ * (k_ - 1) - 1) // s_ + 1
                o_min = (-(-(lo[a] + p_ - d_ * (k_ - 1)) // s_)).clamp(0, n_out - 1)
                o_max = ((hi[a] + p_) // s_).clamp(0, n_out - 1)
                width = min(int((o_max - o_min).max()) + 1, n_out)
                starts.append(torch.minimum(o_min, torch.full_like(o_min, n_out - width)))
                widths.append(width)
                lo[a], hi[a], sizes[a] = o_min, o_max, n_out
            step.start, step.size, step.in_size = (starts[0], starts[1]), (widths[0], widths[1]), in_size
            step.offset = tuple(top[a] + step.padding[a] - starts[a] * step.stride[a] for a in range(2))
            if isinstance(step.layer, nn.Conv2d):
                uniq = [torch.unique(o, return_inverse=True) for o in step.offset]
                rows_out = step.layer.out_channels * widths[0] * widths[1]
                table = len(uniq[0][0]) * len(uniq[1][0]) * step.layer.in_channels * in_size[0] * in_size[1] * rows_out
                if table <= _CONV_TABLE_LIMIT:
                    step.offset_id = (uniq[0][1], uniq[1][1])
                    step.offsets = (uniq[0][0].tolist(), uniq[1][0].tolist())
            top, in_size = starts, step.size
        self.tiles = sum(isinstance(st, _Spatial) for st in self.steps)  # acts[self.tiles]: the prefix output
        self.fold: nn.Linear | None = None
        self._fold_cache: tuple | None = None
        if self.useful and self._foldable(body[:k], input_shape, device):
            self.fold = self.rest[1]

    def _foldable(self, windowed: list[nn.Module], input_shape: tuple[int, int, int], device: torch.device) -> bool:
        """Whether the layers left start with Flatten then Linear, which :meth:`finish` applies on the window."""
        if len(self.rest) < 2 or not isinstance(self.rest[0], nn.Flatten) or not isinstance(self.rest[1], nn.Linear):
            return False
        if self.rest[0].start_dim != 1 or self.rest[0].end_dim not in (-1, 3):
            return False
        with torch.no_grad():
            probe = torch.zeros(1, *input_shape, device=device)
            for m in windowed:
                probe = propagate([m], probe, torch.zeros_like(probe))[0]
        c, h, w = probe.shape[1:]
        sh, sw = [st for st in self.steps if isinstance(st, _Spatial)][-1].size
        self.map_shape, self.window = (c, h, w), (sh, sw)
        self.positions = (h - sh + 1, w - sw + 1)
        return self.rest[1].in_features == c * h * w

    def prepare(self, x: torch.Tensor) -> list:
        """The clean activations a group's boxes need: for each spatial layer, the :class:`Tiles` its output
        windows read (channels last: a window is pasted cell by cell, each cell one contiguous run of
        channels), eager unless gradients flow into them; then the prefix output (and the folded head's
        tables); last, with leading elementwise layers, the input itself, where the pixels' windows start."""
        acts, a = [], x
        for step in self.steps:
            if isinstance(step, _Spatial) and step.offsets is not None:
                out = step.layer(a)
                eager = not (torch.is_grad_enabled() and out.requires_grad)
                channels_last = (lambda t: t.permute(0, 2, 3, 1).contiguous()) if eager else \
                    (lambda t: t.permute(0, 2, 3, 1))
                acts.append(ConvMaps(channels_last(a), channels_last(out)))
                a = out
            elif isinstance(step, _Spatial):
                ph, pw = step.padding
                padded = F.pad(a, (pw, pw, ph, ph), value=step.pad_value)
                eager = not (torch.is_grad_enabled() and padded.requires_grad)
                acts.append(Tiles.cut(padded, (self._tile(step, 0), self._tile(step, 1)), step.stride, eager))
                a = step.layer(a)
            else:
                a = propagate([step], a, torch.zeros_like(a))[0]  # the rule's center: eval statistics
        acts.append(a)
        if self.fold is not None:
            acts.extend(self._fold_tables(a))
        if self.lead:
            acts.append(x)
        return acts

    def _fold_tables(self, out: torch.Tensor) -> list[torch.Tensor]:
        """For :meth:`finish`: the folded Linear's clean output per image (n, O), and its weight cut into one
        block per window position, (P, C * sh * sw, O), plain and absolute. Rebuilt (differentiable) while
        training; in the exact search kept until the weight changes (its version counter moves)."""
        m = self.fold
        clean = F.linear(out.flatten(1), m.weight, m.bias)
        training = torch.is_grad_enabled() and m.weight.requires_grad
        key = (m.weight.data_ptr(), m.weight._version)
        if not training and self._fold_cache is not None and self._fold_cache[0] == key:
            return [clean, *self._fold_cache[1]]
        (c, h, w), (sh, sw) = self.map_shape, self.window
        o = m.weight.shape[0]
        blocks = m.weight.view(o, c, h, w).unfold(2, sh, 1).unfold(3, sw, 1)  # (O, C, H', W', sh, sw)
        blocks = blocks.permute(2, 3, 1, 4, 5, 0).reshape(-1, c * sh * sw, o)
        tables = [blocks, blocks.abs()]
        if not training:
            tables = [t.detach().contiguous() for t in tables]
            self._fold_cache = (key, tables)
        return [clean, *tables]

    @staticmethod
    def _tile(step: _Spatial, axis: int) -> int:
        """Input extent that one output window of the layer reads along ``axis``."""
        return (step.size[axis] - 1) * step.stride[axis] + step.dilation[axis] * (step.kernel[axis] - 1) + 1

    def pixel_window(self, acts: list[torch.Tensor], img: torch.Tensor, row: torch.Tensor,
                     col: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, 1): all channels of pixel (row, col) of image ``img``, clean, as a fresh tensor to edit.

        Read from the tile of the first layer's output window that contains the pixel, or from the input
        itself when elementwise layers come first.
        """
        if self.lead:
            return acts[-1][img, :, row, col].reshape(len(img), -1, 1, 1).clone()
        first = self.steps[0]
        if isinstance(acts[0], ConvMaps):
            window = acts[0].inp[img, row, col]
            return window.reshape(len(img), -1, 1, 1).clone()
        top0, left0 = first.start[0][row], first.start[1][col]
        ti, tj = first.offset[0][row], first.offset[1][col]
        # (a pixel no output reads, e.g. skipped by a stride, lies outside the tile and has no effect)
        tiles: Tiles = acts[0]
        window = tiles.cell(img, top0, left0, ti.clamp(0, tiles.size[0] - 1), tj.clamp(0, tiles.size[1] - 1))
        return window.reshape(len(img), tiles.channels, 1, 1).clone()

    def propagate(self, acts: list[torch.Tensor], img: torch.Tensor, ch: torch.Tensor, row: torch.Tensor,
                  col: torch.Tensor, mid: torch.Tensor, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box (center, radius) on the output of the chain for pixels (img, ch, row, col) in mid +- half."""
        rows_b = torch.arange(len(img), device=img.device)
        wc = self.pixel_window(acts, img, row, col)
        wc[rows_b, ch, 0, 0] = mid
        wr = torch.zeros_like(wc)
        wr[rows_b, ch, 0, 0] = half
        top, left = row, col  # window position in the current layer's (unpadded) coordinates
        # through runs of monotone layers and max pooling the window is kept as end points (lo, hi),
        # elsewhere as (center, radius): the same box, with fewer conversions between the two
        ends = False
        k = 0
        for step in self.steps:
            to_ends = isinstance(step, MONOTONE) or (isinstance(step, _Spatial) and isinstance(step.layer, nn.MaxPool2d))
            if to_ends and not ends:
                wc, wr = wc - wr, wc + wr
            elif ends and not to_ends:
                wc, wr = (wr + wc) / 2, (wr - wc) / 2
            ends = to_ends
            if isinstance(step, _Spatial) and isinstance(acts[k], ConvMaps):
                wc, wr, top, left = self.conv_step(step, acts[k], img, wc, wr, top, left, row, col)
                k += 1
            elif isinstance(step, _Spatial):
                wc, wr, top, left = self._tile_step(step, acts[k], img, wc, wr, row, col)
                k += 1
            elif ends:
                wc, wr = step(wc), step(wr)
            else:
                wc, wr = propagate([step], wc, wr)
        if ends:
            wc, wr = (wr + wc) / 2, (wr - wc) / 2
        c, r, rest = self.finish(acts, img, wc, wr, top, left)
        return propagate(rest, c, r)

    def finish(self, acts: list[torch.Tensor], img: torch.Tensor, wc: torch.Tensor, wr: torch.Tensor,
               top: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[nn.Module]]:
        """The windows (B, C, sh, sw) at (top, left) of the windowed layers' output, in (center, radius)
        form, joined to the clean map: the box (center, radius) on the input of the layers left, returned
        with it. A Flatten then Linear there is applied on the window alone (:attr:`fold`): the clean output
        plus the window's change through that position's block of the weight, the radius through the
        block's absolute values, as on the full map but with no full map (6x fewer products on the CNN)."""
        b = len(img)
        out = acts[self.tiles]
        c_out, h, w = out.shape[1:]
        sh, sw = wc.shape[2:]
        dev = img.device
        rr = (top[:, None] + torch.arange(sh, device=dev))[:, None, :, None]
        cc = (left[:, None] + torch.arange(sw, device=dev))[:, None, None, :]
        chs = torch.arange(c_out, device=dev)[None, :, None, None]
        flat = ((chs * h + rr) * w + cc).reshape(b, -1)  # (B, C * sh * sw) cells of the map
        if self.fold is None:
            full_c = _rows(out, img, 1)  # a copy
            full_r = torch.zeros_like(full_c)
            full_c.view(b, -1).scatter_(1, flat, wc.reshape(b, -1))
            full_r.view(b, -1).scatter_(1, flat, wr.reshape(b, -1))
            return full_c, full_r, self.rest
        clean_head, blocks, blocks_abs = acts[self.tiles + 1:self.tiles + 4]
        clean_win = out.reshape(-1)[(img * (c_out * h * w))[:, None] + flat]  # (B, C * sh * sw)
        delta = wc.reshape(b, -1) - clean_win
        pos = top * self.positions[1] + left  # (B,) window position
        dc, r = grouped_matmul(pos, [delta, wr.reshape(b, -1)], [blocks, blocks_abs])
        return clean_head.index_select(0, img) + dc, r, self.rest[2:]

    def conv_step(self, step: _Spatial, maps: ConvMaps, img: torch.Tensor, wc: torch.Tensor, wr: torch.Tensor,
                  top: torch.Tensor, left: torch.Tensor, row: torch.Tensor,
                  col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A convolution on (center, radius) windows (B, C, sh, sw) at (top, left), as a change (see
        :class:`ConvMaps`): the output windows (B, O, oh, ow) and their position (out_top, out_left)."""
        b = len(img)
        out_top, out_left = step.start[0][row], step.start[1][col]
        change = wc.permute(0, 2, 3, 1).reshape(b, -1) - ConvMaps.window(maps.inp, img, top, left, step.in_size)
        radius = wr.permute(0, 2, 3, 1).reshape(b, -1)
        clean = ConvMaps.window(maps.out, img, out_top, out_left, step.size)  # (B, oh * ow * O)
        group = step.offset_id[0][row] * len(step.offsets[1]) + step.offset_id[1][col]
        oc, orad = grouped_matmul(group, [change, radius], list(self._conv_tables(step)), [clean, None])
        (oh, ow), o = step.size, step.layer.out_channels
        return oc.view(b, oh, ow, o).permute(0, 3, 1, 2), orad.view(b, oh, ow, o).permute(0, 3, 1, 2), out_top, out_left

    def _conv_tables(self, step: _Spatial) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution as matrices, one per offset of the input window in the tile: (G, C * sh * sw,
        O * oh * ow), plain and absolute (each entry is one weight, so the absolute matrix is the
        absolute weights' convolution). Cached like the folded Linear's blocks."""
        m = step.layer
        training = torch.is_grad_enabled() and m.weight.requires_grad
        key = (m.weight.data_ptr(), m.weight._version)
        cached = self._conv_cache.get(id(step))
        if cached is not None and not training and cached[0] == key:
            return cached[1]
        basis = cached[2] if cached is not None else self._conv_basis(step, m.weight.device, m.weight.dtype)
        q = m.in_channels * step.in_size[0] * step.in_size[1]
        out = F.conv2d(basis, m.weight, None, m.stride, 0, m.dilation, m.groups)  # (G * q, O, oh, ow)
        plain = out.permute(0, 2, 3, 1).reshape(-1, q, out[0].numel())  # rows and columns channels last
        tables = (plain, plain.abs())
        if not training:
            tables = tuple(t.detach().contiguous() for t in tables)
        self._conv_cache[id(step)] = (key if not training else None, tables, basis)
        return tables

    def _conv_basis(self, step: _Spatial, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(G * sh * sw * C, C, Th, Tw): for each offset, each cell of the input window (channels last) alone
        set to 1 in a zero tile (cells outside the tile, which no output of the window reads, stay 0)."""
        c, (sh, sw) = step.layer.in_channels, step.in_size
        th, tw = self._tile(step, 0), self._tile(step, 1)
        a, b, ch = [t.reshape(-1) for t in torch.meshgrid(torch.arange(sh), torch.arange(sw), torch.arange(c),
                                                         indexing="ij")]
        q = len(ch)
        offsets = [(r, k) for r in step.offsets[0] for k in step.offsets[1]]
        basis = torch.zeros(len(offsets) * q, c, th, tw, dtype=dtype)
        for g, (r, k) in enumerate(offsets):
            rr, cc = a + r, b + k
            ok = (rr >= 0) & (rr < th) & (cc >= 0) & (cc < tw)
            basis[g * q + torch.arange(q)[ok], ch[ok], rr[ok], cc[ok]] = 1.0
        return basis.to(device)

    def _tile_step(self, step: _Spatial, tiles: Tiles, img: torch.Tensor, wc: torch.Tensor,
                   wr: torch.Tensor, row: torch.Tensor, col: torch.Tensor):
        """One conv/pool layer on tiles: clean padded input around the output window, box window pasted in.
        The window comes and goes as (center, radius), or as end points (lo, hi) for max pooling."""
        m = step.layer
        if isinstance(m, nn.MaxPool2d):  # (wc, wr) are end points (lo, hi) here: both over clean tiles
            both, out_top, out_left = paste_tiles(step, tiles, img, [wc, wr], [True, True], row, col)
            b = len(img)
            both = _max_pool(both, step)
            return both[:b], both[b:], out_top, out_left
        (tc, tr), out_top, out_left = paste_tiles(step, tiles, img, [wc, wr], [True, False], row, col, stacked=False)
        oc, orad = affine_tile(step, tc, tr)
        return oc, orad, out_top, out_left


def grouped_matmul(group: torch.Tensor, inputs: list[torch.Tensor], tables: list[torch.Tensor],
                   bases: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Row b of ``inputs[i]`` (B, K) times ``tables[i][group[b]]`` (G, K, M), plus row b of ``bases[i]``
    (B, M) where given: one matrix product per group present, not a (B, K, M) gather of the tables."""
    bases = bases or [None] * len(inputs)
    product = lambda x, t, base: x @ t if base is None else torch.addmm(base, x, t)  # noqa: E731
    if len(tables[0]) == 1:
        return [product(x, t[0], base) for x, t, base in zip(inputs, tables, bases)]
    order = torch.argsort(group)
    counts = torch.bincount(group, minlength=len(tables[0])).tolist()
    inputs = [x.index_select(0, order) for x in inputs]
    bases = [None if base is None else base.index_select(0, order) for base in bases]
    # (unbind: with gradients, indexing tables[i][g] would give every group a zero-filled full-size gradient)
    tables = [t.unbind(0) for t in tables]
    parts, s = [[] for _ in inputs], 0
    for g, n in enumerate(counts):
        if n:
            for part, x, t, base in zip(parts, inputs, tables, bases):
                part.append(product(x[s:s + n], t[g], None if base is None else base[s:s + n]))
            s += n
    back = torch.argsort(order)
    return [torch.cat(part).index_select(0, back) for part in parts]


def affine_tile(step: _Spatial, tc: torch.Tensor, tr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv or average-pooling layer on unpadded tiles in (center, radius) form."""
    m = step.layer
    if isinstance(m, nn.Conv2d):
        return (F.conv2d(tc, m.weight, m.bias, m.stride, 0, m.dilation, m.groups),
                F.conv2d(tr, m.weight.abs(), None, m.stride, 0, m.dilation, m.groups))
    return F.avg_pool2d(tc, step.kernel, step.stride, 0), F.avg_pool2d(tr, step.kernel, step.stride, 0)


def paste_tiles(step: _Spatial, tiles: Tiles, img: torch.Tensor, windows: list[torch.Tensor],
                over_clean: list[bool], row: torch.Tensor, col: torch.Tensor, stacked: bool = True
                ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each (B, C, sh, sw) window of ``windows`` pasted into the layer's input tile of its box: over the clean
    tile where ``over_clean`` says so, else over zeros (a radius). Returns the (B, C, Th, Tw) tiles (channels
    last in memory), stacked along the batch (``stacked``) or as a list, and the output window's position
    (out_top, out_left)."""
    dev = img.device
    b, c, sh, sw = windows[0].shape
    out_top, out_left = step.start[0][row], step.start[1][col]
    th, tw = tiles.size
    # window cell (a, b) is tile cell (off_r + a, off_c + b); cells that fall outside the tile (no output
    # of this window reads them) go to a spare last row of the buffer
    off_r, off_c = step.offset[0][row], step.offset[1][col]
    tr_ = off_r[:, None] + torch.arange(sh, device=dev)  # (B, sh) tile rows
    tc_ = off_c[:, None] + torch.arange(sw, device=dev)  # (B, sw) tile cols
    inside = ((tr_ >= 0) & (tr_ < th))[:, :, None] & ((tc_ >= 0) & (tc_ < tw))[:, None, :]  # (B, sh, sw)
    ri = tr_.clamp(0, th - 1)[:, :, None].expand(b, sh, sw)
    ci = tc_.clamp(0, tw - 1)[:, None, :].expand(b, sh, sw)
    k = len(windows)
    box = torch.arange(b, device=dev)[:, None, None]
    if torch.is_grad_enabled() and (tiles.padded.requires_grad or any(w.requires_grad for w in windows)):
        # certified training: out of place, since in-place writes into views make autograd copy the buffer
        clean = tiles.pick(img, out_top, out_left)
        spare = clean.new_zeros(1, th, tw, c)
        buf = torch.cat([clean if under else torch.zeros_like(clean) for under in over_clean] + [spare])
        bi = torch.cat([torch.where(inside, box + i * b, k * b) for i in range(k)])
        buf = buf.index_put((bi, ri.repeat(k, 1, 1), ci.repeat(k, 1, 1)),
                            torch.cat([w.permute(0, 2, 3, 1) for w in windows]))
        out = buf[:k * b].permute(0, 3, 1, 2)
        return (out, out_top, out_left) if stacked else (list(out.split(b)), out_top, out_left)
    buf = torch.empty(k * b + 1, th, tw, c, device=dev, dtype=windows[0].dtype)
    first_clean = None
    for i, (window, clean_under) in enumerate(zip(windows, over_clean)):
        part = buf[i * b:(i + 1) * b]
        if clean_under and first_clean is None:  # read the clean tiles straight into the buffer
            tiles.pick(img, out_top, out_left, out=part)
            first_clean = i
        elif clean_under:  # (pasting happens after every part is filled, see below)
            part.copy_(buf[first_clean * b:(first_clean + 1) * b])
        else:
            part.zero_()
    for i, window in enumerate(windows):
        bi = torch.where(inside, box + i * b, k * b)
        buf.index_put_((bi, ri, ci), window.permute(0, 2, 3, 1))
    out = buf[:k * b].permute(0, 3, 1, 2)
    return (out, out_top, out_left) if stacked else (list(out.split(b)), out_top, out_left)


def _max_pool(t: torch.Tensor, step: _Spatial) -> torch.Tensor:
    """Max pooling of an unpadded tile. Small non-overlapping windows as an elementwise maximum of
    strided views: the same values, several times faster on CPU than ``max_pool2d`` (which computes
    indices there) or ``amax`` over the window axes. With gradients (certified training) ``max_pool2d``,
    whose backward is one scatter, where the maxima's is a comparison and a fill per view."""
    (kh, kw), (sh, sw) = step.kernel, step.stride
    h, w = t.shape[2:]
    if t.requires_grad:
        return F.max_pool2d(t, step.kernel, step.stride, 0, step.dilation)
    if (kh, kw) == (sh, sw) and step.dilation == (1, 1) and h % kh == 0 and w % kw == 0 and kh * kw <= 9:
        out = t[:, :, 0::kh, 0::kw]
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    out = torch.maximum(out, t[:, :, i::kh, j::kw])
        return out
    return F.max_pool2d(t, step.kernel, step.stride, 0, step.dilation)


def _rows(table: torch.Tensor, index: torch.Tensor, lead: int) -> torch.Tensor:
    """``table`` with its first ``lead`` axes flattened, rows ``index`` picked: ``index_select`` is several
    times faster on CPU than advanced indexing with one index tensor per axis."""
    rest = table.shape[lead:]
    return table.reshape(-1, *rest).index_select(0, index)
