"""`advgen report gate|compare|render`: exit codes 0/1/2, one-line errors, files written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import click
import pytest
from click.testing import CliRunner

from advgen.cli import main
from advgen.cli.options import fail_under_option
from advgen.report import GateSpec, evaluate_gates, write_reports
from advgen.report.chart import before_after_chart_png
from report_samples import flags, make_report


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def report_json(tmp_path):
    """A report.json (after: clean 0.985, onepixel 0.97, pgd 0.35, advgan 0.906) with one picture beside it."""
    run_dir = tmp_path / "run"
    report = make_report()
    write_reports(report, run_dir, formats=["json"])
    (run_dir / "examples_before.png").write_bytes(before_after_chart_png(report))
    return run_dir / "report.json"


def _write(tmp_path, name, report):
    return write_reports(report, tmp_path / name, formats=["json"])["json"]


def test_gate_pass_is_exit_0(report_json, capsys):
    code, out, err = run(["report", "gate", report_json, "--fail-under", "clean=0.97",
                          "--fail-under", "onepixel=0.95"], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == ["PASS after.clean >= 0.97: 0.9850 >= 0.97",
                                "PASS after.onepixel >= 0.95: 0.9700 >= 0.95", "all 2 gates passed"]


def test_gate_fail_is_exit_1(report_json, capsys):
    code, out, _ = run(["report", "gate", report_json, "--fail-under", "clean=0.97",
                        "--fail-under", "onepixel=0.99", "--fail-under", "before.pgd=0.5"], capsys)
    assert code == 1
    assert "FAIL after.onepixel >= 0.99: 0.9700 < 0.99" in out and "FAIL before.pgd >= 0.5" in out
    assert out.splitlines()[-1] == "2 of 3 gates failed"


def test_gate_on_unmeasured_metric_fails(tmp_path, capsys):
    report = make_report()
    del report.stages["after"]["advgan"]
    code, out, _ = run(["report", "gate", _write(tmp_path, "r", report), "--fail-under", "advgan=0.1"], capsys)
    assert code == 1 and "not measured" in out


def test_gate_without_fail_under_rechecks_stored_gates(tmp_path, capsys):
    report = make_report()
    report.set_gates(evaluate_gates(report, ["clean=0.99"]))
    code, out, _ = run(["report", "gate", _write(tmp_path, "r", report)], capsys)
    assert code == 1 and out.startswith("FAIL after.clean >= 0.99")
    code, _, err = run(["report", "gate", _write(tmp_path, "bare", make_report())], capsys)
    assert code == 2 and "has no gates" in err


@pytest.mark.parametrize("spec, needle", [
    ("fgsm=0.5", "unknown name 'fgsm'"),
    ("clean=1.5", "threshold must be in [0, 1]"),
    ("clean=abc", "is not a number"),
    ("clean", "must look like NAME=THRESHOLD"),
])
def test_gate_bad_spec_is_one_line_exit_2(report_json, capsys, spec, needle):
    code, out, err = run(["report", "gate", report_json, "--fail-under", spec], capsys)
    assert code == 2 and out == ""
    assert needle in err and "--fail-under" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, needle", [
    (None, "report not found"),
    ("{oops", "is not valid JSON"),
    ('{"schema_version": 99}', "unsupported schema_version 99"),
    ('{"schema_version": 1, "before": {"clean_accuracy": 0.98}}', "unsupported schema_version 1"),
])
def test_bad_report_file_is_one_line_exit_2(tmp_path, capsys, content, needle):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    for args in (["report", "gate", path, "--fail-under", "clean=0.9"],
                 ["report", "compare", path, path], ["report", "render", path, "--out", tmp_path / "o"]):
        code, _, err = run(args, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_compare_exit_codes_and_max_drop(tmp_path, capsys):
    old = _write(tmp_path, "old", make_report())
    worse = make_report()
    worse.stages["after"]["clean"].outcomes["correct"] = flags(1000, (0, 10), (25, 965))  # 985 -> 950: significant
    worse.stages["after"]["pgd"].outcomes["robust"] = flags(500, (0, 160))                # 175 -> 160: significant
    new = _write(tmp_path, "new", worse)
    code, out, _ = run(["report", "compare", old, new], capsys)
    assert code == 1 and out.splitlines()[-1] == "REGRESSED: 2 metrics significantly worse by more than 0"
    code, out, _ = run(["report", "compare", old, new, "--max-drop", "0.031"], capsys)
    assert code == 1 and out.splitlines()[-1] == "REGRESSED: 1 metric significantly worse by more than 0.031"
    code, out, _ = run(["report", "compare", old, new, "--max-drop", "0.035"], capsys)
    assert code == 0 and out.splitlines()[-1] == "OK: no metric significantly worse by more than 0.035"
    assert run(["report", "compare", old, old], capsys)[0] == 0


def test_compare_ignores_noise(tmp_path, capsys):
    noisy = make_report()
    noisy.stages["after"]["clean"].outcomes["correct"] = flags(1000, (0, 10), (25, 997))  # 3 images lost: p = 0.25
    code, out, _ = run(["report", "compare", _write(tmp_path, "old", make_report()), _write(tmp_path, "new", noisy)],
                       capsys)
    assert code == 0 and "no significant change" in out


def test_compare_json_and_markdown_output(tmp_path, capsys):
    old = _write(tmp_path, "old", make_report())
    worse = make_report()
    worse.stages["after"]["pgd"].outcomes["robust"] = flags(500, (0, 100))
    new = _write(tmp_path, "new", worse)
    code, out, _ = run(["report", "compare", old, new, "--json"], capsys)
    data = json.loads(out)
    assert code == 1 and data["regressed"] is True
    assert [k for k, c in data["changes"].items() if c["regressed"]] == ["pgd.robust"]
    pgd = data["changes"]["pgd.robust"]
    assert (pgd["new"]["k"], pgd["new"]["n"], pgd["lost"], pgd["effect"]) == (100, 500, 75, "worse") and pgd["p"] < 1e-20
    code, out, _ = run(["report", "compare", old, new, "--markdown"], capsys)
    assert code == 1 and "| -0.1500 | 5.3e-23 | **REGRESSED** |" in out
    code, _, err = run(["report", "compare", old, new, "--max-drop", "2"], capsys)
    assert code == 2 and "--max-drop" in err and len(err.strip().splitlines()) == 1


def test_render_writes_files_and_refuses_clobber(report_json, tmp_path, capsys):
    out_dir = tmp_path / "site"
    code, out, _ = run(["report", "render", report_json, "--out", out_dir], capsys)
    assert code == 0 and len(out.splitlines()) == 3
    assert sorted(p.name for p in out_dir.iterdir()) == ["junit.xml", "report.html", "report.md"]
    html_text = (out_dir / "report.html").read_text(encoding="utf-8")
    # the picture lives beside report.json, not in --out, and is still embedded
    assert html_text.count("data:image/png;base64,") == 2
    assert ET.parse(out_dir / "junit.xml").getroot().get("name") == "advgen"
    code, _, err = run(["report", "render", report_json, "--out", out_dir], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run(["report", "render", report_json, "--out", out_dir, "--overwrite"], capsys)[0] == 0


def test_fail_under_option_is_reusable():
    seen = {}

    @click.command()
    @fail_under_option
    def cmd(fail_under):
        seen["specs"] = fail_under

    result = CliRunner().invoke(cmd, ["--fail-under", "clean=0.9", "--fail-under", "before.onepixel=1"])
    assert result.exit_code == 0, result.output
    assert seen["specs"] == [GateSpec("clean", 0.9), GateSpec("onepixel", 1.0, "before")]
    bad = CliRunner().invoke(cmd, ["--fail-under", "clean=0.9", "--fail-under", "clean=0.8"])
    assert bad.exit_code == 2 and "given twice" in bad.output
    assert CliRunner().invoke(cmd, []).exit_code == 0 and seen["specs"] == []
