"""One attack's result at one stage, kept as per-image outcomes so any rate can be recomputed later.

Storing the flags rather than the rates costs a character per image and buys re-analysis: paired
tests between stages or between reports, new metrics over old runs, and a rate that can never drift
from the images it claims to count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from ..stats import Rate, both, check_flags, ones
from .metrics import Metric


@dataclass
class Measurement:
    """What one attack found on the first ``images`` test images.

    ``outcomes`` maps an outcome name to one ``'0'``/``'1'`` flag per image (``{"robust": "0110..."}``);
    ``counts`` holds extra integers (one-pixel ``candidates``, ``pruned``); ``note`` says how it was run.
    """

    images: int
    outcomes: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""
    DERIVED: ClassVar[tuple[str, ...]] = ("rates",)  # the report adds them per registered metric

    @classmethod
    def from_flags(cls, flags: dict[str, Sequence[bool] | Any], **kw: Any) -> "Measurement":
        """Encode per-image booleans (lists or torch bool tensors) as outcome strings; all must be equally long."""
        encoded = {}
        for name, values in flags.items():
            values = values.tolist() if hasattr(values, "tolist") else values  # a tensor: one transfer, not n
            encoded[name] = "".join("1" if v else "0" for v in values)
        lengths = {len(s) for s in encoded.values()}
        if len(lengths) != 1:
            raise ValueError(f"from_flags needs at least one outcome, all of the same length; got "
                             f"{ {k: len(s) for k, s in encoded.items()} }")
        return cls(images=lengths.pop(), outcomes=encoded, **kw)

    def flags(self, outcome: str) -> str:
        """The outcome string, or a clear error naming what this measurement does carry."""
        if outcome not in self.outcomes:
            raise ValueError(f"no outcome {outcome!r} in this measurement (it has {', '.join(self.outcomes) or 'none'})")
        return self.outcomes[outcome]

    def rate(self, outcome: str, among: str | None = None) -> Rate:
        """Images with ``outcome`` 1, out of all images, or out of those where ``among`` is 1."""
        if among is None:
            return Rate(ones(self.flags(outcome)), self.images)
        base = self.flags(among)
        return Rate(ones(both(self.flags(outcome), base)), ones(base))

    def head(self, n: int) -> "Measurement":
        """The outcomes of the first ``n`` images (itself when it has no more); whole-run counts are left out."""
        if n >= self.images:
            return self
        return Measurement(n, {k: v[:n] for k, v in self.outcomes.items()}, note=self.note)

    def carries(self, metric: Metric) -> bool:
        """Whether the outcomes ``metric`` reads were recorded (else the metric was not measured)."""
        return metric.outcome in self.outcomes and (metric.among is None or metric.among in self.outcomes)

    def metric_rate(self, metric: Metric) -> Rate:
        return self.rate(metric.outcome, metric.among)

    def check(self) -> None:
        """One '0'/'1' flag per image in every outcome."""
        for name, flags in self.outcomes.items():
            check_flags(flags, f"outcomes.{name}")
            if len(flags) != self.images:
                raise ValueError(f"outcomes.{name} has {len(flags)} flags but images is {self.images}")


def measured(stage: dict[str, Measurement], metric: Metric) -> Measurement | None:
    """The measurement in ``stage`` (attack -> measurement) that ``metric`` reads; None when not recorded."""
    m = stage.get(metric.attack)
    return m if m is not None and m.carries(metric) else None
