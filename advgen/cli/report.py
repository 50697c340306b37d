"""`advgen report`: re-render, gate and compare the report.json files that `advgen evaluate` writes.

Exit codes: 0 all good, 1 a gate failed or a metric regressed or went missing, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from ..report import REPORT_FILES, compare, evaluate_gates, format_gate, gate_exit_code, load_report, write_reports
from ..report.gates import GateSpec
from .options import fail_under_option, overwrite_option, refuse_clobber

RENDERED = ("md", "html", "junit")


@click.group()
def report() -> None:
    """Re-render, gate and compare evaluation reports (report.json)."""


@report.command("compare")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-drop", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="How much a metric may worsen (as a fraction, e.g. 0.01) before it counts as a regression; "
                   "a regression must also be significant (p < 0.05).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of a table.")
@click.option("--markdown", is_flag=True, help="Print the comparison as Markdown (for a job summary).")
def compare_cmd(old: Path, new: Path, max_drop: float, as_json: bool, markdown: bool) -> int:
    """Compare OLD and NEW reports' final stages; exit 1 if a metric got significantly worse by more than --max-drop
    or is missing from NEW."""
    if as_json and markdown:
        raise InputError("choose one of --json and --markdown")
    result = compare(load_report(old), load_report(new), max_drop)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.render_markdown() if markdown else result.render_text(), nl=False)
    return result.exit_code()


@report.command("render")
@click.argument("report_json", metavar="REPORT.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for report.md, report.html and junit.xml.")
@overwrite_option
def render_cmd(report_json: Path, out: Path, overwrite: bool) -> None:
    """Re-render Markdown, HTML and JUnit from REPORT.json (pictures are taken from beside it)."""
    rep = load_report(report_json)
    for fmt in RENDERED:
        refuse_clobber(out / REPORT_FILES[fmt], overwrite)
    written = write_reports(rep, out, formats=RENDERED, asset_dir=report_json.parent)
    for path in written.values():
        click.echo(f"wrote {path}")


@report.command("gate")
@click.argument("report_json", metavar="REPORT.json", type=click.Path(dir_okay=False, path_type=Path))
@fail_under_option
def gate_cmd(report_json: Path, fail_under: list[GateSpec]) -> int:
    """Check REPORT.json against --fail-under thresholds (or, with none, the gates stored in it).

    Prints one line per gate; exits 0 when all pass, 1 when any fails.
    """
    rep = load_report(report_json)
    specs = fail_under or [GateSpec(g.name, g.threshold, g.stage) for g in rep.gates]
    if not specs:
        raise InputError(f"{report_json} has no gates; give at least one --fail-under NAME=X, e.g. clean=0.97")
    gates = evaluate_gates(rep, specs)
    for g in gates:
        click.echo(format_gate(g))
    failed = sum(not g.passed for g in gates)
    n = len(gates)
    click.echo(f"{failed} of {n} gate{'s' if n != 1 else ''} failed" if failed
               else f"all {n} gate{'s' if n != 1 else ''} passed")
    return gate_exit_code(gates)
