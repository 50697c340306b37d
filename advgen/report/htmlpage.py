"""A self-contained ``report.html``: the Markdown's tables plus the bar chart and pictures inlined as base64."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..pictures import PNG_MAGIC
from .chart import before_after_chart_png
from .schema import Report
from .tables import Table, all_tables, headline

MAX_PICTURE_BYTES = 20 * 1024 * 1024

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:64rem;color:#1b1f24}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #d0d7de;padding:.25rem .6rem;font-size:.9rem}
th{background:#f6f8fa;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.6rem 1rem;border-radius:6px;font-weight:600}
.PASSED{background:#dafbe1} .FAILED{background:#ffebe9} .NO-GATES{background:#ddf4ff}
.FAIL{color:#cf222e;font-weight:600} .PASS{color:#1a7f37;font-weight:600}
figure{display:inline-block;margin:.5rem} img{max-width:100%} figcaption{font-size:.8rem;color:#57606a}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_table(table: Table) -> str:
    """One escaped ``<table>`` under an ``<h2>``; PASS/FAIL cells get a colour class."""
    out = [f"<h2>{_e(table.title)}</h2>"]
    if not table.rows:
        return out[0] + "\n<p><em>none</em></p>"
    numeric = table.numeric or [False] * len(table.header)
    out.append("<table>\n<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.header) + "</tr></thead>\n<tbody>")
    for row in table.rows:
        cells = []
        for cell, num in zip(row, numeric):
            cls = "num" if num else cell if cell in ("PASS", "FAIL") else ""
            cells.append(f"<td class=\"{cls}\">{_e(cell)}</td>" if cls else f"<td>{_e(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>\n</table>")
    return "\n".join(out)


def _picture(name: str, rel: str, asset_dir: Path | None) -> str:
    """An inlined PNG, or a line saying why it is not shown; paths never leave ``asset_dir``."""
    caption = f"{_e(name)} ({_e(rel)})"
    if asset_dir is None:
        return f"<p>{caption}: not embedded (no report directory given)</p>"
    base = asset_dir.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        return f"<p>{caption}: not embedded (outside the report directory)</p>"
    if not path.is_file():
        return f"<p>{caption}: missing</p>"
    if path.stat().st_size > MAX_PICTURE_BYTES:
        return f"<p>{caption}: not embedded (larger than {MAX_PICTURE_BYTES // 2**20} MiB)</p>"
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        return f"<p>{caption}: not embedded (not a PNG file)</p>"
    return (f"<figure><img alt=\"{_e(name)}\" src=\"{data_uri(data)}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def render_html(report: Report, asset_dir: str | Path | None = None) -> str:
    """The report as one HTML file with nothing external to fetch.

    ``asset_dir`` is where the ``artifacts`` paths are resolved (the directory of ``report.json``);
    pictures that are missing or not PNG are listed rather than embedded.
    """
    verdict, summary = headline(report)
    asset_dir = Path(asset_dir) if asset_dir is not None else None
    body = ["<h1>advgen evaluate report</h1>",
            f"<p class=\"verdict {verdict.replace(' ', '-')}\">{_e(verdict)}: {_e(summary)}</p>",
            *(f"<p class=\"verdict FAILED\">WARNING: {_e(w)}</p>" for w in report.warnings()),
            f"<figure><img alt=\"before/after chart\" src=\"{data_uri(before_after_chart_png(report))}\">"
            f"<figcaption>measured rates on the test subset, with 95% Wilson intervals</figcaption></figure>"]
    body += [html_table(t) for t in all_tables(report)]
    if report.notes:
        body.append("<h2>Notes</h2>\n<ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    if report.artifacts:
        body.append("<h2>Pictures</h2>")
        body += [_picture(k, v, asset_dir) for k, v in report.artifacts.items()]
    return page(f"advgen report: {verdict}", body)


def page(title: str, body: list[str]) -> str:
    """A whole HTML document around already-escaped ``body`` parts, styled inline (nothing to fetch)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")
