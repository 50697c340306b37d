"""One evaluation's working state: its run, its phase store under ``out/state``, and its clock.

The evaluator, the generated-data sources and the ablation's variants all work in the same way: each
phase is saved once beside the fingerprint of what it depends on, and its wall time is added to the
report's timings. Holding the three together lets those modules take one argument instead of five.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from .data import Dataset
from .resume import Phases, fingerprint
from .run import Run


@dataclass
class Workspace:
    """Where a run's phases live (``out/state``), and the seconds each named block took."""

    run: Run
    out: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def phases(self) -> Phases:
        return Phases(self.out / "state")

    def fingerprint(self, settings: dict[str, Any], model: nn.Module | None = None,
                    data: Dataset | None = None) -> dict[str, Any]:
        """What a phase depends on: ``settings``, the model's and data's digests, and the run's seed."""
        return fingerprint(settings, model=model, data=data, seed=self.run.seed)

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Add the block's wall time to ``timings[name]``."""
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
