"""Where a search's time goes, and when its time is up.

Shared by the per-channel search (:mod:`.exact`) and the colour search (:mod:`.joint`): seconds and counts
added to a caller's stats dict, only if it asked for one (asking synchronises the device at each step, so
leave them out when timing matters on a GPU), and the deadline of a ``time_limit``. Every reading of the
clock for a deadline goes through this module, so a test can stand in for the clock in one place.
"""

from __future__ import annotations

import time

import torch


class Clock:
    """Adds elapsed time and counts to a stats dict, if the caller asked for one (synchronising the device)."""

    def __init__(self, stats: dict | None, device: torch.device) -> None:
        self.stats, self.device = stats, device
        self.last = time.perf_counter()

    def add(self, key: str, **counts: int) -> None:
        if self.stats is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.stats[key] = self.stats.get(key, 0.0) + now - self.last
        for k, v in counts.items():
            self.stats[k] = self.stats.get(k, 0) + int(v)
        self.last = now


def deadline_after(time_limit: float | None, images: int) -> float | None:
    """When a search of ``images`` images with ``time_limit`` seconds each must stop; None without a limit."""
    return None if time_limit is None else time.perf_counter() + time_limit * images


def past(deadline: float | None) -> bool:
    """Whether ``deadline`` has passed (never, without one)."""
    return deadline is not None and time.perf_counter() > deadline
