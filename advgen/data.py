"""Image-classification data as one small object: the embedded MNIST sample, torchvision datasets, user files.

Every source becomes a :class:`Dataset` with float images in [0, 1] shaped (N, C, H, W), integer labels,
and the number of intensity levels the images were quantised to (256 for 8-bit data), which the exact
one-pixel attack enumerates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import InputError
from .files import safe_torch_load

EMBEDDED = "mnist-sample"
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
SPLITS = ("train", "test")
_EMBEDDED_TRAIN_PER_CLASS = 400
_SPLIT_SEED = 0


@dataclass
class Dataset:
    """Images (N, C, H, W) float32 in [0, 1], labels (N,) int64, and how they were quantised."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    levels: int = 256
    num_classes: int = 10
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_images(self.images, what=f"dataset {self.name!r}")
        self.labels = as_labels(self.labels, len(self.images), f"dataset {self.name!r}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise InputError(f"dataset {self.name!r}: labels must lie in 0..{self.num_classes - 1}")
        if not 2 <= self.levels <= 65536:
            raise InputError(f"dataset {self.name!r}: levels must be in 2..65536, got {self.levels}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | list[int] | slice) -> "Dataset":
        """The images at ``indices`` (a slice, a list or a tensor of ints), with this dataset's name and levels."""
        if isinstance(indices, slice):
            indices = torch.arange(len(self))[indices]
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Dataset(self.images[idx], self.labels[idx], self.name, self.levels, self.num_classes,
                       dict(self.meta))

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` images (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise InputError(f"need at least one image, got {n}")
        return self.subset(slice(0, n))


def validate_images(images: torch.Tensor, what: str = "images") -> None:
    """Refuse tensors that are not (N, C, H, W) finite floats in [0, 1]."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise InputError(f"{what}: images must be a floating-point tensor")
    if images.ndim != 4:
        raise InputError(f"{what}: images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{what}: the dataset is empty")
    if not torch.isfinite(images).all():
        raise InputError(f"{what}: images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{what}: pixel values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")


def on_grid(images: torch.Tensor, levels: int, toward: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` moved onto the grid of ``levels`` values in [0, 1], as a file of ``levels``-valued images holds them.

    Each pixel goes to its nearest level or, given ``toward`` (on-grid images of the same shape: the sources
    of adversarial examples), to the level next to it on the source's side, so no pixel moves further from
    its source and an L-inf bound on the perturbation still holds.
    """
    scale = levels - 1
    if toward is None:
        return torch.round(images.clamp(0, 1) * scale) / scale
    steps = (images - toward) * scale
    steps = torch.trunc(steps + steps.sign() * 1e-4)  # a whole number of levels, not lost to fp32 rounding
    return (torch.round(toward * scale) + steps).clamp(0, scale) / scale


def as_labels(labels: torch.Tensor | Any, n: int, what: str = "labels") -> torch.Tensor:
    """``labels`` as an (n,) int64 tensor; floats only when every value is a whole number (2.7 is not class 2)."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise InputError(f"{what}: expected {n} labels in a 1-D array, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise InputError(f"{what}: labels must be whole class numbers, got fractions such as "
                         f"{float(labels[labels != labels.round()][0]):g}")
    if labels.is_complex():
        raise InputError(f"{what}: labels must be class numbers, got {labels.dtype}")
    return labels.long()


def validate_targets(targets: torch.Tensor | int | None, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor | None:
    """Targets for a targeted attack, one per label (an int is every image's), or None when untargeted.

    Every attack entry point checks its targets here, so the rules and messages are the same everywhere:
    labels and targets are classes of the model, and no image is asked to become its own class.
    """
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InputError(f"labels must lie in 0..{num_classes - 1}")
    if targets is None:
        return None
    tgt = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if len(tgt) == 1:
        tgt = tgt.expand(len(labels))
    if len(tgt) != len(labels):
        raise InputError(f"expected one target or {len(labels)}, got {len(tgt)}")
    if len(tgt) and (int(tgt.min()) < 0 or int(tgt.max()) >= num_classes):
        raise InputError(f"target classes (--target) must lie in 0..{num_classes - 1}, got {int(tgt.max())}"
                         if int(tgt.max()) >= num_classes else f"target classes (--target) must lie in "
                         f"0..{num_classes - 1}, got {int(tgt.min())}")
    if bool((tgt == labels).any()):
        raise InputError("a target equals the image's own label; leave those images out or pick another target")
    return tgt.clone()


def load(source: str = EMBEDDED, split: str = "test", root: str | Path | None = None) -> Dataset:
    """Load a dataset by name (``mnist-sample``, ``mnist``, ``fashion-mnist``, ``cifar10``) or file path.

    ``mnist-sample`` is embedded in the package and needs no network; the torchvision names download
    into ``root`` (default :func:`data_dir`) when the machine has internet. A ``.npz`` or ``.pt`` path
    is read as a user dataset and ``split`` is ignored.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if source == EMBEDDED:
        return embedded_mnist(split)
    if source in TORCHVISION:
        return _torchvision(source, split, root)
    path = Path(source)
    if path.suffix in (".npz", ".pt", ".pth"):
        return load_file(path)
    raise InputError(f"unknown dataset {source!r}; use {EMBEDDED}, {', '.join(TORCHVISION)}, "
                     f"or a .npz/.pt file with 'images' and 'labels'")


def embedded_mnist(split: str = "test") -> Dataset:
    """The 5,000-image MNIST sample shipped with advgen, split 4,000/1,000 stratified with a fixed seed."""
    with resources.files("advgen").joinpath("assets/mnist_5k.npz").open("rb") as f:
        arrays = np.load(f)
        images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train_idx.append(idx[:_EMBEDDED_TRAIN_PER_CLASS])
        test_idx.append(idx[_EMBEDDED_TRAIN_PER_CLASS:])
    # interleave classes so that any prefix (e.g. the first 100 test images) is roughly balanced
    pick = np.concatenate(train_idx if split == "train" else test_idx)
    pick = pick[rng.permutation(len(pick))]
    x = torch.from_numpy(images[pick]).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels[pick])
    return Dataset(x, y, name=EMBEDDED, levels=256, num_classes=10, meta={"split": split})


def data_dir() -> Path:
    """Where the torchvision datasets live: ``$ADVGEN_DATA_DIR``, else ``~/.cache/advgen``.

    An environment variable rather than a flag on every command, so one setting serves the CLI, the
    API and torchrun ranks alike (a machine without internet points it at a folder of copied files).
    """
    return Path(os.environ.get("ADVGEN_DATA_DIR") or Path.home() / ".cache" / "advgen").expanduser()


def _torchvision(name: str, split: str, root: str | Path | None) -> Dataset:
    import torchvision

    root = Path(root) if root else data_dir()
    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        ds = cls(str(root), train=(split == "train"), download=True)
    except Exception as exc:  # torchvision raises several types for network failures
        raise InputError(f"could not download {name} into {root} (no internet?): "
                         f"{str(exc).splitlines()[0][:160]}; copy its files there (or set ADVGEN_DATA_DIR "
                         f"to where they are), or use the embedded '{EMBEDDED}'") from exc
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:
        data = data.unsqueeze(1)
    else:
        data = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    return Dataset(data.float().div_(255.0).contiguous(), labels, name=name, levels=256,
                   num_classes=len(ds.classes), meta={"split": split})


def load_file(path: str | Path) -> Dataset:
    """Read a user dataset: ``.npz`` or ``.pt`` holding ``images`` and ``labels`` (and optionally ``levels``).

    Images may be uint8 (0..255) or float in [0, 1], shaped (N, H, W), (N, C, H, W) or (N, H, W, C)
    for three-channel uint8 arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset file not found: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                content = {k: z[k] for k in z.files}
        except Exception as exc:
            raise InputError(f"dataset file {path} is not a readable .npz archive: {exc}") from exc
    else:
        content = safe_torch_load(path, what="dataset file")
        if not isinstance(content, dict):
            raise InputError(f"dataset file {path} must hold a dict with 'images' and 'labels'")
    missing = [k for k in ("images", "labels") if k not in content]
    if missing:
        raise InputError(f"dataset file {path} lacks {', '.join(missing)}")
    images = _field(path, "images", lambda: torch.as_tensor(np.asarray(content["images"])))
    labels = _field(path, "labels",
                    lambda: as_labels(np.asarray(content["labels"]), len(images), f"dataset file {path}"))
    levels = _field(path, "levels", lambda: _whole(content.get("levels", 256)))
    num_classes = _field(path, "num_classes", lambda: _whole(content.get("num_classes", 0)))
    if images.dtype == torch.uint8:
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.permute(0, 3, 1, 2)
        images = images.float().div_(255.0)
    elif not images.is_floating_point():
        raise InputError(f"dataset file {path}: images must be uint8 or float, got {images.dtype}")
    images = images.float()
    if images.ndim == 3:
        images = images.unsqueeze(1)
    num_classes = num_classes or max(10, int(labels.max()) + 1 if len(labels) else 10)
    return Dataset(images.contiguous(), labels, name=path.name, levels=levels, num_classes=num_classes,
                   meta={"path": str(path)})


def _field(path: Path, name: str, read: Callable[[], Any]) -> Any:
    """``read()``, with whatever numpy or torch raise about a malformed field turned into one clear line."""
    try:
        return read()
    except InputError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"dataset file {path}: {name!r} is not usable: {str(exc).splitlines()[0][:120]}") from exc


def _whole(value: Any) -> int:
    """A whole number from a file field (a Python int, or a 0-d array), refusing anything else."""
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "iuf" or float(array) != int(array):
        raise ValueError(f"expected a whole number, got {value!r}"[:100])
    return int(array)


def save_file(path: str | Path, data: Dataset) -> Path:
    """Write a dataset as a ``.pt`` file (float images, exact) that :func:`load_file` reads back."""
    from .files import atomic_torch_save

    return atomic_torch_save(path, {"images": data.images.contiguous(), "labels": data.labels,
                                    "levels": data.levels, "num_classes": data.num_classes})
