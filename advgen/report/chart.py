"""The reports' charts, drawn with matplotlib's Agg canvas (:func:`advgen.pictures.figure_png`).

Every chart draws a rate with its 95% Wilson interval, so a difference within the noise shows as one.
"""

from __future__ import annotations

from typing import Any

from ..pictures import figure_png
from .metrics import Metric
from .schema import Report

BASE_COLOR, NEW_COLOR, INK = "#9aa5b1", "#2b8a3e", "#1b1f24"


def before_after_chart_png(report: Report) -> bytes:
    """A grouped bar chart of every measured metric, before vs after, with 95% Wilson intervals as error bars.

    Unmeasured metrics are left out; lower-is-better rates are marked in their tick label.
    """
    shown = report.shown_metrics()
    return figure_png(max(4.0, 1.4 * len(shown) + 1.5), 3.6, lambda fig: _bars(fig.add_subplot(1, 1, 1), report, shown))


def _bars(ax: Any, report: Report, shown: list[Metric]) -> None:
    stages = [(name, color) for name, color in (("before", BASE_COLOR), ("after", NEW_COLOR)) if name in report.stages]
    width = 0.8 / len(stages)
    for i, (name, color) in enumerate(stages):
        points = [(j + (i - (len(stages) - 1) / 2) * width, report.rate(name, m)) for j, m in enumerate(shown)]
        points = [(x, r) for x, r in points if r is not None]
        values = [r.value for _, r in points]
        errors = [[r.value - r.ci95[0] for _, r in points], [r.ci95[1] - r.value for _, r in points]]
        bars = ax.bar([x for x, _ in points], values, width=width, label=name, color=color,
                      yerr=errors, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": INK})
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([m.label.replace(" ", "\n", 1) + ("\n(lower better)" if not m.higher_is_better else "")
                        for m in shown], fontsize=7)
    ax.set_ylim(0, 1.22)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("fraction (bars: 95% interval)")
    ax.legend(fontsize=8, loc="upper right", ncol=2, frameon=False)
    ax.set_title("advgen: before vs after retraining" if "after" in report.stages else "advgen: metrics", fontsize=9)
