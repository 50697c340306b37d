import torch
from torch.nn import functional as F

from advgen.harden import HardenConfig, harden, worst_pixel


def test_worst_pixel_changes_one_pixel_to_an_extreme_and_hurts(trained_cnn, mnist_test):
    model = trained_cnn.model.eval()
    x, y = mnist_test.images[:64], mnist_test.labels[:64]
    adv = worst_pixel(model, x, y)
    changed = (adv != x).flatten(1)
    assert (changed.sum(1) <= 1).all() and changed.any()
    moved = adv[adv != x]
    assert ((moved == 0) | (moved == 1)).all()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_harden_returns_a_retrained_copy(trained_mlp, small_train):
    before = {k: v.clone() for k, v in trained_mlp.model.state_dict().items()}
    model, info = harden(trained_mlp.model, small_train.head(128), [small_train.subset(slice(128, 160))],
                         HardenConfig(epochs=1, pgd_steps=1), device="cpu")
    assert all(torch.equal(v, trained_mlp.model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert info["train_images"] == 160 and info["epochs"] == 1
