"""No page may hand text to the browser as HTML: a source scan that fails on any way of doing so."""

from __future__ import annotations

import re

from tests.app.conftest import ROOT

_HTML_WAYS = re.compile(
    r"unsafe_allow_html\s*=\s*True|st\.html\(|components\.v1|components\.html\(|\.iframe\("
)


def test_no_app_source_renders_html() -> None:
    sources = [ROOT / "streamlit_app.py", *sorted((ROOT / "app").rglob("*.py"))]
    assert len(sources) > 5
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _HTML_WAYS.search(line)
    ]
    assert offenders == []
