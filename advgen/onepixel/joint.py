"""The exact joint-channel one-pixel attack: branch and bound over colour boxes, the model on small ones.

Per-channel search (:mod:`.exact`) changes one value of one pixel. Su et al. (2019), torchattacks and
ART change a location's whole colour ``(r, g, b)`` at once; on colour data that is a stronger threat, and a
per-channel certificate does not cover it. Here each (image, row, col) starts as the whole colour cube,
``levels^C`` colours (16.7M for 8-bit RGB), far too many to enumerate. A box the bounds
(:mod:`.joint_bounds`) prove *safe* is pruned; one they prove *all-flip* is counted without
enumeration and kept as one row; a *mixed* box is halved along its widest channel. A box at most
``leaf_size`` colours goes to the real fp32 model colour by colour. So the answer
is exact (up to fp32 ties the bounds' safety margin covers): the exact number of succeeding colours per
location, and all of them, as whole boxes plus single colours.

Work is a stack of box batches (depth first), so memory stays bounded and mode ``first`` meets a flip
early. With C = 1 this is the same threat model as the per-channel search, and gives the same answer.
:func:`.exact.attack` validates the inputs and hands each group of images here (``joint_channels=True``);
this module imports nothing from it, so data flows one way.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..errors import InputError
from .bounds import BoundPlan, logit_scale
from .clock import Clock, past
from .dense import flips_mask, level_values, own_levels
from .joint_bounds import ColourBounds
from .joint_dense import ColourBoxes, expand_colours, predict_colours, whole_cubes
from .result import OnePixelResult, outcome


@torch.no_grad()
def attack_group(model: nn.Module, plan: BoundPlan | None, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
                 levels: int, mode: str, batch_size: int, leaf_size: int, indices: list[int],
                 stats: dict | None = None, *, tol_relative: float,
                 deadline: float | None = None) -> list[OnePixelResult]:
    """:func:`.exact.attack` with ``joint_channels=True`` hands each group of images (validated, on the
    device, the model in eval mode) to this function; each image's outcome does not depend on its
    group-mates. A candidate is a colour at one location; ``plan`` is None for the dense search.

    Results have ``joint_channels = C`` and ``flips`` rows ``(row, col, lo_0..lo_{C-1},
    hi_0..hi_{C-1}, new_class)``: every colour of the box succeeds (``new_class`` -1 when the box is not
    proven to be one class); a single colour has lo == hi. ``flip_count`` is the exact number of
    succeeding colours. ``leaf_size``: boxes of at most this many colours go to the model (a box costs
    about two forward passes to bound, a colour one to evaluate); ``batch_size``: boxes bounded, and
    colours evaluated, per pass. A bound must clear ``tol_relative`` of the logit scale to decide.
    ``deadline`` (a :func:`time.perf_counter` time): stop there; an image with boxes left and no flip is a
    ``timeout`` (see :func:`.exact.attack`'s ``time_limit``).
    """
    start = time.perf_counter()
    dev = x.device
    n, c, h, w = x.shape
    if levels ** c * h * w >= 2 ** 62:
        raise InputError(f"{levels}^{c} colours per location is too many to count in int64")
    first = mode == "first"
    colour_bounds = ColourBounds(plan) if plan is not None else None
    own = own_levels(x, levels)
    values = level_values(levels, dev)
    logits = model(x)
    clean = logits.argmax(1)
    active = clean == y
    tol = tol_relative * logit_scale(plan, x, logits)
    ref = y if t is None else t

    evaluated = torch.zeros(n, dtype=torch.long, device=dev)
    pruned = torch.zeros(n, dtype=torch.long, device=dev)
    found: list[torch.Tensor] = []  # rows (img, row, col, lo..., hi..., new_class)
    done = ~active  # images that need no more work (mode first)
    unfinished = torch.zeros(n, dtype=torch.bool, device=dev)  # work left when the deadline passed
    stack = [whole_cubes(active, c, h, w, levels)]
    while stack:
        if past(deadline):
            for pending in stack:
                unfinished[pending.img] = True
            break
        boxes = stack.pop()
        if len(boxes) > batch_size:
            stack.append(boxes.take(slice(batch_size, None)))
            boxes = boxes.take(slice(0, batch_size))
        if first:
            boxes = boxes.take(~done[boxes.img])
        if not len(boxes):
            continue
        clock = Clock(stats, dev)
        leaf = boxes.sizes() <= (leaf_size if colour_bounds is not None else max(leaf_size, batch_size))
        if bool(leaf.any()):
            rows, ev = _evaluate(model, x, boxes.take(leaf), own, values, y, t, done, first, batch_size, deadline,
                                 unfinished)
            evaluated += ev
            found.append(rows)
            clock.add("dense_seconds", candidates=int(ev.sum()))
        rest = boxes.take(~leaf)
        if first:
            rest = rest.take(~done[rest.img])
        if not len(rest):
            continue
        if colour_bounds is None:  # dense: no bounds, halve until the boxes are small enough to enumerate
            stack.append(rest.bisect())
            continue
        v = colour_bounds.verdict(x, rest, values, ref[rest.img], t is not None, tol[rest.img])
        settled = v.safe | v.all_flip
        count = rest.candidates(own)
        pruned += torch.bincount(rest.img[settled], weights=count[settled].double(), minlength=n).long()
        if bool(v.all_flip.any()):
            flip = rest.take(v.all_flip)
            rows = torch.cat([flip.img[:, None], flip.row[:, None], flip.col[:, None], flip.lo, flip.hi,
                              v.cls[v.all_flip][:, None]], 1)
            if first:
                rows = _first_per_image(rows)
                done[rows[:, 0]] = True
            found.append(rows)
        clock.add("bound_seconds", boxes=len(rest), passes=1)
        mixed = rest.take(~settled)
        if len(mixed):
            stack.append(mixed.bisect())

    flips = torch.cat(found) if found else torch.zeros(0, 4 + 2 * c, dtype=torch.long, device=dev)
    flips = _sorted(flips).cpu()
    seconds = (time.perf_counter() - start) / n
    per_image = (levels ** c - 1) * h * w
    ev, pr, cl, yy = evaluated.tolist(), pruned.tolist(), clean.tolist(), y.tolist()
    tt = t.tolist() if t is not None else [None] * n
    left = unfinished.tolist()
    out = []
    for i in range(n):
        mine = flips[flips[:, 0] == i, 1:]
        status, exhaustive = outcome(cl[i] == yy[i], len(mine) > 0, left[i], not first)
        out.append(OnePixelResult(indices[i], yy[i], cl[i], tt[i], status, mine.clone(), per_image, ev[i], pr[i],
                                  seconds, exhaustive=exhaustive, joint_channels=c))
    return out


def _evaluate(model: nn.Module, x: torch.Tensor, leaves: ColourBoxes, own: torch.Tensor, values: torch.Tensor,
              y: torch.Tensor, t: torch.Tensor | None, done: torch.Tensor, first: bool,
              batch_size: int, deadline: float | None = None,
              unfinished: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every colour of the leaf boxes through the model: flip rows (img, row, col, colour, colour, class)
    and colours evaluated per image. Mode ``first`` stops an image at its first flipping chunk; a
    ``deadline`` stops the whole evaluation there, marking the images of the colours left ``unfinished``."""
    colours, _ = expand_colours(leaves, own)
    rows, evaluated = [], torch.zeros(len(x), dtype=torch.long, device=x.device)
    step = batch_size if first or deadline is not None else max(len(colours), 1)
    for s in range(0, len(colours), step):
        if past(deadline):
            unfinished[colours.img[s:]] = True
            break
        part = colours.take(slice(s, s + step))
        if first:
            part = part.take(~done[part.img])
        if not len(part):
            continue
        preds = predict_colours(model, x, part, values, batch_size)
        hit = flips_mask(preds, y[part.img], None if t is None else t[part.img])
        evaluated += torch.bincount(part.img, minlength=len(x))
        got = torch.cat([part.img[:, None], part.row[:, None], part.col[:, None], part.lo, part.hi,
                         preds[:, None]], 1)[hit]
        if first and len(got):
            got = _first_per_image(got)
            done[got[:, 0]] = True
        rows.append(got)
    width = 4 + 2 * x.shape[1]
    return (torch.cat(rows) if rows else torch.zeros(0, width, dtype=torch.long, device=x.device)), evaluated


def _sorted(rows: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order of all their columns (stable sorts from the last column to the first)."""
    order = torch.arange(len(rows), device=rows.device)
    for k in reversed(range(rows.shape[1])):
        order = order[torch.sort(rows[order, k], stable=True).indices]
    return rows[order]


def _first_per_image(rows: torch.Tensor) -> torch.Tensor:
    """Of the flips found in one pass, keep each image's first in (row, col, colour) order."""
    rows = _sorted(rows)
    first = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
    first[1:] = rows[1:, 0] != rows[:-1, 0]
    return rows[first]
