"""advgen.report: schema round-trip and refusals, registry, gates, Markdown/HTML/JUnit renderers, compare."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

import advgen
from advgen.errors import InputError
from advgen.report import (SCHEMA_VERSION, Gate, GateSpec, Measurement, Metric, Report, compare, evaluate_gates,
                           format_gate, gate_exit_code, load_report, metrics, parse_gate_spec,
                           parse_gate_specs, render_html, render_junit, render_markdown, write_reports)
from advgen.report.chart import before_after_chart_png
from advgen.pictures import PNG_MAGIC
from advgen.report.tables import metrics_table, onepixel_table
from advgen.stats import Rate, wilson
from report_samples import flags, make_report


@pytest.fixture
def report() -> Report:
    return make_report()


@pytest.fixture
def gated(report) -> Report:
    """Two passing gates, one failing, one on an unmeasured attack."""
    del report.stages["after"]["pgd"]
    return report.set_gates(evaluate_gates(report, ["clean=0.97", "onepixel=0.99", "advgan=0.9", "pgd=0.3"]))


# --- measurements and schema --------------------------------------------------------------------

def test_measurement_from_flags_and_rates():
    torch = pytest.importorskip("torch")
    m = Measurement.from_flags({"correct": torch.tensor([True, True, False, True]), "fooled": [0, 1, 1, 0]},
                               note="tiny")
    assert m.images == 4 and m.outcomes == {"correct": "1101", "fooled": "0110"} and m.note == "tiny"
    assert m.rate("correct") == Rate(3, 4)
    assert m.rate("fooled", among="correct") == Rate(1, 3)  # fooled among clean-correct images
    with pytest.raises(ValueError, match="same length"):
        Measurement.from_flags({"a": [1, 0], "b": [1]})
    with pytest.raises(ValueError, match="no outcome 'robust'"):
        m.rate("robust")


def test_json_round_trip_keeps_outcomes_and_intervals(gated, tmp_path):
    data = json.loads(gated.to_json())
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert list(data)[:4] == ["schema_version", "tool", "created", "seed"]
    assert "pgd" not in data["stages"]["after"] and set(data["stages"]) == {"before", "after"}
    pgd = data["stages"]["before"]["pgd"]
    assert pgd["images"] == 500 and pgd["outcomes"]["robust"] == flags(500, (0, 60))
    assert pgd["rates"]["robust"] == {"k": 60, "n": 500, "value": 0.12, "ci95": list(wilson(60, 500))}
    assert data["stages"]["after"]["advgan"]["rates"]["fooled_among_correct"]["n"] == 492
    assert data["changes"]["clean.correct"] == {"paired": True, "gained": 10, "lost": 5, "p": pytest.approx(0.3018, abs=1e-4),
                                                "delta": pytest.approx(0.005), "effect": "no significant change"}
    assert data["changes"]["onepixel.vulnerable"]["effect"] == "better" and "pgd.robust" not in data["changes"]
    assert data["gates"][1] == {"name": "onepixel", "metric": "onepixel.certified", "threshold": 0.99,
                                "stage": "after", "value": 0.97, "passed": False,
                                "reason": "0.9700 < 0.99 (short by 0.0200)"}
    assert Report.from_dict(data) == gated
    path = write_reports(gated, tmp_path, formats=["json"])["json"]
    loaded = load_report(path)
    assert loaded == gated
    assert loaded.rate("after", metrics.gate_metrics()["clean"]).ci95 == wilson(985, 1000)


def test_before_only_report_has_no_after_stage_and_no_changes():
    report = make_report(stages={"before": make_report().stages["before"]})
    assert report.final_stage == "before" and "after" not in report.stages
    data = json.loads(report.to_json())
    assert "changes" not in data and Report.from_dict(data) == report


def test_version_comes_from_package_metadata():
    from importlib.metadata import version

    assert advgen.__version__ == version("advgen")
    assert Report(stages={"before": {}}).tool == {"name": "advgen", "version": advgen.__version__}


def _mutated(report: Report, path: str, value):
    d = json.loads(report.to_json())
    *parents, last = path.split("/")
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
    ("schema_version", 1, "report: unsupported schema_version 1; this advgen reads schema_version 2"),
    ("schema_version", _DELETE, "unsupported schema_version None"),
    ("stages", _DELETE, "report: missing field(s) stages"),
    ("created", _DELETE, "report: missing field(s) created"),
    ("stages/before", _DELETE, "report.stages must have 'before'"),
    ("stages/during", {}, "report.stages must have 'before' and at most 'after'"),
    ("stages/before/pgd/images", "500", "report.stages.before.pgd.images must be a non-negative integer, got str"),
    ("stages/before/pgd/images", True, "report.stages.before.pgd.images must be a non-negative integer, got bool"),
    ("stages/before/pgd/images", 499, "report.stages.before.pgd.outcomes.robust has 500 flags but images is 499"),
    ("stages/before/pgd/outcomes/robust", "01x" + "0" * 497, "outcomes.robust must hold only '0' and '1'"),
    ("stages/before/pgd/seconds", -1, "report.stages.before.pgd.seconds must be a non-negative number, got -1"),
    ("stages/after/onepixel/counts/pruned", 2.5, "report.stages.after.onepixel.counts.pruned must be a non-negative integer, got 2.5"),
    ("stages/before/pgd/robust", 0.9, "report.stages.before.pgd: unknown field(s) robust"),
    ("stages/before/pgd/note", _DELETE, "report.stages.before.pgd: missing field(s) note"),
    ("stages/before/pgd/rates/robust/k", 176,
     "report: stages.before.pgd.rates.robust.k is not what its per-image outcomes give"),
    ("changes/clean.correct/effect", "better", "report: changes.clean.correct.effect is not what its per-image"),
    ("warnings", ["all fine"], "report: warnings is not what its per-image outcomes give"),
    ("gates/1/passed", True, "report.gates[1].passed is true but its value 0.97 and threshold 0.99 say false"),
    ("gates/3/passed", True, "report.gates[3].passed is true but its value None and threshold 0.3 say false"),
    ("stages/after", [], "report.stages.after must be a JSON object, got list"),
    ("bogus", 1, "report: unknown field(s) bogus"),
    ("gates", {}, "report.gates must be a list"),
    ("gates/0/name", "fgsm", "report.gates[0].name: unknown gate 'fgsm' reading 'clean.correct'; known: clean"),
    ("gates/0/metric", "pgd.robust", "report.gates[0].name: unknown gate 'clean' reading 'pgd.robust'"),
    ("gates/0/threshold", 1.5, "report.gates[0].stage must be one of before, after and threshold and value in [0, 1]"),
    ("gates/0/stage", "during", "report.gates[0].stage must be one of before, after"),
    ("gates/0/threshold", -0.5, "report.gates[0].threshold must be a non-negative number"),
    ("passed", True, "passed is true but its gates say false"),
    ("augmentation/cgan", 2.5, "report.augmentation.cgan must be a non-negative integer, got 2.5"),
    ("augmentation/cgan", -2, "report.augmentation.cgan must be a non-negative integer, got -2"),
    ("timings/total", -3, "report.timings.total must be a non-negative number, got -3"),
    ("artifacts/examples_before", "/etc/passwd", "must be a path relative to the report's directory"),
    ("artifacts/examples_before", "../secret.png", "must be a path relative to the report's directory"),
    ("created", "yesterday", "report.created must be an ISO 8601 time"),
    ("seed", "7", "report.seed must be a non-negative integer, got str"),
])
def test_invalid_reports_are_refused_with_one_clear_line(gated, path, value, needle):
    with pytest.raises(InputError) as info:
        Report.from_dict(_mutated(gated, path, value))
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_derived_entries_of_another_registry_are_tolerated(gated):
    data = json.loads(gated.to_json())
    del data["stages"]["after"]["advgan"]["rates"]["fooled_among_correct"]  # written by an older registry
    data["changes"]["pgd.fooled"] = {"effect": "better"}                    # by a newer one
    assert Report.from_dict(data) == gated


def test_schema_v1_report_is_refused(tmp_path):
    v1 = {"schema_version": 1, "tool": {"name": "advgen", "version": "0.1.0"}, "created": "2026-11-23T12:00:00Z",
          "before": {"clean_accuracy": 0.98}, "after": None}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(v1))
    with pytest.raises(InputError, match=r"unsupported schema_version 1; this advgen reads schema_version 2"):
        load_report(path)


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'{"schema_version": 2, "stages": {"before": {"clean": {"images": NaN}}}}', "NaN is not allowed"),
    (b"\xff\xfe\x00garbage", "cannot read report"),
])
def test_load_report_refuses_bad_files(tmp_path, content, needle):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(needle)):
        load_report(path)
    with pytest.raises(InputError, match="report not found"):
        load_report(tmp_path / "missing.json")


def test_to_json_writes_odd_config_types_and_names_nan_fields(tmp_path):
    import numpy as np
    import torch

    report = make_report(config={"out": tmp_path / "run", "device": torch.device("cpu"), "eps": np.float32(0.25),
                                 "steps": torch.tensor(10), "attacks": {"pgd"}})
    data = json.loads(report.to_json())
    assert data["config"] == {"out": str(tmp_path / "run"), "device": "cpu", "eps": 0.25, "steps": 10,
                              "attacks": ["pgd"]}
    report.stages["after"]["pgd"].seconds = float("nan")
    with pytest.raises(ValueError, match=r"report\.stages\.after\.pgd\.seconds must be a non-negative number, got nan"):
        report.to_json()


# --- the metric registry ------------------------------------------------------------------------

def test_one_registry_line_adds_an_attack_everywhere(monkeypatch, report, tmp_path):
    auto = Metric("autoattack", "robust", "AutoAttack robust accuracy", True, gate="autoattack")
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS + (auto,))
    for stage, k in (("before", 40), ("after", 150)):
        report.stages[stage]["autoattack"] = Measurement(500, {"robust": flags(500, (0, k))})
    report.set_gates(evaluate_gates(report, ["autoattack=0.25"]))
    assert format_gate(report.gates[0]) == "PASS after.autoattack >= 0.25: 0.3000 >= 0.25"
    row = next(r for r in metrics_table(report).rows if r[0] == "AutoAttack robust accuracy")
    assert row[1].startswith("0.0800 (40/500)") and row[5] == "better"
    assert Report.from_dict(json.loads(report.to_json())) == report
    assert "autoattack.robust" in compare(make_report(), report).changes
    assert "AutoAttack robust accuracy" in render_markdown(report)


def test_metric_is_shown_only_where_its_attack_and_outcomes_were_measured(report):
    for stage in report.stages.values():
        del stage["advgan"]
        del stage["onepixel"].outcomes["vulnerable"]
    labels = [r[0] for r in metrics_table(report).rows]
    assert "PGD robust accuracy" in labels and "one-pixel certified robust" in labels
    assert not any("AdvGAN" in label or "vulnerable" in label for label in labels)
    data = json.loads(report.to_json())
    assert list(data["stages"]["after"]["onepixel"]["rates"]) == ["certified"] and Report.from_dict(data) == report


# --- gates --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("clean=0.97", GateSpec("clean", 0.97)),
    (" onepixel = 1 ", GateSpec("onepixel", 1.0)),
    ("before.pgd=0", GateSpec("pgd", 0.0, "before")),
    ("after.advgan=0.8", GateSpec("advgan", 0.8, "after")),
])
def test_parse_gate_spec(text, expected):
    assert parse_gate_spec(text) == expected
    assert expected.metric.higher_is_better and expected.metric.gate == expected.name


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
        parse_gate_specs(["after.clean=0.9", "after.clean=0.95"])
    with pytest.raises(InputError, match="given twice"):  # unprefixed is the final stage, when known
        parse_gate_specs(["clean=0.9", "after.clean=0.95"], final="after")
    assert len(parse_gate_specs(["clean=0.9", "before.clean=0.95"], final="after")) == 2
    with pytest.raises(InputError, match="given twice"):
        parse_gate_specs(["clean=0.9", "before.clean=0.95"], final="before")


def test_evaluate_gates_pass_fail_and_unmeasured(gated):
    by_name = {g.name: g for g in gated.gates}
    assert by_name["clean"].passed and by_name["clean"].value == 0.985
    assert not by_name["onepixel"].passed and "short by 0.0200" in by_name["onepixel"].reason
    assert by_name["advgan"].passed
    pgd = by_name["pgd"]
    assert not pgd.passed and pgd.value is None
    assert pgd.reason == "not measured: no 'pgd' measurement in the 'after' stage (was the pgd attack switched off?)"
    assert gated.passed is False and gate_exit_code(gated.gates) == 1
    assert format_gate(by_name["onepixel"]).startswith("FAIL after.onepixel >= 0.99: 0.9700 < 0.99")


def test_a_gate_names_the_outcome_its_measurement_lacks():
    report = make_report()
    report.stages["after"]["autoattack"] = Measurement(500, {"robust": flags(500, (0, 100))})  # no PGD: no worst
    gate, = evaluate_gates(report, ["worst=0.1"])
    assert not gate.passed and gate.reason == ("not measured: the 'autoattack' measurement in the 'after' stage has no "
                                               "'worst' outcomes (the worst case needs PGD on the same images)")


def test_gate_at_exact_threshold_passes_despite_float_noise():
    report = Report(stages={"before": {"clean": Measurement(300, {"correct": flags(300, (0, 291))})},
                            "after": {"clean": Measurement(10, {"correct": "1000000000"})}})
    gates = evaluate_gates(report, ["before.clean=0.97", "clean=0.1"])
    assert [g.passed for g in gates] == [True, True]
    assert not evaluate_gates(report, ["before.clean=0.9701"])[0].passed


def test_gates_on_before_stage_and_missing_after_stage():
    report = Report(stages={"before": {"clean": Measurement(20, {"correct": "1" * 19 + "0"})}})
    gates = evaluate_gates(report, ["before.clean=0.9", "after.clean=0.9"])
    assert gates[0].passed and gates[0].stage == "before"
    assert not gates[1].passed and "no 'after' stage" in gates[1].reason
    unprefixed = evaluate_gates(report, ["clean=0.95"])[0]
    assert unprefixed.passed and unprefixed.stage == "before"  # the final stage, here BEFORE
    report.set_gates(gates)
    assert report.passed is False
    assert report.set_gates([gates[0]]).passed is True and gate_exit_code([]) == 0


def test_gate_dataclass_label():
    g = Gate(name="clean", metric="clean.correct", threshold=0.97)
    assert g.label == "after.clean >= 0.97" and not g.passed


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
    assert float(cases[1].get("time")) == pytest.approx(27.9)  # the after-stage one-pixel measurement


def test_junit_survives_hostile_strings(gated):
    gated.notes.append("bad \x00 bytes \x1b[31m <tag> & \"quotes\" ]]>")
    root = ET.fromstring(render_junit(gated))
    assert "<tag> & \"quotes\" ]]>" in root.find("system-out").text
    empty = ET.fromstring(render_junit(make_report()))
    assert empty.get("tests") == "0" and empty.get("failures") == "0"


def test_markdown_has_counts_intervals_and_mcnemar(gated):
    md = render_markdown(gated)
    assert md.startswith("## ❌ advgen evaluate: FAILED")
    assert "2 of 4 gates failed" in md
    assert "| metric | before | after | change | McNemar p | effect |" in md
    assert ("| clean accuracy | 0.9800 (980/1000) \\[0.9693, 0.9870\\] | 0.9850 (985/1000) \\[0.9754, 0.9909\\] | "
            "+0.0050 | 0.302 | no significant change |") in md
    assert ("| one-pixel vulnerable rate (lower is better) | 0.0960 (48/500) \\[0.0732, 0.1250\\] | "
            "0.0280 (14/500) \\[0.0168, 0.0464\\] | -0.0680 | 1.2e-10 | better |") in md
    assert "| AdvGAN success rate (lower is better) | 0.4102 (201/490) " in md
    assert "| PGD robust accuracy | 0.1200 (60/500) \\[0.0944, 0.1514\\] | not measured |  |  |  |" in md
    assert "| FAIL | after.onepixel (onepixel.certified) | 0.9700 | 0.99 |" in md
    assert ("| after | onepixel | 500 | 27.90 | candidates 376320, pruned 322870 (85.80% settled by bounds) | "
            "exact search, first 500 test images |") in md
    assert "| cgan | 500 |" in md and "| total | 1980 |" in md and "| total | 129.60 |" in md
    assert "| augment.cgan | true |" in md and "| device | cpu |" in md
    passing = make_report()
    passing.set_gates(evaluate_gates(passing, ["clean=0.9"]))
    assert render_markdown(passing).startswith("## ✅ advgen evaluate: PASSED")


def test_onepixel_table_says_where_the_images_left_vulnerable_came_from(report):
    # Sample: before, images 0-47 vulnerable, 48 misclassified, 49-499 certified; after, 0-13 vulnerable,
    # 14 misclassified, 15-499 certified. So 33 vulnerable images were certified after, one became
    # misclassified, and the misclassified one was certified.
    assert onepixel_table(report).rows == [["certified", "451", "0", "0", "451"],
                                           ["vulnerable", "33", "14", "1", "48"],
                                           ["misclassified", "1", "0", "0", "1"],
                                           ["total", "485", "14", "1", "500"]]
    report.stages["after"]["onepixel"] = Measurement(500, {"vulnerable": flags(500, (0, 2), (48, 50)),
                                                           "certified": flags(500, (50, 500))})
    table = onepixel_table(report)  # 48 was misclassified and is now vulnerable; 49 was certified and is broken
    assert table.rows[:3] == [["certified", "450", "1", "0", "451"], ["vulnerable", "0", "2", "46", "48"],
                              ["misclassified", "0", "1", "0", "1"]]
    assert "| vulnerable | 0 | 2 | 46 | 48 |" in render_markdown(report)


def test_onepixel_table_needs_both_stages_on_the_same_images(report):
    assert onepixel_table(make_report(stages={"before": report.stages["before"]})) is None
    report.stages["after"]["onepixel"] = Measurement(400, {"vulnerable": flags(400), "certified": flags(400, (0, 400))})
    assert onepixel_table(report) is None
    assert "One-pixel status per image" not in render_markdown(report)


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
    assert "<td class=\"FAIL\">FAIL</td>" in page and "0.9850 (985/1000) [0.9754, 0.9909]" in page


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
    report = make_report(stages={"before": make_report().stages["before"]}, augmentation={})
    written = write_reports(report, tmp_path)
    md = written["md"].read_text(encoding="utf-8")
    assert "Metrics (before only: no retraining)" in md and "| clean accuracy | 0.9800 (980/1000) " in md
    assert "## ℹ️ advgen evaluate: NO GATES" in md
    assert "data:image/png;base64," in written["html"].read_text(encoding="utf-8")


# --- compare ------------------------------------------------------------------------------------

def _with_after(attack: str, outcome: str, value: str) -> Report:
    report = make_report()
    report.stages["after"][attack].outcomes[outcome] = value
    return report


def test_compare_flags_a_significant_drop_and_respects_max_drop():
    old = make_report()  # after: clean 985/1000, wrong on images 10..24
    new = _with_after("clean", "correct", flags(1000, (0, 10), (25, 965)))  # 35 more images wrong: 950/1000
    result = compare(old, new)
    assert result.regressions == ["clean.correct"]
    c = result.changes["clean.correct"].change
    assert (c.before.k, c.after.k, c.test.gained, c.test.lost) == (985, 950, 0, 35) and c.test.p < 1e-9
    assert c.delta == pytest.approx(-0.035)
    assert not compare(old, new, max_drop=0.035).regressions  # a drop of exactly max_drop is allowed
    assert compare(old, new, max_drop=0.0349).regressions
    assert compare(old, new).exit_code() == 1 and compare(old, new, 0.04).exit_code() == 0


def test_compare_does_not_flag_an_insignificant_drop():
    new = _with_after("clean", "correct", flags(1000, (0, 10), (25, 995)))  # 5 images lost: p = 0.0625
    result = compare(make_report(), new)
    change = result.changes["clean.correct"]
    assert change.change.test.p == 0.0625 and change.change.delta == pytest.approx(-0.005)
    assert not result.regressions and change.status == "no significant change"


def test_compare_rates_where_lower_is_better():
    old = make_report()  # after: fooled on 39 of 492 clean-correct images
    worse = compare(old, _with_after("advgan", "fooled", flags(500, (8, 120))))
    assert worse.regressions == ["advgan.fooled_among_correct"]
    better = compare(old, _with_after("onepixel", "vulnerable", flags(500)))
    assert not better.regressions and better.changes["onepixel.vulnerable"].status == "better"


def test_compare_pairs_the_first_images_both_measured():
    new = make_report()
    new.stages["after"]["pgd"] = Measurement(400, {"robust": flags(400, (0, 100))})  # old: 175 robust, all in 0..400
    result = compare(make_report(), new)
    pgd = result.changes["pgd.robust"].change
    assert (pgd.before.k, pgd.before.n, pgd.after.k, pgd.after.n) == (175, 400, 100, 400)
    assert (pgd.test.gained, pgd.test.lost) == (0, 75) and result.regressions == ["pgd.robust"]
    assert any("paired, on the first images both" in n and "PGD robust accuracy (500 vs 400 images)" in n
               for n in result.notes)
    near = make_report()
    near.stages["after"]["pgd"] = Measurement(400, {"robust": flags(400, (0, 172))})  # 3 lost, none gained
    close = compare(make_report(), near).changes["pgd.robust"]
    assert close.change.test.p == 0.25 and not close.regressed
    old = make_report()  # the longer side may be either: the new report measured more images
    old.stages["after"]["pgd"] = Measurement(300, {"robust": flags(300, (0, 175))})
    assert compare(old, make_report()).changes["pgd.robust"].change.test.gained == 0  # the same 175 on the first 300


def test_compare_fails_a_metric_the_new_report_dropped_and_lists_one_it_added():
    new = make_report()
    del new.stages["after"]["pgd"]
    result = compare(make_report(), new)
    assert not result.regressions and result.missing == ["pgd.robust"] and result.exit_code() == 1
    assert result.changes["pgd.robust"].status == "MISSING"
    assert result.summary() == "MISSING: 1 metric measured in old but not in new"
    added = compare(new, make_report())
    assert not added.missing and added.exit_code() == 0
    assert added.changes["pgd.robust"].status == "not comparable" and added.changes["pgd.robust"].note == "not measured in old"


def test_compare_never_pairs_reports_of_different_data():
    new = make_report()
    new.config = {**new.config, "data": "fashion-mnist"}
    new.stages["after"]["pgd"] = Measurement(500, {"robust": flags(500, (0, 160))})  # 0.35 -> 0.32 on other data
    result = compare(make_report(), new)
    assert all(c.change.test is None for c in result.changes.values() if c.change)
    assert any("different data" in n for n in result.notes)
    assert not result.regressions  # overlapping Wilson intervals: noise, unpaired
    new.config = make_report().config
    assert compare(make_report(), new).regressions == ["pgd.robust"]  # the same images: 15 lost, none gained


def test_compare_notes_reports_from_different_machines():
    old, new = make_report(), make_report()
    assert not any("different machines" in n for n in compare(old, new).notes)
    old.machine = {**old.machine, "cpu": "AMD EPYC"}
    assert not any("different machines" in n for n in compare(old, new).notes)  # one side does not say
    new.machine = {**new.machine, "cpu": "Intel Xeon"}
    result = compare(old, new)
    assert any("different machines (cpu AMD EPYC vs Intel Xeon)" in n for n in result.notes)
    assert result.exit_code() == 0  # a note, not a verdict


def test_compare_uses_final_stage_and_renders():
    old = make_report(stages={"before": make_report().stages["before"]})  # final = before: clean 980
    result = compare(old, make_report())                                  # final = after: clean 985
    assert (result.old_stage, result.new_stage) == ("before", "after")
    assert result.changes["clean.correct"].change.delta == pytest.approx(0.005)
    assert any("not be like for like" in n for n in result.notes)
    dropped = compare(make_report(), _with_after("pgd", "robust", flags(500, (0, 100))))
    text, md = dropped.render_text(), dropped.render_markdown()
    assert text.splitlines()[-1] == "REGRESSED: 1 metric significantly worse by more than 0"
    assert re.search(r"PGD robust accuracy\s+0\.3500 \(175/500\) \[0\.3095, 0\.3928\]\s+0\.2000 \(100/500\) "
                     r"\S+ \S+\s+-0\.1500\s+5\.3e-23\s+REGRESSED", text)
    assert "| PGD robust accuracy | 0.3500 (175/500) \\[0.3095, 0.3928\\] | 0.2000 (100/500)" in md
    assert "| -0.1500 | 5.3e-23 | **REGRESSED** |" in md
    data = json.loads(json.dumps(dropped.to_dict()))
    assert data["regressed"] is True and data["max_drop"] == 0.0 and data["alpha"] == 0.05
    assert data["changes"]["pgd.robust"]["old"]["k"] == 175 and data["changes"]["pgd.robust"]["lost"] == 75


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True])
def test_compare_refuses_bad_max_drop(bad):
    with pytest.raises(InputError, match="max_drop"):
        compare(make_report(), make_report(), bad)


def test_a_misspelt_stage_or_metric_is_an_error_not_a_silent_none():
    report = make_report()
    with pytest.raises(ValueError, match="unknown stage 'aftr'"):
        report.rate("aftr", advgen.report.gate_metrics()["clean"])
    with pytest.raises(KeyError, match="pgd.robustt"):
        advgen.report.metrics.metric("pgd.robustt")
