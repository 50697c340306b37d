"""advgen.report: schema round-trip and refusals, gates, Markdown/HTML/JUnit renderers, compare."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from advgen.errors import InputError
from advgen.report import (SCHEMA_VERSION, Gate, GateSpec, Report, StageMetrics, compare, evaluate_gates,
                           format_gate, gate_exit_code, load_report, machine_info, parse_gate_spec,
                           parse_gate_specs, render_html, render_junit, render_markdown, write_reports)
from advgen.report.chart import before_after_chart_png
from advgen.report.htmlpage import PNG_MAGIC
from report_samples import make_report


@pytest.fixture
def report() -> Report:
    return make_report()


@pytest.fixture
def gated(report) -> Report:
    """Two passing gates, one failing, one on an unmeasured metric."""
    report.after.pgd_robust_accuracy = None
    return report.set_gates(evaluate_gates(report, ["clean=0.97", "onepixel=0.99", "advgan=0.9", "pgd=0.3"]))


# --- schema -------------------------------------------------------------------------------------

def test_json_round_trip_is_exact(gated, tmp_path):
    data = json.loads(gated.to_json())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert list(data)[:4] == ["schema_version", "tool", "created", "seed"]
    assert data["after"]["pgd_robust_accuracy"] is None
    assert isinstance(data["before"]["clean_accuracy"], float) and isinstance(data["before"]["onepixel_images"], int)
    assert data["gates"][1] == {"name": "onepixel", "metric": "onepixel_robust_accuracy", "threshold": 0.99,
                                "stage": "after", "value": 0.97, "passed": False,
                                "reason": "0.9700 < 0.99 (short by 0.0200)"}
    assert Report.from_dict(data) == gated
    path = write_reports(gated, tmp_path, formats=["json"])["json"]
    assert load_report(path) == gated


def test_vulnerable_rate_is_derived_and_none_means_not_measured():
    s = StageMetrics(clean_accuracy=0.9, onepixel_images=200, onepixel_vulnerable=30)
    assert s.onepixel_vulnerable_rate == pytest.approx(0.15)
    off = StageMetrics(clean_accuracy=0.9)
    assert off.onepixel_vulnerable_rate is None and off.get("pgd_robust_accuracy") is None
    assert Report(before=off).after is None and Report(before=off).final is off


def _mutated(report: Report, path: str, value):
    d = json.loads(report.to_json())
    *parents, last = path.split(".")
    target = d
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return d


_DELETE = object()


@pytest.mark.parametrize("path, value, needle", [
    ("schema_version", 2, "unsupported schema_version 2"),
    ("schema_version", _DELETE, "unsupported schema_version None"),
    ("before", _DELETE, "missing field(s) before"),
    ("created", _DELETE, "missing field(s) created"),
    ("before.clean_accuracy", _DELETE, "report.before: missing field(s) clean_accuracy"),
    ("before.clean_accuracy", "0.98", "report.before.clean_accuracy must be a finite number"),
    ("before.clean_accuracy", True, "report.before.clean_accuracy must be a finite number"),
    ("after.pgd_robust_accuracy", 1.5, "report.after.pgd_robust_accuracy must be in [0, 1]"),
    ("after.onepixel_images", -1, "onepixel_images must be a non-negative integer"),
    ("after.onepixel_vulnerable", 501, "onepixel_vulnerable (501) exceeds onepixel_images (500)"),
    ("after.clean_acc", 0.9, "unknown field(s) clean_acc"),
    ("bogus", 1, "unknown field(s) bogus"),
    ("after", [], "report.after must be a JSON object, got list"),
    ("gates", {}, "report.gates must be a list"),
    ("gates.0.name", "fgsm", "report.gates[0].name: unknown gate 'fgsm'"),
    ("gates.0.metric", "pgd_robust_accuracy", "gate 'clean' reads 'clean_accuracy'"),
    ("passed", True, "passed is true but its gates say false"),
    ("augmentation.cgan", 2.5, "report.augmentation.cgan must be a non-negative integer"),
    ("timings.total", -3, "report.timings.total must be >= 0 seconds"),
    ("artifacts.examples_before", "/etc/passwd", "must be a path relative to the report's directory"),
    ("artifacts.examples_before", "../secret.png", "must be a path relative to the report's directory"),
    ("created", "yesterday", "report.created must be an ISO 8601 time"),
    ("seed", "7", "report.seed must be an integer or null"),
])
def test_invalid_reports_are_refused_with_one_clear_line(gated, path, value, needle):
    with pytest.raises(InputError) as info:
        Report.from_dict(_mutated(gated, path, value))
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'{"schema_version": 1, "before": {"clean_accuracy": NaN}}', "NaN is not allowed"),
    (b"\xff\xfe\x00garbage", "cannot read report"),
])
def test_load_report_refuses_bad_files(tmp_path, content, needle):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(needle)):
        load_report(path)
    with pytest.raises(InputError, match="report not found"):
        load_report(tmp_path / "missing.json")


def test_machine_info_describes_the_run():
    info = machine_info("cpu")
    assert set(info) == {"platform", "python", "torch", "torchvision", "torchattacks", "device", "cpu_count", "gpu"}
    assert info["device"] == "cpu" and info["gpu"] is None and info["cpu_count"] >= 1
    json.dumps(info)


# --- gates --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("clean=0.97", GateSpec("clean", 0.97, "after")),
    (" onepixel = 1 ", GateSpec("onepixel", 1.0, "after")),
    ("before.pgd=0", GateSpec("pgd", 0.0, "before")),
    ("after.advgan=0.8", GateSpec("advgan", 0.8, "after")),
])
def test_parse_gate_spec(text, expected):
    assert parse_gate_spec(text) == expected
    assert expected.metric.endswith("accuracy")


@pytest.mark.parametrize("text, needle", [
    ("fgsm=0.5", "unknown name 'fgsm'"),
    ("clean=high", "threshold 'high' is not a number"),
    ("clean=1.01", "threshold must be in [0, 1]"),
    ("clean=-0.1", "threshold must be in [0, 1]"),
    ("clean=nan", "threshold must be in [0, 1]"),
    ("clean", "must look like NAME=THRESHOLD"),
    ("clean=0.9=0.8", "must look like NAME=THRESHOLD"),
    ("during.clean=0.9", "unknown stage 'during'"),
])
def test_bad_gate_specs_are_input_errors(text, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        parse_gate_spec(text)


def test_duplicate_gate_is_refused_but_both_stages_are_fine():
    with pytest.raises(InputError, match="given twice"):
        parse_gate_specs(["clean=0.9", "after.clean=0.95"])
    assert len(parse_gate_specs(["clean=0.9", "before.clean=0.95"])) == 2


def test_evaluate_gates_pass_fail_and_unmeasured(gated):
    by_name = {g.name: g for g in gated.gates}
    assert by_name["clean"].passed and by_name["clean"].value == 0.985
    assert not by_name["onepixel"].passed and "short by 0.0200" in by_name["onepixel"].reason
    assert by_name["advgan"].passed
    pgd = by_name["pgd"]
    assert not pgd.passed and pgd.value is None and "not measured" in pgd.reason
    assert gated.passed is False and gate_exit_code(gated.gates) == 1
    assert format_gate(by_name["onepixel"]).startswith("FAIL after.onepixel >= 0.99: 0.9700 < 0.99")


def test_gate_at_exact_threshold_passes_despite_float_noise():
    noisy = 1 - 0.9  # 0.09999999999999998
    assert noisy < 0.1  # the float noise this test is about
    report = Report(before=StageMetrics(clean_accuracy=291 / 300), after=StageMetrics(clean_accuracy=noisy))
    gates = evaluate_gates(report, ["before.clean=0.97", "clean=0.1"])
    assert [g.passed for g in gates] == [True, True]
    assert not evaluate_gates(report, ["before.clean=0.9701"])[0].passed


def test_gates_on_before_stage_and_missing_after_stage():
    report = Report(before=StageMetrics(clean_accuracy=0.95))
    gates = evaluate_gates(report, ["before.clean=0.9", "clean=0.9"])
    assert gates[0].passed and gates[0].stage == "before"
    assert not gates[1].passed and "no 'after' stage" in gates[1].reason
    report.set_gates(gates)
    assert report.passed is False
    assert report.set_gates([gates[0]]).passed is True and gate_exit_code([]) == 0


# --- renderers ----------------------------------------------------------------------------------

def test_junit_has_one_testcase_per_gate_and_failure_count(gated):
    root = ET.fromstring(render_junit(gated))
    assert root.tag == "testsuite" and root.get("name") == "advgen"
    cases = root.findall("testcase")
    assert len(cases) == int(root.get("tests")) == 4
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(root.get("failures")) == len(failures) == 2
    assert float(root.get("time")) == pytest.approx(129.6)
    assert [c.get("name") for c in failures] == ["after.onepixel >= 0.99", "after.pgd >= 0.3"]
    assert failures[1].find("failure").get("type") == "NotMeasured"
    assert "0.9700 < 0.99" in failures[0].find("failure").get("message")
    onepixel_case = cases[1]
    assert float(onepixel_case.get("time")) == pytest.approx(27.9)


def test_junit_survives_hostile_strings(gated):
    gated.notes.append("bad \x00 bytes \x1b[31m <tag> & \"quotes\" ]]>")
    gated.created = "2026-11-23T12:00:00Z"
    root = ET.fromstring(render_junit(gated))
    assert "<tag> & \"quotes\" ]]>" in root.find("system-out").text
    empty = ET.fromstring(render_junit(make_report()))
    assert empty.get("tests") == "0" and empty.get("failures") == "0"


def test_markdown_has_headline_and_table_rows(gated):
    md = render_markdown(gated)
    assert md.startswith("## ❌ advgen evaluate: FAILED")
    assert "2 of 4 gates failed" in md
    assert "| clean accuracy | 0.9800 | 0.9850 | +0.0050 | better |" in md
    assert "| one-pixel vulnerable rate (lower is better) | 0.0960 | 0.0280 | -0.0680 | better |" in md
    assert "| PGD robust accuracy | 0.1200 | not measured |  |  |" in md
    assert "| FAIL | after.onepixel (onepixel\\_robust\\_accuracy) | 0.9700 | 0.99 |" in md
    assert "| cgan | 500 |" in md and "| total | 1980 |" in md
    assert "| total | 129.60 |" in md and "| after.onepixel | 27.90 |" in md
    assert "| augment.cgan | true |" in md and "| device | cpu |" in md
    passing = make_report()
    passing.set_gates(evaluate_gates(passing, ["clean=0.9"]))
    assert render_markdown(passing).startswith("## ✅ advgen evaluate: PASSED")


def test_markdown_escapes_table_breaking_text(report):
    report.config["note"] = "a|b\nc <img src=x>"
    md = render_markdown(report)
    assert "| note | a\\|b c &lt;img src=x&gt; |" in md


class _TagBalance(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_is_self_contained_balanced_and_escaped(gated, tmp_path):
    png = before_after_chart_png(gated)
    (tmp_path / "examples_before.png").write_bytes(png)
    gated.notes.append("<script>alert('x')</script>")
    gated.config["model"] = "evil\" onload=\"x"
    page = render_html(gated, tmp_path)
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "evil&quot; onload=&quot;x" in page
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 2  # the chart and the one picture that exists
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "heatmaps_after (heatmaps_after.png): missing" in page
    assert "http://" not in page and "https://" not in page
    assert "<td class=\"FAIL\">FAIL</td>" in page


def test_html_refuses_non_png_pictures(report, tmp_path):
    (tmp_path / "examples_before.png").write_text("<svg onload=alert(1)>")
    page = render_html(report, tmp_path)
    assert "examples_before (examples_before.png): not embedded (not a PNG file)" in page
    assert "onload" not in page


def test_write_reports_writes_every_format(gated, tmp_path):
    out = tmp_path / "run"
    written = write_reports(gated, out)
    assert {p.name for p in written.values()} == {"report.json", "report.md", "report.html", "junit.xml"}
    assert load_report(written["json"]) == gated
    ET.parse(written["junit"])
    assert written["md"].read_text(encoding="utf-8") == render_markdown(gated)
    assert not list(out.glob(".*.tmp"))
    with pytest.raises(InputError, match="unknown report format"):
        write_reports(gated, out, formats=["pdf"])


def test_before_only_report_renders(tmp_path):
    report = make_report(after=None, augmentation={})
    written = write_reports(report, tmp_path)
    md = written["md"].read_text(encoding="utf-8")
    assert "Metrics (before only: no retraining)" in md and "| clean accuracy | 0.9800 |" in md
    assert "## ℹ️ advgen evaluate: NO GATES" in md
    assert "data:image/png;base64," in written["html"].read_text(encoding="utf-8")


# --- compare ------------------------------------------------------------------------------------

def _with_after(**changes) -> Report:
    report = make_report()
    for k, v in changes.items():
        setattr(report.after, k, v)
    return report


def test_compare_flags_accuracy_drop_and_respects_max_drop():
    old, new = make_report(), _with_after(clean_accuracy=0.975)  # 0.985 -> 0.975
    result = compare(old, new)
    assert result.regressed and [c.metric for c in result.regressions] == ["clean_accuracy"]
    change = result.regressions[0]
    assert change.old == 0.985 and change.new == 0.975 and change.delta == pytest.approx(-0.01)
    assert not compare(old, new, max_drop=0.01).regressed  # a drop of exactly max_drop is allowed
    assert compare(old, new, max_drop=0.0099).regressed
    assert compare(old, new).exit_code() == 1 and compare(old, new, 0.02).exit_code() == 0


def test_compare_rates_where_lower_is_better():
    old = make_report()
    worse = compare(old, _with_after(advgan_success_rate=0.2))  # 0.08 -> 0.20: more attacks succeed
    assert [c.metric for c in worse.regressions] == ["advgan_success_rate"]
    better = compare(old, _with_after(advgan_success_rate=0.01, onepixel_vulnerable_rate=0.0))
    assert not better.regressed
    assert {c.metric: c.status for c in better.changes}["advgan_success_rate"] == "better"
    vulnerable = compare(old, _with_after(onepixel_vulnerable_rate=0.05), max_drop=0.01)
    assert [c.metric for c in vulnerable.regressions] == ["onepixel_vulnerable_rate"]


def test_compare_improvement_and_unmeasured_are_not_regressions():
    old = make_report()
    result = compare(old, _with_after(clean_accuracy=0.999, pgd_robust_accuracy=None))
    assert not result.regressed
    pgd = {c.metric: c for c in result.changes}["pgd_robust_accuracy"]
    assert pgd.delta is None and pgd.note == "not measured in new"


def test_compare_uses_final_stage_and_renders(tmp_path):
    old = make_report(after=None)  # final = before: clean 0.98
    new = make_report()            # final = after: clean 0.985
    result = compare(old, new)
    assert (result.old_stage, result.new_stage) == ("before", "after")
    assert {c.metric: c.delta for c in result.changes}["clean_accuracy"] == pytest.approx(0.005)
    assert any("not be like for like" in n for n in result.notes)
    dropped = compare(new, _with_after(pgd_robust_accuracy=0.2))
    text, md = dropped.render_text(), dropped.render_markdown()
    assert "REGRESSED" in text.splitlines()[-1] and re.search(r"PGD robust accuracy\s+0\.3500\s+0\.2000\s+-0\.1500", text)
    assert "| PGD robust accuracy | 0.3500 | 0.2000 | -0.1500 | **REGRESSED** |" in md
    data = json.loads(json.dumps(dropped.to_dict()))
    assert data["regressed"] is True and data["max_drop"] == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True])
def test_compare_refuses_bad_max_drop(bad):
    with pytest.raises(InputError, match="max_drop"):
        compare(make_report(), make_report(), bad)


def test_gate_dataclass_label():
    g = Gate(name="clean", metric="clean_accuracy", threshold=0.97)
    assert g.label == "after.clean >= 0.97" and not g.passed


def test_to_json_writes_odd_config_types_and_names_nan_fields(tmp_path):
    import numpy as np
    import torch

    report = make_report(config={"out": tmp_path / "run", "device": torch.device("cpu"), "eps": np.float32(0.25),
                                 "steps": torch.tensor(10), "attacks": {"pgd"}})
    data = json.loads(report.to_json())
    assert data["config"] == {"out": str(tmp_path / "run"), "device": "cpu", "eps": 0.25, "steps": 10,
                              "attacks": ["pgd"]}
    report.after.pgd_robust_accuracy = float("nan")
    with pytest.raises(ValueError, match=r"report\.after\.pgd_robust_accuracy is nan"):
        report.to_json()
