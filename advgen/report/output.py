"""Write every report format into one directory, each file atomically (a kill never leaves half a report)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InputError
from ..files import atomic_write_text, check_writable_dir
from .htmlpage import render_html
from .junit import render_junit
from .markdown import render_markdown
from .schema import Report

#: Format name -> file name inside the output directory.
REPORT_FILES: dict[str, str] = {"json": "report.json", "md": "report.md", "html": "report.html",
                                "junit": "junit.xml"}


def write_reports(report: Report, out_dir: str | os.PathLike, formats: Iterable[str] = tuple(REPORT_FILES),
                  asset_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Render ``formats`` of ``report`` into ``out_dir``; returns ``{format: path written}``.

    Existing files are replaced (the CLI asks for ``--overwrite`` first). Pictures named in
    ``report.artifacts`` are looked up in ``asset_dir``, by default ``out_dir``.
    """
    formats = list(formats)
    unknown = [f for f in formats if f not in REPORT_FILES]
    if unknown:
        raise InputError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(REPORT_FILES)}")
    out = check_writable_dir(out_dir)
    renderers: dict[str, Callable[[], str]] = {
        "json": report.to_json,  # the canonical text; the other formats can be re-rendered from it
        "md": lambda: render_markdown(report),
        "html": lambda: render_html(report, asset_dir if asset_dir is not None else out),
        "junit": lambda: render_junit(report),
    }
    return {fmt: atomic_write_text(out / REPORT_FILES[fmt], renderers[fmt]()) for fmt in formats}
