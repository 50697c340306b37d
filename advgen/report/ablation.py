"""The ablation's report: each retraining variant's metrics, judged against the clean-only variant.

Every variant retrained the same target with the same recipe and seed on different data, and was
attacked afresh on the same test images, so each of its per-image outcomes pairs with the clean-only
variant's: McNemar's exact test says whether a source moved a metric, or whether the change is noise.
Written as ``ablation.json`` (per-image outcomes, as in ``report.json``), ``ablation.md``,
``ablation.html`` and ``ablation.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..files import atomic_write_bytes, atomic_write_text
from ..pictures import figure_png
from . import metrics as registry
from .changes import Change, change
from .chart import BASE_COLOR, INK, NEW_COLOR
from .fromjson import build
from .htmlpage import data_uri, html_table, page
from .markdown import md_table
from .measurement import Measurement, measured
from .metrics import Metric
from .schema import SCHEMA_VERSION, Provenance
from .tables import Table, fmt_delta, fmt_p, fmt_rate

BASELINE = "clean-only"
#: What the ablation table shows, in this order: the metrics a retraining source could move.
SHOWN = ("clean.correct", "onepixel.vulnerable", "onepixel.timeout", "pgd.robust", "autoattack.robust",
         "autoattack.worst", "advgan.fooled_among_correct")  # (timeout only under a time limit: a lower-bound flag)
FILES = ("ablation.json", "ablation.md", "ablation.html", "ablation.png")


@dataclass(kw_only=True)
class Ablation(Provenance):
    """``variants`` maps a variant to the sources it retrained on; ``stages`` maps ``before`` and each
    variant to its measurements by attack (the variants' are all AFTER measurements)."""

    variants: dict[str, list[str]]
    stages: dict[str, dict[str, Measurement]]
    timings: dict[str, float] = field(default_factory=dict)
    DERIVED: ClassVar[tuple[str, ...]] = ("against_baseline",)

    def check(self) -> None:
        missing = [v for v in [BASELINE, *self.variants] if v not in self.stages]
        if BASELINE not in self.variants or missing:
            raise ValueError(f"stages: the {BASELINE} variant and every variant need measurements "
                             f"(missing: {', '.join(missing) or BASELINE})")

    def metrics(self) -> list[Metric]:
        """The shown metrics some variant measured."""
        shown = [registry.metric(key) for key in SHOWN]
        return [m for m in shown if any(measured(self.stages[v], m) for v in self.variants)]

    def table(self) -> Table:
        """One row per variant: each metric's rate with count and 95% interval."""
        metrics = self.metrics()
        t = Table("Variants (AFTER retraining; each attacked afresh)", ["variant", "sources", *[m.label for m in metrics]],
                  numeric=[False, False, *[True] * len(metrics)])
        for name, used in self.variants.items():
            cells = [measured(self.stages[name], m) for m in metrics]
            t.rows.append([name, ", ".join(used) or "none",
                           *[fmt_rate(c.metric_rate(m)) if c else "not measured" for c, m in zip(cells, metrics)]])
        return t

    def against_baseline(self, name: str) -> dict[str, Change]:
        """Variant ``name``'s change against clean-only, by metric key, where both measured the metric."""
        base, mine = self.stages[BASELINE], self.stages[name]
        pairs = {m: (measured(base, m), measured(mine, m)) for m in self.metrics()}
        return {m.key: change(m, x, y) for m, (x, y) in pairs.items() if x and y}

    def changes_table(self) -> Table:
        """One row per variant: each metric's change against clean-only, McNemar p, and its effect."""
        metrics = self.metrics()
        t = Table(f"Against {BASELINE} (paired McNemar, p < 0.05)", ["variant", *[m.label for m in metrics]],
                  numeric=[False, *[True] * len(metrics)])
        for name in self.variants:
            if name != BASELINE:
                found = self.against_baseline(name)
                t.rows.append([name, *[_change_cell(found.get(m.key)) for m in metrics]])
        return t

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["against_baseline"] = {name: {k: c.to_dict() for k, c in self.against_baseline(name).items()}
                                    for name in self.variants if name != BASELINE}
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "ablation") -> "Ablation":
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"{where}: not an advgen ablation of schema_version {SCHEMA_VERSION}")
        return build(cls, data, where)


def _change_cell(c: Change | None) -> str:
    """``+0.0120 (p 0.029, better)``; empty where either side did not measure the metric."""
    return "" if c is None else f"{fmt_delta(c.before.value, c.after.value)} (p {fmt_p(c.test and c.test.p)}, {c.effect})"


def chart_png(ablation: Ablation) -> bytes:
    """One panel per metric: each variant's rate with its 95% interval, the clean-only value as a line."""
    metrics, names = ablation.metrics(), list(ablation.variants)

    def draw(fig: Any) -> None:
        for i, m in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), i + 1)
            for j, name in enumerate(names):
                got = measured(ablation.stages[name], m)
                if got is not None:
                    r = got.metric_rate(m)
                    ax.errorbar([r.value], [j], xerr=[[r.value - r.ci95[0]], [r.ci95[1] - r.value]], fmt="o", ms=3,
                                color=INK if name == BASELINE else NEW_COLOR, elinewidth=0.8, capsize=2)
            base = measured(ablation.stages[BASELINE], m)
            if base is not None:
                ax.axvline(base.metric_rate(m).value, color=BASE_COLOR, lw=0.8, ls="--")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if i == 0 else [], fontsize=7)
            ax.invert_yaxis()
            ax.set_title(m.label + ("" if m.higher_is_better else " (lower better)"), fontsize=7)
            ax.tick_params(axis="x", labelsize=6)

    return figure_png(2.6 * max(1, len(metrics)), 0.32 * len(names) + 1.4, draw)


def write(ablation: Ablation, out: Path) -> None:
    """``ablation.json``, ``.md``, ``.html`` and ``.png`` in ``out``, each written atomically."""
    png = chart_png(ablation)
    tables = [ablation.table(), ablation.changes_table()]
    md = "\n".join([f"## advgen ablation: did the generated data help? (seed {ablation.seed})", "",
                    *[md_table(t) for t in tables], "![ablation](ablation.png)", ""])
    html = page("advgen ablation", ["<h1>advgen ablation: did the generated data help?</h1>",
                                     *(html_table(t) for t in tables),
                                     f"<img alt=\"ablation chart\" src=\"{data_uri(png)}\">"])
    atomic_write_bytes(out / "ablation.png", png)
    atomic_write_text(out / "ablation.md", md)
    atomic_write_text(out / "ablation.html", html)
    atomic_write_text(out / "ablation.json", json.dumps(ablation.to_dict(), indent=2, allow_nan=False, default=str)
                      + "\n")
