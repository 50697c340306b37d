"""Compare two reports (e.g. the main branch's and a pull request's) and flag regressions that are real.

Each side is judged on its final stage (``after`` when retraining happened, else ``before``). A
metric REGRESSES when it moved in its bad direction (accuracies falling, attack success rising) by
more than ``max_drop`` AND the move is significant at p < 0.05 (see :mod:`.changes`: McNemar's exact
test on the images both reports measured, the first N of the same test split; non-overlapping Wilson
intervals for reports of different data), so CI does not fail on a few images of noise. A pull
request's quick run of 200 images is thus judged, paired, on the first 200 of main's 1,000.

A metric the old report measured and the new one did not fails the comparison too, as it fails a
gate: a check must not pass because an attack was switched off. A metric only the new report
measured is listed, not judged. Reports of different data (their ``config.data``) are never paired.
Reports from different processors, devices or torch builds get a note: a retraining's rounding
differs there, and its results with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .changes import ALPHA, WORSE, Change, change
from .markdown import md_escape, md_table
from .schema import Report
from .tables import Table, change_cells, text_table

#: Float noise ignored when comparing a drop with ``max_drop``.
TOLERANCE = 1e-9
#: What, in a report's ``machine``, changes the fp32 rounding of training. Measured: the same code and seed
#: on an AMD and an Intel CPU trained other weights, and compare between the two reports exited 1.
ROUNDING = ("device", "cpu", "gpu", "torch")


@dataclass
class MetricChange:
    """One metric across the two reports; ``change`` is ``None`` when one side did not measure it."""

    label: str
    change: Change | None
    regressed: bool = False
    note: str = ""
    dropped: bool = False  # measured in the old report and not in the new one

    @property
    def status(self) -> str:
        """REGRESSED / worse (within max-drop) / better / no significant change / MISSING / not comparable."""
        if self.dropped:
            return "MISSING"
        if self.change is None:
            return "not comparable"
        if self.regressed:
            return "REGRESSED"
        return "worse (within max-drop)" if self.change.effect == WORSE else self.change.effect

    def cells(self) -> list[str]:
        """metric, old, new, delta, p, status (with the note): the row both renderings print."""
        cells = ["", "", "", ""] if self.change is None else change_cells(self.change)[:4]
        return [self.label, *cells, self.status + (f" ({self.note})" if self.note else "")]

    def to_dict(self) -> dict[str, Any]:
        c = self.change
        rates = {} if c is None else {"old": c.before.to_dict(), "new": c.after.to_dict(), **c.to_dict()}
        return {"label": self.label, **rates, "regressed": self.regressed, "status": self.status, "note": self.note}


@dataclass
class Comparison:
    """The result of :func:`compare`: per-metric changes (keyed by registry key) and the verdict."""

    old_stage: str
    new_stage: str
    max_drop: float
    changes: dict[str, MetricChange] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        return [key for key, c in self.changes.items() if c.regressed]

    @property
    def missing(self) -> list[str]:
        """Metrics the old report measured and the new one did not."""
        return [key for key, c in self.changes.items() if c.dropped]

    def exit_code(self) -> int:
        """0 when nothing regressed or went missing, 1 otherwise (2 is reserved for bad input)."""
        return 1 if self.regressions or self.missing else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, snake_case, numbers as numbers."""
        return {"old_stage": self.old_stage, "new_stage": self.new_stage, "max_drop": self.max_drop, "alpha": ALPHA,
                "regressed": bool(self.regressions), "missing": self.missing,
                "changes": {k: c.to_dict() for k, c in self.changes.items()}, "notes": list(self.notes)}

    def summary(self) -> str:
        n, gone = len(self.regressions), len(self.missing)
        said = [f"{n} metric{'s' if n != 1 else ''} significantly worse by more than {self.max_drop:g}"] * bool(n)
        said += [f"{gone} metric{'s' if gone != 1 else ''} measured in old but not in new"] * bool(gone)
        if said:
            return ("REGRESSED: " if n else "MISSING: ") + "; ".join(said)
        return f"OK: no metric significantly worse by more than {self.max_drop:g}"

    def table(self) -> Table:
        """metric, old, new, delta, p, status: the rows both renderings print."""
        title = (f"comparing old {self.old_stage} stage with new {self.new_stage} stage (max drop "
                 f"{self.max_drop:g}, significant at p < {ALPHA:g})")
        return Table(title, ["metric", "old", "new", "delta", "p", "status"], [c.cells() for c in self.changes.values()],
                     [False, True, True, True, True, False])

    def render_text(self) -> str:
        """An aligned plain-text table for terminals, with the verdict on the last line."""
        return "\n".join([text_table(self.table()), *self.notes, self.summary()]) + "\n"

    def render_markdown(self) -> str:
        """The same table as GitHub Markdown, for a job summary or a pull-request comment."""
        table = self.table()
        table.rows = [row[:5] + [f"**{row[5]}**" if c.regressed or c.dropped else row[5]]
                      for row, c in zip(table.rows, self.changes.values())]
        return "\n".join([f"### {'❌' if self.exit_code() else '✅'} {md_escape(self.summary())}", "",
                          md_table(table, escape=lambda cell: cell if cell.startswith("**") else md_escape(cell))]
                         + [f"- {md_escape(n)}" for n in self.notes]).rstrip() + "\n"


def compare(old: Report, new: Report, max_drop: float = 0.0) -> Comparison:
    """Compare the final stage of ``old`` with that of ``new``, metric by metric.

    ``max_drop`` (a fraction in [0, 1]) is how much worse a metric may get before a significant
    worsening counts as a regression; 0.0 flags any significant worsening.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or not 0.0 <= max_drop <= 1.0:
        raise InputError(f"max_drop must be a fraction in [0, 1], got {max_drop!r}")
    result = Comparison(old_stage=old.final_stage, new_stage=new.final_stage, max_drop=float(max_drop))
    if result.old_stage != result.new_stage:
        result.notes.append(f"note: the old report's final stage is {result.old_stage!r} but the new one's is "
                            f"{result.new_stage!r}; the numbers may not be like for like")
    differ = [f"{k} {old.machine[k]} vs {new.machine[k]}" for k in ROUNDING
              if k in old.machine and k in new.machine and old.machine[k] != new.machine[k]]
    if differ:
        result.notes.append(f"note: the reports come from different machines ({'; '.join(differ)}); the same seed "
                            f"trains other weights there (fp32 rounding), a spread McNemar's test does not account "
                            f"for: compare reports of one kind of machine, or give max-drop room")
    data = old.config.get("data"), new.config.get("data")
    same_data = data[0] == data[1]
    if not same_data:
        result.notes.append(f"note: the reports measured different data ({data[0]} and {data[1]}), so no metric is "
                            f"paired")
    cut: dict[tuple[int, int], list[str]] = {}
    for m in dict.fromkeys(old.shown_metrics() + new.shown_metrics()):
        x, y = old.measurement(old.final_stage, m), new.measurement(new.final_stage, m)
        if x is None or y is None:
            side = "either" if x is None and y is None else "new" if y is None else "old"
            result.changes[m.key] = MetricChange(m.label, None, note=f"not measured in {side}",
                                                 dropped=x is not None)
            continue
        c = change(m, x, y, same_data)
        if same_data and x.images != y.images:
            cut.setdefault((x.images, y.images), []).append(m.label)
        result.changes[m.key] = MetricChange(m.label, c, c.effect == WORSE and c.worsening > max_drop + TOLERANCE)
    if cut:
        result.notes.append("note: judged, paired, on the first images both reports measured (the rates shown "
                            "are of those): " + "; ".join(f"{', '.join(labels)} ({n} vs {k} images)"
                                                          for (n, k), labels in cut.items()))
    return result
