"""Sound interval bounds along ONE varying pixel, through an ``nn.Sequential`` of supported layers.

Interval bound propagation (IBP) in center/radius form: a box is the clean image with one pixel ranging
over ``[lo, hi]``. Affine layers map the center exactly and the radius through ``|W|``; monotone layers
map the end points. Because a single input dimension varies, the first affine layer is exact and later
ones stay tight. The final ``nn.Linear`` is folded into margins ``(W_a - W_b) h + (b_a - b_b)`` so the
bound is on the logit difference that decides the argmax, not on two loose logits.

Bounds are computed in fp32; callers certify only with a safety margin and send everything else to the
real model. Every function here is differentiable in the model's weights: the exact search calls them
under ``torch.no_grad()``, certified training (:mod:`.certified`) calls them with gradients on, so
the bound a model is trained against is the very bound that later certifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardtanh, nn.Softplus,
            nn.Hardsigmoid)
IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)


@dataclass
class BoundPlan:
    """The layers of a supported model, flattened, with the final Linear kept apart for margin folding."""

    body: list[nn.Module]
    head: nn.Linear | None
    abs_diff: torch.Tensor | None = None  # (K, K, F): |W_a - W_b|, built lazily on the head's device
    local: object | None = None  # a LocalBounds for the spatial prefix, set by the attack when it applies

    def head_abs_diff(self) -> torch.Tensor:
        """``|W_a - W_b|``; cached for the exact search, rebuilt (and differentiable) while training."""
        w = self.head.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return (w[:, None, :] - w[None, :, :]).abs()
        if self.abs_diff is None:
            w = w.detach()
            self.abs_diff = (w[:, None, :] - w[None, :, :]).abs()
        return self.abs_diff


def _flatten(module: nn.Module) -> list[nn.Module] | None:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for child in module:
            part = _flatten(child)
            if part is None:
                return None
            out.extend(part)
        return out
    return [module] if _supported(module) else None


def _supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Conv2d):
        return m.padding_mode == "zeros" and isinstance(m.padding, tuple)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return m.track_running_stats and m.running_mean is not None
    if isinstance(m, (nn.MaxPool2d,)):
        return not m.return_indices
    return isinstance(m, (nn.Linear, nn.AvgPool2d, nn.Flatten, *MONOTONE, *IDENTITY))


def compile_plan(model: nn.Module) -> BoundPlan | None:
    """A :class:`BoundPlan` for ``model``, or None when some layer is not supported (use dense search)."""
    layers = _flatten(model)
    if not layers:
        return None
    if isinstance(layers[-1], nn.Linear):
        return BoundPlan(layers[:-1], layers[-1])
    return BoundPlan(layers, None)


def _affine_abs(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """The radius through an affine layer: the layer's linear part with absolute weights, no bias."""
    if isinstance(m, nn.Linear):
        return F.linear(r, m.weight.abs())
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.AvgPool2d):
        return m(r)
    # batch norm in eval mode: a per-channel scale
    scale = (m.weight if m.affine else torch.ones_like(m.running_var)) / torch.sqrt(m.running_var + m.eps)
    shape = (1, -1) + (1,) * (r.ndim - 2)
    return r * scale.abs().view(shape)


def propagate(layers: list[nn.Module], center: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Push a box (center, radius >= 0) through ``layers``; returns a box that contains every output."""
    c, r = center, radius
    for m in layers:
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)):
            c, r = m(c), _affine_abs(m, r)
        elif isinstance(m, (nn.MaxPool2d, *MONOTONE)):
            lo, hi = m(c - r), m(c + r)
            c, r = (hi + lo) / 2, (hi - lo) / 2
        elif isinstance(m, nn.Flatten):
            c, r = m(c), m(r)
        # identities (dropout in eval) leave the box unchanged
    return c, r


def pixel_boxes(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, img: torch.Tensor,
                ch: torch.Tensor, row: torch.Tensor, col: torch.Tensor, mid: torch.Tensor,
                half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box (center, radius) on the output of ``plan.body`` for one-pixel boxes: image ``img`` of ``x``
    (N, C, H, W) with pixel (ch, row, col) anywhere in ``mid +- half``, every other pixel clean.

    Windowed through ``plan.local`` when ``acts`` (its ``prepare(x)``) is given, else on full maps.
    """
    if acts is not None:
        return plan.local.propagate(acts, img, ch, row, col, mid, half)
    rows = torch.arange(len(img), device=x.device)
    center = x[img].index_put((rows, ch, row, col), mid)
    radius = torch.zeros_like(center).index_put((rows, ch, row, col), half)
    return propagate(plan.body, center, radius)


def certificate(plan: BoundPlan, center: torch.Tensor, radius: torch.Tensor, ref: torch.Tensor,
                targeted: bool) -> torch.Tensor:
    """A lower bound that is > 0 only when no input in the box can succeed; one value per box.

    Untargeted (``ref`` = true label y): ``min_{j != y} LB(z_y - z_j)`` -- y stays the unique argmax.
    Targeted (``ref`` = target t): ``max_{j != t} LB(z_j - z_t)`` -- some class always beats t.
    """
    c, r = propagate(plan.body, center, radius)
    return margin_bound(plan, c, r, ref, targeted)


def margin_bound(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor, ref: torch.Tensor,
                 targeted: bool) -> torch.Tensor:
    """:func:`certificate` from a box on the input of the head (the output of ``plan.body``)."""
    lower = margin_lower(plan, c, r, ref, targeted)
    return lower.min(1).values if not targeted else lower.max(1).values


def margin_lower(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor, ref: torch.Tensor,
                 targeted: bool) -> torch.Tensor:
    """Per class j, a lower bound of ``z_ref - z_j`` (untargeted) or ``z_j - z_ref`` (targeted): (B, K).

    The ``ref`` column is filled with +inf (untargeted) or -inf (targeted) so it never decides.
    """
    b = len(ref)
    rows = torch.arange(b, device=ref.device)
    if plan.head is not None:
        z = plan.head(c)  # (B, K) logits of the center
        zr = z[rows, ref][:, None]
        diff_c = zr - z if not targeted else z - zr  # (B, K)
        slack = torch.bmm(plan.head_abs_diff()[ref], r.unsqueeze(2)).squeeze(2)  # |W_ref - W_j| . r
        lower = diff_c - slack
    else:
        lo, hi = (c - r).flatten(1), (c + r).flatten(1)
        lower = lo[rows, ref][:, None] - hi if not targeted else lo - hi[rows, ref][:, None]
    fill = torch.inf if not targeted else -torch.inf
    return lower.index_put((rows, ref), torch.tensor(fill, dtype=lower.dtype, device=lower.device))
