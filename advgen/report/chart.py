"""The before/after bar chart, drawn with matplotlib's Agg canvas (no display, no global backend switch)."""

from __future__ import annotations

import io

from .schema import METRICS, Report


def before_after_chart_png(report: Report) -> bytes:
    """A grouped bar chart of every measured fraction metric, before vs after, as PNG bytes.

    Unmeasured metrics are left out; lower-is-better rates are marked in their tick label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages = [("before", report.before, "#9aa5b1")]
    if report.after is not None:
        stages.append(("after", report.after, "#2b8a3e"))
    shown = [m for m in METRICS if any(s.get(m.field) is not None for _, s, _ in stages)]
    fig = Figure(figsize=(max(4.0, 1.4 * len(shown) + 1.5), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(stages)
    for i, (name, stage, color) in enumerate(stages):
        xs = [j + (i - (len(stages) - 1) / 2) * width for j in range(len(shown))]
        vals = [stage.get(m.field) for m in shown]
        bars = ax.bar([x for x, v in zip(xs, vals) if v is not None], [v for v in vals if v is not None],
                      width=width, label=name, color=color)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([m.label.replace(" ", "\n", 1) + ("\n(lower better)" if not m.higher_is_better else "")
                        for m in shown], fontsize=7)
    ax.set_ylim(0, 1.22)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8, loc="upper right", ncol=2, frameon=False)
    ax.set_title("advgen: before vs after retraining" if report.after is not None else "advgen: metrics", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
