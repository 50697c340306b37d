"""The joint-channel (colour) one-pixel attack against an independent brute force over every colour."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from advgen import onepixel
from advgen.onepixel.bounds import compile_plan
from advgen.onepixel.joint_bounds import ColourBounds
from advgen.onepixel.joint_dense import ColourBoxes, expand_colours
from advgen.onepixel.result import box_sizes
from test_onepixel import TickingClock, images_for  # the same image picker and stand-in clock


def brute_force(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, levels: int,
                targets: torch.Tensor | None = None) -> list[dict[tuple[int, int, tuple[int, ...]], int] | None]:
    """Per image, every succeeding (row, col, colour) with its new class, by trying each colour; None when
    the clean image is misclassified. A plain loop over locations, every colour of the cube at once."""
    model.eval()
    out = []
    for i in range(len(images)):
        x = images[i]
        c, h, w = x.shape
        with torch.no_grad():
            clean = int(model(x[None]).argmax(1))
        if clean != int(labels[i]):
            out.append(None)
            continue
        cube = list(itertools.product(range(levels), repeat=c))
        colours = torch.tensor(cube, dtype=torch.float32) / float(levels - 1)  # (levels^C, C)
        flips = {}
        for r in range(h):
            for col in range(w):
                xx = x[None].repeat(len(cube), 1, 1, 1)
                xx[:, :, r, col] = colours
                with torch.no_grad():
                    pred = model(xx).argmax(1)
                ok = pred != labels[i] if targets is None else pred == targets[i]
                own = tuple(torch.round(x[:, r, col] * (levels - 1)).long().tolist())
                for k in torch.nonzero(ok).flatten().tolist():
                    assert cube[k] != own
                    flips[(r, col, cube[k])] = int(pred[k])
        out.append(flips)
    return out


def expand(result: onepixel.OnePixelResult) -> dict[tuple[int, int, tuple[int, ...]], int]:
    """The colours of a joint result's flip boxes, each with its class (-1 for a box of mixed classes)."""
    c = result.joint_channels
    out = {}
    for row in result.flips.tolist():
        r, col, lo, hi, cls = row[0], row[1], row[2:2 + c], row[2 + c:2 + 2 * c], row[-1]
        for colour in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi))):
            assert (r, col, colour) not in out, "flip boxes overlap"
            out[(r, col, colour)] = cls
    return out


def assert_matches(results, expected):
    """Same status, the same flip_count, the same succeeding colours (and classes, where a box has one)."""
    for res, exp in zip(results, expected, strict=True):
        if exp is None:
            assert res.status == "misclassified" and len(res.flips) == 0
            continue
        assert res.status == ("vulnerable" if exp else "certified")
        assert res.flip_count == len(exp)
        got = expand(res)
        assert got.keys() == exp.keys()
        assert all(cls == -1 or cls == exp[key] for key, cls in got.items())
        assert res.evaluated + res.pruned == res.candidates


def colour_cnn(seed: int = 0, classes: int = 4, scale: float = 3.0) -> nn.Sequential:
    """A tiny 3-channel CNN with every kind of supported layer on 3x5x5 images."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 2, padding=1), nn.LeakyReLU(0.1), nn.Flatten(),
                          nn.Linear(6 * 3 * 3, 12), nn.Tanh(), nn.Linear(12, classes))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(scale)
    return model.eval()


def one_pixel_model(classes: int = 3) -> nn.Sequential:
    """A linear model that reads mostly the pixel at (1, 1): large colour regions there all flip, which
    exercises counting all-flip boxes without enumerating them."""
    torch.manual_seed(3)
    lin = nn.Linear(3 * 4 * 4, classes)
    with torch.no_grad():
        lin.weight.mul_(0.1)
        w = lin.weight.view(classes, 3, 4, 4)
        w[:, :, 1, 1] = torch.tensor([[4.0, -2.0, 1.0], [-3.0, 4.0, 0.5], [0.0, -1.0, 3.0]])[:classes]
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin, nn.ReLU(), nn.Linear(classes, classes)).eval()


@pytest.mark.parametrize("bounds", [True, False])
def test_colour_cnn_matches_brute_force(bounds):
    model = colour_cnn()
    x, y = images_for(model, (3, 5, 5), 8, 6)
    if not bounds:  # the dense path is slow: one vulnerable, one certified, the misclassified one
        x, y = x[[0, 3, 5]], y[[0, 3, 5]]
    expected = brute_force(model, x, y, 8)
    results = onepixel.attack(model, x, y, levels=8, joint_channels=True, bounds=bounds, device="cpu",
                              batch_size=200)
    assert_matches(results, expected)
    assert sum(r.status == "vulnerable" for r in results) >= (2 if bounds else 1), "test needs images with flips"
    assert any(r.status == "certified" for r in results), "test needs certified images"
    assert all(r.candidates == 511 * 25 for r in results)
    if not bounds:
        assert all(r.pruned == 0 for r in results)
    else:
        assert sum(r.pruned for r in results) > 0


@pytest.mark.parametrize("bounds", [True, False])
def test_a_time_limit_cuts_the_colour_search_soundly(monkeypatch, bounds):
    model = colour_cnn()
    x, y = images_for(model, (3, 5, 5), 8, 6)
    x, y = x[[0, 1, 3, 5]], y[[0, 1, 3, 5]]
    expected = brute_force(model, x, y, 8)
    monkeypatch.setattr(onepixel.clock, "time", TickingClock())
    seen = set()
    for ticks in [0, *(2 ** k for k in range(16))]:  # each reading of the clock is one second
        cut = onepixel.attack(model, x, y, levels=8, joint_channels=True, bounds=bounds, device="cpu",
                              group_size=4, batch_size=64, time_limit=ticks / 4)
        for res, exp in zip(cut, expected, strict=True):
            seen.add(res.status)
            if exp is None:
                assert res.status == "misclassified"
                continue
            got = expand(res)
            assert got.keys() <= exp.keys() and res.evaluated + res.pruned <= res.candidates
            if res.status == "certified":
                assert not exp and res.exhaustive
            elif res.status == "vulnerable":
                assert got and (got.keys() == exp.keys() or not res.exhaustive)
            else:
                assert res.status == "timeout" and not got and not res.exhaustive
        if all(r.exhaustive for r in cut):
            break
    assert_matches(cut, expected)
    assert {"timeout", "vulnerable", "certified"} <= seen


def test_all_flip_boxes_are_counted_without_enumerating():
    model = one_pixel_model()
    x, y = images_for(model, (3, 4, 4), 16, 5, seed=1)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, joint_channels=True, device="cpu")
    assert_matches(results, expected)
    boxes = [r.flips[box_sizes(r) > 1] for r in results]
    assert sum(len(b) for b in boxes) > 0, "no all-flip box: the test does not exercise counting"
    # counted, not evaluated: fewer colours went through the model than flipped
    assert any(r.evaluated < r.flip_count for r in results)
    assert any((b[:, -1] >= 0).any() for b in boxes if len(b)), "no box proven to be one class"


def test_targeted_matches_brute_force():
    model = one_pixel_model()
    x, y = images_for(model, (3, 4, 4), 8, 5, seed=2)
    t = (y + 1) % 3
    expected = brute_force(model, x, y, 8, targets=t)
    results = onepixel.attack(model, x, y, levels=8, targets=t, joint_channels=True, device="cpu")
    assert_matches(results, expected)
    assert any(r.status == "vulnerable" for r in results)
    for r in results:  # every targeted flip is the target, also for whole boxes
        assert (r.flips[:, -1] == r.target).all()


def test_grayscale_joint_equals_per_channel():
    """With one channel, a colour is a level: the same threat model, so the same answer."""
    from tests.test_onepixel import images_for as gray_images, tiny_cnn

    model = tiny_cnn()
    x, y = gray_images(model, (1, 8, 8), 16, 8)
    per = onepixel.attack(model, x, y, levels=16, device="cpu")
    joint = onepixel.attack(model, x, y, levels=16, joint_channels=True, device="cpu")
    for a, b in zip(per, joint):
        assert a.status == b.status and a.flip_count == b.flip_count
        assert {(r, c, lv) for _, r, c, lv, _ in a.flips.tolist()} == {(r, c, col[0]) for r, c, col in expand(b)}
        assert torch.equal(onepixel.heatmap(a, (1, 8, 8)), onepixel.heatmap(b, (1, 8, 8)))


def test_mode_first_finds_one_flip_of_the_full_set():
    model = colour_cnn()
    x, y = images_for(model, (3, 5, 5), 8, 6)
    x, y = x[[0, 1, 4, 5]], y[[0, 1, 4, 5]]
    full = onepixel.attack(model, x, y, levels=8, joint_channels=True, device="cpu")
    first = onepixel.attack(model, x, y, levels=8, joint_channels=True, mode="first", device="cpu")
    for f, g in zip(full, first):
        assert f.status == g.status
        if g.status == "vulnerable":
            assert len(g.flips) == 1 and not g.exhaustive
            assert expand(g).keys() <= expand(f).keys()
        elif g.status == "certified":
            assert g.evaluated + g.pruned == g.candidates


def test_batching_and_leaf_size_do_not_change_results():
    model = one_pixel_model()
    x, y = images_for(model, (3, 4, 4), 8, 4, seed=3)
    a = onepixel.attack(model, x, y, levels=8, joint_channels=True, device="cpu", group_size=1, batch_size=37,
                        leaf_size=1)
    b = onepixel.attack(model, x, y, levels=8, joint_channels=True, device="cpu", group_size=4, batch_size=5000,
                        leaf_size=8)
    assert [r.status for r in a] == [r.status for r in b]
    assert [expand(r).keys() for r in a] == [expand(r).keys() for r in b]


def test_all_flip_and_safe_verdicts_are_sound():
    """Every colour of a box the bounds call safe (all-flip) keeps (changes) the class in the real model."""
    model = colour_cnn(seed=2, scale=4.0)
    x, y = images_for(model, (3, 5, 5), 8, 4, seed=4)
    own = onepixel.dense.own_levels(x, 8)
    gen = torch.Generator().manual_seed(0)
    b = 400
    lo = torch.randint(0, 8, (b, 3), generator=gen)
    hi = torch.minimum(lo + torch.randint(0, 8, (b, 3), generator=gen), torch.tensor(7))
    boxes = ColourBoxes(torch.randint(0, 4, (b,), generator=gen), torch.randint(0, 5, (b,), generator=gen),
                        torch.randint(0, 5, (b,), generator=gen), lo, hi)
    values = onepixel.level_values(8)
    v = ColourBounds(compile_plan(model)).verdict(x, boxes, values, y[boxes.img], False, torch.full((b,), 1e-4))
    assert bool(v.safe.any()) and not bool((v.safe & v.all_flip).any())
    colours, src = expand_colours(boxes, own)
    with torch.no_grad():
        pred = model(onepixel.joint_dense.apply_colours(x, colours, values)).argmax(1)
    flipped = pred != y[colours.img]
    assert not bool(flipped[v.safe[src]].any())
    assert bool(flipped[v.all_flip[src]].all())
    cls = v.cls[src]
    assert bool((pred[cls >= 0] == cls[cls >= 0]).all())


def test_records_heatmaps_and_examples():
    model = one_pixel_model()
    x, y = images_for(model, (3, 4, 4), 8, 5, seed=1)
    results = onepixel.attack(model, x, y, levels=8, joint_channels=True, device="cpu")
    for r, img in zip(results, x):
        back = onepixel.OnePixelResult.from_record(json.loads(json.dumps(r.to_record())))
        assert torch.equal(back.flips, r.flips) and back.flip_count == r.flip_count
        assert back.joint_channels == 3 and back.status == r.status
        heat = onepixel.heatmap(r, tuple(img.shape))
        assert heat.shape == (1, 4, 4) and int(heat.sum()) == r.flip_count
        if len(r.flips):
            adv = onepixel.adversarial_examples(r, img, 8)
            changed = (adv != img).any(1).flatten(1).sum(1)
            assert (changed == 1).all()  # one location each
            with torch.no_grad():
                pred = model(adv).argmax(1)
            assert (pred != r.label).all()
            known = r.flips[:, -1] >= 0
            assert torch.equal(pred[known], r.flips[known, -1])
            changes = onepixel.flip_changes(r, img, 8)
            assert torch.allclose(changes, (adv - img).abs().flatten(1).amax(1))


def test_bench_joint_row_holds_every_snapped_de_success():
    pytest.importorskip("torchattacks")
    from advgen.bench import bench_onepixel, missed_by_exact

    model = one_pixel_model()
    x, y = images_for(model, (3, 4, 4), 16, 5, seed=1)
    x, y = x[:-1], y[:-1]
    rows = bench_onepixel(model, x, y, levels=16, dense_limit=0, slow_limit=0, joint_limit=4, device="cpu")
    joint = rows[-1]
    assert joint.name == "advgen exact (joint channels)" and joint.images == 4
    assert joint.de_checked >= 1, "DE found no grid-snapped flip to check"
    assert joint.de_outside_flips == [] and missed_by_exact(rows) == []
    assert joint.breakdown["flip_count"] > 0


def test_attack_cli_joint_channels(tmp_path, capsys):
    from advgen.cli import main
    from advgen.data import Dataset, save_file
    from advgen.files import read_jsonl
    from advgen.models import Checkpoint, build, save_checkpoint

    torch.manual_seed(0)
    model = build("cnn", (3, 4, 4), 4)
    with torch.no_grad():
        model[0].weight.mul_(6)
    x, y = images_for(model.eval(), (3, 4, 4), 8, 3, seed=5)
    save_file(tmp_path / "colour.pt", Dataset(x, y, "colour", levels=8, num_classes=4))
    save_checkpoint(tmp_path / "cnn.pt", Checkpoint(model, "cnn", (3, 4, 4), 4, {}))
    out = tmp_path / "run"
    args = ["attack", "--data", tmp_path / "colour.pt", "--checkpoint", tmp_path / "cnn.pt", "--limit", 3,
            "--out", out, "--quiet", "--device", "cpu", "--joint-channels"]
    assert main([str(a) for a in args]) == 0
    records = read_jsonl(out / "records.jsonl")
    results = [onepixel.OnePixelResult.from_record(r["exact"]) for r in records]
    assert all(r.joint_channels == 3 for r in results)
    direct = onepixel.attack(model, x, y, levels=8, joint_channels=True, device="cpu")
    assert [r.flip_count for r in results] == [r.flip_count for r in direct]
    assert any(r.vulnerable for r in direct) and (out / "heatmaps.png").is_file()
    adv = torch.load(out / "adversarial.pt", weights_only=True)
    assert len(adv["images"]) > 0 and ((adv["images"] != x[adv["source_index"]]).any(1).flatten(1).sum(1) == 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flips_total"] == sum(r.flip_count for r in direct)
    assert summary["candidates_total"] == sum(r.candidates for r in direct if r.status != "misclassified")
    assert main([str(a) for a in [*args[:-1], "--method", "fgsm", "--joint-channels", "--overwrite"]]) == 2
