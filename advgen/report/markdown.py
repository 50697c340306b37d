"""Markdown for a GitHub Actions job summary (``>> $GITHUB_STEP_SUMMARY``): verdict first, then tables."""

from __future__ import annotations

import re
from typing import Callable

from .schema import Report
from .tables import Table, all_tables, headline

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~!])")
_ICONS = {"PASSED": "✅", "FAILED": "❌", "NO GATES": "ℹ️"}


def md_escape(text: str) -> str:
    """Make text literal inside a Markdown table cell: no markup, no raw HTML, no line breaks."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def md_table(table: Table, escape: Callable[[str], str] = md_escape) -> str:
    """A GitHub-flavoured pipe table with a ``###`` title; an empty table becomes "_none_".

    ``escape`` makes each cell literal; a caller that marks up cells itself passes its own.
    """
    lines = [f"### {md_escape(table.title)}", ""]
    if not table.rows:
        return "\n".join(lines + ["_none_", ""])
    numeric = table.numeric or [False] * len(table.header)
    lines.append("| " + " | ".join(md_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines + [""])


def render_markdown(report: Report) -> str:
    """The whole report as Markdown: headline pass/fail, before/after with intervals and tests, gates, provenance."""
    verdict, summary = headline(report)
    parts = [f"## {_ICONS[verdict]} advgen evaluate: {verdict}", "",
             f"{md_escape(summary)}; created {md_escape(report.created)}, seed {report.seed}, "
             f"advgen {md_escape(str(report.tool.get('version', '?')))}.", ""]
    failing = [g for g in report.gates if not g.passed]
    parts += [f"- **FAIL** `{g.stage}.{g.name} >= {g.threshold:g}`: {md_escape(g.reason)}" for g in failing]
    parts += [f"- **WARNING** {md_escape(w)}" for w in report.warnings()]
    if failing or report.warnings():
        parts.append("")
    for table in all_tables(report):
        parts.append(md_table(table))
    if report.notes:
        parts += ["### Notes", ""] + [f"- {md_escape(n)}" for n in report.notes] + [""]
    if report.artifacts:
        parts += ["### Pictures", "", "Saved next to the report (embedded in `report.html`):", ""]
        parts += [f"- {md_escape(k)}: `{v.replace('`', '')}`" for k, v in report.artifacts.items()] + [""]
    return "\n".join(parts).rstrip() + "\n"
