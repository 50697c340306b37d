"""Where and how quietly work runs: device choice, seeding, and progress bars."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch

from .errors import InputError

T = TypeVar("T")
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


def progress(iterable: Iterable[T], desc: str, total: int | None = None, quiet: bool = False,
             unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr, or the bare iterable when quiet (or when ADVGEN_QUIET is set)."""
    if quiet or os.environ.get("ADVGEN_QUIET"):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True)


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
