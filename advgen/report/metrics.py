"""The one registry of reported metrics: adding an attack or a metric is one line in :data:`METRICS`.

A metric is a rate over one attack's per-image outcomes, e.g. PGD's ``robust`` flags. Schema checks,
gates, tables, the chart and ``compare`` all read this tuple, and it imports nothing from the report
package, so it sits at the bottom of the import graph.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("before", "after")


@dataclass(frozen=True)
class Metric:
    """How to read, show and judge one rate.

    ``among`` restricts the rate to images where that outcome is 1 (AdvGAN's success rate counts
    only images the model classified correctly); ``gate`` is the ``--fail-under`` name, if gated.
    """

    attack: str
    outcome: str
    label: str
    higher_is_better: bool
    gate: str | None = None
    among: str | None = None

    @property
    def name(self) -> str:
        """The key within its attack: ``robust``, or ``fooled_among_correct``."""
        return self.outcome if self.among is None else f"{self.outcome}_among_{self.among}"

    @property
    def key(self) -> str:
        """``attack.name``, unique across the registry: ``pgd.robust``."""
        return f"{self.attack}.{self.name}"


METRICS: tuple[Metric, ...] = (
    Metric("clean", "correct", "clean accuracy", True, gate="clean"),
    Metric("onepixel", "certified", "one-pixel certified robust", True, gate="onepixel"),
    Metric("onepixel", "vulnerable", "one-pixel vulnerable rate", False),
    Metric("onepixel", "timeout", "one-pixel undecided (time limit: nothing proved)", False),
    Metric("pgd", "robust", "PGD robust accuracy", True, gate="pgd"),
    Metric("autoattack", "robust", "AutoAttack robust accuracy", True, gate="autoattack"),
    Metric("autoattack", "worst", "worst-case robust accuracy (PGD and AutoAttack)", True, gate="worst"),
    Metric("autoattack", "apgd-ce", "AutoAttack part APGD-CE robust", True),
    Metric("autoattack", "apgd-t", "AutoAttack part APGD-T robust", True),
    Metric("autoattack", "fab-t", "AutoAttack part FAB-T robust", True),
    Metric("autoattack", "square", "AutoAttack part Square robust", True),
    Metric("advgan", "robust", "AdvGAN robust accuracy", True, gate="advgan"),
    Metric("advgan", "fooled", "AdvGAN success rate", False, among="correct"),
)


# The helpers read METRICS when called, so a test or plug-in that extends the tuple is seen everywhere.

def metric(key: str) -> Metric:
    """The metric registered as ``key`` (``pgd.robust``)."""
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(f"no metric {key!r}; registered: {', '.join(m.key for m in METRICS)}")


def gate_metrics() -> dict[str, Metric]:
    """Gate name -> the metric it reads: ``{"clean": <clean.correct>, ...}``."""
    return {m.gate: m for m in METRICS if m.gate is not None}
