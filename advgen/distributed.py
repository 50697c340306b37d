"""Scale-out over torchrun ranks: who runs what, and how ranks agree before and after the work.

Under ``torchrun --nproc-per-node N -m advgen ...`` every rank runs the same command. :func:`session`
joins the process group torchrun set up (gloo on CPU, nccl on CUDA with each local rank on its own
GPU) and leaves it cleanly at the end; without torchrun (no ``WORLD_SIZE`` > 1) it yields a one-rank
:class:`World` and everything here is a plain function call, so the same code path serves both.

Ranks only exchange small Python objects (done-sets, error messages, fingerprints): results travel
through files in the shared output directory, so a killed rank loses nothing already written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import InputError

T = TypeVar("T")

# Ranks wait at barriers for the slowest one; an exact attack can run for hours on a hard shard, so the
# default collective timeouts (10 min nccl, 30 min gloo) would kill healthy runs. torchrun still tears the
# whole group down as soon as any rank dies, so a long timeout does not hide crashes.
DEFAULT_TIMEOUT = timedelta(hours=int(os.environ.get("ADVGEN_DIST_TIMEOUT_HOURS", "72")))


class PeerFailed(Exception):
    """Another rank (rank 0) failed; it reports the reason, so this rank exits without a word."""


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 trains, writes shared files and talks to the user."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``size``-th item starting at ``rank`` (balanced, order kept)."""
        return list(items[self.rank::self.size])

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.size > 1:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, obj)
        return parts

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result to every rank.

        An :class:`InputError` on rank 0 is raised on every rank with the same message (rank 0 prints it,
        the CLI keeps the others quiet); any other failure raises :class:`PeerFailed` on the others.
        """
        if self.size == 1:
            return fn()
        payload: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                payload[0] = ("ok", fn())
            except InputError as exc:
                payload[0], error = ("input", str(exc)), exc
            except BaseException as exc:
                payload[0], error = ("failed", f"{type(exc).__name__}: {exc}"), exc
        dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        kind, value = payload[0]
        if kind == "input":
            raise InputError(value)
        if kind == "failed":
            raise PeerFailed(f"rank 0 failed: {value}")
        return value

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then (if it succeeded) on the other ranks; each rank gets its own result.

        For work whose first run leaves something the others reuse, such as training a model and caching
        its weights in the shared output directory.
        """
        if self.size == 1:
            return fn()
        result: list[T] = []
        self.on_main(lambda: result.append(fn()))
        return result[0] if self.is_main else fn()

    def check_same(self, value: Any, what: str) -> None:
        """Raise the same :class:`InputError` on every rank unless all ranks hold an equal ``value``."""
        values = self.gather(value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise InputError(f"{what} differs between rank 0 and rank(s) {', '.join(map(str, odd))}")


def fingerprint(model: torch.nn.Module) -> str:
    """A SHA-256 over the model's parameters and buffers, to prove every rank attacks the same weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def launched() -> bool:
    """True under torchrun (or any launcher that sets ``WORLD_SIZE`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def quiet_rank() -> bool:
    """True in a non-zero rank, which must print nothing (rank 0 speaks for the group)."""
    return int(os.environ.get("RANK", "0")) != 0


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA each local rank takes its own GPU (``cuda:LOCAL_RANK``); other devices are shared as given."""
    if device.type == "cuda" and launched():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local >= count:
            raise InputError(f"local rank {local} has no GPU of its own (this node has {count}); "
                             f"run at most {count} processes per node with --device cuda")
        return torch.device("cuda", local)
    return device


@contextlib.contextmanager
def session(device: torch.device | str = "cpu", timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[World]:
    """Join the torchrun process group for the duration of a command, and leave it cleanly.

    ``device`` picks the backend: nccl when it is a CUDA device (the rank's own GPU is made current),
    gloo otherwise. Without torchrun this yields ``World()`` and touches nothing.
    """
    if not launched():
        yield World()
        return
    dev = device_for_rank(torch.device(device))
    owned = not dist.is_initialized()
    if owned:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", timeout=timeout, device_id=dev)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    try:
        yield World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
