"""Sound interval bounds along ONE varying pixel, through any traced model with a rule for every node.

Interval bound propagation (IBP) in center/radius form: a box is the clean image with one pixel ranging
over ``[lo, hi]``. The model is traced by :mod:`.graph` and each node's rule comes from :mod:`.rules`:
affine nodes map the center exactly and the radius through ``|W|``, monotone ones map the end points.
Because a single input dimension varies, the first affine layer is exact and later ones stay tight. The
final ``nn.Linear`` is folded into margins ``(W_a - W_b) h + (b_a - b_b)`` so the bound is on the logit
difference that decides the argmax, not on two loose logits. The chain of spatial layers right after the
input is bounded on receptive-field windows (:mod:`.local`) when the plan is built for an input shape.

Bounds are computed in fp32; callers certify only with a safety margin and send everything else to the
real model. Every function here is differentiable in the model's weights: the exact search calls them
under ``torch.no_grad()``, certified training (:mod:`.certified`) calls them with gradients on, so
the bound a model is trained against is the very bound that later certifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..runtime import evaluating
from .graph import Traced, trace_steps
from .local import LocalBounds
from .rules import BatchDimError, Box

PROBE_TOLERANCE = 1e-4  # the plan's clean pass must reproduce the model's logits this closely (relative)


@dataclass
class BoundPlan:
    """A traced model's bound steps up to the head's input, the final Linear kept apart for margin
    folding, and (when built for an input shape) the windowed bounds of its spatial prefix."""

    graph: Traced
    head: nn.Linear | None
    local: LocalBounds | None = None
    abs_diff: torch.Tensor | None = None  # (K, K, F): |W_a - W_b|, built lazily on the head's device

    def head_abs_diff(self) -> torch.Tensor:
        """``|W_a - W_b|``; cached for the exact search, rebuilt (and differentiable) while training."""
        w = self.head.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return (w[:, None, :] - w[None, :, :]).abs()
        if self.abs_diff is None:
            w = w.detach()
            self.abs_diff = (w[:, None, :] - w[None, :, :]).abs()
        return self.abs_diff

    def prepare(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """What :func:`pixel_boxes` needs per group of images ``x``: the windowed prefix's clean tiles."""
        return self.local.prepare(x) if self.local is not None else None

    def body(self, center: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A box on the head's input from a box on the model's input (full feature maps)."""
        out = self.graph.run(Box(center, radius))
        return out.center, out.radius


def build_plan(model: nn.Module, input_shape: tuple[int, int, int] | None = None,
               device: torch.device | str = "cpu", locality: bool = True) -> tuple[BoundPlan | None, str | None]:
    """A :class:`BoundPlan` for ``model`` and None, or None and the reason (naming the node without a rule).

    With ``input_shape`` (C, H, W) the plan is checked once on a random probe (its clean pass must give
    the model's logits, row by row) and, with ``locality``, gets its windowed prefix (:mod:`.local`).

    The plan reads the model's own parameter and buffer tensors, so it follows changes made to them in
    place (an optimizer step, batch norm statistics, ``load_state_dict``), which is what certified training
    needs. It holds the tensors and layers it was traced with, so after replacing one (``model.mean = ...``,
    ``model.fc = nn.Linear(...)``) or moving the model (``model.to("cuda")``), build a new plan.
    """
    traced = trace_steps(model)
    if isinstance(traced, str):
        return None, traced
    plan = BoundPlan(traced, traced.head)
    if input_shape is None:
        return plan, None
    dev = torch.device(device)
    if locality:
        chain = traced.prefix()
        if chain:
            try:
                local = LocalBounds(chain, tuple(input_shape), dev)
                plan.local = local if local.useful else None
            except Exception:  # noqa: BLE001 - the windowed prefix only saves work; the full maps remain
                plan.local = None
    why = _probe(model, plan, tuple(input_shape), dev)
    if why is not None and plan.local is not None:  # windows this geometry breaks: bound the full maps instead
        plan.local = None
        why = _probe(model, plan, tuple(input_shape), dev)
    return (plan, None) if why is None else (None, why)


def compile_plan(model: nn.Module, input_shape: tuple[int, int, int] | None = None,
                 device: torch.device | str = "cpu", locality: bool = True) -> BoundPlan | None:
    """A :class:`BoundPlan` for ``model``, or None when some node has no rule (use dense search)."""
    return build_plan(model, input_shape, device, locality)[0]


@torch.no_grad()
def _probe(model: nn.Module, plan: BoundPlan, shape: tuple[int, int, int], dev: torch.device) -> str | None:
    """None when the plan's clean pass (zero radius) reproduces the model, each row on its own; else why not."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, *shape, generator=gen).to(dev)
    try:
        with evaluating(model):  # the bounds use eval statistics; a model in train mode is not touched
            want = model(x)
        got = [_logits(plan, plan.body(x, torch.zeros_like(x))[0]), _logits(plan, plan.body(x[:1], torch.zeros_like(x[:1]))[0])]
        if plan.local is not None:
            zero = torch.zeros(2, dtype=torch.long, device=dev)
            rows = torch.arange(2, device=dev)
            c, _ = pixel_boxes(plan, x, plan.prepare(x), rows, zero, zero, zero, x[:, 0, 0, 0], torch.zeros(2, device=dev))
            got.append(_logits(plan, c))
    except BatchDimError as exc:  # a dim that resolves to the batch only against the tensor's ndim
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a plan that cannot run is no plan
        return f"the bound plan does not run on inputs of shape {shape} ({type(exc).__name__}: {str(exc)[:120]})"
    if plan.graph.final is not None:
        got = [plan.graph.final(g) for g in got]
    scale = PROBE_TOLERANCE * max(1.0, float(want.abs().max()))
    for g in got:
        if g.shape[1:] != want.shape[1:] or not torch.allclose(g, want[: len(g)], rtol=0, atol=scale):
            return "the bound plan's clean pass does not reproduce the model's logits (batch mixing or a missed op)"
    return None


def _logits(plan: BoundPlan, h: torch.Tensor) -> torch.Tensor:
    return plan.head(h) if plan.head is not None else h.flatten(1)


def logit_scale(plan: BoundPlan | None, x: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Per image (N,), the size of the logits the margins are bounded in, at least 1: what a safety margin
    is a share of. The model's ``outputs``, unless the plan peeled a final softmax: then its own logits
    (probabilities would make the margin a share of 1 where the logits are in the tens)."""
    if plan is not None and plan.graph.final is not None:
        outputs = _logits(plan, plan.body(x, torch.zeros_like(x))[0])
    return outputs.abs().amax(1).clamp_min(1.0)


def pixel_boxes(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, img: torch.Tensor,
                ch: torch.Tensor, row: torch.Tensor, col: torch.Tensor, mid: torch.Tensor,
                half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box (center, radius) on the head's input for one-pixel boxes: image ``img`` of ``x``
    (N, C, H, W) with pixel (ch, row, col) anywhere in ``mid +- half``, every other pixel clean.

    Windowed through ``plan.local`` when ``acts`` (its ``prepare(x)``) is given, else on full maps.
    """
    if acts is not None:
        c, r = plan.local.propagate(acts, img, ch, row, col, mid, half)
        k = len(plan.local.layers)
        out = plan.graph.run(Box(c, r), start=k, at=plan.graph.steps[k - 1].node)
        return out.center, out.radius
    rows = torch.arange(len(img), device=x.device)
    center = x[img].index_put((rows, ch, row, col), mid)
    radius = torch.zeros_like(center).index_put((rows, ch, row, col), half)
    return plan.body(center, radius)


def certificate(plan: BoundPlan, center: torch.Tensor, radius: torch.Tensor, ref: torch.Tensor,
                targeted: bool) -> torch.Tensor:
    """A lower bound that is > 0 only when no input in the box can succeed; one value per box.

    Untargeted (``ref`` = true label y): ``min_{j != y} LB(z_y - z_j)`` -- y stays the unique argmax.
    Targeted (``ref`` = target t): ``max_{j != t} LB(z_j - z_t)`` -- some class always beats t.
    """
    c, r = plan.body(center, radius)
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
        k = z.shape[1]
        # |W_ref - W_j| . r: every pair's slack by one matmul, then the ref row (cheaper on a CPU than
        # gathering a (K, F) block of |W_a - W_b| per box for a batched product: 5%, same values)
        slack = (r @ plan.head_abs_diff().reshape(k * k, -1).T).view(b, k, k)[rows, ref]  # (B, K)
        lower = diff_c - slack
    else:
        lo, hi = (c - r).flatten(1), (c + r).flatten(1)
        lower = lo[rows, ref][:, None] - hi if not targeted else lo - hi[rows, ref][:, None]
    fill = torch.inf if not targeted else -torch.inf
    return lower.index_put((rows, ref), torch.tensor(fill, dtype=lower.dtype, device=lower.device))


def dominant_class(plan: BoundPlan, c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box, the class whose logit provably beats every other over the whole box, if any: (B,) values
    ``min_{k != j} LB(z_j - z_k)`` for the best j and (B,) classes j. A value > 0 proves that every input
    in the box is classified as j -- the search lists such boxes as flips (or safe) without the model.
    """
    if plan.head is not None:
        z = plan.head(c)  # (B, K)
        k = z.shape[1]
        slack = (r @ plan.head_abs_diff().reshape(k * k, -1).T).view(-1, k, k)  # |W_j - W_l| . r
        lower = z[:, :, None] - z[:, None, :] - slack  # (B, K, K): LB(z_j - z_l)
    else:
        lo, hi = (c - r).flatten(1), (c + r).flatten(1)
        k = lo.shape[1]
        lower = lo[:, :, None] - hi[:, None, :]
    eye = torch.eye(k, dtype=torch.bool, device=lower.device)
    worst = lower.masked_fill(eye, torch.inf).min(2).values  # (B, K)
    return worst.max(1)
