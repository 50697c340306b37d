"""Sound linear bounds along ONE varying pixel: tighter than intervals where the search needs it most.

Interval bounds (:mod:`.bounds`) forget that every neuron moves with the same scalar, the pixel's value.
Near a decision boundary that costs dearly: a box a few levels wide either side of the crossing is
neither certified nor proven, so the search bisects down to single levels and runs the model on dozens
of levels per crossing. Here the pixel is ``v(t) = mid + half * t`` with ``t`` in ``[-1, 1]`` and every
neuron ``z`` gets two LINEAR functions of ``t``, ``L(t) <= z(t) <= U(t)``, each stored as its values at
``t = -1`` and ``t = +1`` (a line is its two end values). That makes the rules short:

- affine layers map both ends exactly as interval arithmetic maps one box (center ``W m``, radius
  ``|W| d`` with ``m = (U + L) / 2``, ``d = (U - L) / 2``): ``L`` and ``U`` stay lines, ``d >= 0`` at both
  ends hence on all of ``[-1, 1]``;
- ReLU: ``relu(U(t))`` is convex in ``t``, so its chord, the line through ``relu(U(-1))`` and
  ``relu(U(+1))``, lies above it; below, the tangent at the middle, ``L`` itself when ``L(0) > 0``, else 0;
- max pooling: ``max_i U_i(t)`` is convex, so again its chord (``max_i`` at each end) lies above; below,
  the ``L_i`` of the largest ``L_i(0)``.

Only the final lines are concretised: the margin's lower line is smallest at one end, ``min(M(-1), M(+1))``.
Where no ReLU or pooling switches inside the box the bound is the exact margin, so small boxes next to
a crossing settle at once. The windows of :mod:`.local` are reused (two rows per box: one per end),
so a linear bound costs about two interval bounds; the exact search uses it where intervals fail.
Models with other activations or layers after the window chain get no linear bound (:func:`supported`);
the search then keeps to intervals. Computed in fp32 under the search's safety margin, like intervals.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .bounds import BoundPlan, margin_lower
from .local import IDENTITY, ConvMaps, LocalBounds, _Spatial, affine_tile, paste_tiles, propagate
from .local import _max_pool as _local_max_pool
from .rules import channelwise_affine

_AFFINE_REST = (nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, *IDENTITY)


def supported(plan: BoundPlan | None) -> bool:
    """Whether :func:`pixel_lines` bounds this plan: a window chain that is the whole body, made of
    convolutions, average/max pooling, per-channel affine maps (batch norm, normalisation), ReLU and identities, then flatten/linear/ReLU."""
    if plan is None or plan.local is None:
        return False
    local = plan.local
    if len(local.layers) != len(plan.graph.steps) or plan.graph.steps[-1].node != plan.graph.output:
        return False
    ok_step = all(isinstance(s, (_Spatial, nn.ReLU, *IDENTITY)) or channelwise_affine(s)
                  for s in local.steps)
    ok_rest = all(isinstance(m, (*_AFFINE_REST, nn.ReLU)) for m in local.rest)
    return ok_step and ok_rest


def _relu(lo: torch.Tensor, hi: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """End values (2B, ...) of the lines around ``relu``: the chord above, the middle tangent below."""
    keep = (lo[:b] + lo[b:]) > 0  # L(0) > 0: keep the line L, else the line 0
    return (lo.view(2, *keep.shape) * keep).view_as(lo), hi.clamp_min(0)


def _max_pool(lo: torch.Tensor, hi: torch.Tensor, b: int, step: _Spatial) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded tiles (2B, C, Th, Tw) of end values through max pooling: max per end above (the chord of a
    convex function), below the line of each window with the largest middle value ``L(0)``."""
    upper = _local_max_pool(hi, step)
    # (measured: one max_pool2d with indices on the middle values beats a walk over strided views 1.6x)
    _, idx = F.max_pool2d(lo[:b] + lo[b:], step.kernel, step.stride, 0, step.dilation, return_indices=True)
    lower = lo.flatten(2).gather(2, idx.flatten(2).repeat(2, 1, 1)).view_as(upper)
    return lower, upper


def pixel_lines(plan: BoundPlan, acts: list[torch.Tensor], img: torch.Tensor, ch: torch.Tensor,
                row: torch.Tensor, col: torch.Tensor, v_lo: torch.Tensor,
                v_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines bounding the head's input while pixel (img, ch, row, col) of the group goes from ``v_lo`` to
    ``v_hi`` (each (B,)): their end values as (center, radius) of the lines, each (2B, F), rows [:B] at the
    low end, rows [B:] at the high end. ``acts`` is ``plan.prepare(x)``; needs :func:`supported`."""
    local: LocalBounds = plan.local
    b = len(img)
    two = lambda t: torch.cat([t, t])  # noqa: E731 - one row per end of each box
    img2, ch2, row2, col2 = two(img), two(ch), two(row), two(col)
    rows2 = torch.arange(2 * b, device=img.device)
    wc = local.pixel_window(acts, img2, row2, col2)
    wc[rows2, ch2, 0, 0] = torch.cat([v_lo, v_hi])
    wr = torch.zeros_like(wc)  # at each end the input is one point: lines L = U
    top, left = row2, col2
    ends = False  # (wc, wr) as (center, radius) of the lines, or as end points (L, U) of them
    k = 0
    for step in local.steps:
        pool = isinstance(step, _Spatial) and isinstance(step.layer, nn.MaxPool2d)
        to_ends = pool or isinstance(step, nn.ReLU)
        if to_ends and not ends:
            wc, wr = wc - wr, wc + wr
        elif ends and not to_ends:
            wc, wr = (wr + wc) / 2, (wr - wc) / 2
        ends = to_ends
        if isinstance(step, _Spatial):
            if pool:
                both, top, left = paste_tiles(step, acts[k], img2, [wc, wr], [True, True], row2, col2)
                wc, wr = _max_pool(both[:2 * b], both[2 * b:], b, step)
            elif isinstance(acts[k], ConvMaps):
                wc, wr, top, left = local.conv_step(step, acts[k], img2, wc, wr, top, left, row2, col2)
            else:
                (tc, tr), top, left = paste_tiles(step, acts[k], img2, [wc, wr], [True, False], row2, col2,
                                                  stacked=False)
                wc, wr = affine_tile(step, tc, tr)
            k += 1
        elif isinstance(step, nn.ReLU):
            wc, wr = _relu(wc, wr, b)
        else:
            wc, wr = propagate([step], wc, wr)
    if ends:
        wc, wr = (wr + wc) / 2, (wr - wc) / 2
    c, r, rest = local.finish(acts, img2, wc, wr, top, left)
    for m in rest:
        if isinstance(m, nn.ReLU):
            lo, hi = _relu(c - r, c + r, b)
            c, r = (hi + lo) / 2, (hi - lo) / 2
        else:
            c, r = propagate([m], c, r)
    return c, r


def line_margin_lower(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor, ref: torch.Tensor,
                      targeted: bool) -> torch.Tensor:
    """:func:`.bounds.margin_lower` from the lines of :func:`pixel_lines`: per box and class, the smaller
    end of the margin's lower line, (B, K)."""
    b = len(ref)
    lower = margin_lower(plan, c, r, torch.cat([ref, ref]), targeted)  # (2B, K): the line at both ends
    return torch.minimum(lower[:b], lower[b:])


def line_margin(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor, ref: torch.Tensor, targeted: bool) -> torch.Tensor:
    """:func:`.bounds.margin_bound` from lines: > 0 only when no input in the box can succeed, (B,)."""
    lower = line_margin_lower(plan, c, r, ref, targeted)
    return lower.min(1).values if not targeted else lower.max(1).values


def line_dominant(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`.bounds.dominant_class` from lines: (B,) values ``min_{k != j} LB(z_j - z_k)`` of the best class
    j and (B,) classes j; a value > 0 proves every input in the box is classified as j."""
    b = len(c) // 2
    if plan.head is not None:
        z = plan.head(c)  # (2B, K)
        k = z.shape[1]
        slack = (r @ plan.head_abs_diff().reshape(k * k, -1).T).view(-1, k, k)
        lower = z[:, :, None] - z[:, None, :] - slack  # (2B, K, K) at both ends
    else:
        lo, hi = (c - r).flatten(1), (c + r).flatten(1)
        k = lo.shape[1]
        lower = lo[:, :, None] - hi[:, None, :]
    lower = torch.minimum(lower[:b], lower[b:])
    eye = torch.eye(k, dtype=torch.bool, device=lower.device)
    worst = lower.masked_fill(eye, torch.inf).min(2).values  # (B, K)
    return worst.max(1)
