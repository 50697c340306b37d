"""Certified one-pixel training: the exact search's own bounds, with gradients, as a training loss.

The exact search prunes a box (one pixel anywhere in a level range, the rest clean) when the interval
bound of :mod:`.bounds` proves that the label's logit beats every other one over the whole box. Train
against that very bound and the boxes that decide whether an image is vulnerable start to certify:
flips disappear, and the search gets faster because fewer boxes need bisecting or the model.

Per image we bound a few whole-range boxes (the pixel anywhere in [0, 1]) and take cross-entropy on
the worst-case logits: ``-LB(z_y - z_j)`` for every class j, 0 for y (IBP training, Gowal et al. 2018;
the margin form of CROWN-IBP, Zhang et al. 2020). The loss is low only when every bound is positive,
i.e. when the exact search would certify the box at once. Boxes go through :func:`.bounds.pixel_boxes`,
windowed by :mod:`.local` where the model allows, so the cost per box is a small fraction of a forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .bounds import BoundPlan, build_plan, margin_lower, pixel_boxes


class PixelBound:
    """The differentiable one-pixel bound of one model for images of one shape."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], device: torch.device,
                 locality: bool = True) -> None:
        plan, why = build_plan(model, input_shape, device, locality)
        if plan is None:
            raise ValueError(f"the one-pixel bounds do not support this model, so certified training "
                             f"cannot use it: {why}")
        self.plan: BoundPlan = plan

    def worst_logits(self, x: torch.Tensor, y: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Worst-case logits over the boxes "pixel anywhere in [0, 1], all else as in x": (N * k, K).

        ``x`` (N, C, H, W), ``y`` (N,), ``pixels`` (N, k) flat indices into C * H * W. Row ``i * k + j``
        belongs to image i; its column y is 0 and column c is ``-LB(z_y - z_c)``, so
        ``cross_entropy(worst_logits, y.repeat_interleave(k))`` is small only when every box certifies.
        """
        n, c, h, w = x.shape
        k = pixels.shape[1]
        img = torch.arange(n, device=x.device).repeat_interleave(k)
        flat = pixels.reshape(-1)
        ch, row, col = flat // (h * w), (flat // w) % h, flat % w
        mid = torch.full((n * k,), 0.5, device=x.device)
        half = torch.full((n * k,), 0.5 * (1 + 1e-6) + 1e-7, device=x.device)
        acts = self.plan.prepare(x)
        cb, rb = pixel_boxes(self.plan, x, acts, img, ch, row, col, mid, half)
        ref = y[img]
        lower = margin_lower(self.plan, cb, rb, ref, targeted=False)  # (N * k, K), +inf at ref
        return -lower.masked_fill(F.one_hot(ref, lower.shape[1]).bool(), 0.0)

    def loss(self, x: torch.Tensor, y: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the worst-case logits over every box (see :meth:`worst_logits`)."""
        k = pixels.shape[1]
        return F.cross_entropy(self.worst_logits(x, y, pixels), y.repeat_interleave(k))


def gain_pixels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, top: int, random: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image, the ``top`` pixels whose move to 0 or 1 raises the loss most to first order, plus
    ``random`` others drawn uniformly: (N, min(top, C * H * W) + random) flat indices (they may repeat).

    The first-order gain finds the pixels that matter for this image; the random ones keep the rest of
    the image from being ignored by training.
    """
    n = len(x)
    d = x[0].numel()
    parts = []
    if top:
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        gain = torch.maximum(grad * (1 - x), -grad * x).flatten(1)
        parts.append(gain.topk(min(top, d), dim=1).indices)
    if random:
        parts.append(torch.randint(0, d, (n, random), device=x.device, generator=generator))
    return torch.cat(parts, 1)
