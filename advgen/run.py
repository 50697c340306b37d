"""One run context per command: device, rank, seed, output directory and how loudly it speaks.

A command (CLI or API entry point) builds its :class:`Run` once with :func:`start` and passes it down.
Under ``torchrun --nproc-per-node N -m advgen ...`` every rank runs the same command; :func:`start`
joins the process group (gloo on CPU, nccl on CUDA with each local rank on its own GPU) and leaves it
at the end. Without torchrun it is a one-rank run and every collective is a plain call.

Rank-0 work reads as nanoGPT's ``if master_process:``, followed by an explicit hand-over::

    with run.main() as shared:
        if run.is_main:
            shared.value = train_the_target()
    target = shared.value          # every rank; rank 0's input error is raised on every rank

Output goes through the ``advgen`` :mod:`logging` logger. Its level is the one switch: INFO normally,
WARNING with ``quiet`` (or ``ADVGEN_QUIET`` in the environment), silent on non-zero ranks. Progress
bars show only while the logger would print INFO. Ranks exchange only small Python objects; results
travel through files in the shared output directory, so a killed rank loses nothing already written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from .distributed import DEFAULT_TIMEOUT, PeerFailed, device_for_rank, env_rank, launched
from .errors import InputError
from .runtime import resolve_device, seeded

T = TypeVar("T")
log = logging.getLogger("advgen")
SILENT = logging.CRITICAL + 1


def configure_logging(quiet: bool = False, is_main: bool | None = None) -> None:
    """Set the one output switch: INFO, WARNING when quiet, nothing at all on a non-zero rank."""
    if is_main is None:
        is_main = env_rank() == 0
    quiet = quiet or bool(os.environ.get("ADVGEN_QUIET"))
    log.setLevel(SILENT if not is_main else logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("advgen: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


@contextlib.contextmanager
def _speaking(quiet: bool, is_main: bool) -> Iterator[None]:
    """:func:`configure_logging` for a block; afterwards the ``advgen`` logger's level is as it was, so a command
    called from Python with ``quiet=True`` does not keep the library quiet after it."""
    before = log.level
    configure_logging(quiet, is_main)
    try:
        yield
    finally:
        log.setLevel(before)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (click and pytest swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def speaking() -> bool:
    """True when progress and chatter should show (not quiet, rank 0)."""
    return log.isEnabledFor(logging.INFO)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr while the run is speaking, else the bare iterable."""
    if not speaking():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


class Shared:
    """What rank 0 computed inside :meth:`Run.main`, handed to every rank on leaving the block."""

    value: Any = None


@dataclass(frozen=True)
class Run:
    """This process's place in a command's run: where it computes and which rank it is."""

    device: torch.device = torch.device("cpu")
    seed: int = 0
    out: Path | None = None
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
        """Wait until every rank gets here (nothing to wait for in a single process)."""
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

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main(self) -> Iterator[Shared]:
        """A block whose rank-0 part (``if run.is_main:``) sets ``shared.value``; every rank gets it after.

        An :class:`InputError` on rank 0 is raised on every rank with the same message (rank 0 prints
        it, the others are silent); any other failure on rank 0 raises :class:`PeerFailed` elsewhere.
        """
        shared = Shared()
        if self.size == 1:
            yield shared
            return
        outcome: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        try:
            yield shared
        except InputError as exc:
            outcome, error = ("input", str(exc)), exc
        except BaseException as exc:
            outcome, error = ("failed", f"{type(exc).__name__}: {exc}"), exc
        if self.is_main and error is None:
            outcome = ("ok", shared.value)
        kind, value = self.broadcast(outcome if self.is_main else None)
        if error is not None:
            raise error
        if kind == "input":
            raise InputError(value)
        if kind == "failed":
            raise PeerFailed(f"rank 0 failed: {value}")
        shared.value = value

    def check_same(self, value: Any, what: str) -> None:
        """Raise the same :class:`InputError` on every rank unless all ranks hold an equal ``value``."""
        values = self.gather(value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise InputError(f"{what} differs between rank 0 and rank(s) {', '.join(map(str, odd))}")


@contextlib.contextmanager
def start(device: str | torch.device = "auto", seed: int = 0, out: str | Path | None = None,
          quiet: bool = False) -> Iterator[Run]:
    """Build the command's :class:`Run`: resolve the device once, join torchrun's group, set the logger.

    Seeds Python, NumPy and torch with ``seed`` and sets the logger's level (``quiet``) for the block, and gives
    the caller's streams and level back after it: a command called from Python (``advgen.evaluate``) neither
    resets the caller's shuffling nor keeps advgen quiet afterwards. Without torchrun this touches no process group.
    """
    dev = resolve_device(device)
    out = Path(out) if out is not None else None
    if not launched():
        with _speaking(quiet, True), seeded(seed, dev):
            yield Run(dev, seed, out)
        return
    dev = device_for_rank(dev)
    owned = not dist.is_initialized()
    if owned:
        _import_group_defaults()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", timeout=DEFAULT_TIMEOUT, device_id=dev)
        else:
            dist.init_process_group("gloo", timeout=DEFAULT_TIMEOUT)
    try:
        run = Run(dev, seed, out, dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        with _speaking(quiet, run.is_main), seeded(seed, dev):
            yield run
        if owned:
            # Leave together: a rank that tears gloo down while rank 0 still writes the report can abort at
            # exit ("terminate called without an active exception"), failing a run whose results are written.
            # Only on success: after an error a barrier could wait on a rank that will never arrive.
            run.barrier()
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def _import_group_defaults() -> None:
    """Import, while no group exists, the torch module that keeps the default group in its signatures.

    ``torch.distributed.nn.functional`` declares ``group=group.WORLD`` defaults, bound when it is first
    imported. Training imports it lazily (the first optimizer imports ``torch._dynamo``, which imports it),
    so inside :func:`start` its defaults captured our live group and ``destroy_process_group`` could not free
    it: gloo's worker threads lived on into interpreter shutdown, where one that releases a tensor takes the
    GIL and aborts the finished rank ("terminate called without an active exception"). Imported first, the
    defaults are ``None`` and leaving :func:`start` joins the threads.
    """
    import torch.distributed.nn  # noqa: F401


def local(device: str | torch.device = "auto", seed: int = 0, out: str | Path | None = None) -> Run:
    """A one-rank :class:`Run` for library calls made outside :func:`start` (no process group, no logging change)."""
    return Run(resolve_device(device), seed, Path(out) if out is not None else None)
