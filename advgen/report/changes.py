"""Is a change in a metric real? One judgement shared by the report's tables and ``advgen report compare``.

Two measurements of the same data are compared with McNemar's exact test on the per-image outcomes of
the images both measured: every attack reads the first N images of the test split, so measurements of
1,000 and 200 images share the first 200, and the change is judged (rates, delta and test) on those. A
metric with ``among`` (AdvGAN's success rate among clean-correct images) is paired over the images that
are ``among`` in BOTH measurements, so the test asks "on images both models classify right, did the
attack succeed more often?" rather than mixing in changes of clean accuracy.

Measurements of different data cannot be paired; the change then counts as significant only when the
two 95% Wilson intervals do not overlap, a conservative unpaired check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..stats import Paired, Rate, paired
from .measurement import Measurement
from .metrics import Metric

ALPHA = 0.05
BETTER, WORSE, NO_CHANGE = "better", "worse", "no significant change"


@dataclass(frozen=True)
class Change:
    """One metric from ``before`` to ``after``; ``test`` is ``None`` when the images could not be paired."""

    metric: Metric
    before: Rate
    after: Rate
    test: Paired | None

    @property
    def delta(self) -> float:
        return self.after.value - self.before.value

    @property
    def direction(self) -> int:
        """+1 / -1 when the outcome rate significantly rose / fell, 0 when the change may be noise."""
        if self.test is not None:
            if self.test.p >= ALPHA:
                return 0
            return 1 if self.test.gained > self.test.lost else -1
        (lo0, hi0), (lo1, hi1) = self.before.ci95, self.after.ci95
        return 1 if lo1 > hi0 else -1 if hi1 < lo0 else 0

    @property
    def effect(self) -> str:
        """better / worse / no significant change at p < 0.05, in the metric's own direction."""
        if self.direction == 0:
            return NO_CHANGE
        return BETTER if (self.direction > 0) == self.metric.higher_is_better else WORSE

    @property
    def worsening(self) -> float:
        """How much worse the value got in the metric's bad direction (negative when it improved)."""
        return -self.delta if self.metric.higher_is_better else self.delta

    def to_dict(self) -> dict[str, Any]:
        """The derived JSON form: paired counts and p (``null`` when unpaired), the delta and the effect."""
        t = self.test
        return {"paired": t is not None, "gained": t and t.gained, "lost": t and t.lost, "p": t and t.p,
                "delta": self.delta, "effect": self.effect}


def change(metric: Metric, before: Measurement, after: Measurement, same_data: bool = True) -> Change:
    """Judge ``metric`` between two measurements of the same attack (``same_data``: of the same test split).

    Of the same data, both are cut to the images both measured (the first ``min`` of the two counts).
    """
    test = None
    if same_data:
        before, after = before.head(after.images), after.head(before.images)
        old, new = before.flags(metric.outcome), after.flags(metric.outcome)
        if metric.among is not None:
            keep = [x == y == "1" for x, y in zip(before.flags(metric.among), after.flags(metric.among))]
            old, new = ("".join(c for c, k in zip(s, keep) if k) for s in (old, new))
        test = paired(old, new)
    return Change(metric, before.metric_rate(metric), after.metric_rate(metric), test)
