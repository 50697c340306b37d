"""Supervised training and accuracy for a target classifier."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .data import Dataset
from .errors import InputError, check_fields
from .models import Checkpoint, build, output_classes
from .resume import fingerprint, load_training, save_training
from .run import progress
from .runtime import evaluating, resolve_device, seeded

log = logging.getLogger("advgen")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`; the defaults reach >= 97% on the embedded MNIST split."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.0
    shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, {"epochs": 1, "batch_size": 1, "weight_decay": 0, "shift": 0}, positive=("lr",))


@dataclass
class TrainResult:
    """What :func:`fit` did: its epochs, the last batch's loss and the wall time."""

    epochs: int
    final_loss: float
    seconds: float


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted class per image, computed in eval mode on the model's device, returned on the CPU; the
    model's train/eval modes are left as they were."""
    device = next(model.parameters()).device
    with evaluating(model):
        out = [model(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def still_correct(model: nn.Module, attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                  labels: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    """(N,) bool: which images ``model`` still classifies correctly after ``attack(x, y)``, batch by batch."""
    flags = []
    for i in range(0, len(images), batch):
        x, y = images[i:i + batch].to(device), labels[i:i + batch].to(device)
        x_adv = attack(x, y)
        with torch.no_grad():
            flags.append((model(x_adv).argmax(1) == y).cpu())
    return torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)



def accuracy(model: nn.Module, data: Dataset, batch_size: int = 1024) -> float:
    """Share of ``data`` the model classifies correctly."""
    return float((predict(model, data.images, batch_size) == data.labels).float().mean())


def random_shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in each direction, filling with zeros."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(images.shape[1])[None, :, None, None],
                  rows, cols]


Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def fit(model: nn.Module, data: Dataset, config: TrainConfig | None = None, device: str | torch.device = "auto",
        desc: str = "train", loss_fn: Loss = cross_entropy, state: str | Path | None = None,
        depends: dict | None = None) -> TrainResult:
    """Train ``model`` in place with Adam, a one-cycle schedule and random shifts; deterministic on CPU.

    ``loss_fn(model, x, y, epoch)`` is cross-entropy unless a caller (adversarial retraining) needs more.
    With ``state`` (a file) every finished epoch is saved there atomically, and a later call continues
    from it, bit for bit on the CPU, when its fingerprint matches: ``config``, the starting weights, the
    data, advgen's version and the caller's ``depends`` (a loss's settings); any other is refused in one line.
    The run seeds Python, NumPy and torch with ``config.seed`` and gives the caller's streams back afterwards.
    """
    config = config or TrainConfig()
    dev = resolve_device(device)
    with seeded(config.seed, dev) as gen:
        wanted = None if state is None else fingerprint({"fit": asdict(config), **(depends or {})}, model=model,
                                                        data=data)
        output_classes(model.to(dev), data.images, data.labels)  # a model that does not fit the data stops here
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = (len(data) + config.batch_size - 1) // config.batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                    steps_per_epoch=steps_per_epoch)
        saved = _Saved(Path(state), wanted, model, opt, sched, gen, dev) if state is not None else None
        done, last, earlier = saved.restore() if saved is not None else (0, 0.0, 0.0)
        start, loss = time.perf_counter() - earlier, torch.tensor(last)  # seconds count the killed run's epochs too
        for epoch in progress(range(done, config.epochs), desc=desc, total=config.epochs - done, unit="epoch"):
            order = torch.randperm(len(data), generator=gen)
            for i in range(0, len(data), config.batch_size):
                idx = order[i:i + config.batch_size]
                x, y = random_shift(data.images[idx], config.shift, gen).to(dev), data.labels[idx].to(dev)
                loss = loss_fn(model, x, y, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if saved is not None:
                saved.save(epoch + 1, float(loss.detach()), time.perf_counter() - start)
        model.eval()
        return TrainResult(config.epochs, float(loss.detach()), time.perf_counter() - start)


@dataclass
class _Saved:
    """One training run's state file (:func:`advgen.resume.save_training`): what :func:`fit` needs to go on.

    Beside the weights, optimizer and schedule it keeps the random streams: the data order's and random
    shifts' ``gen``, and torch's global stream (PGD's random starts, sampled pixels), so that the resumed run
    draws what the uninterrupted one would have.
    """

    path: Path
    wanted: dict
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    device: torch.device

    def save(self, epochs: int, loss: float, seconds: float) -> None:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        save_training(self.path, self.wanted, epochs, {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, "loss": loss,
            "seconds": seconds,
            "optimizer": self.opt.state_dict(), "schedule": self.sched.state_dict(),
            "rng": {"gen": self.gen.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}})

    def restore(self) -> tuple[int, float, float]:
        """Load the saved state into the run, if there is one; the epochs it had finished, its last loss and the
        seconds it had trained."""
        epochs, parts = load_training(self.path, self.wanted)
        if not epochs:
            return 0, 0.0, 0.0
        self.model.load_state_dict(parts["model"])
        self.opt.load_state_dict(parts["optimizer"])
        self.sched.load_state_dict(parts["schedule"])
        self.gen.set_state(parts["rng"]["gen"])
        torch.set_rng_state(parts["rng"]["torch"])
        if parts["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(parts["rng"]["cuda"], self.device)
        log.info(f"resuming the training from {self.path} after {epochs} epochs")
        return epochs, float(parts["loss"]), float(parts["seconds"])


def train_classifier(train_data: Dataset, test_data: Dataset | None = None, arch: str = "cnn",
                     config: TrainConfig | None = None, device: str | torch.device = "auto",
                     extra: list[Dataset] | None = None, state: str | Path | None = None) -> Checkpoint:
    """Build ``arch`` for ``train_data``, train it (on ``extra`` data too), and return a checkpoint.

    The checkpoint's metadata records the data, the configuration, the training time and, when
    ``test_data`` is given, the test accuracy. ``state``: a file to continue a killed training from (:func:`fit`).
    """
    config = config or TrainConfig()
    combined = concat([train_data, *(extra or [])])
    with seeded(config.seed, resolve_device(device)):
        model = build(arch, train_data.input_shape, train_data.num_classes)
    result = fit(model, combined, config, device=device, state=state, depends={"arch": arch})
    meta = {"data": train_data.name, "train_images": len(combined), "config": asdict(config),
            "train_seconds": round(result.seconds, 3), "final_loss": result.final_loss,
            "extra_data": [d.name for d in extra or []]}
    if test_data is not None:
        meta["test_accuracy"] = accuracy(model, test_data)
    return Checkpoint(model.cpu(), arch, train_data.input_shape, train_data.num_classes, meta)


def concat(parts: list[Dataset]) -> Dataset:
    """One dataset from several with the same image shape and classes (the first one's name, levels and
    class count are kept: extra data cannot add classes the model does not have)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    for p in parts[1:]:
        if p.input_shape != first.input_shape:
            raise InputError(f"dataset {p.name!r} has image shape {p.input_shape}, "
                             f"but {first.name!r} has {first.input_shape}")
        if len(p) and int(p.labels.max()) >= first.num_classes:
            raise InputError(f"dataset {p.name!r} has labels up to {int(p.labels.max())}, but {first.name!r} has "
                             f"{first.num_classes} classes (0..{first.num_classes - 1})")
    return Dataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), first.name,
                   first.levels, first.num_classes, dict(first.meta))
