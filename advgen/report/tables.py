"""The report as plain tables of unescaped strings, shared by the Markdown and HTML renderers.

Keeping "what to show" here and "how to escape it" in each renderer means the two outputs always
carry the same numbers, and each renderer has one escaping function to get right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .schema import COUNTS, METRICS, Report

NOT_MEASURED = "not measured"


@dataclass
class Table:
    """A titled table; ``numeric[i]`` right-aligns column i."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)


def fmt_fraction(value: float | None) -> str:
    """A fraction with 4 decimals, the precision gates are written in; ``None`` as "not measured"."""
    return NOT_MEASURED if value is None else f"{value:.4f}"


def fmt_delta(old: float | None, new: float | None) -> str:
    """Signed difference ``new - old`` (``+0.0120``); empty when either side is missing."""
    if old is None or new is None:
        return ""
    d = new - old
    return "0.0000" if abs(d) < 5e-5 else f"{d:+.4f}"


def effect(old: float | None, new: float | None, higher_is_better: bool) -> str:
    """better / worse / same, judged in the metric's own direction."""
    if old is None or new is None:
        return ""
    d = new - old
    if abs(d) < 5e-5:
        return "same"
    return "better" if (d > 0) == higher_is_better else "worse"


def fmt_value(value: Any) -> str:
    """Config and machine values: strings as-is, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, default=str)


def headline(report: Report) -> tuple[str, str]:
    """(verdict word, one-line summary): ``("PASSED", "all 3 gates passed")``."""
    n = len(report.gates)
    failed = sum(not g.passed for g in report.gates)
    if n == 0:
        return ("NO GATES", "no gates were set; metrics are reported without a verdict")
    if failed:
        return ("FAILED", f"{failed} of {n} gate{'s' if n != 1 else ''} failed")
    return ("PASSED", f"all {n} gate{'s' if n != 1 else ''} passed")


def metrics_table(report: Report) -> Table:
    """Before/after/delta for every fraction metric, then the one-pixel search counters."""
    before, after = report.before, report.after
    if after is None:
        t = Table("Metrics (before only: no retraining)", ["metric", "before"], numeric=[False, True])
        t.rows = [[m.label, fmt_fraction(before.get(m.field))] for m in METRICS]
        t.rows += [[c.replace("_", " "), str(getattr(before, c))] for c in COUNTS]
        return t
    t = Table("Before and after retraining", ["metric", "before", "after", "delta", "effect"],
              numeric=[False, True, True, True, False])
    for m in METRICS:
        old, new = before.get(m.field), after.get(m.field)
        t.rows.append([m.label + ("" if m.higher_is_better else " (lower is better)"), fmt_fraction(old),
                       fmt_fraction(new), fmt_delta(old, new), effect(old, new, m.higher_is_better)])
    for c in COUNTS:
        old, new = getattr(before, c), getattr(after, c)
        t.rows.append([c.replace("_", " "), str(old), str(new), f"{new - old:+d}" if new != old else "0", ""])
    return t


def gates_table(report: Report) -> Table:
    t = Table("Gates", ["result", "gate", "value", "threshold", "reason"], numeric=[False, False, True, True, False])
    t.rows = [["PASS" if g.passed else "FAIL", f"{g.stage}.{g.name} ({g.metric})", fmt_fraction(g.value),
               f"{g.threshold:g}", g.reason] for g in report.gates]
    return t


def augmentation_table(report: Report) -> Table:
    t = Table("Generated training data", ["source", "samples"], numeric=[False, True])
    t.rows = [[k, str(v)] for k, v in report.augmentation.items()]
    if report.augmentation:
        t.rows.append(["total", str(sum(report.augmentation.values()))])
    return t


def timings_table(report: Report) -> Table:
    """Run-level timings, then each stage's per-attack seconds as ``before.onepixel``."""
    t = Table("Timings", ["phase", "seconds"], numeric=[False, True])
    t.rows = [[k, f"{v:.2f}"] for k, v in report.timings.items()]
    for name in ("before", "after"):
        stage = report.stage(name)
        if stage is not None:
            t.rows += [[f"{name}.{k}", f"{v:.2f}"] for k, v in stage.seconds.items()]
    return t


def _flatten(d: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            rows += _flatten(v, key + ".")
        else:
            rows.append([key, fmt_value(v)])
    return rows


def machine_table(report: Report) -> Table:
    return Table("Machine", ["key", "value"], _flatten(report.machine), [False, False])


def config_table(report: Report) -> Table:
    return Table("Configuration", ["setting", "value"], _flatten(report.config), [False, False])


def run_table(report: Report) -> Table:
    """Who and when: tool version, creation time, seed, final stage."""
    rows = [["tool", f"{report.tool.get('name', 'advgen')} {report.tool.get('version', '?')}"],
            ["created", report.created], ["seed", fmt_value(report.seed)], ["final stage", report.final_stage]]
    return Table("Run", ["key", "value"], rows, [False, False])


def all_tables(report: Report) -> list[Table]:
    """Every table in reading order: verdict-relevant first, provenance last."""
    return [metrics_table(report), gates_table(report), augmentation_table(report), timings_table(report),
            run_table(report), machine_table(report), config_table(report)]
