"""LoadConfig and the parsers of durations, rates, concurrency levels and prompts files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obs.loadgen.options import (
    DEFAULT_PROMPTS,
    LoadConfig,
    load_prompts,
    parse_duration,
    parse_levels,
    parse_prompt_lines,
    parse_rate,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60.0), ("2m", 120.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5m", 90.0), ("45", 45.0),
    (" 10 S ", 10.0), (".5s", 0.5),
])  # fmt: skip
def test_durations_in_the_units_people_type(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "10 minutes", "-5s", "5d", "s", "1e3s"])
def test_a_duration_that_is_not_one_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"like 60s, 2m, 1h or 500ms; got"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0", "0.0m"])
def test_a_zero_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "per_second"), [
    ("5/s", 5.0), ("120/m", 2.0), ("0.5/s", 0.5), ("3", 3.0), ("7200/h", 2.0), ("30 / min", 0.5),
])  # fmt: skip
def test_rates_per_second_minute_or_hour(text: str, per_second: float) -> None:
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("text", ["", "5/d", "five/s", "5 per second", "/s", "-1/s"])
def test_a_rate_that_is_not_one_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"like 5/s, 120/m or 0.5/s; got"):
        parse_rate(text)


def test_a_zero_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        parse_rate("0/s")


def test_levels_are_sorted_without_repeats() -> None:
    assert parse_levels("8,1, 4,2,4") == (1, 2, 4, 8)


@pytest.mark.parametrize(("text", "bad"), [("1,0,4", "'0'"), ("1,two", "'two'"), ("1,,2", "''"),
                                           ("1.5", "'1.5'"), ("-1", "'-1'")])
def test_a_level_that_is_not_a_whole_number_is_named(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match=f"{bad} in '{text}' is not"):
        parse_levels(text)


def test_no_levels_is_refused() -> None:
    with pytest.raises(ValueError, match="like 1,2,4,8; got nothing"):
        parse_levels(" ")


def test_too_many_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 64"):
        parse_levels(",".join(str(n) for n in range(1, 70)))


def test_a_text_prompts_file_is_one_prompt_per_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# questions\nWhat is 2+2?\n\n   Name a colour.  \n", encoding="utf-8")
    assert load_prompts(path) == (
        ({"role": "user", "content": "What is 2+2?"},),
        ({"role": "user", "content": "Name a colour."},),
    )


def test_prompt_lines_from_a_text_box_follow_the_text_file_rules() -> None:
    assert parse_prompt_lines("  Hi \n\n# note\nBye") == (
        ({"role": "user", "content": "Hi"},), ({"role": "user", "content": "Bye"},))
    assert parse_prompt_lines("\n  \n") == ()


def test_a_jsonl_prompts_file_takes_strings_message_lists_and_objects(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "Hi"}
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([json.dumps("Plain question"), json.dumps([system, user]), "",
                               json.dumps({"messages": [user]})]), encoding="utf-8")
    assert load_prompts(path) == (({"role": "user", "content": "Plain question"},), (system, user), (user,))


def test_a_prompts_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(ValueError, match=f"prompts file '{missing}' does not exist"):
        load_prompts(missing)


def test_an_empty_prompts_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n# only a comment\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty: it has no prompt line"):
        load_prompts(path)


def test_a_bad_jsonl_line_is_named_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('"fine"\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 is not JSON"):
        load_prompts(path)
    path.write_text('"fine"\n[{"role": "robot", "content": "x"}]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: message 0 must be an object with a role"):
        load_prompts(path)
    path.write_text('42\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected a string, a non-empty list of messages"):
        load_prompts(path)


def test_a_prompts_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot be read as UTF-8 text"):
        load_prompts(path)


def test_requests_take_the_prompts_in_turn() -> None:
    config = LoadConfig(prompts=("one", "two"), requests=5)
    assert [config.messages(i)[0]["content"] for i in range(5)] == ["one", "two", "one", "two", "one"]
    assert config.body_params() == {"max_tokens": 64}


def test_the_default_prompts_are_short_user_questions() -> None:
    assert len(DEFAULT_PROMPTS) >= 5
    assert all(len(p) == 1 and p[0]["role"] == "user" and p[0]["content"].endswith((".", "?"))
               for p in DEFAULT_PROMPTS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"concurrency": 0}, "concurrency must be a whole number of 1 or more"),
    ({"concurrency": True}, "concurrency must be a whole number"),
    ({"requests": 0}, "requests must be a whole number of 1 or more"),
    ({"requests": None}, "give requests .* or duration_s"),
    ({"duration_s": -1.0}, "duration_s must be a number more than 0"),
    ({"rate": float("inf")}, "rate must be a number more than 0"),
    ({"max_tokens": 0}, "max_tokens must be a whole number"),
    ({"prompts": ()}, "prompts must be a non-empty sequence"),
    ({"prompts": ([{"role": "user"}],)}, "prompt 0: message 0 must be an object"),
    ({"params": {"stream": True}}, "params must not set stream"),
])  # fmt: skip
def test_a_bad_config_names_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadConfig(**kwargs)


def test_describe_says_the_run_in_a_line() -> None:
    assert LoadConfig(requests=200, concurrency=8).describe() == (
        "200 requests, 8 at once, not streamed, max_tokens 64")
    assert LoadConfig(requests=None, duration_s=60, concurrency=2, rate=5, stream=True,
                      max_tokens=8).describe() == "60 s, 2 at once, at most 5/s, streamed, max_tokens 8"
