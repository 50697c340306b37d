"""Pass/fail gates: ``--fail-under clean=0.97`` turns a report into a CI verdict.

A spec is ``[STAGE.]NAME=THRESHOLD``: NAME is a gate name from the metric registry (clean, onepixel,
pgd, autoattack, worst, advgan), STAGE is ``before`` or ``after`` (without one: the report's final stage, ``after``
when it retrained, ``before`` when it only measured), THRESHOLD a fraction in [0, 1]. A gate
passes when the measured value is at least the threshold; a metric that was not measured fails the
gate, because a CI check must not pass on a number nobody computed.

Exit codes of commands that gate: 0 all gates pass, 1 any gate fails, 2 bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable

from ..errors import InputError
from . import metrics as registry
from .metrics import STAGES, Metric
from .schema import Gate, Report

EXIT_PASS, EXIT_FAIL = 0, 1


@dataclass(frozen=True)
class GateSpec:
    """A parsed ``[stage.]name=threshold`` request, not yet evaluated."""

    name: str
    threshold: float
    stage: str | None = None  # None: the report's final stage

    @property
    def metric(self) -> Metric:
        return registry.gate_metrics()[self.name]

    def __str__(self) -> str:
        return f"{self.stage + '.' if self.stage else ''}{self.name}={self.threshold:g}"


def parse_gate_spec(text: str) -> GateSpec:
    """Parse ``clean=0.97`` or ``before.clean=0.9``; anything else is an :class:`InputError` saying why."""
    raw = text.strip()
    if raw.count("=") != 1:
        raise InputError(f"gate {text!r} must look like NAME=THRESHOLD, e.g. clean=0.97")
    key, value = (part.strip() for part in raw.split("="))
    stage = None
    if "." in key:
        stage, key = (part.strip() for part in key.split(".", 1))
        if stage not in STAGES:
            raise InputError(f"gate {text!r}: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    names = registry.gate_metrics()
    if key not in names:
        raise InputError(f"gate {text!r}: unknown name {key!r}; choose one of {', '.join(names)}")
    try:
        threshold = float(value)
    except ValueError:
        raise InputError(f"gate {text!r}: threshold {value!r} is not a number") from None
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise InputError(f"gate {text!r}: threshold must be in [0, 1], got {value}")
    return GateSpec(name=key, threshold=threshold, stage=stage)


def parse_gate_specs(texts: Iterable[str | GateSpec], final: str | None = None) -> list[GateSpec]:
    """Parse several specs; the same stage and name twice is refused rather than silently overridden.

    ``final``: the final stage of the report they will gate, when known; an unprefixed spec then counts as
    naming it (``clean`` and ``after.clean`` are the same gate on a report that retrained).
    """
    specs = [t if isinstance(t, GateSpec) else parse_gate_spec(t) for t in texts]
    seen: dict[tuple[str | None, str], GateSpec] = {}
    for s in specs:
        prior = seen.setdefault((s.stage or final, s.name), s)
        if prior is not s:
            raise InputError(f"gate {s} given twice ({prior} and {s}); give it once")
    return specs


def evaluate_gates(report: Report, specs: Iterable[str | GateSpec]) -> list[Gate]:
    """Judge ``report`` against each spec; one :class:`Gate` per spec, in order, with a reason in words."""
    gates = []
    for spec in parse_gate_specs(specs, report.final_stage):
        spec = replace(spec, stage=spec.stage or report.final_stage)
        metric, rate = spec.metric, report.rate(spec.stage, spec.metric)
        value = None if rate is None else rate.value
        if spec.stage not in report.stages:
            passed, reason = False, f"not measured: the report has no {spec.stage!r} stage (no retraining)"
        elif rate is None and metric.attack in report.stages[spec.stage]:
            needs = " (the worst case needs PGD on the same images)" if metric.key == "autoattack.worst" else ""
            passed, reason = False, f"not measured: the {metric.attack!r} measurement in the {spec.stage!r} stage " \
                                    f"has no {metric.name!r} outcomes{needs}"
        elif rate is None:
            passed, reason = False, f"not measured: no {metric.attack!r} measurement in the {spec.stage!r} stage " \
                                    f"(was the {spec.name} attack switched off?)"
        elif Gate.passes(value, spec.threshold):
            passed, reason = True, f"{value:.4f} >= {spec.threshold:g}"
        else:
            passed, reason = False, f"{value:.4f} < {spec.threshold:g} (short by {spec.threshold - value:.4f})"
        gates.append(Gate(name=spec.name, metric=metric.key, threshold=spec.threshold, stage=spec.stage,
                          value=value, passed=passed, reason=reason))
    return gates


def gate_exit_code(gates: Iterable[Gate]) -> int:
    """0 when every gate passed (or there are none), 1 when any failed."""
    return EXIT_PASS if all(g.passed for g in gates) else EXIT_FAIL


def format_gate(gate: Gate) -> str:
    """One line per gate for terminals and logs: ``PASS after.clean >= 0.97: 0.9812 >= 0.97``."""
    return f"{'PASS' if gate.passed else 'FAIL'} {gate.label}: {gate.reason}"
