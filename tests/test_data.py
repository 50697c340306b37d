from pathlib import Path

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


def test_cifar10_loads_through_torchvision_as_colour_images(monkeypatch, tmp_path):
    """``--data cifar10`` goes through torchvision (which downloads); faked here so no network is needed."""
    import torchvision

    raw = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)

    class FakeCIFAR10:
        classes = [str(k) for k in range(10)]

        def __init__(self, root, train, download):
            assert download and not train
            self.data, self.targets = raw, [3, 1, 4, 1, 5]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = datasets.load("cifar10", "test", root=tmp_path)
    assert ds.images.shape == (5, 3, 32, 32) and ds.levels == 256 and ds.num_classes == 10
    assert torch.equal(ds.images[2, 1], torch.from_numpy(raw[2, :, :, 1]).float() / 255)
    assert ds.labels.tolist() == [3, 1, 4, 1, 5]


def _write_idx(path, array: np.ndarray) -> None:
    """The IDX format of the MNIST files: a magic number (unsigned bytes, then the rank), big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist_raw(root, rng) -> dict:
    """Tiny MNIST raw files in ``root/MNIST/raw``: split -> (images, labels) as written."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {"train": (6, "train"), "test": (4, "t10k")}
    made = {}
    for split, (n, prefix) in splits.items():
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        made[split] = images, labels
    return made


def test_mnist_reads_raw_files_already_in_the_root_without_a_download(tmp_path):
    """``--data mnist`` on a machine without internet: the four raw IDX files copied into ``ROOT/MNIST/raw``
    are read by torchvision itself (it downloads only what is missing), so no network is touched here."""
    made = _write_mnist_raw(tmp_path, np.random.default_rng(0))
    for split, (images, labels) in made.items():
        ds = datasets.load("mnist", split, root=tmp_path)
        assert ds.images.shape == (len(labels), 1, 28, 28) and ds.levels == 256 and ds.num_classes == 10
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
        assert ds.labels.tolist() == labels.tolist()


def test_the_data_folder_comes_from_advgen_data_dir(tmp_path, monkeypatch):
    """Without ``root``, the torchvision names read ``$ADVGEN_DATA_DIR`` (what the CLI commands use)."""
    made = _write_mnist_raw(tmp_path / "data", np.random.default_rng(1))
    monkeypatch.setenv("ADVGEN_DATA_DIR", str(tmp_path / "data"))
    assert datasets.data_dir() == tmp_path / "data"
    ds = datasets.load("mnist", "test")
    assert ds.labels.tolist() == made["test"][1].tolist()
    monkeypatch.delenv("ADVGEN_DATA_DIR")
    assert datasets.data_dir() == Path.home() / ".cache" / "advgen"


@pytest.mark.parametrize("field, value, needle", [
    ("labels", np.array(["a", "b", "c", "d"]), "'labels' is not usable"),
    ("labels", np.array([0.0, 3.5, 1.0, 2.0]), "whole class numbers"),
    ("levels", np.array([1, 2]), "'levels' is not usable"),
    ("levels", np.array("abc"), "'levels' is not usable"),
    ("num_classes", np.array("x"), "'num_classes' is not usable"),
])
def test_a_malformed_field_in_a_dataset_file_is_one_clear_error(tmp_path, field, value, needle):
    content = {"images": np.zeros((4, 28, 28), dtype=np.uint8), "labels": np.array([0, 1, 2, 3]), field: value}
    np.savez(tmp_path / "d.npz", **content)
    with pytest.raises(InputError, match=needle):
        datasets.load_file(tmp_path / "d.npz")


def test_whole_float_labels_are_read_as_classes():
    ds = datasets.Dataset(torch.zeros(3, 1, 2, 2), torch.tensor([0.0, 7.0, 2.0]), "floats")
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 7, 2]
    two = datasets.Dataset(torch.zeros(2, 1, 2, 2), torch.tensor([True, False]), "bools")  # a two-class file
    assert two.labels.tolist() == [1, 0]


def test_on_grid_rounds_to_the_nearest_level_or_towards_the_source():
    gen = torch.Generator().manual_seed(0)
    levels = 16
    source = torch.randint(0, levels, (200, 1, 4, 4), generator=gen).float() / (levels - 1)
    moved = (source + (torch.rand(source.shape, generator=gen) - 0.5) * 0.6).clamp(0, 1)
    for snapped in (datasets.on_grid(moved, levels), datasets.on_grid(moved, levels, toward=source)):
        steps = snapped * (levels - 1)
        assert torch.equal(steps, steps.round()) and snapped.min() >= 0 and snapped.max() <= 1
    assert (datasets.on_grid(moved, levels) - moved).abs().max() <= 0.5 / (levels - 1) + 1e-6
    toward = datasets.on_grid(moved, levels, toward=source)
    # each pixel lands between its source and where it was, less than one level short: an L-inf bound holds
    assert ((toward - source) * (moved - source) >= 0).all()
    assert ((toward - source).abs() <= (moved - source).abs() + 1e-4 / (levels - 1) + 1e-6).all()  # fp32 noise
    assert ((moved - toward).abs() < 1 / (levels - 1)).all()
    # a perturbation of a whole number of levels, up to fp32 noise, keeps all of them
    exact = source + 3 / (levels - 1)
    keep = exact <= 1
    assert torch.allclose(datasets.on_grid(exact, levels, toward=source)[keep], exact[keep])
