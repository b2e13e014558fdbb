"""The README's Python examples: each block runs on its own and prints what the README says it prints.

The README's convention: a `# prints: TEXT` comment, at the end of a line or on a line of its own,
is one line the block prints, in order; `...` in TEXT stands for any text (as in doctest's ELLIPSIS)
where a run differs from the next (ids, timings, a model's answer). A block that prints says what it
prints. Every block runs in a fresh namespace in an empty directory, so it needs its own imports and
nothing from the blocks before it. A block that starts the embedded llama-server gets the test
session's one real server (tests/conftest.py `embedded_server`) instead of starting another.
"""

from __future__ import annotations

import contextlib
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

import obs

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_PRINTS = re.compile(r"#\s*prints:[ ]?(.*)$")
_CONTINUED = re.compile(r"#\s{2,}(\S.*)$")
_STARTS_SERVER = "start_embedded_server("


@dataclass(frozen=True)
class Example:
    """One Python block of the README: where it starts, its code, and the lines it says it prints."""

    line: int
    code: str

    @property
    def expected(self) -> list[str]:
        """The text of every `# prints:` comment, in order (comments only: never text in strings).

        A comment on the next line, in the same column, continues the printed line (joined by a space).
        """
        found: list[str] = []
        last: tuple[int, int] | None = None  # (row, column) of the comment that gave the last line
        for token in tokenize.generate_tokens(io.StringIO(self.code).readline):
            if token.type != tokenize.COMMENT:
                continue
            row, column = token.start
            if match := _PRINTS.match(token.string):
                found.append(match.group(1).rstrip())
                last = (row, column)
            elif last == (row - 1, column) and (more := _CONTINUED.match(token.string)):
                found[-1] = f"{found[-1]} {more.group(1).rstrip()}"
                last = (row, column)
            else:
                last = None
        return found

    @property
    def needs_server(self) -> bool:
        """True when the block starts the embedded llama-server."""
        return _STARTS_SERVER in self.code


def _examples() -> list[Example]:
    text = README.read_text(encoding="utf-8")
    return [Example(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def matches(expected: list[str], printed: str) -> bool:
    """True if `printed` is the `expected` lines, `...` matching any text (across lines too)."""
    pattern = "\n".join(".*?".join(re.escape(part) for part in line.split("...")) for line in expected)
    return re.fullmatch(pattern, _normalized(printed), re.DOTALL) is not None


def _normalized(printed: str) -> str:
    return "\n".join(line.rstrip() for line in printed.rstrip("\n").split("\n"))


def test_the_matcher_takes_dots_for_any_text_and_nothing_else() -> None:
    assert matches(["3 2060 0.00258"], "3 2060 0.00258\n")
    assert not matches(["3 2060 0.00258"], "3 2060 0.00259\n")
    assert matches(["0.333..."], "0.3333333333333333\n")
    assert matches(["...", "time to first token: ... ms"], "Cats purr.\nNap.\ntime to first token: 41 ms\n")
    assert not matches(["a", "b"], "a\n")
    assert not matches(["a"], "a\nb\n")  # every printed line is accounted for
    assert matches([], "")
    assert not matches(["x(y)"], "xy\n")  # the rest is literal


def test_a_printed_line_may_go_on_in_comments_below_it_in_the_same_column() -> None:
    example = Example(1, "print(1)  # prints: a long\n          #   line\n# not output\n# prints: b\n#   c\n")
    assert example.expected == ["a long line", "b c"]
    assert Example(1, "x = 1  # not output\n#   nor this\n").expected == []
    assert Example(1, "s = '# prints: no'\nprint(s)\n").expected == []


def test_the_readme_has_examples_and_says_what_they_print() -> None:
    examples = _examples()
    assert len(examples) >= 20
    printing = [e for e in examples if "print(" in e.code]
    assert len(printing) >= 15
    silent = [e.line for e in printing if not e.expected]
    assert silent == [], f"README blocks at these lines print but have no `# prints:` comment: {silent}"


@pytest.mark.parametrize("example", _examples(), ids=lambda example: f"line-{example.line}")
def test_readme_example_prints_what_the_readme_says(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write files (traces.db, traces.json)
    if example.needs_server:
        server = request.getfixturevalue("embedded_server")
        monkeypatch.setattr(obs, "start_embedded_server", lambda *_, **__: contextlib.nullcontext(server))
    code = compile(example.code, f"README.md line {example.line}", "exec")
    exec(code, {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert matches(example.expected, printed), (
        f"README.md line {example.line} says it prints\n" + "\n".join(example.expected)
        + f"\nbut printed\n{_normalized(printed)}"
    )
