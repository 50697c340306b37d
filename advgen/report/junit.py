"""JUnit XML so CI systems show each gate as a test: one ``<testsuite name="advgen">``, one testcase per gate."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from . import metrics as registry
from .schema import Report
from .tables import fmt_fraction

# Characters XML 1.0 cannot carry at all, even escaped; dropped so the file always parses.
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    return _XML_INVALID.sub("", str(text))


def render_junit(report: Report) -> str:
    """The gates as JUnit XML: failing gates carry ``<failure message=...>``; counts and times on the suite.

    A gate's ``time`` is the seconds its attack's measurement took at that stage, the suite's is
    ``timings["total"]`` or else the sum of ``timings``.
    """
    failures = sum(not g.passed for g in report.gates)
    total = report.timings.get("total", sum(report.timings.values()))
    suite = ET.Element("testsuite", {
        "name": "advgen", "tests": str(len(report.gates)), "failures": str(failures), "errors": "0",
        "skipped": "0", "time": f"{total:.3f}", "timestamp": _x(report.created.removesuffix("Z")),
    })
    props = ET.SubElement(suite, "properties")
    for key, value in (("advgen_version", report.tool.get("version", "")), ("seed", report.seed),
                       ("final_stage", report.final_stage), ("passed", str(report.passed).lower())):
        ET.SubElement(props, "property", {"name": key, "value": _x(value)})
    for gate in report.gates:
        measurement = report.measurement(gate.stage, registry.gate_metrics()[gate.name])
        seconds = measurement.seconds if measurement is not None else 0.0
        case = ET.SubElement(suite, "testcase", {"classname": f"advgen.gates.{gate.stage}",
                                                 "name": _x(gate.label), "time": f"{seconds:.3f}"})
        if not gate.passed:
            kind = "NotMeasured" if gate.value is None else "BelowThreshold"
            failure = ET.SubElement(case, "failure", {"message": _x(gate.reason), "type": kind})
            failure.text = _x(f"{gate.stage}.{gate.metric} = {fmt_fraction(gate.value)}, "
                              f"threshold {gate.threshold:g}: {gate.reason}")
    if report.notes:
        ET.SubElement(suite, "system-out").text = _x("\n".join(report.notes))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
