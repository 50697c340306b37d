"""Before/after evaluation reports keyed by stage and attack: schema, statistics, gates, renderers, compare.

Typical use by the evaluator::

    from advgen.report import Measurement, Report, evaluate_gates, write_reports
    clean = Measurement.from_flags({"correct": predictions == labels})
    report = Report(stages={"before": {"clean": clean, ...}, "after": {...}}, seed=0,
                    machine=advgen.runtime.machine_info(device), config={...})
    report.set_gates(evaluate_gates(report, ["clean=0.97", "onepixel=0.99"]))
    write_reports(report, out_dir)

Import order (no cycles): metrics, measurement -> changes -> schema -> gates, tables -> renderers, compare.
"""

from . import metrics
from .changes import Change, change
from .compare import Comparison, MetricChange, compare
from .gates import GateSpec, evaluate_gates, format_gate, gate_exit_code, parse_gate_spec, parse_gate_specs
from .htmlpage import render_html
from .junit import render_junit
from .markdown import md_table, render_markdown
from .measurement import Measurement
from .metrics import METRICS, STAGES, Metric, gate_metrics
from .output import REPORT_FILES, write_reports
from .schema import SCHEMA_VERSION, Gate, Report, load_report
from .tables import headline, metrics_table

__all__ = [
    "metrics", "Change", "change", "Comparison", "MetricChange", "compare", "GateSpec", "evaluate_gates",
    "format_gate", "gate_exit_code", "parse_gate_spec", "parse_gate_specs", "render_html", "render_junit", "md_table",
    "render_markdown", "Measurement", "METRICS", "STAGES", "Metric", "gate_metrics", "REPORT_FILES",
    "write_reports", "SCHEMA_VERSION", "Gate", "Report", "load_report", "headline", "metrics_table",
]
