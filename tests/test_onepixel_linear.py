"""Linear bounds along one pixel (:mod:`advgen.onepixel.linear`): sound at every level of a box against the
model itself, and with them the exact search still lists exactly the brute-force flips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advgen import onepixel
from advgen.onepixel import linear
from advgen.onepixel.bounds import compile_plan, margin_lower, pixel_boxes
from advgen.onepixel.dense import level_values

from test_onepixel import brute_force, by_margin, flip_set, images_for, tiny_cnn, tiny_mlp

LEVELS = 32


def relu_cnn(seed: int, pool: str = "max", bn: bool = False, classes: int = 4) -> nn.Sequential:
    """A small random CNN of the kinds the linear bound covers: conv, batch norm, ReLU, max/average pooling,
    then flatten, linear, ReLU, linear; weights scaled up so one pixel moves the logits a lot."""
    torch.manual_seed(seed)
    first_pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(), first_pool,
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, classes),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
    return model.eval()


def random_boxes(n: int, images: int, gen: torch.Generator):
    """Boxes of every size: whole ranges, single levels and everything between, anywhere on an 8x8 image."""
    img = torch.randint(0, images, (n,), generator=gen)
    row, col = torch.randint(0, 8, (n,), generator=gen), torch.randint(0, 8, (n,), generator=gen)
    a, b = torch.randint(0, LEVELS, (n,), generator=gen), torch.randint(0, LEVELS, (n,), generator=gen)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    lo[: n // 8], hi[: n // 8] = 0, LEVELS - 1          # whole ranges
    hi[n // 8: n // 4] = lo[n // 8: n // 4]             # single levels
    small = slice(n // 4, n // 2)
    hi[small] = (lo[small] + torch.randint(1, 4, (n // 4,), generator=gen)).clamp(max=LEVELS - 1)
    return img, torch.zeros(n, dtype=torch.long), row, col, lo, hi


def logits_at_every_level(model, x, img, ch, row, col) -> torch.Tensor:
    """(B, LEVELS, K): the model's logits with the box's pixel at each level."""
    values = level_values(LEVELS)
    b = len(img)
    xs = x[img].repeat_interleave(LEVELS, 0)
    rows = torch.arange(b * LEVELS)
    xs[rows, ch.repeat_interleave(LEVELS), row.repeat_interleave(LEVELS), col.repeat_interleave(LEVELS)] = \
        values.repeat(b)
    with torch.no_grad():
        return model(xs).view(b, LEVELS, -1)


def test_supported_models():
    assert linear.supported(compile_plan(relu_cnn(0), (1, 8, 8)))
    assert linear.supported(compile_plan(relu_cnn(0, "avg", True), (1, 8, 8)))
    assert not linear.supported(compile_plan(tiny_cnn(), (1, 8, 8)))   # leaky ReLU, tanh
    assert not linear.supported(compile_plan(tiny_mlp(), (1, 6, 6)))   # no windowed layers
    assert not linear.supported(None)


@pytest.mark.parametrize("seed,pool,bn", [(0, "max", False), (1, "avg", True), (2, "max", True)])
def test_line_bounds_hold_at_every_level_of_every_box(seed, pool, bn):
    """Soundness by brute force: for every box, the model's margin at each of its levels is at least the
    linear lower bound, untargeted and targeted; a proven dominant class is the argmax at every level."""
    model = relu_cnn(seed, pool, bn)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, LEVELS, (3, 1, 8, 8), generator=gen).float() / (LEVELS - 1)
    plan = compile_plan(model, (1, 8, 8))
    assert linear.supported(plan)
    n = 400
    img, ch, row, col, lo, hi = random_boxes(n, 3, gen)
    ref = torch.randint(0, 4, (n,), generator=gen)
    values = level_values(LEVELS)
    with torch.no_grad():
        c, r = linear.pixel_lines(plan, plan.prepare(x), img, ch, row, col, values[lo], values[hi])
        z = logits_at_every_level(model, x, img, ch, row, col)  # (B, L, K)
        inside = (torch.arange(LEVELS)[None] >= lo[:, None]) & (torch.arange(LEVELS)[None] <= hi[:, None])
        zr = z.gather(2, ref[:, None, None].expand(-1, LEVELS, 1))
        eps = 1e-5 * float(z.abs().max())
        for targeted in (False, True):
            diff = (zr - z) if not targeted else (z - zr)  # (B, L, K)
            truth = diff.masked_fill(~inside[:, :, None], float("inf")).min(1).values  # worst level in the box
            bound = linear.line_margin_lower(plan, c, r, ref, targeted)
            keep = torch.ones_like(bound, dtype=torch.bool).scatter_(1, ref[:, None], False)
            assert bool((truth[keep] >= bound[keep] - eps).all()), "a linear bound above the true margin"
        top, cls = linear.line_dominant(plan, c, r)
        proven = top > eps
        assert bool(proven.any())
        pred = z.argmax(2)
        assert bool(((pred == cls[:, None]) | ~inside)[proven].all())
        zc = z.gather(2, cls[:, None, None].expand(-1, LEVELS, 1))
        gap = (zc - z).scatter_(2, cls[:, None, None].expand(-1, LEVELS, 1), float("inf")).min(2).values
        assert bool((gap.masked_fill(~inside, float("inf")).min(1).values[proven] >= top[proven] - eps).all())
        # a single level: the lines meet, and the bound is the model's margin there
        single = lo == hi
        exact = (zr - z)[single].gather(1, lo[single][:, None, None].expand(-1, 1, z.shape[2])).squeeze(1)
        got = linear.line_margin_lower(plan, c, r, ref, False)[single]
        mask = keep[single]
        torch.testing.assert_close(got[mask], exact[mask], atol=1e-4, rtol=1e-4)


def test_lines_are_tighter_than_intervals_on_small_boxes():
    """Where it matters (a few levels next to a crossing) the linear bound is the tighter of the two."""
    model = relu_cnn(3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, LEVELS, (3, 1, 8, 8), generator=gen).float() / (LEVELS - 1)
    plan = compile_plan(model, (1, 8, 8))
    acts = plan.prepare(x)
    n = 400
    img, ch, row, col, lo, _ = random_boxes(n, 3, gen)
    lo = lo.clamp(max=LEVELS - 4)
    hi = lo + 3
    ref = torch.randint(0, 4, (n,), generator=gen)
    values = level_values(LEVELS)
    with torch.no_grad():
        lines = linear.line_margin_lower(plan, *linear.pixel_lines(plan, acts, img, ch, row, col, values[lo],
                                                                   values[hi]), ref, False)
        mid, half = (values[lo] + values[hi]) / 2, (values[hi] - values[lo]) / 2
        boxes = margin_lower(plan, *pixel_boxes(plan, x, acts, img, ch, row, col, mid, half), ref, False)
    keep = torch.ones_like(lines, dtype=torch.bool).scatter_(1, ref[:, None], False)
    assert float((lines - boxes)[keep].mean()) > 0
    assert float(((lines >= boxes - 1e-5)[keep]).float().mean()) > 0.9


@pytest.mark.parametrize("targeted", [False, True])
def test_flip_sets_with_lines_match_brute_force(targeted):
    model = relu_cnn(4, classes=3)
    x, y = images_for(model, (1, 8, 8), 16, 8, seed=4)
    t = (y + 1) % 3 if targeted else None
    expected = brute_force(model, x, y, 16, targets=t)
    for use_lines in (True, False):
        results = onepixel.attack(model, x, y, levels=16, targets=t, device="cpu", linear=use_lines)
        for r, exp in zip(results, expected):
            if exp is None:
                assert r.status == "misclassified"
                continue
            assert flip_set(r) == exp
            assert r.status == ("vulnerable" if exp else "certified")
            assert r.evaluated + r.pruned == r.candidates


def test_trained_cnn_flip_sets_match_brute_force_with_fewer_boxes(trained_cnn, mnist_test):
    """The default CNN, briefly trained: on the images closest to a decision boundary the flip sets with
    lines equal brute force and the intervals-only search, and lines need fewer boxes to get there."""
    levels = 16
    x = onepixel.quantize(mnist_test.images[:200], levels)
    y = mnist_test.labels[:200]
    pick = by_margin(trained_cnn.model, x, y)[:3]
    x, y = x[pick], y[pick]
    expected = brute_force(trained_cnn.model, x, y, levels)
    assert any(expected), "need a vulnerable image"
    boxes = {}
    for use_lines in (True, False):
        stats: dict = {}
        found = onepixel.attack(trained_cnn.model, x, y, levels=levels, device="cpu", linear=use_lines, stats=stats)
        assert [flip_set(r) for r in found] == expected
        boxes[use_lines] = stats["boxes"]
    assert boxes[True] < boxes[False]
