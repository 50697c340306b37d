"""The certified-training bound is the exact search's bound, with gradients."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advgen.models import build
from advgen.onepixel.certified import PixelBound, gain_pixels
from advgen.onepixel.dense import level_values
from advgen.onepixel.exact import Boxes, _bound_boxes


def _exact_bound(pb: PixelBound, x, y, pixels):
    """The exact search's certificate for the same whole-range boxes (no gradients)."""
    n, k = pixels.shape
    c, h, w = x.shape[1:]
    img = torch.arange(n).repeat_interleave(k)
    f = pixels.reshape(-1)
    boxes = Boxes(img, f // (h * w), (f // w) % h, f % w, torch.zeros_like(img), torch.full_like(img, 255))
    with torch.no_grad():
        acts = pb.plan.prepare(x)
        return _bound_boxes(pb.plan, x, acts, boxes, level_values(256), y, False, 1024)


@pytest.mark.parametrize("arch,locality", [("cnn", True), ("cnn", False), ("mlp", True), ("lenet5", True)])
def test_worst_logits_equal_the_exact_search_bound(arch, locality):
    torch.manual_seed(0)
    model = build(arch).eval()
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    pixels = torch.randint(0, 784, (6, 4))
    pb = PixelBound(model, (1, 28, 28), torch.device("cpu"), locality=locality)
    worst = pb.worst_logits(x, y, pixels)
    ref = y.repeat_interleave(4)
    assert torch.all(worst[torch.arange(len(ref)), ref] == 0)
    lower = (-worst).masked_fill(F.one_hot(ref, 10).bool(), float("inf")).min(1).values
    torch.testing.assert_close(lower, _exact_bound(pb, x, y, pixels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["cnn", "lenet5"])
def test_windowed_gradients_equal_the_full_map_gradients(arch):
    """Training cuts tiles lazily and pastes out of place (local.Tiles, paste_tiles); its gradients must be
    those of the plain full-map interval propagation."""
    torch.manual_seed(1)
    model = build(arch).eval()
    x, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    pixels = torch.randint(0, 784, (5, 6))
    grads = []
    for locality in (True, False):
        model.zero_grad()
        PixelBound(model, (1, 28, 28), torch.device("cpu"), locality=locality).loss(x, y, pixels).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for windowed, full in zip(*grads):
        torch.testing.assert_close(windowed, full, rtol=1e-4, atol=1e-6)


def test_loss_reaches_every_weight_and_training_raises_the_bound():
    torch.manual_seed(0)
    model = build("cnn").eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pixels = torch.randint(0, 784, (8, 6))
    pb = PixelBound(model, (1, 28, 28), torch.device("cpu"))
    before = _exact_bound(pb, x, y, pixels)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(30):
        opt.zero_grad()
        pb.loss(x, y, pixels).backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
    after = _exact_bound(pb, x, y, pixels)
    assert after.mean() > before.mean() and (after > 0).sum() > (before > 0).sum()


def test_unsupported_model_is_refused():
    class Odd(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10].cumprod(1)  # no interval rule

    with pytest.raises(ValueError, match="not support"):
        PixelBound(Odd(), (1, 28, 28), torch.device("cpu"))


def test_gain_pixels_shapes_and_top_choice():
    torch.manual_seed(0)
    model = build("mlp").eval()
    x, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    pix = gain_pixels(model, x, y, top=3, random=2)
    assert pix.shape == (5, 5) and int(pix.min()) >= 0 and int(pix.max()) < 784
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    gain = torch.maximum(g * (1 - x), -g * x).flatten(1)
    assert torch.equal(pix[:, 0], gain.argmax(1))


class _LearnedInput(nn.Module):
    """A learned per-channel input affine map (a ChannelAffine reading parameters) in front of the default CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.shift, self.scale = nn.Parameter(torch.tensor([[[0.2]]])), nn.Parameter(torch.tensor([[[3.0]]]))
        self.cnn = build("cnn")

    def forward(self, x):
        return self.cnn((x - self.shift) * self.scale)


def _group_norm_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


@pytest.mark.parametrize("make", [_LearnedInput, _group_norm_cnn], ids=["learned-input-affine", "group-norm"])
def test_leading_affine_layers_and_norms_train_on_the_exact_search_bound(make):
    """The bound certified training uses is the exact search's one, and its gradients (the input map's
    parameters included) do not depend on whether the windows run."""
    torch.manual_seed(2)
    model = make().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    pixels = torch.randint(0, 784, (4, 5))
    grads = []
    for locality in (True, False):
        pb = PixelBound(model, (1, 28, 28), torch.device("cpu"), locality=locality)
        worst = pb.worst_logits(x, y, pixels)
        ref = y.repeat_interleave(5)
        lower = (-worst).masked_fill(F.one_hot(ref, 10).bool(), float("inf")).min(1).values
        torch.testing.assert_close(lower.detach(), _exact_bound(pb, x, y, pixels), rtol=1e-5, atol=1e-5)
        model.zero_grad()
        pb.loss(x, y, pixels).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(g.abs().sum() > 0 for g in grads[0])  # every weight, the input map's included, is trained
    for windowed, full in zip(*grads):
        torch.testing.assert_close(windowed, full, rtol=1e-4, atol=1e-6)
