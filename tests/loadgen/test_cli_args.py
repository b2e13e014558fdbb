"""`python -m obs.loadgen` with bad arguments: exit status 2 and an error naming the argument."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from obs.loadgen import cli

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m obs.loadgen")
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(("argv", "message"), [
    (["--duration", "soon"],
     "argument --duration: a duration is a number with a unit, like 60s, 2m, 1h or 500ms; got 'soon'"),
    (["--duration", "0s"], "argument --duration: a duration must be more than 0, like 60s or 2m; got '0s'"),
    (["--rate", "5/day"],
     "argument --rate: a rate is requests per unit of time, like 5/s, 120/m or 0.5/s; got '5/day'"),
    (["--concurrency", "0"],
     "argument --concurrency: must be a whole number of 1 or more (requests in flight at once), got '0'"),
    (["--concurrency", "two"], "argument --concurrency: must be a whole number of 1 or more"),
    (["--requests", "-3"], "argument --requests: must be a whole number of 1 or more (requests to send)"),
    (["--max-tokens", "0"], "argument --max-tokens: must be a whole number of 1 or more (tokens per answer)"),
    (["--sweep", "1,2,x"], "argument --sweep: concurrency levels are whole numbers of 1 or more, like "
                           "1,2,4,8; 'x' in '1,2,x' is not"),
    (["--url", "ftp://example.com"], "argument --url: the URL must be an http(s) URL with a host"),
    (["--url", "localhost:8080"], "argument --url: the URL must be an http(s) URL with a host"),
    (["--sweep", "1,2", "--concurrency", "4"],
     "argument --sweep: runs every level it names; leave out --concurrency"),
])  # fmt: skip
def test_a_bad_argument_is_named_with_what_it_accepts(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _error(capsys, *argv).startswith(f"python -m obs.loadgen: error: {message}")


def test_a_prompts_file_that_does_not_exist_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "prompts.txt"
    assert _error(capsys, "--prompts", str(missing)) == (
        f"python -m obs.loadgen: error: argument --prompts: prompts file '{missing}' does not exist "
        "(or is not a file)")


def test_an_empty_prompts_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert _error(capsys, "--prompts", str(empty)) == (
        f"python -m obs.loadgen: error: argument --prompts: prompts file '{empty}' is empty: it has no "
        "JSON line")


def test_a_database_that_cannot_be_used_exits_2_before_any_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("these are notes, not a database\n" * 100, encoding="utf-8")
    assert cli.main(["--url", "http://127.0.0.1:9", "--requests", "1", "--db", str(not_a_db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obs.loadgen: ") and str(not_a_db) in err
    assert not_a_db.read_text(encoding="utf-8").startswith("these are notes")  # untouched


def test_help_lists_every_option_as_a_user_runs_it() -> None:
    out = subprocess.run([sys.executable, "-m", "obs.loadgen", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for option in ("--url", "--concurrency", "--requests", "--duration", "--rate", "--prompts", "--stream",
                   "--max-tokens", "--sweep", "--db", "--service-name"):
        assert option in out
    words = " ".join(out.split())
    assert "one prompt per line" in words and ".jsonl file" in words
