"""The exact one-pixel attack against an independent brute force, on tiny models where that is cheap."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advgen import InputError, onepixel
from advgen.onepixel.bounds import compile_plan, pixel_boxes


def brute_force(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int,
                targets: torch.Tensor | None = None) -> list[set[tuple[int, int, int, int, int]]]:
    """Every (channel, row, col, level, new_class) that succeeds, by trying each one; a plain loop per image."""
    model.eval()
    out = []
    for i in range(len(images)):
        x = images[i]
        c, h, w = x.shape
        variants, keys = [], []
        for ch in range(c):
            for r in range(h):
                for col in range(w):
                    for lv in range(levels):
                        v = torch.tensor(lv, dtype=torch.float32) / float(levels - 1)
                        if v == x[ch, r, col]:
                            continue
                        xx = x.clone()
                        xx[ch, r, col] = v
                        variants.append(xx)
                        keys.append((ch, r, col, lv))
        with torch.no_grad():
            pred = torch.cat([model(torch.stack(variants[s:s + 997])).argmax(1)
                              for s in range(0, len(variants), 997)])
        with torch.no_grad():
            clean = int(model(x[None]).argmax(1))
        if clean != int(labels[i]):
            out.append(None)
            continue
        ok = pred != labels[i] if targets is None else pred == targets[i]
        out.append({(*k, int(p)) for k, p, hit in zip(keys, pred.tolist(), ok.tolist()) if hit})
    return out


def flip_set(result: onepixel.OnePixelResult) -> set[tuple[int, ...]]:
    return {tuple(row) for row in result.flips.tolist()}


def tiny_cnn(channels: int = 1, classes: int = 4, seed: int = 0) -> nn.Sequential:
    """Conv, batch norm, max and average pooling, dropout, two linear layers: every supported kind."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.LeakyReLU(0.1)), nn.AvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(6 * 2 * 2, 16), nn.BatchNorm1d(16), nn.Tanh(),
        nn.Linear(16, classes),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)  # default init is too gentle for single pixels to matter
    return model.eval()


def tiny_mlp(seed: int = 0, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.ReLU(), nn.Linear(24, 12), nn.Sigmoid(),
                          nn.Linear(12, classes)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(4.0)
        model[-1].bias.sub_(model(torch.rand(256, 1, 6, 6)).mean(0))  # no class wins everywhere
    return model


def images_for(model: nn.Module, shape: tuple[int, int, int], levels: int, n: int, seed: int = 0):
    """Random images on the level grid, labelled with the model's own prediction so all are attacked:
    half picked near a decision boundary (small top-2 margin, likely to have flips), half far from one
    (likely certified); the last one's label is wrong on purpose (a misclassified image)."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, levels, (40 * n, *shape), generator=gen).float() / float(levels - 1)
    with torch.no_grad():
        logits = model(pool)
    top = logits.topk(2, 1).values
    order = torch.argsort(top[:, 0] - top[:, 1])
    pick = torch.cat([order[: n // 2], order[-(n - n // 2):]])
    x = pool[pick]
    y = logits[pick].argmax(1)
    y[-1] = (y[-1] + 1) % logits.shape[1]
    return x, y


def assert_matches_brute_force(results, expected, images):
    assert len(results) == len(expected)
    for res, exp, x in zip(results, expected, images):
        if exp is None:
            assert res.status == "misclassified" and len(res.flips) == 0
            continue
        assert res.status == ("vulnerable" if exp else "certified")
        assert flip_set(res) == exp
        assert res.evaluated + res.pruned == res.candidates == (16 - 1) * x.numel() or res.candidates > 0


@pytest.mark.parametrize("bounds", [True, False])
def test_cnn_matches_brute_force_including_flips(bounds):
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 10)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, bounds=bounds, device="cpu", batch_size=300)
    assert_matches_brute_force(results, expected, x)
    assert sum(r.status == "vulnerable" for r in results) >= 2, "test needs images with flips"
    assert any(r.status == "certified" for r in results), "test needs certified images"
    for r in results:
        if r.status != "misclassified":
            assert r.evaluated + r.pruned == r.candidates == 15 * 64
            if not bounds:
                assert r.pruned == 0


def test_mlp_matches_brute_force():
    model = tiny_mlp()
    x, y = images_for(model, (1, 6, 6), 16, 8, seed=1)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert any(r.status == "vulnerable" for r in results)


def test_three_channels_match_brute_force():
    model = tiny_cnn(channels=3, seed=2)
    x, y = images_for(model, (3, 8, 8), 8, 6, seed=2)
    expected = brute_force(model, x, y, 8)
    results = onepixel.attack(model, x, y, levels=8, device="cpu")
    for res, exp in zip(results, expected):
        assert (res.status == "misclassified") == (exp is None)
        if exp is not None:
            assert flip_set(res) == exp
            assert res.candidates == 7 * 3 * 64
    assert any(len(r.flips) and (r.flips[:, 0] > 0).any() for r in results), "flips in channels 1 and 2"


def test_targeted_matches_brute_force():
    model = tiny_cnn(seed=3)
    x, y = images_for(model, (1, 8, 8), 16, 8, seed=3)
    t = (y + 1) % 4
    expected = brute_force(model, x, y, 16, targets=t)
    results = onepixel.attack(model, x, y, levels=16, targets=t, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert all(r.target == int(tt) for r, tt in zip(results, t))
    hits = [r for r in results if r.status == "vulnerable"]
    assert hits and all((r.flips[:, 4] == r.target).all() for r in hits)


def test_unsupported_model_falls_back_to_dense():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_mlp(seed=4)

        def forward(self, x):
            z = self.inner(x)
            return z.cumprod(1)  # a running product along the classes has no interval rule

    model = Custom().eval()
    assert compile_plan(model) is None
    x, y = images_for(model, (1, 6, 6), 8, 4, seed=4)
    expected = brute_force(model, x, y, 8)
    results = onepixel.attack(model, x, y, levels=8, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert all(r.pruned == 0 for r in results)


def test_model_times_a_constant_gets_bounds():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_mlp(seed=4)

        def forward(self, x):
            return self.inner(x) * 2.0

    model = Scaled().eval()
    x, y = images_for(model.inner, (1, 6, 6), 8, 4, seed=4)
    expected = brute_force(model, x, y, 8)
    results = onepixel.attack(model, x, y, levels=8, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert sum(r.pruned for r in results) > 0


@pytest.mark.parametrize("targeted", [False, True])
def test_flips_proven_by_bounds_match_brute_force(targeted):
    """Where the bounds prove that a whole level range lands on one other class, its flips are listed
    without the model; they must be exactly the brute-force flips, new class included."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[1].weight.mul_(3)
    x, y = images_for(model, (1, 6, 6), 32, 8, seed=7)
    t = (y + 1) % 3 if targeted else None
    expected = brute_force(model, x, y, 32, targets=t)
    results = onepixel.attack(model, x, y, levels=32, targets=t, device="cpu")
    assert_matches_brute_force(results, expected, x)
    if not targeted:
        assert any(len(r.flips) > r.evaluated for r in results), "some flips should be proven by the bounds"
    for r in results:
        if r.status != "misclassified":
            assert r.evaluated + r.pruned == r.candidates == 31 * 36
    first = onepixel.attack(model, x, y, levels=32, targets=t, device="cpu", mode="first")
    for f, g in zip(results, first):
        assert f.status == g.status and flip_set(g) <= flip_set(f) and len(g.flips) <= 1


def test_mode_first_stops_at_one_flip_of_the_full_set():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 10)
    full = onepixel.attack(model, x, y, levels=16, device="cpu")
    first = onepixel.attack(model, x, y, levels=16, mode="first", device="cpu")
    for f, g in zip(full, first):
        assert f.status == g.status
        if g.status == "vulnerable":
            assert len(g.flips) == 1 and flip_set(g) <= flip_set(f)
            assert g.evaluated + g.pruned <= f.evaluated + f.pruned and not g.exhaustive
        elif g.status == "certified":
            assert g.evaluated + g.pruned == g.candidates and g.exhaustive


def test_grouping_and_batching_do_not_change_results():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 10)
    x, y = x[3:9], y[3:9]
    a = onepixel.attack(model, x, y, levels=16, device="cpu", group_size=1, batch_size=64, leaf_size=2)
    b = onepixel.attack(model, x, y, levels=16, device="cpu", group_size=6, batch_size=5000, leaf_size=16)
    assert [flip_set(r) for r in a] == [flip_set(r) for r in b]
    assert [r.status for r in a] == [r.status for r in b]


class TickingClock:
    """Stands in for the ``time`` module of the search's clock (:mod:`advgen.onepixel.clock`): each reading is one second after the last, so a
    time limit of k seconds stops the search at its k-th check, whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def assert_sound_when_cut(results, expected, levels: int, images) -> None:
    """What a search stopped by its time limit may say: only flips that exist, a certificate only when true,
    the complete list only when it says it is exhaustive; ``timeout`` claims nothing."""
    for res, exp, x in zip(results, expected, images):
        if exp is None:
            assert res.status == "misclassified"
            continue
        assert res.status in ("certified", "vulnerable", "timeout")
        assert flip_set(res) <= exp
        assert res.evaluated + res.pruned <= res.candidates == (levels - 1) * x.numel()
        if res.status == "certified":
            assert not exp and res.exhaustive and res.evaluated + res.pruned == res.candidates
        elif res.status == "vulnerable":
            assert res.flips.numel() and (flip_set(res) == exp or not res.exhaustive)
        else:
            assert not res.flips.numel() and not res.exhaustive


@pytest.mark.parametrize("bounds, mode", [(True, "full"), (False, "full"), (True, "first")])
def test_a_time_limit_cuts_the_search_soundly_at_every_point(monkeypatch, bounds, mode):
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 6)
    expected = brute_force(model, x, y, 16)
    unlimited = onepixel.attack(model, x, y, levels=16, bounds=bounds, mode=mode, device="cpu", group_size=3,
                                batch_size=40)
    monkeypatch.setattr(onepixel.clock, "time", TickingClock())
    seen = set()
    for limit in range(0, 200):  # a group of 3 gets 3 * limit ticks; the search reads the clock at each check
        cut = onepixel.attack(model, x, y, levels=16, bounds=bounds, mode=mode, device="cpu", group_size=3,
                              batch_size=40, time_limit=float(limit))
        assert_sound_when_cut(cut, expected, 16, x)
        seen.update(r.status for r in cut)
        if [(r.status, flip_set(r)) for r in cut] == [(r.status, flip_set(r)) for r in unlimited]:
            break
    assert [flip_set(r) for r in cut] == [flip_set(r) for r in unlimited], "a long enough limit changes nothing"
    assert {"timeout", "vulnerable", "certified"} <= seen, "the cuts reached every kind of answer"


def test_no_time_at_all_decides_nothing():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 4)
    results = onepixel.attack(model, x, y, levels=16, device="cpu", time_limit=0.0)
    assert [r.status for r in results] == ["timeout"] * 3 + ["misclassified"]
    assert all(r.evaluated == r.pruned == 0 for r in results)


def by_margin(model, x, y) -> torch.Tensor:
    """Indices of ``x`` from the smallest clean logit margin up (misclassified images last)."""
    with torch.no_grad():
        logits = model(x)
    top = logits.topk(2, 1).values
    return torch.argsort((top[:, 0] - top[:, 1]).masked_fill(logits.argmax(1) != y, float("inf")))


def test_trained_cnn_on_mnist_matches_brute_force(trained_cnn, mnist_test):
    levels = 16
    x = onepixel.quantize(mnist_test.images[:200], levels)
    y = mnist_test.labels[:200]
    order = by_margin(trained_cnn.model, x, y)
    pick = torch.cat([order[:4], order[100:102]])  # closest to a decision boundary, and typical ones
    x, y = x[pick], y[pick]
    found = onepixel.attack(trained_cnn.model, x, y, levels=levels, device="cpu")
    vulnerable = [i for i, r in enumerate(found) if r.status == "vulnerable"]
    certified = [i for i, r in enumerate(found) if r.status == "certified"]
    assert vulnerable and certified, "need both kinds among the first MNIST images"
    pick = [vulnerable[0], certified[0]]
    expected = brute_force(trained_cnn.model, x[pick], y[pick], levels)
    for i, exp in zip(pick, expected):
        assert flip_set(found[i]) == exp
    # on a trained model the bounds settle most candidates without the model
    safe = [r for r in found if r.status == "certified"]
    assert sum(r.pruned for r in safe) > 0.8 * sum(r.candidates for r in safe)


def test_every_onepixel_de_success_is_found_by_the_exact_attack():
    torchattacks = pytest.importorskip("torchattacks")
    model = tiny_cnn(seed=5)
    x, y = images_for(model, (1, 8, 8), 256, 8, seed=5)
    x, y = x[:-1], y[:-1]
    exact = onepixel.attack(model, x, y, levels=256, device="cpu")
    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)
    adv = torchattacks.OnePixel(model, steps=10, popsize=10)(x, y)
    with torch.no_grad():
        broken = model(adv).argmax(1) != y
    confirmed = 0
    for i in torch.nonzero(broken).flatten().tolist():
        changed = torch.nonzero(adv[i] != x[i])
        assert len(changed) == 1
        ch, r, c = changed[0].tolist()
        level = int(torch.round(adv[i, ch, r, c] * 255))
        snapped = x[i].clone()
        snapped[ch, r, c] = level / 255.0
        with torch.no_grad():
            new = int(model(snapped[None]).argmax(1))
        if new != int(y[i]) and level != int(torch.round(x[i, ch, r, c] * 255)):
            confirmed += 1
            assert exact[i].status == "vulnerable"
            assert (ch, r, c, level, new) in flip_set(exact[i])
    assert confirmed >= 1, "DE found no grid-valued flip to check"


def test_records_round_trip_and_helpers():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 10)
    results = onepixel.attack(model, x, y, levels=16, device="cpu", indices=list(range(100, 110)))
    assert [r.index for r in results] == list(range(100, 110))
    for r, img in zip(results, x):
        back = onepixel.OnePixelResult.from_record(json.loads(json.dumps(r.to_record())))
        assert back.status == r.status and torch.equal(back.flips, r.flips)
        assert (back.candidates, back.evaluated, back.pruned) == (r.candidates, r.evaluated, r.pruned)
        heat = onepixel.heatmap(r, tuple(img.shape))
        assert heat.shape == img.shape and int(heat.sum()) == len(r.flips)
        if len(r.flips):
            adv = onepixel.adversarial_examples(r, img, 16)
            assert ((adv != img).flatten(1).sum(1) == 1).all()
            with torch.no_grad():
                assert torch.equal(model(adv).argmax(1), r.flips[:, 4])


@pytest.mark.parametrize("kwargs, needle", [
    ({"levels": 1}, "levels"),
    ({"levels": 7}, "not quantised"),
    ({"targets": 9}, "target classes"),
    ({"mode": "fast"}, "unknown mode"),
    ({"batch_size": 0}, "batch size"),
    ({"threads": 0}, "threads"),
    ({"time_limit": -1.0}, "time limit"),
    ({"time_limit": float("nan")}, "time limit"),
])
def test_bad_input_raises_input_error(kwargs, needle):
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 3)
    with pytest.raises(InputError, match=needle):
        onepixel.attack(model, x, y, **{"levels": 16, **kwargs, "device": "cpu"})


def test_thread_cap_is_restored_and_does_not_change_results():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 4)
    before = torch.get_num_threads()
    one = onepixel.attack(model, x, y, levels=16, device="cpu", threads=1)
    assert torch.get_num_threads() == before
    mine = onepixel.attack(model, x, y, levels=16, device="cpu", threads=None)
    assert [flip_set(r) for r in one] == [flip_set(r) for r in mine]


def test_wrong_shape_and_target_equal_label_are_input_errors():
    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 3)
    with pytest.raises(InputError, match="do not fit"):
        onepixel.attack(model, torch.zeros(2, 1, 5, 7), y[:2], levels=16, device="cpu")
    with pytest.raises(InputError, match="own label"):
        onepixel.attack(model, x, y, levels=16, targets=y, device="cpu")


def random_pixel_boxes(x: torch.Tensor, n: int, classes: int, half_max: float, g: torch.Generator) -> tuple:
    """``n`` boxes "one pixel of x in mid +- half", drawn from ``g``: (img, ch, row, col, mid, half, ref)."""
    count, channels, h, w = x.shape
    img, ch = torch.randint(0, count, (n,), generator=g), torch.randint(0, channels, (n,), generator=g)
    row, col = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
    mid, half = torch.rand(n, generator=g), torch.rand(n, generator=g) * half_max
    return img, ch, row, col, mid, half, torch.randint(0, classes, (n,), generator=g)


def full_map_boxes(x: torch.Tensor, img, ch, row, col, mid, half) -> tuple[torch.Tensor, torch.Tensor]:
    """The same boxes as whole images (center, radius), for the full-map bound to compare with."""
    center = x[img].clone()
    center[torch.arange(len(img)), ch, row, col] = mid
    radius = torch.zeros_like(center)
    radius[torch.arange(len(img)), ch, row, col] = half
    return center, radius


def test_window_bounds_equal_full_map_bounds():
    """Receptive-field windows give the same intervals as full feature maps (strides, dilation, padding,
    groups; the convolutions applied as changes, local.ConvMaps)."""
    from advgen.onepixel.bounds import certificate, margin_bound
    from advgen.onepixel.local import _Spatial

    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(4, 6, 3, dilation=2, padding=2, groups=2), nn.ELU(),
        nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(6 * 3 * 4, 4),
    ).eval()
    x = torch.rand(3, 2, 9, 11)
    assert model(x).shape == (3, 4)
    plan = compile_plan(model, (2, 9, 11))
    local = plan.local
    assert local is not None and local.useful
    convs = [s for s in local.steps if isinstance(s, _Spatial) and isinstance(s.layer, nn.Conv2d)]
    assert len(convs) == 2 and all(s.offsets is not None for s in convs)
    acts = plan.prepare(x)
    img, ch, row, col, mid, half, ref = random_pixel_boxes(x, 400, 4, 0.4, torch.Generator().manual_seed(0))
    windowed = margin_bound(plan, *pixel_boxes(plan, x, acts, img, ch, row, col, mid, half), ref, False)
    full = certificate(plan, *full_map_boxes(x, img, ch, row, col, mid, half), ref, False)
    assert torch.allclose(windowed, full, atol=1e-5, rtol=1e-5)


def test_folded_linear_after_the_windows_equals_full_maps():
    """A hidden Linear right after the windowed layers is applied on the window's columns only (the fold):
    the same box as on full maps, for the centre and the radius, with and without gradients."""
    from advgen.onepixel.bounds import certificate, margin_bound

    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 2 * 3, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4),
    ).eval()
    x = torch.rand(3, 2, 9, 13)
    plan = compile_plan(model, (2, 9, 13))
    assert plan.local is not None and plan.local.fold is model[7]
    img, ch, row, col, mid, half, ref = random_pixel_boxes(x, 300, 4, 0.5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = certificate(plan, *full_map_boxes(x, img, ch, row, col, mid, half), ref, False)
        folded = margin_bound(plan, *pixel_boxes(plan, x, plan.prepare(x), img, ch, row, col, mid, half), ref, False)
    torch.testing.assert_close(folded, full, atol=1e-5, rtol=1e-5)
    trained = margin_bound(plan, *pixel_boxes(plan, x, plan.prepare(x), img, ch, row, col, mid, half), ref, False)
    trained.sum().backward()  # the fold's tables are rebuilt from the live weight while gradients flow
    assert model[7].weight.grad is not None and bool(model[7].weight.grad.abs().sum() > 0)
    torch.testing.assert_close(trained.detach(), full, atol=1e-5, rtol=1e-5)


def test_argument_checks_name_the_problem(trained_cnn, mnist_test):
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    with pytest.raises(InputError, match="group size"):
        onepixel.attack(trained_cnn.model, x, y, group_size=-1, device="cpu")
    with pytest.raises(InputError, match="whole class numbers"):
        onepixel.attack(trained_cnn.model, x, y.float() + 0.7, device="cpu")
    with pytest.raises(InputError, match="float32"):
        onepixel.attack(trained_cnn.model, x.double(), y, device="cpu")
    whole = onepixel.attack(trained_cnn.model, x, y.float(), device="cpu")  # 7.0 is class 7
    assert [r.label for r in whole] == y.tolist()


def test_a_model_random_in_eval_mode_gets_no_exact_answer(mnist_test):
    """A certificate for a model that answers the same image differently on two calls would mean nothing."""
    class DropoutBug(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(torch.nn.functional.dropout(x.flatten(1), 0.5))  # training=True by default

    with pytest.raises(InputError, match=r"F.dropout\(x, p\) without training=self.training"):
        onepixel.attack(DropoutBug(), mnist_test.images[:2], mnist_test.labels[:2])
