"""Before/after evaluation reports: the JSON schema, gates, renderers (Markdown, HTML, JUnit) and compare.

Typical use by the evaluator::

    from advgen.report import Report, StageMetrics, evaluate_gates, machine_info, write_reports
    report = Report(before=StageMetrics(clean_accuracy=0.98, ...), after=..., seed=0,
                    machine=machine_info(device), config={...})
    report.set_gates(evaluate_gates(report, ["clean=0.97", "onepixel=0.99"]))
    write_reports(report, out_dir)
"""

from .compare import Comparison, MetricChange, compare
from .gates import GATE_METRICS, GateSpec, evaluate_gates, format_gate, gate_exit_code, parse_gate_spec, parse_gate_specs
from .htmlpage import render_html
from .junit import render_junit
from .markdown import render_markdown
from .output import REPORT_FILES, render_json, write_reports
from .schema import METRICS, SCHEMA_VERSION, Gate, Report, StageMetrics, load_report, machine_info

__all__ = [
    "Comparison", "MetricChange", "compare", "GATE_METRICS", "GateSpec", "evaluate_gates", "format_gate",
    "gate_exit_code", "parse_gate_spec", "parse_gate_specs", "render_html", "render_junit", "render_markdown",
    "REPORT_FILES", "render_json", "write_reports", "METRICS", "SCHEMA_VERSION", "Gate", "Report", "StageMetrics",
    "load_report", "machine_info",
]
