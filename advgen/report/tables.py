"""The report as plain tables of unescaped strings, shared by the Markdown and HTML renderers.

Keeping "what to show" here and "how to escape it" in each renderer means the two outputs always
carry the same numbers, and each renderer has one escaping function to get right.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..stats import Rate, percent
from . import metrics as registry
from .changes import Change, change
from .measurement import Measurement
from .metrics import STAGES
from .schema import Report

NOT_MEASURED = "not measured"


@dataclass
class Table:
    """A titled table; ``numeric[i]`` right-aligns column i."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)


def text_table(table: Table) -> str:
    """The title, then the table as aligned plain text for terminals (numeric columns right-aligned)."""
    rows = [table.header, *table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.header))]
    numeric = table.numeric or [False] * len(widths)
    lines = ["  ".join(c.rjust(w) if n and k else c.ljust(w) for c, w, n in zip(r, widths, numeric)).rstrip()
             for k, r in enumerate(rows)]
    return "\n".join([table.title, *lines])


def fmt_fraction(value: float | None) -> str:
    """A fraction with 4 decimals, the precision gates are written in; ``None`` as "not measured"."""
    return NOT_MEASURED if value is None else f"{value:.4f}"


def fmt_rate(rate: Rate | None) -> str:
    """``0.9800 (490/500) [0.9636, 0.9891]``: value, count and 95% Wilson interval."""
    if rate is None:
        return NOT_MEASURED
    lo, hi = rate.ci95
    return f"{rate.value:.4f} ({rate.k}/{rate.n}) [{lo:.4f}, {hi:.4f}]"


def fmt_delta(old: float | None, new: float | None) -> str:
    """Signed difference ``new - old`` (``+0.0120``); empty when either side is missing."""
    if old is None or new is None:
        return ""
    d = new - old
    return "0.0000" if abs(d) < 5e-5 else f"{d:+.4f}"


def fmt_p(p: float | None) -> str:
    """A p-value: 3 decimals, or scientific below 0.001; "unpaired" when the images differed."""
    if p is None:
        return "unpaired"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def change_cells(c: Change) -> list[str]:
    """before, after, change, McNemar p, effect: the cells the report's table and ``compare`` share."""
    return [fmt_rate(c.before), fmt_rate(c.after), fmt_delta(c.before.value, c.after.value),
            fmt_p(c.test and c.test.p), c.effect]


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
    """Every measured metric with its count and interval and, after retraining, McNemar's verdict."""
    if "after" not in report.stages:
        t = Table("Metrics (before only: no retraining)", ["metric", "before"], numeric=[False, True])
        t.rows = [[m.label, fmt_rate(report.rate("before", m))] for m in report.shown_metrics()]
        return t
    t = Table("Before and after retraining", ["metric", "before", "after", "change", "McNemar p", "effect"],
              numeric=[False, True, True, True, True, False])
    for m in report.shown_metrics():
        label = m.label + ("" if m.higher_is_better else " (lower is better)")
        x, y = report.measurement("before", m), report.measurement("after", m)
        if x and y:
            t.rows.append([label, *change_cells(change(m, x, y))])
        else:
            t.rows.append([label, fmt_rate(report.rate("before", m)), fmt_rate(report.rate("after", m)), "", "", ""])
    return t


ONEPIXEL_STATUSES = ("certified", "vulnerable", "timeout", "misclassified")


def _onepixel_statuses(m: Measurement) -> list[str]:
    """Per image: certified, vulnerable, timeout (with a time limit), or none of them, which the exact search
    gives only to misclassified images."""
    timeout = m.outcomes.get("timeout", "0" * m.images)
    return ["certified" if c == "1" else "vulnerable" if v == "1" else "timeout" if t == "1" else "misclassified"
            for v, c, t in zip(m.flags("vulnerable"), m.flags("certified"), timeout)]


def onepixel_table(report: Report) -> Table | None:
    """Each image's exact one-pixel status before (rows) against after (columns); None unless both stages have it.

    The vulnerable rate's change does not say where the images left vulnerable came from: retraining can
    turn a misclassified image into a correct one that a single pixel flips back, which the rate counts as
    a new weakness just as it counts a certified image broken. This table tells the two apart.
    """
    vulnerable, certified = registry.metric("onepixel.vulnerable"), registry.metric("onepixel.certified")
    x, y = (report.measurement(stage, vulnerable) for stage in STAGES)
    if not (x and y and x.images == y.images and x.carries(certified) and y.carries(certified)):
        return None
    pairs = Counter(zip(_onepixel_statuses(x), _onepixel_statuses(y)))
    shown = [s for s in ONEPIXEL_STATUSES if s != "timeout" or any("timeout" in p for p in pairs)]
    t = Table("One-pixel status per image: before retraining (rows), after (columns)",
              ["before", *shown, "total"], numeric=[False, *[True] * (len(shown) + 1)])
    for before in shown:
        row = [pairs[before, after] for after in shown]
        t.rows.append([before, *map(str, row), str(sum(row))])
    t.rows.append(["total", *(str(sum(pairs[b, a] for b in shown)) for a in shown), str(x.images)])
    return t


def measurements_table(report: Report) -> Table:
    """What each attack was run on, how long it took, its counters (one-pixel candidates, pruned) and note."""
    t = Table("Measurements", ["stage", "attack", "images", "seconds", "counts", "note"],
              numeric=[False, False, True, True, False, False])
    t.rows = [[stage, attack, str(m.images), f"{m.seconds:.2f}", _counts(m.counts), m.note]
              for stage, attacks in report.stages.items() for attack, m in attacks.items()]
    return t


def _counts(counts: dict[str, int]) -> str:
    """``candidates 199920, pruned 199000 (99.54% settled by bounds), evaluated 920``."""
    cells = [f"{k} {v}" for k, v in counts.items()]
    if counts.get("candidates") and "pruned" in counts:
        cells[list(counts).index("pruned")] += f" ({percent(counts['pruned'], counts['candidates'])} settled by bounds)"
    return ", ".join(cells)


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
    t = Table("Timings", ["phase", "seconds"], numeric=[False, True])
    t.rows = [[k, f"{v:.2f}"] for k, v in report.timings.items()]
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


def provenance_tables(report: Report) -> list[Table]:
    """Run (tool version, creation time, seed, final stage), then the machine and the settings, flattened."""
    run = [["tool", f"{report.tool.get('name', 'advgen')} {report.tool.get('version', '?')}"],
           ["created", report.created], ["seed", fmt_value(report.seed)], ["final stage", report.final_stage]]
    return [Table("Run", ["key", "value"], run, [False, False]),
            Table("Machine", ["key", "value"], _flatten(report.machine), [False, False]),
            Table("Configuration", ["setting", "value"], _flatten(report.config), [False, False])]


def all_tables(report: Report) -> list[Table]:
    """Every table in reading order: verdict-relevant first, provenance last."""
    onepixel = onepixel_table(report)
    return [metrics_table(report), *([onepixel] if onepixel else []), gates_table(report), measurements_table(report),
            augmentation_table(report), timings_table(report), *provenance_tables(report)]
