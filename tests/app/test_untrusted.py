"""Tests of app.untrusted: no Markdown image survives; code and everything else read as written.

Every Markdown image begins with the characters `![`, so a Markdown block
without them cannot draw one. The browser tests render the same attacks in
Chromium and watch for requests.
"""

from __future__ import annotations

import pytest

from app.untrusted import Block, inert_markdown, markdown_blocks

TRACK = "http://127.0.0.1:9/track.png?leak=secret"
ATTACKS = [
    f"![x]({TRACK})",
    f'![x](<{TRACK}> "title")',
    f"[![x]({TRACK})](https://example.invalid)",
    f"\\\\![x]({TRACK})",
    f"![x][r]\n\n[r]: {TRACK}",
    f"![r]\n\n[r]: {TRACK}",
    f"![x\n]({TRACK})",
    f"*![x]({TRACK})*",
    f"> quoted ![x]({TRACK})",
    f"- item ![x]({TRACK})",
    f"<http://a`> ![x]({TRACK}) `",
    f"`` ` `` ![x]({TRACK}) ``",
    f"```\nclosed\n```\n![x]({TRACK})",
    f"    indented ![x]({TRACK})",
    f"~~~\n~~~~\n![x]({TRACK})",
]


def _markdown_parts(text: str) -> list[str]:
    return [block.text for block in markdown_blocks(text) if block.kind == "markdown"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_image_is_left_to_render(attack: str) -> None:
    parts = _markdown_parts(attack)
    assert parts
    assert all("![" not in part for part in parts)


def test_text_links_and_inline_code_read_as_written() -> None:
    text = "Hi! [a link](https://example.org) and `vec![3]` and ``a ` ![b]`` and a ![bang \\`![c]`"
    # Outside code `![` becomes `!\\[` (read as `![`); in a code span, where a backslash would show,
    # an invisible word joiner keeps the two apart instead.
    assert markdown_blocks(text) == [Block(
        "markdown",
        "Hi! [a link](https://example.org) and `vec!\u2060[3]` and ``a ` !\u2060[b]`` and a !\\[bang "
        "\\`!\\[c]`",
    )]


def test_fenced_code_is_split_off_as_written() -> None:
    text = "Rust:\n```rust\nlet v = vec![1, 2];\n```\nDone ![x](http://t/p.png).\n  ~~~\n  a\n   ![b]\n"
    assert markdown_blocks(text) == [
        Block("markdown", "Rust:"),
        Block("code", "let v = vec![1, 2];", "rust"),
        Block("markdown", "Done !\\[x](http://t/p.png)."),
        Block("code", "a\n ![b]\n", None),
    ]


def test_an_unclosed_fence_runs_to_the_end_as_an_answer_streams_in() -> None:
    assert markdown_blocks("See:\n````py\nprint(1)\n```\nx = [1] ▌") == [
        Block("markdown", "See:"), Block("code", "print(1)\n```\nx = [1] ▌", "py")]


def test_a_backtick_fence_with_backticks_in_its_info_is_not_a_fence() -> None:
    assert markdown_blocks("``` a`b\n![x](u)") == [Block("markdown", "``` a`b\n!\\[x](u)")]


def test_nothing_to_draw_gives_no_blocks() -> None:
    assert markdown_blocks("") == []
    assert markdown_blocks("```\n```") == [Block("code", "", None)]
    assert inert_markdown("plain text") == "plain text"
