"""Traced models (classes with ``forward``, residual blocks) against brute force, and the rules' soundness."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advgen import onepixel
from advgen.errors import InputError
from advgen.onepixel.bounds import build_plan, certificate, compile_plan, margin_bound, pixel_boxes
from test_onepixel import assert_matches_brute_force, brute_force, images_for, random_pixel_boxes


def _sharpen(model: nn.Module, gain: float = 3.0) -> nn.Module:
    """Default init is too gentle for single pixels to matter; random batch-norm statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(gain)
    return model.eval()


class ExampleNet(nn.Module):
    """Shaped like the PyTorch examples' MNIST net: modules in __init__, functional ops in forward."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(6 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = self.conv2(x)
        x = F.leaky_relu(x, 0.1)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.dropout(x, 0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class Block(nn.Module):
    """A ResNet basic block, with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.short(x)
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, 1, 1)
        self.layer1 = Block(4, 4, 1)
        self.layer2 = Block(4, 6, 2)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(2 * 6 * 2 * 2, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer2(self.layer1(x))
        x = self.pool(x)
        both = torch.cat([x, 0.5 * x - 0.1], dim=1)  # cat, a scale, a constant shift
        return self.fc(both.view(both.size(0), -1))


class RunningProduct(nn.Module):
    """A running product along the channels: no interval rule, so the dense search must take over."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        return self.fc(h.cumprod(1).flatten(1))


def _exact_and_pruned(model: nn.Module) -> None:
    """On 10 random 8x8 images at 16 levels: the flips brute force finds, both outcomes, a third settled by bounds."""
    x, y = images_for(model, (1, 8, 8), 16, 10)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, device="cpu", batch_size=300)
    assert_matches_brute_force(results, expected, x)
    assert any(r.status == "vulnerable" for r in results) and any(r.status == "certified" for r in results)
    assert sum(r.pruned for r in results) > 0.3 * sum(r.candidates for r in results if r.status != "misclassified")


def test_class_model_with_functional_ops_matches_brute_force():
    torch.manual_seed(0)
    model = _sharpen(ExampleNet())
    plan = compile_plan(model, (1, 8, 8))
    assert plan is not None and plan.head is model.fc2 and plan.local is not None
    _exact_and_pruned(model)


def test_residual_cnn_matches_brute_force():
    torch.manual_seed(1)
    model = _sharpen(TinyResNet(), gain=2.0)
    plan = compile_plan(model, (1, 8, 8))
    assert plan is not None and plan.head is model.fc
    x, y = images_for(model, (1, 8, 8), 16, 8, seed=1)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert any(r.status == "vulnerable" for r in results)
    assert sum(r.pruned for r in results) > 0


def test_targeted_residual_matches_brute_force():
    torch.manual_seed(2)
    model = _sharpen(TinyResNet(), gain=2.0)
    x, y = images_for(model, (1, 8, 8), 8, 6, seed=2)
    t = (y + 1) % 4
    expected = brute_force(model, x, y, 8, targets=t)
    assert_matches_brute_force(onepixel.attack(model, x, y, levels=8, targets=t, device="cpu"), expected, x)


class SoftmaxNet(ExampleNet):
    """ExampleNet ending as users often end a classifier: in a softmax or log-softmax over the classes."""

    def __init__(self, final) -> None:
        super().__init__()
        self.final = final
        self.probs = nn.Softmax(dim=1)

    def forward(self, x):
        return self.final(self, super().forward(x))


@pytest.mark.parametrize("final", [
    lambda self, z: F.log_softmax(z, dim=1),  # the PyTorch MNIST example's last line
    lambda self, z: torch.log_softmax(z, -1),
    lambda self, z: z.softmax(dim=-1),
    lambda self, z: self.probs(z),
], ids=["F.log_softmax", "torch.log_softmax", "Tensor.softmax", "nn.Softmax"])
def test_a_final_softmax_is_peeled_and_matches_brute_force(final):
    """The bounds stop at the logits before a final softmax (it keeps the argmax); the search stays exact."""
    torch.manual_seed(0)
    model = _sharpen(SoftmaxNet(final))
    plan = compile_plan(model, (1, 8, 8))
    assert plan is not None and plan.head is model.fc2 and plan.graph.final is not None
    _exact_and_pruned(model)


@pytest.mark.parametrize("final, needle", [
    (lambda self, z: F.softmax(z, dim=0), "softmax"),          # over the batch: the argmax changes
    (lambda self, z: F.log_softmax(z, dim=1) * 2.0, "log_softmax"),  # not the last node
    (lambda self, z: F.softmax(z, 1, dtype=torch.float64), "softmax"),
])
def test_other_softmaxes_are_not_peeled(final, needle):
    plan, why = build_plan(_sharpen(SoftmaxNet(final)), (1, 8, 8))
    assert plan is None and needle in why


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_unsupported_op_falls_back_to_dense_with_one_warning():
    torch.manual_seed(3)
    model = _sharpen(RunningProduct())
    plan, why = build_plan(model, (1, 8, 8))
    assert plan is None and "'cumprod'" in why
    x, y = images_for(model, (1, 8, 8), 8, 4, seed=3)
    expected = brute_force(model, x, y, 8)
    logger = logging.getLogger("advgen")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        results = onepixel.attack(model, x, y, levels=8, device="cpu")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert_matches_brute_force(results, expected, x)
    assert all(r.pruned == 0 for r in results)
    assert len(handler.messages) == 1
    assert "'cumprod'" in handler.messages[0] and "for 4 images" in handler.messages[0]


class _Sequentialised(nn.Module):
    """The same layers as an nn.Sequential, spelled as a class."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.a, self.b, self.fc = seq[0], seq[3], seq[6]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.a(x)), 2)
        return self.fc(torch.flatten(torch.relu(self.b(x)), 1))


def test_class_and_sequential_spellings_give_the_same_bounds():
    torch.manual_seed(4)
    seq = _sharpen(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(5 * 3 * 3, 4)))
    cls = _Sequentialised(seq).eval()
    x = torch.rand(3, 2, 11, 11)
    img, ch, row, col, mid, half, ref = random_pixel_boxes(x, 200, 4, 0.4, torch.Generator().manual_seed(0))
    values = []
    for model in (seq, cls):
        for locality in (True, False):
            plan = compile_plan(model, (2, 11, 11), locality=locality)
            assert (plan.local is not None) == locality
            c, r = pixel_boxes(plan, x, plan.prepare(x), img, ch, row, col, mid, half)
            values.append(margin_bound(plan, c, r, ref, False))
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factory", [ExampleNet, TinyResNet])
def test_bounds_contain_every_sampled_margin(factory):
    """Soundness, sampled: the model's margin at any pixel value in a box is at least the box's bound."""
    torch.manual_seed(5)
    model = _sharpen(factory(), gain=2.0)
    x = torch.rand(2, 1, 8, 8)
    plan = compile_plan(model, (1, 8, 8))
    g = torch.Generator().manual_seed(1)
    n = 64
    img, ch = torch.randint(0, 2, (n,), generator=g), torch.zeros(n, dtype=torch.long)
    row, col = torch.randint(0, 8, (n,), generator=g), torch.randint(0, 8, (n,), generator=g)
    lo = torch.rand(n, generator=g) * 0.7
    hi = lo + torch.rand(n, generator=g) * 0.3
    ref = torch.randint(0, 4, (n,), generator=g)
    with torch.no_grad():
        bound = margin_bound(plan, *pixel_boxes(plan, x, plan.prepare(x), img, ch, row, col, (lo + hi) / 2,
                                                 (hi - lo) / 2), ref, False)
        full = certificate(plan, *_full_box(x, img, ch, row, col, lo, hi), ref, False)
        torch.testing.assert_close(bound, full, atol=1e-5, rtol=1e-5)
        for s in torch.linspace(0, 1, 9):
            xs = x[img].clone()
            xs[torch.arange(n), ch, row, col] = lo + s * (hi - lo)
            z = model(xs)
            margin = (z[torch.arange(n), ref][:, None] - z).masked_fill(
                F.one_hot(ref, 4).bool(), float("inf")).min(1).values
            assert bool((margin >= bound - 1e-5).all())


def _full_box(x, img, ch, row, col, lo, hi):
    center = x[img].clone()
    center[torch.arange(len(img)), ch, row, col] = (lo + hi) / 2
    radius = torch.zeros_like(center)
    radius[torch.arange(len(img)), ch, row, col] = (hi - lo) / 2
    return center, radius


@pytest.mark.parametrize("forward, needle", [
    (lambda self, x: self.fc((x - x.mean(0)).flatten(1)), "mean"),       # mixes the batch
    (lambda self, x: self.fc(x.flatten(1)[:, :64].cumprod(1)), "cumprod"),
    (lambda self, x: self.fc(F.leaky_relu(x, -0.5).flatten(1)), "leaky_relu"),  # not monotone
    (lambda self, x: self.fc(x.flatten(1) if x.sum() > 0 else -x.flatten(1)), "cannot trace"),  # control flow
])
def test_nodes_without_a_sound_rule_are_named(forward, needle):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)

    Odd.forward = forward
    plan, why = build_plan(Odd().eval(), (1, 8, 8))
    assert plan is None and needle in why


class FunctionalZoo(nn.Module):
    """Weights as parameters and buffers used through F.conv2d, F.batch_norm and F.linear, plus the other
    rules: avg pooling, sigmoid, subtraction and division by constants, negation, mean over space."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 1, 3, 3) * 2)
        self.b = nn.Parameter(torch.randn(3) * 0.1)
        self.register_buffer("mean", torch.rand(3) * 0.2)
        self.register_buffer("var", torch.rand(3) + 0.5)
        self.head = nn.Parameter(torch.randn(4, 3 * 3 * 3 + 3) * 2)

    def forward(self, x):
        h = F.conv2d(x, self.w, self.b, padding=1)
        h = F.batch_norm(h, self.mean, self.var, None, None, False, 0.1, 1e-5)
        h = torch.sigmoid(F.avg_pool2d(h, 2)) - 0.5
        pooled = -(h.mean((2, 3)) / 2)
        flat = torch.cat([h.reshape(h.shape[0], -1), pooled], 1)
        return F.linear(flat, self.head * 1.5)  # a constant computed from a weight


def test_functional_forms_match_brute_force():
    torch.manual_seed(8)
    model = FunctionalZoo().eval()
    plan, why = build_plan(model, (1, 6, 6))
    assert plan is not None, why
    x, y = images_for(model, (1, 6, 6), 16, 8, seed=8)
    expected = brute_force(model, x, y, 16)
    results = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(results, expected, x)
    assert sum(r.pruned for r in results) > 0
    # derived constants follow the weights: the plan built before a change bounds the changed model
    with torch.no_grad():
        model.head.mul_(-1)
        c, r = plan.body(x, torch.zeros_like(x))
        torch.testing.assert_close(c, model(x))


def test_windows_a_geometry_breaks_fall_back_to_full_map_bounds_not_dense():
    """A 1x1 convolution of stride 3 after a strided pool reads only padding along the width, so no pixel
    reaches the output (found by a random search of geometries); the windowed prefix cannot tile an empty
    window, and the plan bounds the full feature maps instead, which certify every candidate."""
    torch.manual_seed(0)
    shape = (1, 8, 5)
    model = _sharpen(nn.Sequential(nn.MaxPool2d(4, stride=2, padding=1), nn.Conv2d(1, 2, 1, stride=3, padding=(0, 1)),
                                   nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)))
    plan, why = build_plan(model, shape)
    assert why is None and plan is not None and plan.local is None
    x = torch.randint(0, 16, (6, *shape)).float() / 15
    y = model(x).argmax(1)
    found = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(found, brute_force(model, x, y, 16), x)
    assert sum(r.pruned for r in found) > 0


def test_float64_images_are_refused_in_one_line():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double().eval()
    x = torch.randint(0, 16, (2, 1, 8, 8)).double() / 15
    with pytest.raises(InputError, match=r"runs in float32 .* got float64 images: pass images.float\(\) and "
                                         r"model.float\(\)"):
        onepixel.attack(model, x, model(x).argmax(1), levels=16, device="cpu")


def _random_stack(rng: "random.Random") -> tuple[nn.Module, tuple[int, int, int]]:
    """A random CNN of layers with rules: kernel, stride, padding, dilation and groups drawn at random, so
    the receptive-field windows meet geometries no hand-written model has."""
    c, h, w = rng.choice([1, 1, 2, 3]), rng.randint(4, 9), rng.randint(4, 9)
    layers: list[nn.Module] = []
    probe = torch.zeros(1, c, h, w)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["conv", "conv", "max", "avg"])
        k, s = (rng.randint(1, 4), rng.randint(1, 4)), (rng.randint(1, 3), rng.randint(1, 3))
        ch = probe.shape[1]
        if kind == "conv":
            groups = rng.choice([g for g in range(1, ch + 1) if ch % g == 0])
            pad = (rng.randint(0, k[0]), rng.randint(0, k[1]))
            layer: nn.Module = nn.Conv2d(ch, groups * rng.randint(1, 3), k, s, pad, rng.choice([1, 1, 2]), groups=groups)
        elif kind == "max":
            layer = nn.MaxPool2d(k, s, (k[0] // 2, k[1] // 2), ceil_mode=rng.random() < 0.3)
        else:
            layer = nn.AvgPool2d(k, s, (k[0] // 2, k[1] // 2), count_include_pad=rng.random() < 0.7)
        try:
            out = layer(probe)
        except RuntimeError:  # the map is too small for this layer
            continue
        if out.numel() == 0:
            continue
        probe = out
        layers += [layer, rng.choice([nn.ReLU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.BatchNorm2d(probe.shape[1])])]
    return _sharpen(nn.Sequential(*layers, nn.Flatten(), nn.Linear(probe[0].numel(), 3)), 2.0), (c, h, w)


@pytest.mark.parametrize("seed", range(24))
def test_random_geometries_match_brute_force(seed):
    import random

    torch.manual_seed(seed)
    model, shape = _random_stack(random.Random(seed))
    x, y = images_for(model, shape, 16, 6, seed)
    found = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(found, brute_force(model, x, y, 16), x)


def _bounded_and_exact(model: nn.Module, seed: int, shape: tuple[int, int, int] = (1, 8, 8), images: int = 8,
                       lead: int | None = None) -> None:
    """``model`` gets a bound plan (windowed, with at least ``lead`` elementwise layers run on the pixel's own
    window, when given); its exact search equals brute force, with flips found and over 30% of the
    candidates settled by bounds."""
    plan, why = build_plan(model, shape)
    assert why is None and plan is not None
    if lead is not None:
        assert plan.local is not None and plan.local.lead >= lead
    x, y = images_for(model, shape, 16, images, seed=seed)
    found = onepixel.attack(model, x, y, levels=16, device="cpu")
    assert_matches_brute_force(found, brute_force(model, x, y, 16), x)
    assert sum(r.pruned for r in found) > 0.3 * sum(r.pruned + r.evaluated for r in found)
    assert any(len(r.flips) for r in found)


VALLEYS = [nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Mish(), nn.Hardswish()]


@pytest.mark.parametrize("act", VALLEYS, ids=lambda m: repr(m))
def test_one_minimum_activations_bound_every_value_in_their_box(act):
    """Falling, then rising: the box's image is [f(min) or an end point, the larger end point]. Checked on
    dense samples of boxes around, left of and right of the minimum, and exact on point boxes."""
    from advgen.onepixel.rules import propagate

    g = torch.Generator().manual_seed(0)
    center = torch.cat([torch.rand(3000, generator=g) * 8 - 5, torch.full((3,), -0.75), torch.full((3,), -1.28)])
    radius = torch.cat([torch.rand(3000, generator=g) * 2, torch.tensor([0.0, 0.01, 0.3] * 2)])
    c, r = propagate([act], center, radius)
    ts = torch.linspace(0, 1, 2001)
    inside = act(center[:, None] - radius[:, None] + 2 * radius[:, None] * ts)  # (boxes, samples)
    # torch's fp32 GELU is itself off by up to 1.2e-6 (against fp64, on [-8, 8], AVX512 kernels: 1 + erf
    # cancels in the tail), and differently where a value sits in a tensor; the search's safety margin is 1e-4
    tol = 5e-6
    assert (inside >= (c - r)[:, None] - tol).all() and (inside <= (c + r)[:, None] + tol).all()
    point = radius == 0
    assert torch.equal(c[point], act(center[point])) and (r[point] == 0).all()
    assert ((c + r) - inside.max(1).values <= 1e-6).all()  # the top is tight: an end point


class ValleyNet(nn.Module):
    """A CNN written with each activation's functional spelling."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2)
        self.fc1, self.fc2 = nn.Linear(6 * 3 * 3, 12), nn.Linear(12, 4)

    def forward(self, x):
        x = self.fn(self.conv2(self.fn(self.conv1(x))))
        return self.fc2(self.fn(self.fc1(torch.flatten(x, 1))))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.SiLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 10), nn.Mish(), nn.Linear(10, 4)),
    lambda: ValleyNet(F.gelu), lambda: ValleyNet(lambda x: F.gelu(x, approximate="tanh")), lambda: ValleyNet(F.silu),
    lambda: ValleyNet(F.mish),
], ids=["modules", "F.gelu", "F.gelu-tanh", "F.silu", "F.mish"])
def test_gelu_silu_and_mish_models_are_bounded_and_exact(make):
    torch.manual_seed(3)
    model = _sharpen(make())
    _bounded_and_exact(model, seed=3)


ORDER_LAYERS = [nn.ZeroPad2d((1, 2, 0, 1)), nn.ConstantPad2d(1, 0.7), nn.ReflectionPad2d(1), nn.ReplicationPad2d(2),
                nn.CircularPad2d(1), nn.Upsample(scale_factor=2), nn.Upsample(scale_factor=1.5, mode="bilinear"),
                nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True), nn.AdaptiveMaxPool2d((2, 3))]


@pytest.mark.parametrize("m", ORDER_LAYERS, ids=lambda m: repr(m))
def test_order_preserving_layers_bound_every_value_in_their_box(m):
    """Padding, nearest/bilinear resizing and adaptive max pooling never lower an output when an input
    rises, so the images of a box's two corners bound it; checked on random boxes and 200 samples each."""
    _bounds_every_sample(m, seed=1, boxes=20)


def _bounds_every_sample(m: nn.Module, seed: int, boxes: int) -> None:
    """``m``'s rule contains its output at 200 random points of each of ``boxes`` random (N, 2, 4, 5) boxes."""
    from advgen.onepixel.rules import propagate

    g = torch.Generator().manual_seed(seed)
    center, radius = torch.randn(boxes, 2, 4, 5, generator=g), torch.rand(boxes, 2, 4, 5, generator=g)
    with torch.no_grad():
        c, r = propagate([m], center, radius)
        t = torch.rand(200, *center.shape, generator=g) * 2 - 1
        inside = m((center + t * radius).flatten(0, 1)).view(200, *c.shape)
    assert (inside >= c - r - 1e-5).all() and (inside <= c + r + 1e-5).all()


class Resizing(nn.Module):
    """Functional padding, resizing and adaptive max pooling between convolutions."""

    def forward(self, x):
        x = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear")
        x = F.adaptive_max_pool2d(F.relu(self.conv2(F.pad(x, (0, 1, 0, 1), value=0.25))), (2, 2))
        return self.fc(torch.flatten(x, 1))

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3), nn.Linear(24, 4)


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Upsample(scale_factor=2), nn.ReflectionPad2d(1),
                          nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 4)),
    Resizing,
], ids=["modules", "functional"])
def test_padding_resizing_and_adaptive_max_pooling_are_bounded_and_exact(make):
    torch.manual_seed(4)
    model = _sharpen(make())
    _bounded_and_exact(model, seed=4)


def test_bicubic_resizing_has_no_rule_and_is_named():
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic"), nn.Flatten(), nn.Linear(4 * 64, 3))
    plan, why = build_plan(model, (1, 8, 8))
    assert plan is None and "bicubic resizing" in why


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_convolutions_with_a_padding_mode_are_bounded_and_exact(mode):
    """Padding by reflection, replication or wrapping is order-preserving, so such a convolution is that
    padding, then a convolution without padding; the receptive-field windows (zero padding) stop before it."""
    torch.manual_seed(5)
    model = _sharpen(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode=mode), nn.ReLU(),
                                   nn.Conv2d(4, 4, 3, stride=2, padding=(1, 2), padding_mode=mode), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(4 * 4 * 5, 4)))
    _bounded_and_exact(model, seed=5)


class Normalised(nn.Module):
    """RobustBench's habit: torchvision's Normalize as the model's first layer, the CNN behind it."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision import transforms

        self.norm = transforms.Normalize((0.1307,), (0.3081,))
        self.conv, self.fc = nn.Conv2d(1, 4, 3, stride=2), nn.Linear(4 * 3 * 3, 4)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(self.norm(x))), 1))


@pytest.mark.parametrize("make", [
    Normalised,
    lambda: nn.Sequential(__import__("torchvision").transforms.Normalize((0.5,), (0.25,)), nn.Conv2d(1, 4, 3),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 4)),
], ids=["class", "sequential"])
def test_torchvision_normalize_is_traced_whole_and_bounded(make):
    torch.manual_seed(6)
    model = _sharpen(make())
    _bounded_and_exact(model, seed=6)
    plan, _ = build_plan(model, (1, 8, 8))
    assert plan.local is not None and plan.local.lead == 1  # windows, the Normalize run on the pixel alone


def _colour_normalised() -> nn.Module:
    from torchvision import transforms

    return nn.Sequential(transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), nn.Conv2d(3, 4, 3),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 4))


@pytest.mark.parametrize("make", [
    _colour_normalised,
    lambda: nn.Sequential(nn.BatchNorm2d(1), nn.GELU(), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 4)),
], ids=["normalize-rgb", "batchnorm-gelu"])
def test_elementwise_layers_before_the_first_convolution_keep_the_windows(make):
    """Layers that act on each pixel alone, in front of the first spatial layer, run on the pixel's 1x1
    window (all its channels, read from the input): the same answers as brute force, on windows."""
    torch.manual_seed(7)
    model = _sharpen(make())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.3), m.running_var.fill_(0.5)
    model.eval()
    shape = (3, 8, 8) if isinstance(model[1], nn.Conv2d) and model[1].in_channels == 3 else (1, 8, 8)
    _bounded_and_exact(model, seed=7, shape=shape, images=6, lead=1)


class ImageNormalizer(nn.Module):
    """RobustBench's own wrapper: ``(input - self.mean) / self.std`` with per-channel buffers."""

    def __init__(self, mean, std, shape=(1, -1, 1, 1)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean).view(*shape))
        self.register_buffer("std", torch.as_tensor(std).view(*shape))

    def forward(self, x):
        return (x - self.mean) / self.std


class Clamped(nn.Module):
    """The robustness library's ``InputNormalize``: clamp to [0, 1], then (x - mean) / std, buffers (C, 1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = ImageNormalizer((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), shape=(-1, 1, 1))
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 3 * 3, 4)

    def forward(self, x):
        h = self.norm(x.clamp(0, 1))
        return self.fc(torch.flatten(F.max_pool2d(F.relu(self.conv(h)), 2), 1))


class Scalars(nn.Module):
    """Normalisation by numbers in ``forward``, in several spellings: ``2 * (x - 0.13) / 0.31 - 1``, ``1 - x``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, stride=2), nn.Linear(4 * 3 * 3, 4)

    def forward(self, x):
        x = 1.0 - torch.clip(x, min=0.0, max=1.0)
        x = 2 * (x - 0.13) / 0.31 - 1
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class ConstantFirst(ImageNormalizer):
    """The buffer on the left: fx records ``self.mean - x`` as ``self.mean.sub(x)``, a method of the constant."""

    def __init__(self) -> None:
        super().__init__((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        h = (self.mean - x) / self.std
        return self.fc(torch.flatten(F.relu(self.conv(self.mean * h + self.std)), 1))


class ViewedInForward(nn.Module):
    """Learned statistics of shape (C,) shaped in ``forward``: ``self.mean.view(1, -1, 1, 1)``,
    ``self.std[None, :, None, None]`` (fx folds such a view of a buffer into a constant, but keeps a
    parameter's as nodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor([0.49, 0.48, 0.45]))
        self.std = nn.Parameter(torch.tensor([0.25, 0.24, 0.26]))
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        h = (x - self.mean.view(1, -1, 1, 1)) / self.std[None, :, None, None]
        return self.fc(torch.flatten(F.relu(self.conv(h)), 1))


@pytest.mark.parametrize("make, shape", [
    (ViewedInForward, (3, 8, 8)),
    (lambda: nn.Sequential(ImageNormalizer((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), nn.Conv2d(3, 4, 3), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 4)), (3, 8, 8)),
    (Clamped, (3, 8, 8)),
    (Scalars, (1, 8, 8)),
    (lambda: ConstantFirst(), (3, 8, 8)),
], ids=["viewed-in-forward", "image-normalizer", "clamp-then-normalize", "numbers", "constant-first"])
def test_normalisation_written_in_forward_is_a_layer_of_the_windowed_prefix(make, shape):
    """Arithmetic with a number or a per-channel buffer in front of the first convolution is a per-channel
    affine layer (:class:`ChannelAffine`), run on the pixel's window: brute force's answers, on windows."""
    torch.manual_seed(8)
    _bounded_and_exact(_sharpen(make()).eval(), seed=8, shape=shape, images=6, lead=2)


def test_a_constant_that_varies_by_position_is_not_taken_as_per_channel():
    """A mean image (1, 1, H, W) differs per pixel: it stays an ordinary node (full maps), still exact."""
    torch.manual_seed(9)
    model = _sharpen(nn.Sequential(ImageNormalizer(torch.rand(64) * 0.5, torch.full((64,), 0.3), shape=(1, 1, 8, 8)),
                                   nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 4))).eval()
    plan, why = build_plan(model, (1, 8, 8))
    assert why is None and plan.local is None
    x, y = images_for(model, (1, 8, 8), 16, 4, seed=9)
    assert_matches_brute_force(onepixel.attack(model, x, y, levels=16, device="cpu"), brute_force(model, x, y, 16), x)


def test_a_channel_affine_layer_reads_its_parameter_at_every_run():
    """A learned input scale (a parameter, and a constant computed from it in ``forward``) is read when the
    bound runs, not when the plan was built."""
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor([2.0]))
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.conv(x * self.scale + self.scale.exp())), 1))

    torch.manual_seed(10)
    model = Scaled().eval()
    plan, _ = build_plan(model, (1, 8, 8))
    with torch.no_grad():
        model.scale.fill_(-0.7)
    x = torch.rand(3, 1, 8, 8)
    zero = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        c, r = pixel_boxes(plan, x, plan.prepare(x), torch.arange(3), zero, zero, zero, x[:, 0, 0, 0], torch.zeros(3))
        assert plan.local.lead == 2 and torch.allclose(plan.head(c), model(x), atol=1e-5) and float(r.abs().max()) == 0


def _with_random_affine(m: nn.Module) -> nn.Module:
    torch.manual_seed(11)
    for p in m.parameters():
        p.data = torch.randn_like(p) * 0.8
    return m.eval()


SELF_NORMS = [nn.LayerNorm([2, 4, 5]), nn.LayerNorm(5), nn.LayerNorm([4, 5], elementwise_affine=False),
              nn.GroupNorm(1, 2), nn.GroupNorm(2, 2), nn.InstanceNorm2d(2), nn.InstanceNorm2d(2, affine=True),
              nn.InstanceNorm2d(2, affine=True, track_running_stats=True)]


@pytest.mark.parametrize("m", SELF_NORMS, ids=lambda m: repr(m))
def test_self_normalising_layers_bound_every_value_in_their_box(m):
    """Layer, group and instance norm divide by the input's own spread; their rule contains every output of
    random boxes (200 samples each, corners included), is exact on point boxes, and is not vacuous."""
    from advgen.onepixel.rules import propagate

    m = _with_random_affine(m)
    g = torch.Generator().manual_seed(2)
    center = torch.randn(20, 2, 4, 5, generator=g)
    radius = torch.rand(20, 2, 4, 5, generator=g) * 0.3 * (torch.rand(20, 1, 1, 1, generator=g) < 0.5)
    t = torch.cat([torch.rand(198, *center.shape, generator=g) * 2 - 1, -torch.ones(1, *center.shape),
                   torch.ones(1, *center.shape)])
    with torch.no_grad():
        c, r = propagate([m], center, radius)
        inside = m((center + t * radius).flatten(0, 1)).view(200, *c.shape)
    assert (inside >= c - r - 1e-5).all() and (inside <= c + r + 1e-5).all()
    point = (radius.flatten(1) == 0).all(1)
    assert point.any() and torch.allclose(c[point], m(center[point]), atol=1e-5) and (r[point] == 0).all()
    assert float(r.mean()) < 5 * float((inside.amax(0) - inside.amin(0)).mean()) + 1e-3


def test_transposed_convolutions_bound_every_value_in_their_box():
    _bounds_every_sample(_with_random_affine(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)),
                         seed=3, boxes=10)


class UpConv(nn.Module):
    """``F.conv_transpose2d`` with the weight as a parameter, as decoders write it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.up = nn.Conv2d(1, 3, 3, stride=2), nn.Parameter(torch.randn(3, 2, 3, 3) * 0.5)
        self.fc = nn.Linear(2 * 6 * 6, 4)

    def forward(self, x):
        h = F.conv_transpose2d(F.relu(self.conv(x)), self.up, stride=2, padding=1, output_padding=1)
        return self.fc(torch.flatten(F.relu(h), 1))


class FunctionalNorms(nn.Module):
    """``F.group_norm`` and ``F.layer_norm`` with parameters, as hand-written norm layers call them (ConvNeXt's
    channels-last layer norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2)
        self.gw, self.gb = nn.Parameter(torch.rand(4) * 2 + 1.5), nn.Parameter(torch.randn(4) * 0.1)
        self.lw, self.lb = nn.Parameter(torch.rand(6) * 2 + 1.5), nn.Parameter(torch.randn(6) * 0.1)
        self.fc = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x):
        h = F.relu(F.group_norm(self.conv1(x), 2, self.gw, self.gb))
        h = self.conv2(h).permute(0, 2, 3, 1)
        h = F.layer_norm(h, (6,), self.lw, self.lb, 1e-6).permute(0, 3, 1, 2)
        return self.fc(torch.flatten(F.relu(h), 1))


class NormNet(nn.Module):
    """A CNN with the normalisations of modern architectures: group norm, instance norm, layer norm in the head."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2)
        self.norm1 = {"group": nn.GroupNorm(2, 4), "instance": nn.InstanceNorm2d(4, affine=True),
                      "layer": nn.LayerNorm([4, 8, 8])}[norm]
        self.fc1, self.ln, self.fc2 = nn.Linear(6 * 3 * 3, 12), nn.LayerNorm(12), nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return self.fc2(F.relu(self.ln(self.fc1(torch.flatten(x, 1)))))


@pytest.mark.parametrize("make", [
    lambda: NormNet("group"), lambda: NormNet("instance"), lambda: NormNet("layer"),
    lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.ConvTranspose2d(3, 2, 3, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(2 * 7 * 7, 4)),
    lambda: UpConv(), lambda: FunctionalNorms(),
], ids=["group-norm", "instance-norm", "layer-norm", "conv-transpose", "F.conv_transpose2d", "F.group_norm-F.layer_norm"])
def test_normalisation_and_transposed_convolution_models_are_bounded_and_exact(make):
    torch.manual_seed(12)
    model = _sharpen(make()).eval()
    _bounded_and_exact(model, seed=12)


def test_a_constant_group_under_a_tiny_eps_is_not_misjudged():
    """Found by an audit: in a group of equal values torch's ``x - mean`` is rounding noise, which
    ``1 / sqrt(eps)`` (1e6 at eps 1e-12) turns into a change the size of a real one, and a plain fp32
    formula's noise differs from the kernel's. The head below is tuned to that difference: without the
    rule's rounding allowance the bounds proved 960 flips on this image that the model never makes."""
    levels = 16
    gn = nn.GroupNorm(2, 2, eps=1e-12)
    torch.manual_seed(0)
    ch0 = torch.randint(0, levels, (8, 8)).float() / (levels - 1)

    def noise(x: torch.Tensor) -> tuple[float, float]:
        """The constant group's mean output: torch's kernel, and the textbook formula in fp32."""
        g = x[0, 1]
        return float(gn(x)[0, 1].mean()), float(((g - g.mean()) * torch.rsqrt(g.var(unbiased=False) + 1e-12)).mean())

    with torch.no_grad():
        gn.weight.fill_(1.0), gn.bias.zero_()
        images = [torch.stack([ch0, torch.full((8, 8), lv / (levels - 1))])[None] for lv in range(levels)]
        x = max(images, key=lambda im: abs(noise(im)[0] - noise(im)[1]))
        kernel, formula = noise(x)
        assert abs(kernel - formula) > 1e-3  # the case the rule must survive
        gain = 2.0 / abs(kernel - formula)
        head = nn.Linear(128, 2)
        head.weight.zero_(), head.bias.zero_()
        head.weight[0, :64] = torch.randn(64) * 1e-3
        head.weight[0, 64:] = gain / 64
        head.bias[0] = -gain * (kernel + formula) / 2  # the model's margin is +-1, the formula's -+1
    model = nn.Sequential(gn, nn.Flatten(), head).eval()
    y = model(x).argmax(1)
    found = onepixel.attack(model, x, y, levels=levels, device="cpu")
    assert_matches_brute_force(found, brute_force(model, x, y, levels), x)


def test_a_clamp_to_one_value_is_searched_not_a_crash():
    """``clamp(x, lo, hi)`` with ``lo >= hi`` is valid PyTorch (every value becomes ``hi``); hardtanh cannot
    be built that way, so it has no rule and the model is searched densely (it crashed the plan before)."""
    class Clamped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(torch.clamp(self.conv(x), 0.7, 0.2) + self.conv(x), 1))

    model = Clamped().eval()
    plan, why = build_plan(model, (1, 8, 8))
    assert plan is None and "no interval rule" in why
    x, y = images_for(model, (1, 8, 8), 4, 2)
    assert_matches_brute_force(onepixel.attack(model, x, y, levels=4, device="cpu"), brute_force(model, x, y, 4), x)


def test_a_grey_image_normalised_with_colour_statistics_keeps_its_plan():
    """``x - self.mean`` with a 3-channel mean on 1-channel input broadcasts to 3 channels; the radius must
    too (the plan failed its probe, and the model went dense)."""
    model = _sharpen(nn.Sequential(ImageNormalizer((0.4, 0.5, 0.6), (1.0, 1.0, 1.0)), nn.Conv2d(3, 4, 3),
                                   nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))).eval()
    model[0].std.fill_(1.0)
    model = nn.Sequential(ShiftOnly(model[0].mean), *list(model)[1:])
    plan, why = build_plan(model, (1, 8, 8))
    assert why is None and plan.local is not None and plan.local.lead == 1
    x, y = images_for(model, (1, 8, 8), 16, 6, seed=13)
    assert_matches_brute_force(onepixel.attack(model, x, y, levels=16, device="cpu"), brute_force(model, x, y, 16), x)


class ShiftOnly(nn.Module):
    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())

    def forward(self, x):
        return x - self.mean


class MedianFiltered(nn.Module):
    """A 3x3 median filter in front of a CNN, spelled as the widely copied ``MedianPool2d`` gist does it
    (reflect padding, two ``Tensor.unfold`` views, ``median(dim=-1)[0]``): the classic defence against
    sparse noise, whose one-pixel robustness is what a user would ask advgen about."""

    def __init__(self, values: bool = False) -> None:
        super().__init__()
        self.values = values
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * 4 * 4, 4))

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1), mode="reflect").unfold(2, 3, 1).unfold(3, 3, 1)
        picked = x.contiguous().view(x.size()[:4] + (-1,)).median(dim=-1)
        return self.body(picked.values if self.values else picked[0])


class GlobalExtremes(nn.Module):
    """Global max pooling written in forward, and the other reductions and selections that never lower an
    output when an input rises: ``amax``, ``amin``, ``logsumexp``, ``max``/``min`` along a dim, the
    elementwise ``maximum``/``minimum``, ``F.unfold`` and batch-keeping indexing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 + 9 * 16, 4)  # (sort: the second largest, subtracted)

    def forward(self, x):
        h = F.relu(self.conv(x))
        top2 = h.flatten(2).sort(2, descending=True).values[:, :, 1]
        pooled = torch.cat([h.amax(dim=(2, 3)) - top2, torch.amin(h, (2, 3)), h.logsumexp((2, 3)) / 4,
                            torch.maximum(h.max(dim=3).values.min(dim=2)[0], torch.minimum(h[:, :, 0, 0], x[:, 0, :1, 1]))], 1)
        return self.fc(torch.cat([pooled, F.unfold(x[:, :, ::2, ::2], 3, padding=1).flatten(1)], 1))


@pytest.mark.parametrize("make", [MedianFiltered, lambda: MedianFiltered(values=True), GlobalExtremes],
                         ids=["median[0]", "median.values", "extremes"])
def test_order_statistics_in_forward_are_bounded_and_exact(make):
    torch.manual_seed(6)
    model = _sharpen(make())
    _bounded_and_exact(model, seed=6)


@pytest.mark.parametrize("method", ["amax", "amin", "logsumexp", "max", "min", "median", "sort"])
def test_order_statistics_bound_every_value_in_their_box(method):
    """Each reduction or selection over the last dim of random boxes contains its value at 200 random points
    of the box; a point box is exact."""
    from advgen.onepixel.rules import ORDER_SELECT, Box, order_reduce, order_select

    select = method in ORDER_SELECT
    fn = (lambda t: getattr(torch, method)(t, dim=2).values) if select else (lambda t: getattr(torch, method)(t, 2))
    rule = (lambda b: order_select(method)(b, dim=2)[0]) if select else (lambda b: order_reduce(method)(b, 2))
    g = torch.Generator().manual_seed(2)
    center, radius = torch.randn(20, 2, 20, generator=g), torch.rand(20, 2, 20, generator=g)
    box = rule(Box(center, radius))
    t = torch.rand(200, *center.shape, generator=g) * 2 - 1
    inside = fn((center + t * radius).flatten(0, 1)).view(200, *box.center.shape)
    assert (inside >= box.center - box.radius - 1e-5).all() and (inside <= box.center + box.radius + 1e-5).all()
    point = rule(Box(center, torch.zeros_like(radius)))
    assert torch.allclose(point.center, fn(center)) and (point.radius == 0).all()


@pytest.mark.parametrize("forward, needle", [
    (lambda x: x.flatten(1).max(dim=1)[1].float()[:, None] * torch.ones(1, 3), "indices of a max"),
    (lambda x: x.flatten(1).median(dim=1).indices.float()[:, None] * torch.ones(1, 3), "indices of a max"),
    (lambda x: x.amax(dim=0)[None].flatten(1)[:, :3], "no interval rule"),
    (lambda x: x[0:1].flatten(1)[:, :3], "no interval rule"),
    (lambda x: torch.cat(x.flatten(1).chunk(4, dim=1)[:2], 1)[:, :3], "one at a time"),
    (lambda x: x.flatten(1).chunk(2, dim=0)[0][:, :3], "no interval rule"),
], ids=["max[1]", "median.indices", "amax over the batch", "indexing the batch", "a slice of the pieces",
        "chunks of the batch"])
def test_indices_pieces_and_batch_reductions_have_no_rule(forward, needle):
    class Model(nn.Module):
        def forward(self, x):
            return forward(x)

    plan, why = build_plan(Model(), (1, 4, 4))
    assert plan is None and needle in why


#: Each rule family that takes a dim, given a negative one that resolves to the batch (x is (N, 1, 4, 4)).
BATCH_DIMS = {
    "amax": lambda x: (x - x.amax(-4, keepdim=True)).flatten(1),
    "amin": lambda x: x.flatten(1) - torch.amin(x.flatten(1), (-2, 1), keepdim=True),
    "logsumexp": lambda x: x.flatten(1) - torch.logsumexp(x.flatten(1), -2, True),
    "max": lambda x: x.flatten(1) - x.flatten(1).max(-2, keepdim=True)[0],
    "min": lambda x: x.flatten(1) - torch.min(x.flatten(1), -2, True).values,
    "median": lambda x: x.flatten(1) - x.flatten(1).median(-2, keepdim=True).values,
    "sort": lambda x: x.flatten(1).amax(1).sort()[0][:, None] * torch.ones(1, 3),
    "mean": lambda x: (x - x.mean(-4)).flatten(1),
    "cat": lambda x: torch.cat([x, x], -4).flatten(1),
    "chunk": lambda x: x.chunk(2, -4)[0].flatten(1),
    "split": lambda x: torch.split(x, 1, -4)[0].flatten(1),
    "tensor_split": lambda x: x.tensor_split(2, dim=-4)[0].flatten(1),
    "unbind": lambda x: torch.unbind(x, -4)[0].flatten(1),
    "unfold": lambda x: x.unfold(-4, 1, 1).flatten(1),
    "transpose": lambda x: torch.transpose(x, -4, 1).flatten(1),
    "permute": lambda x: x.permute(-3, -4, -2, -1).flatten(1),
    "squeeze": lambda x: x.squeeze(-4).flatten(1),
    "squeeze without a dim": lambda x: torch.squeeze(x.amax((2, 3), keepdim=True)).reshape(-1, 1) * torch.ones(1, 3),
    "unsqueeze": lambda x: torch.unsqueeze(x, -5).flatten(2).squeeze(0),
    "flatten": lambda x: torch.flatten(x, -4).view(-1, 16),
    "layer_norm": lambda x: F.layer_norm(x.flatten(1), x.flatten(1).shape),
}


@pytest.mark.parametrize("name", list(BATCH_DIMS))
def test_negative_dims_that_resolve_to_the_batch_are_refused_by_name(name):
    """Found by an audit: the rules' own checks refused dim 0 but not -4 of a 4-d map (or -2 of a 2-d one),
    which only the clean-pass probe could catch, and not always: a median or sort over two probe rows
    reproduces the first row whenever it is the smaller. The rules now check the dim against the tensor's
    ndim when they run, so the plan names the node and the batch, with or without the probe."""
    class Model(nn.Module):
        def forward(self, x):
            return BATCH_DIMS[name](x)

    plan, why = build_plan(Model(), (1, 4, 4))
    assert plan is None and why.startswith("node ") and "batch dim" in why
    from advgen.onepixel.graph import trace_steps
    from advgen.onepixel.rules import BatchDimError, Box

    traced = trace_steps(Model())
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(BatchDimError, match="batch"):
        traced.run(Box(x, torch.zeros_like(x)))


class NegativeDims(nn.Module):
    """The rule families that take a dim, each given negative dims that are not the batch's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 64 + 4 * 8 * 2 + 4 + 64, 4)

    def forward(self, x):
        h = F.relu(self.conv(x))
        a, b = h.chunk(2, -3)
        h = torch.cat([torch.transpose(a, -1, -2), b.permute(-4, -3, -1, -2)], -3)
        h = torch.squeeze(torch.unsqueeze(h, -1), -1) - 0.5 * h.mean(-2, keepdim=True)
        gate = h.tensor_split(2, dim=-1)[0].amax((-1, -3), True)
        first = torch.split(h, [1, 3], -3)[0] + h.unbind(-3)[1].unsqueeze(-3) * gate
        rows, cols = h.median(-1).values, torch.amin(h, -2)
        parts = [torch.flatten(h, -3), rows.flatten(1), cols.flatten(1), torch.logsumexp(rows, -1), first.flatten(-3)]
        return self.fc(torch.cat(parts, -1))


def test_negative_dims_off_the_batch_are_bounded_and_exact():
    torch.manual_seed(9)
    _bounded_and_exact(_sharpen(NegativeDims()), seed=9)


class WritesInPlace(nn.Module):
    """A write into a tensor whose result the model drops, or into a tensor another node reads as well."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 36, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = x * 1.0
        if self.how == "view":
            h[:, :, :, 0].clamp_(max=0.9)
        elif self.how == "whole":
            h.clamp_(max=0.9)
        elif self.how == "module":
            self.relu(h - 0.5)  # (h - 0.5 is a fresh tensor: dropped, and harmless, but not told apart)
        elif self.how == "read twice":
            return self.fc(F.relu(self.conv(h)).flatten(1)) + self.fc(F.relu(self.conv(F.relu(h, True))).flatten(1))
        return self.fc(F.relu(self.conv(h)).flatten(1))


@pytest.mark.parametrize("how", ["view", "whole", "module", "read twice"])
def test_writes_in_place_the_bounds_cannot_follow_are_refused(how):
    """Found by an audit: ``h[:, :, :, 0].clamp_(max=0.9)`` changes ``h`` but its own result is unused, so the
    rules never saw it, and the search reported flips the model does not make (and missed real ones).
    (``h[:, 0] = v`` needs no rule: fx cannot trace item assignment, so such a model is searched densely.)"""
    plan, why = build_plan(WritesInPlace(how), (1, 6, 6))
    assert plan is None and "writes in place" in why


class InPlaceChain(nn.Module):
    """Writes in place that the model goes on with: ``out += identity`` and ``ReLU(inplace=True)``, as in
    torchvision's ResNet blocks, and ``x[()]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 8 * 8, 4)

    def forward(self, x):
        identity = self.relu(self.conv1(x[()]))
        out = self.conv2(identity)
        out += identity
        return self.fc(F.relu(out, inplace=True).flatten(1))


def test_writes_in_place_that_the_model_goes_on_with_are_bounded_and_exact():
    torch.manual_seed(7)
    _bounded_and_exact(_sharpen(InPlaceChain()), seed=7)


class ModernBlocks(nn.Module):
    """The pieces torchvision's mobile CNNs are made of, small: a squeeze-and-excitation gate (features
    times a sigmoid of their pooled statistics: a box times a box), Hardswish, ShuffleNet's chunk and
    channel shuffle (``torch.transpose``), and stochastic depth in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.se_down, self.se_up = nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 1)
        self.branch = nn.Conv2d(2, 2, 3, padding=1)
        self.drop = StochasticDepth(0.2, "row")
        self.act, self.fc = nn.Hardswish(inplace=True), nn.Linear(4 * 8 * 8, 4)

    def forward(self, x):
        h = F.hardswish(self.stem(x))
        h = h * torch.sigmoid(self.se_up(F.relu(self.se_down(F.adaptive_avg_pool2d(h, 1)))))
        left, right = h.chunk(2, dim=1)
        h = torch.cat([left, self.drop(nn.functional.hardsigmoid(self.branch(right))) + right], 1)
        b, c, hh, ww = h.shape
        h = torch.transpose(h.view(b, 2, c // 2, hh, ww), 1, 2).contiguous().view(b, c, hh, ww)
        return self.fc(self.act(h).flatten(1))


def test_mobile_cnn_blocks_are_bounded_and_exact():
    torch.manual_seed(8)
    _bounded_and_exact(_sharpen(ModernBlocks()).eval(), seed=8)


def test_a_box_times_a_box_bounds_every_product_in_the_boxes():
    """The product of two boxes contains the product at 200 random points of each pair of random boxes,
    including boxes that straddle zero; point boxes are exact."""
    from advgen.onepixel.rules import Box, mul_boxes

    g = torch.Generator().manual_seed(3)
    ca, ra, cb, rb = torch.randn(50, 6, generator=g), torch.rand(50, 6, generator=g), \
        torch.randn(50, 6, generator=g), torch.rand(50, 6, generator=g)
    box = mul_boxes(Box(ca, ra), Box(cb, rb))
    ta, tb = (torch.rand(200, 50, 6, generator=g) * 2 - 1 for _ in range(2))
    inside = (ca + ta * ra) * (cb + tb * rb)
    assert (inside >= box.center - box.radius - 1e-5).all() and (inside <= box.center + box.radius + 1e-5).all()
    point = mul_boxes(Box(ca, torch.zeros_like(ra)), Box(cb, torch.zeros_like(rb)))
    assert torch.allclose(point.center, ca * cb) and (point.radius == 0).all()
