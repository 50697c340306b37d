"""Compare two reports (e.g. the main branch's and a pull request's) and flag regressions that are real.

Each side is judged on its final stage (``after`` when retraining happened, else ``before``). A
metric REGRESSES when it moved in its bad direction (accuracies falling, attack success rising) by
more than ``max_drop`` AND the move is statistically significant (see :mod:`.changes`: McNemar's exact
test when both reports measured the same images, non-overlapping Wilson intervals when they did not).
So CI flags a drop of five images out of a thousand only when it is more than noise. A metric
measured on only one side is listed with a note but is not a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..stats import Rate
from .changes import ALPHA, WORSE, change
from .markdown import md_escape
from .schema import Report
from .tables import fmt_delta, fmt_p, fmt_rate

#: Float noise ignored when comparing a drop with ``max_drop``.
TOLERANCE = 1e-9


@dataclass
class MetricChange:
    """One metric's old and new rate, McNemar's p (``None`` when unpaired or unmeasured), and the verdict."""

    metric: str
    label: str
    higher_is_better: bool
    old: Rate | None
    new: Rate | None
    delta: float | None
    p: float | None
    paired: bool
    effect: str
    regressed: bool
    note: str = ""

    @property
    def status(self) -> str:
        """REGRESSED / worse (within max-drop) / better / no significant change / not comparable."""
        if self.delta is None:
            return "not comparable"
        if self.regressed:
            return "REGRESSED"
        return "worse (within max-drop)" if self.effect == WORSE else self.effect

    def to_dict(self) -> dict[str, Any]:
        d = {**vars(self), "status": self.status}
        d["old"], d["new"] = (None if r is None else r.to_dict() for r in (self.old, self.new))
        return d

    def cells(self) -> list[str]:
        """metric, old, new, delta, p, status: the row both renderings print."""
        old, new = self.old, self.new
        return [self.label, fmt_rate(old), fmt_rate(new), fmt_delta(old and old.value, new and new.value),
                "" if self.delta is None else fmt_p(self.p), self.status]


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
        return {"old_stage": self.old_stage, "new_stage": self.new_stage, "max_drop": self.max_drop, "alpha": ALPHA,
                "regressed": self.regressed,
                "changes": [c.to_dict() for c in self.changes], "notes": list(self.notes)}

    def summary(self) -> str:
        n = len(self.regressions)
        if n:
            return f"REGRESSED: {n} metric{'s' if n != 1 else ''} significantly worse by more than {self.max_drop:g}"
        return f"OK: no metric significantly worse by more than {self.max_drop:g}"

    def render_text(self) -> str:
        """An aligned plain-text table for terminals, with the verdict on the last line."""
        rows = [["metric", "old", "new", "delta", "p", "status"]] + [c.cells() for c in self.changes]
        for row, c in zip(rows[1:], self.changes):
            row[5] += f" ({c.note})" if c.note else ""
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"comparing old {self.old_stage} stage with new {self.new_stage} stage "
                 f"(max drop {self.max_drop:g}, significance p < {ALPHA:g})"]
        for r in rows:
            lines.append("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]))
        lines += self.notes
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def render_markdown(self) -> str:
        """The same table as GitHub Markdown, for a job summary or a pull-request comment."""
        icon = "❌" if self.regressed else "✅"
        lines = [f"### {icon} {md_escape(self.summary())}", "",
                 f"Old {self.old_stage} stage vs new {self.new_stage} stage; a regression must also be "
                 f"significant at p < {ALPHA:g}.", "",
                 "| metric | old | new | delta | p | status |", "|---|---:|---:|---:|---:|---|"]
        for c in self.changes:
            cells = [md_escape(x) for x in c.cells()]
            cells[5] = f"**{cells[5]}**" if c.regressed else cells[5]
            lines.append("| " + " | ".join(cells) + (f" ({md_escape(c.note)})" if c.note else "") + " |")
        lines += [""] + [f"- {md_escape(n)}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def compare(old: Report, new: Report, max_drop: float = 0.0) -> Comparison:
    """Compare the final stage of ``old`` with that of ``new``, metric by metric.

    ``max_drop`` (a fraction in [0, 1]) is how much worse a metric may get before it counts as a
    regression, provided the change is also significant; 0.0 flags any significant worsening.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or not 0.0 <= max_drop <= 1.0:
        raise InputError(f"max_drop must be a fraction in [0, 1], got {max_drop!r}")
    a, b = old.final, new.final
    result = Comparison(old_stage=old.final_stage, new_stage=new.final_stage, max_drop=float(max_drop))
    if result.old_stage != result.new_stage:
        result.notes.append(f"note: the old report's final stage is {result.old_stage!r} but the new one's is "
                            f"{result.new_stage!r}; the numbers may not be like for like")
    unpaired = []
    for m in dict.fromkeys(old.shown_metrics() + new.shown_metrics()):
        x, y = a.get(m.attack), b.get(m.attack)
        if x is None or y is None:
            note = "not measured in new" if y is None else "not measured in old"
            result.changes.append(MetricChange(m.key, m.label, m.higher_is_better,
                                               x and x.metric_rate(m), y and y.metric_rate(m),
                                               None, None, False, "", False, note))
            continue
        c = change(m, x, y)
        if c.test is None:
            unpaired.append(f"{m.label} ({x.images} vs {y.images} images)")
        regressed = c.effect == WORSE and c.worsening > max_drop + TOLERANCE
        result.changes.append(MetricChange(m.key, m.label, m.higher_is_better, c.before, c.after, c.delta, c.test and c.test.p, c.test is not None,
                                           c.effect, regressed))
    if unpaired:
        result.notes.append("note: measured on different images, so judged unpaired (significant only when the "
                            "95% Wilson intervals do not overlap): " + ", ".join(unpaired))
    return result
