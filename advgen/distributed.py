"""Low-level torchrun facts: is this process one of several ranks, which GPU is its own, how long to wait.

:mod:`advgen.run` builds the command's run context on top of these; nothing else needs them.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from .errors import InputError

# Ranks wait at barriers for the slowest one; an exact attack can run for hours on a hard shard, so the
# default collective timeouts (10 min nccl, 30 min gloo) would kill healthy runs. torchrun still tears the
# whole group down as soon as any rank dies, so a long timeout does not hide crashes.
DEFAULT_TIMEOUT = timedelta(hours=int(os.environ.get("ADVGEN_DIST_TIMEOUT_HOURS", "72")))


class PeerFailed(Exception):
    """Another rank (rank 0) failed; it reports the reason, so this rank exits without a word."""


def launched() -> bool:
    """True under torchrun (or any launcher that sets ``WORLD_SIZE`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as the launcher set it (0 without one), readable before any group exists."""
    return int(os.environ.get("RANK", "0"))


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
