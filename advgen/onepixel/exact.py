"""The exact one-pixel attack: branch and bound over level intervals, dense enumeration of the rest.

For every correctly classified image, each (channel, row, col) starts with the whole level range. A
range whose interval bound (:mod:`.bounds`) settles it is *pruned*: either no value in it can succeed,
or every value in it provably lands on one other class j (each is then listed as a flip to j, with no
model run: on images near a decision boundary most flips come in such ranges). A whole range takes
interval bounds first and the linear bounds of :mod:`.linear` (tighter, about three times the cost)
where those settle it neither way; a split range takes linear bounds at once. Otherwise the range is
bisected; single levels are bounded too (there the bound is the model's margin up to rounding), and what
stays open at ``leaf_size`` levels or fewer is *evaluated*: every candidate goes through the real fp32
model. Both kinds of proof hold with the same safety margin, so the answer is exact (up to fp32 ties the
margin covers): the image is certified, or every succeeding (channel, row, col, level) is listed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from enum import Enum
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from ..data import as_labels, validate_images, validate_targets
from ..errors import InputError
from ..models import RANDOM_MODEL, output_classes, random_in_eval
from ..runtime import cpu_threads, evaluating, resolve_device
from .bounds import BoundPlan, build_plan, dominant_class, logit_scale, margin_bound, pixel_boxes
from . import linear as linear_bounds
from .clock import Clock, deadline_after, past
from .dense import expand_levels, flips_mask, level_values, own_levels, predict_candidates
from .result import OnePixelResult, outcome

TOL_RELATIVE = 1e-4  # certify only when the margin bound exceeds this share of the logit scale
log = logging.getLogger("advgen")


@dataclass
class Boxes:
    """Level intervals of single pixels: box k is pixel (ch[k], row[k], col[k]) of image img[k] taking any
    level in [lo[k], hi[k]], everything else clean. All fields are (B,) int64 on the attack's device."""

    img: torch.Tensor
    ch: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, index: torch.Tensor | slice) -> "Boxes":
        """The boxes a mask, index tensor or slice selects."""
        return Boxes(*(getattr(self, f.name)[index] for f in fields(self)))

    def size(self) -> torch.Tensor:
        """Levels per box."""
        return self.hi - self.lo + 1

    def bisect(self) -> "Boxes":
        """Each box split into its lower and upper half (left halves first)."""
        mid = (self.lo + self.hi) // 2
        twice = lambda t: torch.cat([t, t])  # noqa: E731
        return Boxes(twice(self.img), twice(self.ch), twice(self.row), twice(self.col),
                     torch.cat([self.lo, mid + 1]), torch.cat([mid, self.hi]))


class Mode(str, Enum):
    FULL = "full"    # account for every candidate: a certificate or the complete list of flips
    FIRST = "first"  # stop at the first flip found per image (attack only)


def default_batch_size(device: torch.device) -> int:
    """Candidates (or boxes) per forward pass: large on a GPU to keep it busy, moderate on a CPU (one thread,
    default CNN: the model took 149 us per candidate in chunks of 512 against 178 in chunks of 1024, and
    bounds were no slower, 22 against 23 us per interval box)."""
    return 16384 if device.type == "cuda" else 512


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, levels: int = 256,
           targets: torch.Tensor | int | None = None, mode: str | Mode = "full", bounds: bool = True,
           batch_size: int | None = None, device: str | torch.device = "auto", leaf_size: int = 1,
           group_size: int | None = None, indices: Sequence[int] | None = None,
           callback: Callable[[OnePixelResult], None] | None = None,
           stats: dict | None = None, locality: bool = True, threads: int | None = 1,
           joint_channels: bool = False, linear: bool = True,
           time_limit: float | None = None) -> list[OnePixelResult]:
    """Exhaustive one-pixel attack on ``images`` (N, C, H, W) quantised to ``levels`` values in [0, 1].

    A candidate succeeds when ``model(x').argmax(1)`` differs from the label (or, with ``targets``,
    equals the target). ``bounds=False`` evaluates every candidate densely (same answer, slower);
    models that :mod:`.graph` cannot bound (a node without an interval rule) always are, with one
    warning on the ``advgen`` logger naming the node and the expected time. The model is put in eval
    mode on ``device`` for the attack. ``locality`` computes the bounds of convolution and pooling
    layers on the receptive-field window of the pixel only (same bounds up to rounding, much faster).
    ``callback`` receives each result as its group finishes (for streaming records); ``indices``
    names the images in the results (default 0..N-1). A ``stats`` dict accumulates where time goes
    (``bound_seconds``, ``dense_seconds``, ``boxes``, ``passes``); asking for it synchronises the
    device at each step, so leave it out when timing matters on a GPU. ``leaf_size``: level ranges
    this small that the bounds leave open go to the model instead of being bisected (1: a bound costs
    a sixth of a forward pass on CPU, so even single levels are bounded first and the model runs only
    on those within the safety margin); ``group_size``: images attacked together.
    ``threads`` caps torch's intra-op CPU threads during the search (None leaves torch's setting): the
    bounds are many small ops, and when another job shares the cores, a second thread's barriers made
    the search 3-9x slower (measured on 2 busy cores); one thread degrades gracefully.
    ``joint_channels``: a candidate is a whole colour at one location, every channel at once (the
    threat model of Su et al. and torchattacks' OnePixel); see :func:`.joint.attack_group`.
    ``linear``: where interval bounds fail, try the linear bounds of :mod:`.linear` (CNNs of convolutions,
    ReLU and pooling; same answer, fewer boxes and model runs); False keeps to intervals.
    ``time_limit``: seconds per image, for models too slow to search to the end (a deep colour network on a
    CPU). When it is spent, an image with work left is given up: status ``timeout`` (nothing proved either
    way), or ``vulnerable`` with ``exhaustive=False`` when a flip was already found. Every image decided in
    time has its exact answer. Images are then searched one at a time, each on its own clock, unless
    ``group_size`` is given: a group of g images shares g times the limit. None (default): no limit.
    """
    mode = _parse_mode(mode)
    dev = resolve_device(device)
    validate_images(images)
    n = len(images)
    labels = as_labels(torch.as_tensor(labels).reshape(-1), n)
    if not 2 <= levels <= 65536:
        raise InputError(f"levels must be in 2..65536, got {levels}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if leaf_size < 1:
        raise InputError(f"leaf size must be at least 1, got {leaf_size}")
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise InputError(f"expected {n} indices, got {len(indices)}")
    if images.dtype != torch.float32:
        raise InputError(f"the exact search runs in float32 (the model's fp32 argmax decides every candidate); "
                         f"got {str(images.dtype).removeprefix('torch.')} images: pass images.float() and "
                         f"model.float()")
    own_levels(images, levels)  # refuse off-grid images before any work
    batch_size = batch_size or default_batch_size(dev)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    if group_size is not None and group_size < 1:
        raise InputError(f"group size must be at least 1, got {group_size}")
    if time_limit is not None and not time_limit >= 0:
        raise InputError(f"time limit must be a number of seconds >= 0, got {time_limit}")
    group_size = group_size or (1 if time_limit is not None else 64 if dev.type == "cuda" else 4)

    with evaluating(model, dev), cpu_threads(threads if dev.type == "cpu" else None):
        num_classes = output_classes(model, images[:1].to(dev), labels)
        if random_in_eval(model, images[:8]):
            raise InputError(f"{RANDOM_MODEL}; an exact answer needs a model that answers the same image the same way")
        tgt = validate_targets(targets, labels, num_classes)
        plan = None
        if bounds:
            plan, why = build_plan(model, tuple(images.shape[1:]), dev, locality and not joint_channels)
            if plan is None:
                _warn_dense(why, model, images, labels, levels, dev, batch_size)
        attack_group = partial(_attack_group, use_lines=linear)
        if joint_channels:  # every channel of a location together: colour boxes
            from .joint import attack_group as joint_group

            attack_group = partial(joint_group, tol_relative=TOL_RELATIVE)
        results: list[OnePixelResult] = []
        for start in range(0, n, group_size):
            sl = slice(start, start + group_size)
            group = attack_group(model, plan, images[sl].to(dev), labels[sl].to(dev),
                                 None if tgt is None else tgt[sl].to(dev), levels, mode, batch_size, leaf_size,
                                 indices[sl], stats, deadline=deadline_after(time_limit, len(indices[sl])))
            for res in group:
                results.append(res)
                if callback is not None:
                    callback(res)
        return results


@torch.no_grad()
def _warn_dense(why: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int,
                dev: torch.device, batch_size: int) -> None:
    """Say once why every candidate goes through the model, and about how long that takes here."""
    probe = images[:1].to(dev)
    n_cand = min(batch_size, 256)
    x = probe.expand(n_cand, *probe.shape[1:]).clone()
    model(x)  # warm-up
    start = time.perf_counter()
    model(x).argmax(1).cpu()
    rate = n_cand / max(time.perf_counter() - start, 1e-9)
    total = len(images) * (levels - 1) * images[0].numel()
    log.warning(f"one-pixel bounds unavailable, dense search for every candidate: {why}. "
                f"About {_duration(total / rate)} for {len(images)} images "
                f"({total:,} candidates at ~{rate:,.0f}/s on {dev}).")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _parse_mode(mode: str | Mode) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(m.value for m in Mode)}") from None


@torch.no_grad()
def _attack_group(model: nn.Module, plan: BoundPlan | None, x: torch.Tensor, y: torch.Tensor,
                  t: torch.Tensor | None, levels: int, mode: Mode, batch_size: int, leaf_size: int,
                  indices: list[int], stats: dict | None = None, use_lines: bool = True,
                  deadline: float | None = None) -> list[OnePixelResult]:
    """Attack a few images together; each image's outcome does not depend on its group-mates.
    ``use_lines``: linear bounds (:mod:`.linear`) where intervals fail, when the plan supports them.
    ``deadline`` (a :func:`time.perf_counter` time): stop there, with the images that have work left
    ``unfinished`` (checked between passes, and between chunks of candidates going to the model)."""
    start = time.perf_counter()
    dev = x.device
    n, c, h, w = x.shape
    own = own_levels(x, levels)
    values = level_values(levels, dev)
    logits = model(x)
    clean = logits.argmax(1)
    active = clean == y
    tol = TOL_RELATIVE * logit_scale(plan, x, logits)
    ref = y if t is None else t

    evaluated = torch.zeros(n, dtype=torch.long, device=dev)
    pruned = torch.zeros(n, dtype=torch.long, device=dev)
    found: list[torch.Tensor] = []  # rows (img, ch, row, col, level, new_class)
    done = ~active  # images that need no more work
    unfinished = torch.zeros(n, dtype=torch.bool, device=dev)  # work left when the deadline passed

    acts = plan.prepare(x) if plan is not None else None
    boxes = _initial_boxes(active, (c, h, w), levels)
    lines = use_lines and linear_bounds.supported(plan)
    while len(boxes):
        if mode is Mode.FIRST:
            boxes = boxes[~done[boxes.img]]
        if past(deadline):
            unfinished[boxes.img] = True
            break
        if plan is not None and len(boxes):  # bound every box, single levels too: most settle without the model
            clock = Clock(stats, dev)
            mine = own_at(own, boxes)  # the pixel's own level is not a candidate
            clean_inside = (mine >= boxes.lo) & (mine <= boxes.hi)
            value, top, cls = _settle_boxes(plan, x, acts, boxes, values, ref, t is not None, batch_size,
                                            _line_mask(boxes, levels) if lines else None, tol, y, ~clean_inside)
            cert = value > tol[boxes.img]
            # boxes whose every candidate provably lands on one other class (the target, if targeted): flips
            proven = (top > tol[boxes.img]) & ~cert & ((cls != y[boxes.img]) if t is None else (cls == t[boxes.img]))
            clock.add("bound_seconds", boxes=len(cert), passes=1)
            settled = cert | proven
            count = boxes.size() - clean_inside.long()
            pruned += torch.bincount(boxes.img[settled], weights=count[settled].double(), minlength=n).long()
            if bool(proven.any()):
                cand = expand_levels(boxes[proven], own)
                new = cls[proven][cand["box"]]
                rows = torch.stack([cand["img"], cand["ch"], cand["row"], cand["col"], cand["level"], new], 1)
                if mode is Mode.FIRST:
                    rows = _first_per_image(rows, (c, h, w, levels))
                    done[rows[:, 0]] = True
                found.append(rows)
            boxes = boxes[~settled]
            if mode is Mode.FIRST:
                boxes = boxes[~done[boxes.img]]
        size = boxes.size()
        leaf = size <= leaf_size if plan is not None else torch.ones_like(size, dtype=torch.bool)
        leaves = boxes[leaf]
        if len(leaves):
            clock = Clock(stats, dev)
            cand = expand_levels(leaves, own)
            if mode is Mode.FIRST or deadline is not None:  # chunk by chunk: stop at a flip, or at the deadline
                cand, preds = _evaluate_in_chunks(model, x, cand, y, t, done, levels, batch_size,
                                                  mode is Mode.FIRST, deadline, unfinished)
            else:
                preds = predict_candidates(model, x, cand, levels, batch_size)
            hit = flips_mask(preds, y[cand["img"]], None if t is None else t[cand["img"]])
            evaluated += torch.bincount(cand["img"], minlength=n)
            rows = torch.stack([cand["img"], cand["ch"], cand["row"], cand["col"], cand["level"], preds], 1)[hit]
            if mode is Mode.FIRST and len(rows):
                rows = _first_per_image(rows, (c, h, w, levels))
                done[rows[:, 0]] = True
            found.append(rows)
            clock.add("dense_seconds", candidates=len(cand["img"]))
        boxes = boxes[~leaf].bisect()

    flips = torch.cat(found) if found else torch.zeros(0, 6, dtype=torch.long, device=dev)
    flips = flips[torch.argsort(_key(flips, (c, h, w, levels)))].cpu()
    seconds = (time.perf_counter() - start) / n
    per_image = (levels - 1) * c * h * w
    ev, pr, cl, yy = evaluated.tolist(), pruned.tolist(), clean.tolist(), y.tolist()
    tt = t.tolist() if t is not None else [None] * n
    vuln = torch.zeros(n, dtype=torch.bool)
    vuln[flips[:, 0]] = True
    out = []
    left = unfinished.tolist()
    for i in range(n):
        status, exhaustive = outcome(cl[i] == yy[i], bool(vuln[i]), left[i], mode is Mode.FULL)
        mine = flips[flips[:, 0] == i, 1:]
        out.append(OnePixelResult(indices[i], yy[i], cl[i], tt[i], status, mine.clone(), per_image, ev[i], pr[i],
                                  seconds, exhaustive=exhaustive))
    return out


def _evaluate_in_chunks(model: nn.Module, x: torch.Tensor, cand: dict[str, torch.Tensor], y: torch.Tensor,
                        t: torch.Tensor | None, done: torch.Tensor, levels: int, batch_size: int,
                        first: bool = True, deadline: float | None = None,
                        unfinished: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Evaluate chunk by chunk: with ``first``, skipping images that already have a flip; with a
    ``deadline``, stopping there and marking the images of the candidates left in ``unfinished``.

    Returns the candidates actually evaluated and their predictions. One host sync per chunk, which
    is acceptable for an attack-only mode and for a run with a time limit.
    """
    done = done.clone()
    kept: list[dict[str, torch.Tensor]] = []
    preds: list[torch.Tensor] = []
    start = 0
    n = len(cand["img"])
    while start < n:
        if past(deadline):
            unfinished[cand["img"][start:]] = True
            break
        part = {k: v[start:start + batch_size] for k, v in cand.items()}
        start += batch_size
        if first:
            part = {k: v[~done[part["img"]]] for k, v in part.items()}
        if not len(part["img"]):
            continue
        p = predict_candidates(model, x, part, levels, batch_size)
        if first:
            done[part["img"][flips_mask(p, y[part["img"]], None if t is None else t[part["img"]])]] = True
        kept.append(part)
        preds.append(p)
    if not kept:
        empty = cand["img"][:0]
        return {k: empty for k in cand}, empty
    return {k: torch.cat([c[k] for c in kept]) for k in cand}, torch.cat(preds)


def own_at(own: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    return own[boxes.img, boxes.ch, boxes.row, boxes.col]


def _initial_boxes(active: torch.Tensor, shape: tuple[int, int, int], levels: int) -> Boxes:
    """One box per (active image, channel, row, col) spanning every level."""
    c, h, w = shape
    img = torch.nonzero(active).flatten()
    pos = torch.arange(c * h * w, device=active.device)
    img_r = img.repeat_interleave(len(pos))
    pos_r = pos.repeat(len(img))
    zeros = torch.zeros_like(img_r)
    return Boxes(img_r, pos_r // (h * w), (pos_r // w) % h, pos_r % w, zeros, zeros + (levels - 1))


def _bound_boxes(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, boxes: Boxes,
                 values: torch.Tensor, ref: torch.Tensor, targeted: bool, batch_size: int) -> torch.Tensor:
    """The certificate value of every box (> tol means no candidate in it can succeed)."""
    return _settle_boxes(plan, x, acts, boxes, values, ref, targeted, batch_size)[0]


def _line_mask(boxes: Boxes, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which boxes get the linear bound of :mod:`.linear` at once, and which only where intervals leave them
    open, as (B,) masks: split boxes at once, whole ranges after intervals, single levels never (there
    intervals are exact). Measured on the default CNN (100 MNIST test images): intervals settle 86% of whole
    ranges at a third of the cost of lines, and lines settle nearly all the rest; below the whole range,
    lines need 2-5x fewer boxes on vulnerable images (114k -> 21.5k on one image at a decision boundary)."""
    size = boxes.size()
    multi = size > 1
    return multi & (size < levels), size == levels


def _settle_boxes(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, boxes: Boxes,
                  values: torch.Tensor, ref: torch.Tensor, targeted: bool, batch_size: int,
                  lines: tuple[torch.Tensor, torch.Tensor] | None = None, tol: torch.Tensor | None = None,
                  y: torch.Tensor | None = None,
                  flippable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per box, in chunks: the certificate value (> tol: no candidate in it succeeds), and the
    :func:`.bounds.dominant_class` value and class (> tol: every candidate in it is that class), the
    latter only where the certificate is <= 0 (elsewhere -inf: a box that may be safe is no flip).
    ``lines`` = (first, retry) (B,) masks: boxes bounded by :mod:`.linear` instead of intervals, and boxes
    bounded by it again where intervals settle neither way (needs ``tol`` and the labels ``y``).
    ``flippable`` (B,): where False the dominant class is not sought. A box holding the clean image (the
    pixel's own level) is one: the clean image is classified as its label, so no other class can beat
    it everywhere in the box (and targeted, the target cannot), and the work would be wasted."""
    out = torch.empty(len(boxes), device=x.device)
    top = torch.full((len(boxes),), -torch.inf, device=x.device)
    cls = torch.zeros(len(boxes), dtype=torch.long, device=x.device)
    first, retry = lines if lines is not None else (None, None)
    at_once = torch.nonzero(first).flatten() if first is not None else None
    by_intervals = torch.nonzero(~first).flatten() if first is not None else None
    flippable = torch.ones(len(boxes), dtype=torch.bool, device=x.device) if flippable is None else flippable
    _into(_interval_settle, plan, x, acts, boxes, by_intervals, values, ref, targeted, batch_size, out, top, cls,
          flippable)
    if retry is not None and bool(retry.any()):
        cert = out > tol[boxes.img]
        proven = (top > tol[boxes.img]) & ~cert & ((cls != y[boxes.img]) if not targeted else (cls == ref[boxes.img]))
        again = torch.nonzero(retry & ~first & ~cert & ~proven).flatten()
        at_once = torch.cat([at_once, again])
    if at_once is not None and len(at_once):
        _into(_line_settle, plan, x, acts, boxes, at_once, values, ref, targeted, batch_size, out, top, cls,
              flippable)
    return out, top, cls


def _into(settle: Callable, plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, boxes: Boxes,
          idx: torch.Tensor | None, values: torch.Tensor, ref: torch.Tensor, targeted: bool, batch_size: int,
          out: torch.Tensor, top: torch.Tensor, cls: torch.Tensor, flippable: torch.Tensor) -> None:
    """``settle`` on the boxes ``idx`` (None: all), its results written into ``out``, ``top``, ``cls``."""
    if idx is None:
        settle(plan, x, acts, boxes, values, ref, targeted, batch_size, out, top, cls, flippable)
        return
    if not len(idx):
        return
    dev = x.device
    o, tp, cl = (torch.empty(len(idx), device=dev), torch.full((len(idx),), -torch.inf, device=dev),
                 torch.zeros(len(idx), dtype=torch.long, device=dev))
    settle(plan, x, acts, boxes[idx], values, ref, targeted, batch_size, o, tp, cl, flippable[idx])
    out[idx], top[idx], cls[idx] = o, tp, cl


def _interval_settle(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor] | None, boxes: Boxes,
                     values: torch.Tensor, ref: torch.Tensor, targeted: bool, batch_size: int,
                     out: torch.Tensor, top: torch.Tensor, cls: torch.Tensor, flippable: torch.Tensor) -> None:
    for s in range(0, len(out), batch_size):
        b = boxes[s:s + batch_size]
        lo, hi = values[b.lo], values[b.hi]
        mid = (lo + hi) / 2
        # widen by a hair so fp32 rounding of (hi - lo) / 2 never shrinks the box below [lo, hi]
        half = (hi - lo) / 2 * (1 + 1e-6) + 1e-7
        c, r = pixel_boxes(plan, x, acts, b.img, b.ch, b.row, b.col, mid, half)
        value = margin_bound(plan, c, r, ref[b.img], targeted)
        out[s:s + batch_size] = value
        open_ = torch.nonzero((value <= 0) & flippable[s:s + batch_size]).flatten()
        if len(open_):
            top[s + open_], cls[s + open_] = dominant_class(plan, c[open_], r[open_])


def _line_settle(plan: BoundPlan, x: torch.Tensor, acts: list[torch.Tensor], boxes: Boxes, values: torch.Tensor,
                 ref: torch.Tensor, targeted: bool, batch_size: int, out: torch.Tensor, top: torch.Tensor,
                 cls: torch.Tensor, flippable: torch.Tensor) -> None:
    step = max(1, batch_size // 2)  # two rows per box, one per end
    for s in range(0, len(out), step):
        b = boxes[s:s + step]
        c, r = linear_bounds.pixel_lines(plan, acts, b.img, b.ch, b.row, b.col, values[b.lo], values[b.hi])
        value = linear_bounds.line_margin(plan, c, r, ref[b.img], targeted)
        out[s:s + step] = value
        open_ = torch.nonzero((value <= 0) & flippable[s:s + step]).flatten()
        if len(open_):
            both = torch.cat([open_, open_ + len(b)])
            top[s + open_], cls[s + open_] = linear_bounds.line_dominant(plan, c[both], r[both])


def _key(rows: torch.Tensor, dims: tuple[int, int, int, int]) -> torch.Tensor:
    c, h, w, levels = dims
    return ((rows[:, 0] * c + rows[:, 1]) * h + rows[:, 2]) * w * levels + rows[:, 3] * levels + rows[:, 4]


def _first_per_image(rows: torch.Tensor, dims: tuple[int, int, int, int]) -> torch.Tensor:
    """Of the flips found in one pass, keep each image's first in (channel, row, col, level) order."""
    rows = rows[torch.argsort(_key(rows, dims))]
    first = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
    first[1:] = rows[1:, 0] != rows[:-1, 0]
    return rows[first]
