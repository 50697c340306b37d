import numpy as np
import pytest
import torch

from advgen import data as datasets
from advgen.errors import InputError


def test_embedded_split_shapes_and_balance(mnist_train, mnist_test):
    assert mnist_train.images.shape == (4000, 1, 28, 28)
    assert mnist_test.images.shape == (1000, 1, 28, 28)
    assert torch.equal(mnist_train.labels.bincount(), torch.full((10,), 400))
    assert torch.equal(mnist_test.labels.bincount(), torch.full((10,), 100))
    assert mnist_test.levels == 256 and mnist_test.num_classes == 10
    # 8-bit levels: every pixel is k/255
    assert torch.equal((mnist_test.images * 255).round() / 255, mnist_test.images)


def test_embedded_split_is_deterministic_and_disjoint(mnist_train, mnist_test):
    again = datasets.load("mnist-sample", "test")
    assert torch.equal(again.images, mnist_test.images) and torch.equal(again.labels, mnist_test.labels)
    train_keys = {bytes((img * 255).byte().numpy()) for img in mnist_train.images}
    assert not any(bytes((img * 255).byte().numpy()) in train_keys for img in mnist_test.images[:200])


def test_test_prefix_is_roughly_balanced(mnist_test):
    assert mnist_test.labels[:100].bincount(minlength=10).min() >= 4


def test_user_npz_uint8_and_pt_float_roundtrip(tmp_path, mnist_test):
    sub = mnist_test.head(10)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=(sub.images[:, 0] * 255).round().byte().numpy(), labels=sub.labels.numpy())
    loaded = datasets.load(str(npz))
    assert torch.equal(loaded.images, sub.images) and torch.equal(loaded.labels, sub.labels)
    pt = tmp_path / "d.pt"
    datasets.save_file(pt, sub)
    back = datasets.load(str(pt))
    assert torch.equal(back.images, sub.images) and back.levels == 256


@pytest.mark.parametrize("images, message", [
    (torch.rand(4, 1, 28, 28) * 2, "[0, 1]"),
    (torch.full((4, 1, 28, 28), float("nan")), "NaN"),
    (torch.rand(4, 28), "shape"),
    (torch.rand(0, 1, 28, 28), "empty"),
])
def test_bad_images_are_refused(tmp_path, images, message):
    path = tmp_path / "bad.pt"
    torch.save({"images": images, "labels": torch.zeros(len(images), dtype=torch.long)}, path)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        datasets.load(str(path))


def test_unknown_name_split_and_missing_file():
    with pytest.raises(InputError, match="unknown dataset"):
        datasets.load("imagenet-21k")
    with pytest.raises(InputError, match="unknown split"):
        datasets.load("mnist-sample", "validation")
    with pytest.raises(InputError, match="not found"):
        datasets.load("/nonexistent/x.npz")


def test_truncated_dataset_file(tmp_path, mnist_test):
    path = tmp_path / "d.pt"
    datasets.save_file(path, mnist_test.head(5))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="corrupted"):
        datasets.load(str(path))
