"""Brute-force side of the one-pixel attack: the level grid, and batched model evaluation of candidates.

A candidate is one (image, channel, row, col, level) change. Whatever the bounds say, every candidate
that is not certified goes through :func:`predict_candidates`, so the real fp32 model always decides.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..data import on_grid
from ..errors import InputError


class LevelRanges(Protocol):
    """What :func:`expand_levels` reads of a set of boxes (:class:`.exact.Boxes` is one): (B,) tensors."""

    img: torch.Tensor
    ch: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def size(self) -> torch.Tensor: ...


def level_values(levels: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The pixel value of each level, ``k / (levels - 1)`` in fp32 (the same rounding as ``uint8 / 255.0``)."""
    return torch.arange(levels, dtype=torch.float32, device=device) / float(levels - 1)


def quantize(images: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Round images in [0, 1] to the nearest of ``levels`` grid values (:func:`advgen.data.on_grid`)."""
    return on_grid(images, levels)


def own_levels(images: torch.Tensor, levels: int) -> torch.Tensor:
    """The level of every pixel, (N, C, H, W) int64; images off the level grid are refused.

    The exact attack enumerates the *other* ``levels - 1`` values of each pixel, which is only well
    defined when each pixel sits on one of the levels.
    """
    own = torch.round(images * (levels - 1)).long()
    grid = level_values(levels, images.device)[own.clamp(0, levels - 1)]
    if bool((grid - images).abs().max() > 1e-6):
        raise InputError(f"images are not quantised to {levels} levels; round them first "
                         f"(advgen.onepixel.quantize) or pass the levels they were made with")
    return own


def expand_levels(boxes: LevelRanges, own: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every candidate inside level intervals ``[lo, hi]`` except each pixel's own level.

    ``boxes`` is a :class:`.exact.Boxes`; ``own`` is the (n, C, H, W) level table. Returns 1-D tensors
    ``img, ch, row, col, level`` and ``box`` (the index of the box each candidate comes from).
    """
    size = boxes.size()
    rep = {k: torch.repeat_interleave(getattr(boxes, k), size) for k in ("img", "ch", "row", "col", "lo")}
    rep["box"] = torch.repeat_interleave(torch.arange(len(size), device=size.device), size)
    starts = torch.cumsum(size, 0) - size
    offset = torch.arange(int(size.sum()), device=size.device) - torch.repeat_interleave(starts, size)
    level = rep.pop("lo") + offset
    keep = level != own[rep["img"], rep["ch"], rep["row"], rep["col"]]
    out = {k: v[keep] for k, v in rep.items()}
    out["level"] = level[keep]
    return out


def apply_candidates(images: torch.Tensor, cand: dict[str, torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """Copies of ``images[cand['img']]`` with the one pixel of each candidate set to its level's value."""
    x = images[cand["img"]]  # advanced indexing already copies
    x[torch.arange(len(x), device=x.device), cand["ch"], cand["row"], cand["col"]] = values[cand["level"]]
    return x


@torch.no_grad()
def predict_candidates(model: nn.Module, images: torch.Tensor, cand: dict[str, torch.Tensor], levels: int,
                       batch_size: int) -> torch.Tensor:
    """The fp32 model's predicted class for every candidate, evaluated in chunks of ``batch_size``."""
    values = level_values(levels, images.device)
    n = len(cand["img"])
    preds = torch.empty(n, dtype=torch.long, device=images.device)
    for start in range(0, n, batch_size):
        part = {k: v[start:start + batch_size] for k, v in cand.items()}
        preds[start:start + batch_size] = model(apply_candidates(images, part, values)).argmax(1)
    return preds


def flips_mask(preds: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Which predictions count as a successful attack: any other class, or exactly the target."""
    return preds != labels if targets is None else preds == targets
