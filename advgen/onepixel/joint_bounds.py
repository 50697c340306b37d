"""Sound interval bounds over a colour box: all C channels of one location vary together.

The box is the clean image with the C values of one location anywhere in ``[lo_c, hi_c]``. It goes
through the plan's body (:meth:`.bounds.BoundPlan.body`, IBP, center/radius) to the input of the plan's
head; the head is folded here into bounds on logit differences, in BOTH directions, from the one
propagated box:

- ``safe``: no colour in the box succeeds (the same test as :func:`.bounds.certificate`);
- ``all_flip``: every colour in the box succeeds, so the search counts the box without enumerating it.
  Untargeted, some single class j beats the label everywhere: ``LB(z_j - z_y) > tol``. Targeted, the
  target beats every class everywhere: ``LB(z_t - z_j) > tol`` for all j != t.

An all-flip box also gets a class when one class provably wins everywhere in it (always the target,
when targeted), else -1. Like the certificate, every decision needs the bound to clear ``tol`` (a share
of the logit scale) so that fp32 rounding cannot matter; boxes that clear neither test are bisected or
sent to the model. Bounds only: the search that uses them is :mod:`.joint`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bounds import BoundPlan
from .joint_dense import ColourBoxes


@dataclass
class Verdict:
    """What the bounds prove about each of B boxes."""

    safe: torch.Tensor      # (B,) bool: no colour in the box succeeds
    all_flip: torch.Tensor  # (B,) bool: every colour in the box succeeds
    cls: torch.Tensor       # (B,) int64: the class of every colour of an all-flip box, or -1 (mixed or unknown)


class ColourBounds:
    """Colour-box bounds for one compiled plan (:func:`.bounds.compile_plan`)."""

    def __init__(self, plan: BoundPlan) -> None:
        self.plan = plan
        self._abs_diff: torch.Tensor | None = None  # (K, K, F) |W_a - W_b| of the head

    def input_box(self, x: torch.Tensor, boxes: ColourBoxes, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) center and radius: image ``x[boxes.img]`` with each box's location ranging over it."""
        lo, hi = values[boxes.lo], values[boxes.hi]  # (B, C)
        rows = torch.arange(len(boxes), device=x.device)
        center = x[boxes.img]  # advanced indexing copies
        center[rows, :, boxes.row, boxes.col] = (lo + hi) / 2
        radius = torch.zeros_like(center)
        # widen by a hair so fp32 rounding of (hi - lo) / 2 never shrinks the box below [lo, hi]
        radius[rows, :, boxes.row, boxes.col] = (hi - lo) / 2 * (1 + 1e-6) + 1e-7
        return center, radius

    def differences(self, c: torch.Tensor, r: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From a box (c, r) on the head's input: lower bounds of ``z_ref - z_j`` and of ``z_j - z_ref``, (B, K)
        each. The ``ref`` column of both is 0 (callers mask it)."""
        rows = torch.arange(len(ref), device=ref.device)
        head = self.plan.head
        if head is None:  # the body ends in the logits: bound them directly
            lo, hi = (c - r).flatten(1), (c + r).flatten(1)
            ref_minus, minus_ref = lo[rows, ref][:, None] - hi, lo - hi[rows, ref][:, None]
        else:
            z = head(c)  # (B, K) logits of the center
            d = z[rows, ref][:, None] - z  # z_ref - z_j at the center
            slack = torch.bmm(self._head_abs_diff()[ref], r.unsqueeze(2)).squeeze(2)  # |W_ref - W_j| . r
            ref_minus, minus_ref = d - slack, -d - slack
        zero = torch.zeros((), dtype=c.dtype, device=c.device)
        return ref_minus.index_put((rows, ref), zero), minus_ref.index_put((rows, ref), zero)

    def verdict(self, x: torch.Tensor, boxes: ColourBoxes, values: torch.Tensor, ref: torch.Tensor,
                targeted: bool, tol: torch.Tensor) -> Verdict:
        """Safe / all-flip / class for each box; ``ref`` (B,) is the label (untargeted) or the target,
        ``tol`` (B,) the margin a bound must clear."""
        center, radius = self.input_box(x, boxes, values)
        c, r = self.plan.body(center, radius)
        ref_minus, minus_ref = self.differences(c, r, ref)
        rows = torch.arange(len(ref), device=ref.device)
        inf = torch.tensor(torch.inf, device=c.device)
        beats_ref = minus_ref.index_put((rows, ref), -inf).max(1)  # best lower bound of z_j - z_ref
        ref_beats = ref_minus.index_put((rows, ref), inf).min(1).values  # worst lower bound of z_ref - z_j
        if targeted:
            safe = beats_ref.values > tol     # some class always beats the target
            all_flip = ref_beats > tol        # the target always beats every class
            cls = torch.where(all_flip, ref, -1)
        else:
            safe = ref_beats > tol            # the label always wins
            all_flip = beats_ref.values > tol  # class j always beats the label
            cls = torch.full_like(ref, -1)
            if bool(all_flip.any()):  # does that class j also beat every other class everywhere?
                j = beats_ref.indices[all_flip]
                sub = torch.nonzero(all_flip).flatten()
                j_minus, _ = self.differences(c[sub], r[sub], j)
                wins = j_minus.index_put((torch.arange(len(j), device=j.device), j), inf).min(1).values > tol[sub]
                cls[sub[wins]] = j[wins]
        return Verdict(safe, all_flip & ~safe, cls)

    def _head_abs_diff(self) -> torch.Tensor:
        if self._abs_diff is None:
            w = self.plan.head.weight.detach()
            self._abs_diff = (w[:, None, :] - w[None, :, :]).abs()
        return self._abs_diff
