"""Where work runs and how it repeats: device choice, seeding, and CPU thread counts."""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import random
import sys
from importlib import metadata
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when it is present; asking for CUDA on a machine without it is an input error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for code that wants its own stream."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def own_random_state(device: torch.device | None = None) -> Iterator[None]:
    """Inside the block, seed and draw freely; afterwards Python's, NumPy's and torch's streams (the CPU's and
    ``device``'s) are as they were.

    An attack seeds itself so that it repeats. Called from a user's own loop (adversarial training with
    :func:`advgen.run_method` as the attack), it must not reset that loop's shuffling and dropout to the same
    point at every call.
    """
    py, npy = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[torch.Generator]:
    """A block of work with its own seed: Python, NumPy and torch seeded with ``seed`` inside (the generator of
    :func:`seed_everything` is yielded), the caller's streams given back after (:func:`own_random_state`).

    A training, an attack or a whole command repeats from its seed, and leaves a user's own loop where it was.
    """
    with own_random_state(device):
        yield seed_everything(seed)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (None: leave torch's setting), then restore it.

    Tiny networks gain little from a second thread, and on shared cores the threads' barriers can make
    them many times slower (measured 2-30x on 2 busy cores), so the GAN trainers default to one.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def evaluating(model: nn.Module, device: torch.device | None = None) -> Iterator[nn.Module]:
    """``model`` in eval mode (moved to ``device``, if given) for the block; afterwards every submodule's
    own mode, and the model's device, as they were.

    Per submodule, because batch norm frozen while the rest trains is a common fine-tuning setup that
    ``model.train(was_training)`` would undo; the device, so an attack on CUDA leaves a caller's CPU model
    on the CPU. Attacks, accuracy and AutoAttack's parts all measure through this.
    """
    modes = [(m, m.training) for m in model.modules()]
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    home = None if first is None else first.device
    if device is not None:
        model.to(device)
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        if device is not None and home is not None:
            model.to(home)


def cpu_model() -> str | None:
    """The processor's name (``AMD EPYC ...``), or None where the platform does not say. Timings, and the
    exact search's speed against a heuristic above all, differ between processors of one architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: str | Any = "cpu") -> dict[str, Any]:
    """Where the run happened, for reproducing timings: platform, versions, device, CPU model and count, GPU."""
    dev = str(device)
    gpu = None
    if dev.startswith("cuda") and torch.cuda.is_available():
        try:
            gpu = torch.cuda.get_device_name(torch.device(dev))
        except (RuntimeError, AssertionError, ValueError):
            gpu = None
    return {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": _version_of("torchvision"), "torchattacks": _version_of("torchattacks"),
            "device": dev, "cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpu": gpu}


def _version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
