"""Brute-force side of the joint-channel (colour) one-pixel attack: colour boxes, and the model on colours.

In the threat model of Su et al. (2019) and of torchattacks' ``OnePixel``, a "pixel" is a location whose
C channels all change together. A candidate is one colour on the level grid at one location, ``levels^C
- 1`` per location (the clean colour is not a candidate). The search (:mod:`.joint`) works on
:class:`ColourBoxes`, products of one level range per channel at one location; the colours of a small
box go through :func:`predict_colours`, so the real fp32 model decides everything the bounds
(:mod:`.joint_bounds`) do not settle.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass
class ColourBoxes:
    """B boxes, each at one location of one image: every colour with ``lo[:, c] <= level_c <= hi[:, c]``."""

    img: torch.Tensor  # (B,) image in the group
    row: torch.Tensor  # (B,)
    col: torch.Tensor  # (B,)
    lo: torch.Tensor   # (B, C) lowest level per channel, int64
    hi: torch.Tensor   # (B, C) highest level per channel, inclusive

    def __len__(self) -> int:
        return len(self.img)

    def take(self, sel: torch.Tensor | slice) -> "ColourBoxes":
        """The boxes picked by a bool mask, an index tensor or a slice."""
        return ColourBoxes(*(getattr(self, f.name)[sel] for f in fields(self)))

    @staticmethod
    def cat(parts: list["ColourBoxes"]) -> "ColourBoxes":
        return ColourBoxes(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(ColourBoxes)))

    def sizes(self) -> torch.Tensor:
        """(B,) colours per box (int64: up to 65536^3)."""
        return (self.hi - self.lo + 1).prod(1)

    def own_colour(self, own: torch.Tensor) -> torch.Tensor:
        """(B, C) the clean colour at each box's location; ``own`` is the (n, C, H, W) level table."""
        return own[self.img, :, self.row, self.col]

    def contains(self, colour: torch.Tensor) -> torch.Tensor:
        """(B,) whether each box holds the (B, C) colour."""
        return ((colour >= self.lo) & (colour <= self.hi)).all(1)

    def candidates(self, own: torch.Tensor) -> torch.Tensor:
        """(B,) candidate colours per box: its size, less the clean colour when the box holds it."""
        return self.sizes() - self.contains(self.own_colour(own)).long()

    def bisect(self) -> "ColourBoxes":
        """Halve every box along its widest channel (the first on ties): 2B boxes, left halves first."""
        span = self.hi - self.lo
        ch = span.argmax(1)
        rows = torch.arange(len(self), device=self.lo.device)
        mid = (self.lo[rows, ch] + self.hi[rows, ch]) // 2
        left_hi = self.hi.clone()
        left_hi[rows, ch] = mid
        right_lo = self.lo.clone()
        right_lo[rows, ch] = mid + 1
        return ColourBoxes(self.img.repeat(2), self.row.repeat(2), self.col.repeat(2),
                           torch.cat([self.lo, right_lo]), torch.cat([left_hi, self.hi]))


def whole_cubes(active: torch.Tensor, channels: int, height: int, width: int, levels: int) -> ColourBoxes:
    """One box per (active image, row, col) spanning the whole colour cube."""
    img = torch.nonzero(active).flatten()
    pos = torch.arange(height * width, device=active.device)
    img_r = img.repeat_interleave(len(pos))
    pos_r = pos.repeat(len(img))
    lo = torch.zeros(len(img_r), channels, dtype=torch.long, device=active.device)
    return ColourBoxes(img_r, pos_r // width, pos_r % width, lo, lo + (levels - 1))


def expand_colours(boxes: ColourBoxes, own: torch.Tensor) -> tuple[ColourBoxes, torch.Tensor]:
    """Every candidate colour in ``boxes``: one-colour boxes (lo == hi) with the index of its source box.

    Colours are listed box by box, each box in mixed-radix order with the last channel fastest; the clean
    colour of each location is left out.
    """
    span = boxes.hi - boxes.lo + 1  # (B, C)
    size = span.prod(1)
    src = torch.repeat_interleave(torch.arange(len(boxes), device=span.device), size)
    starts = torch.cumsum(size, 0) - size
    offset = torch.arange(int(size.sum()), device=span.device) - starts[src]  # (M,) rank inside its box
    # stride of channel c: product of the spans after it
    stride = torch.flip(torch.cumprod(torch.flip(span, [1]), 1), [1]) // span  # (B, C)
    colour = boxes.lo[src] + (offset[:, None] // stride[src]) % span[src]  # (M, C)
    single = ColourBoxes(boxes.img[src], boxes.row[src], boxes.col[src], colour, colour)
    keep = ~(colour == single.own_colour(own)).all(1)
    return single.take(keep), src[keep]


def apply_colours(images: torch.Tensor, colours: ColourBoxes, values: torch.Tensor) -> torch.Tensor:
    """(M, C, H, W) copies of ``images[colours.img]`` with each location set to its colour (``lo``)."""
    x = images[colours.img]  # advanced indexing already copies
    x[torch.arange(len(x), device=x.device), :, colours.row, colours.col] = values[colours.lo]
    return x


@torch.no_grad()
def predict_colours(model: nn.Module, images: torch.Tensor, colours: ColourBoxes, values: torch.Tensor,
                    batch_size: int) -> torch.Tensor:
    """(M,) the fp32 model's predicted class for every one-colour box, in chunks of ``batch_size``."""
    preds = torch.empty(len(colours), dtype=torch.long, device=images.device)
    for start in range(0, len(colours), batch_size):
        part = colours.take(slice(start, start + batch_size))
        preds[start:start + batch_size] = model(apply_colours(images, part, values)).argmax(1)
    return preds
