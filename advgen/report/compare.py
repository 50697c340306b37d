"""Compare two reports (e.g. the main branch's and a pull request's) and flag regressions.

Each side is judged on its final stage (``after`` when retraining happened, else ``before``). A
metric regresses when it moves in its bad direction by more than ``max_drop``: accuracies falling,
rates (AdvGAN success, one-pixel vulnerable) rising. A metric measured on only one side is listed
with a note but is not a regression, since there is no drop to measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from .markdown import md_escape
from .schema import METRICS, Report
from .tables import fmt_delta, fmt_fraction

#: Float noise ignored when comparing a drop with ``max_drop``.
TOLERANCE = 1e-9


@dataclass
class MetricChange:
    """One metric's old and new value; ``regressed`` when it worsened by more than ``max_drop``."""

    metric: str
    label: str
    higher_is_better: bool
    old: float | None
    new: float | None
    delta: float | None
    regressed: bool
    note: str = ""

    @property
    def status(self) -> str:
        """regressed / worse (within max_drop) / better / same / not comparable."""
        if self.delta is None:
            return "not comparable"
        if self.regressed:
            return "REGRESSED"
        if abs(self.delta) <= TOLERANCE:
            return "same"
        return "better" if (self.delta > 0) == self.higher_is_better else "worse (within max-drop)"


@dataclass
class Comparison:
    """The result of :func:`compare`: per-metric changes and whether anything regressed."""

    old_stage: str
    new_stage: str
    max_drop: float
    changes: list[MetricChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.changes)

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regressed]

    def exit_code(self) -> int:
        """0 when nothing regressed, 1 otherwise (2 is reserved for bad input)."""
        return 1 if self.regressed else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, snake_case, numbers as numbers."""
        return {"old_stage": self.old_stage, "new_stage": self.new_stage, "max_drop": self.max_drop,
                "regressed": self.regressed,
                "changes": [{**asdict(c), "status": c.status} for c in self.changes], "notes": list(self.notes)}

    def summary(self) -> str:
        n = len(self.regressions)
        if n:
            return f"REGRESSED: {n} metric{'s' if n != 1 else ''} worse by more than {self.max_drop:g}"
        return f"OK: no metric worse by more than {self.max_drop:g}"

    def render_text(self) -> str:
        """An aligned plain-text table for terminals, with the verdict on the last line."""
        rows = [["metric", "old", "new", "delta", "status"]]
        for c in self.changes:
            rows.append([c.label, fmt_fraction(c.old), fmt_fraction(c.new), fmt_delta(c.old, c.new),
                         c.status + (f" ({c.note})" if c.note else "")])
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"comparing old {self.old_stage} stage with new {self.new_stage} stage (max drop {self.max_drop:g})"]
        for r in rows:
            lines.append("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)] + [r[4]]))
        lines += self.notes
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def render_markdown(self) -> str:
        """The same table as GitHub Markdown, for a job summary or a pull-request comment."""
        icon = "❌" if self.regressed else "✅"
        lines = [f"### {icon} {md_escape(self.summary())}", "",
                 f"Old {self.old_stage} stage vs new {self.new_stage} stage.", "",
                 "| metric | old | new | delta | status |", "|---|---:|---:|---:|---|"]
        for c in self.changes:
            status = f"**{c.status}**" if c.regressed else md_escape(c.status)
            lines.append(f"| {md_escape(c.label)} | {fmt_fraction(c.old)} | {fmt_fraction(c.new)} | "
                         f"{fmt_delta(c.old, c.new)} | {status}{' (' + md_escape(c.note) + ')' if c.note else ''} |")
        lines += [""] + [f"- {md_escape(n)}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def compare(old: Report, new: Report, max_drop: float = 0.0) -> Comparison:
    """Compare the final stage of ``old`` with that of ``new``, metric by metric.

    ``max_drop`` (a fraction in [0, 1]) is how much worse a metric may get before it counts as a
    regression; 0.0 flags any worsening at all.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or not 0.0 <= max_drop <= 1.0:
        raise InputError(f"max_drop must be a fraction in [0, 1], got {max_drop!r}")
    a, b = old.final, new.final
    result = Comparison(old_stage=old.final_stage, new_stage=new.final_stage, max_drop=float(max_drop))
    if result.old_stage != result.new_stage:
        result.notes.append(f"note: the old report's final stage is {result.old_stage!r} but the new one's is "
                            f"{result.new_stage!r}; the numbers may not be like for like")
    for m in METRICS:
        x, y = a.get(m.field), b.get(m.field)
        if x is None or y is None:
            note = ("not measured in either" if x is None and y is None
                    else "not measured in new" if y is None else "not measured in old")
            result.changes.append(MetricChange(m.field, m.label, m.higher_is_better, x, y, None, False, note))
            continue
        delta = y - x
        worsening = -delta if m.higher_is_better else delta
        result.changes.append(MetricChange(m.field, m.label, m.higher_is_better, x, y, delta,
                                           worsening > max_drop + TOLERANCE))
    return result
