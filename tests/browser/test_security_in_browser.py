"""What a hostile or careless visitor can do to the dashboard, tried in real Chromium.

One app process (module fixture) talks to a loopback fake llama-server.
Each `browser.new_context()` is another person with cookies of their own:
a session link sent to someone else must not let them in, nor pull them
into the sender's session; page loads by one person must not evict
another's session; Markdown images in a reply or a server error must not
make the browser fetch anything (a loopback "tracker" counts requests);
leaving the Chat page mid-answer keeps the answer; and every sidebar value
survives visiting every page, in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.app.fake_server import FakeLlamaServer
from tests.browser.conftest import run_app
from tests.browser.pages import ANSWER_CAPTION, CHAT_MESSAGE, open_page, set_number, shot, wait_idle
from tests.browser.tracker import Tracker

pytestmark = pytest.mark.browser

TRACE_LINK = '[data-testid="stPageLink-NavLink"]'




@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer("Noted.") as server:
        yield server


@pytest.fixture(autouse=True)
def _fake_defaults(fake: FakeLlamaServer) -> Iterator[None]:
    yield
    fake.reply, fake.chunk_delay_s, fake.fail_status = "Noted.", 0.0, None
    fake.fail_message = "the fake server failed on purpose"


@pytest.fixture(scope="module")
def url(fake: FakeLlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"LLAMA_SERVER_URL": fake.url, "OBS_EMBEDDED_SERVER": "0"}
    with run_app(tmp_path_factory.mktemp("secure-app"), env, name="streamlit-security") as app_url:
        yield app_url


@pytest.fixture
def people(browser: Any) -> Iterator[Any]:
    """Call it to get a new person's page (own cookies); every context is closed after the test."""
    contexts = []

    def new_person() -> Any:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        contexts.append(context)
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        return tab

    yield new_person
    for context in contexts:
        context.close()


def _open(page: Any, address: str) -> str:
    """Load `address`, wait for the Chat page to be drawn; return the session id the URL now carries."""
    page.goto(address)
    page.get_by_test_id("stChatInputTextArea").wait_for()
    page.wait_for_url("**session=*")
    wait_idle(page)
    return _session_of(page.url)


def _session_of(address: str) -> str:
    return parse_qs(urlsplit(address).query)["session"][0]


def _ask(page: Any, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def _chat(page: Any, text: str) -> None:
    answers = page.locator(ANSWER_CAPTION, has_text="latency").count()
    _ask(page, text)
    page.locator(ANSWER_CAPTION, has_text="latency").nth(answers).wait_for()


def test_a_session_link_never_lets_another_person_in_nor_pulls_them_into_it(
    url: str, people: Any, artifacts: Path,
) -> None:
    alice = people()
    alice_sid = _open(alice, url)
    _chat(alice, "Alice's secret plan")
    alice_link = alice.url
    trace_href = alice.locator(TRACE_LINK, has_text="Trace").first.get_attribute("href")
    assert trace_href

    # Bob opens the link Alice shared: he gets a session of his own, empty.
    bob = people()
    bob_sid = _open(bob, alice_link)
    assert bob_sid != alice_sid
    assert bob.locator(CHAT_MESSAGE).count() == 0
    assert "secret plan" not in bob.locator("body").inner_text()
    shot(bob, artifacts, "security-shared-link")
    # Alice's trace link shows Bob nothing of hers either.
    bob.goto(url.rstrip("/") + "/" + trace_href.lstrip("/"))
    bob.get_by_role("heading", name="Traces", exact=True).wait_for()
    bob.get_by_text("No traces yet").wait_for()
    # Bob chats in his session (opened from Alice's link)...
    _open(bob, alice_link)
    _chat(bob, "Bob was here")

    # ...and Alice, reloading her link, finds her own chat, without Bob's message.
    assert _open(alice, alice_link) == alice_sid
    alice.locator(CHAT_MESSAGE, has_text="Alice's secret plan").wait_for()
    assert "Bob was here" not in alice.locator("body").inner_text()


def test_page_loads_by_one_person_never_evict_another_persons_session(url: str, people: Any) -> None:
    alice = people()
    _open(alice, url)
    _chat(alice, "Remember this")
    alice_link = alice.url

    mallory = people()
    first = _open(mallory, url)
    first_link = mallory.url
    for _ in range(70):
        _open(mallory, url)

    assert _open(alice, alice_link) == _session_of(alice_link)
    alice.locator(CHAT_MESSAGE, has_text="Remember this").wait_for()
    # Sessions are bounded per person: Mallory's own oldest one went.
    assert _open(mallory, first_link) != first


def test_images_in_a_reply_or_a_server_error_fetch_nothing(
    url: str, fake: FakeLlamaServer, people: Any, artifacts: Path,
) -> None:
    tracker = Tracker()
    try:
        t = tracker.url
        fake.reply = "\n".join([
            f"Inline ![pixel]({t}/inline.png?leak=secret) image.",
            f'Titled ![pixel](<{t}/angle.png> "title") image.',
            f"Inside a link [![pixel]({t}/nested.png)](https://example.invalid) here.",
            "Escaped \\\\![pixel](" + t + "/escaped.png) too.",
            "By reference ![pixel][track] and ![track].",
            f'Raw <img src="{t}/html.png"> tag.',
            "```rust",
            "let v = vec![1, 2];",
            "```",
            "Inline `vec![3]` code.",
            "",
            f"[track]: {t}/reference.png",
        ])
        page = people()
        _open(page, url)
        _chat(page, "Show me a picture")
        answer = page.locator(CHAT_MESSAGE).last
        # Code is shown as written (the highlighted block may come a moment after the text).
        answer.locator("pre code").wait_for()
        # (In inline code an invisible word joiner sits between `!` and `[`.)
        codes = [text.replace("\u2060", "") for text in answer.locator("code").all_inner_texts()]
        assert codes == ["let v = vec![1, 2];", "vec![3]"]
        fake.fail_status = 500
        fake.fail_message = f"overloaded ![pixel]({t}/error.png?leak=secret)"
        _ask(page, "And now?")
        page.locator('[data-testid="stAlertContentError"]', has_text="overloaded").wait_for()
        # Every image the page has asked for has arrived (or failed) by now.
        page.wait_for_function("() => Array.from(document.images).every(image => image.complete)")
        assert tracker.paths == []
        assert page.locator(f'img[src^="{t}"]').count() == 0
        shot(page, artifacts, "security-images")
        # The tracker does see what this browser fetches: the check above could have failed.
        page.evaluate(f"""() => new Promise(done => {{
          const image = new Image(); image.onload = image.onerror = done; image.src = '{t}/control.png';
        }})""")
        assert tracker.paths == ["/control.png"]
    finally:
        tracker.stop()


def test_leaving_the_chat_mid_answer_keeps_the_answer(url: str, fake: FakeLlamaServer, people: Any) -> None:
    words = [f"word{i}" for i in range(30)]
    fake.reply = " ".join(["Once", *words, "THE-END."])
    fake.chunk_delay_s = 0.1
    page = people()
    _open(page, url)
    _ask(page, "Tell me a long story")
    page.locator(CHAT_MESSAGE).nth(1).filter(has_text="Once").wait_for()
    open_page(page, "Dashboard")
    open_page(page, "Chat")
    answer = page.locator(CHAT_MESSAGE).nth(1)
    answer.filter(has_text="THE-END.").wait_for(timeout=30_000)
    assert fake.reply in answer.inner_text()
    answer.locator('[data-testid="stCaptionContainer"]', has_text="latency").wait_for()
    # The whole answer is the conversation's context from now on.
    _chat(page, "And then?")
    assert fake.requests[-1]["messages"][-2] == {"role": "assistant", "content": fake.reply}


# Label -> how to read it: every field of the sidebar, read the way a user reads it.
_SHARED_FIELDS = {
    "llama-server URL": "textbox",
    "Sampling rate": "slider",
    "Keep every error": "switch",
    "Keep slow traces": "switch",
    "Slow from (ms)": "spinbutton",
    "Error rate above (%)": "spinbutton",
    "p95 latency above (ms)": "spinbutton",
    "Min requests in window": "spinbutton",
}
_CHAT_FIELDS = {
    "System prompt": "textbox",
    "Temperature": "slider",
    "Max tokens": "spinbutton",
    "Prompt": "spinbutton",
    "Completion": "spinbutton",
    "Capture message contents": "switch",
}


def _slider(page: Any, label: str) -> Any:
    return page.get_by_test_id("stSidebar").locator('[data-testid="stSlider"]', has_text=label).get_by_role(
        "slider")


def _read(page: Any, label: str, role: str) -> str | bool:
    if role == "slider":
        return _slider(page, label).get_attribute("aria-valuetext")
    field = page.get_by_test_id("stSidebar").get_by_role(role, name=label, exact=True)
    return field.is_checked() if role == "switch" else field.input_value()


def _read_all(page: Any, chat: bool) -> dict[str, str | bool]:
    fields = {**_SHARED_FIELDS, **(_CHAT_FIELDS if chat else {})}
    return {label: _read(page, label, role) for label, role in fields.items()}


def _set_text(page: Any, label: str, value: str) -> None:
    box = page.get_by_test_id("stSidebar").get_by_role("textbox", name=label, exact=True)
    box.fill(value)
    box.press("Control+Enter" if label == "System prompt" else "Enter")
    wait_idle(page)


def _nudge_slider(page: Any, label: str, key: str, times: int) -> None:
    thumb = _slider(page, label)
    thumb.focus()
    for _ in range(times):
        thumb.press(key)
    wait_idle(page)


def _click_toggle(page: Any, label: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(label, exact=True).click()
    wait_idle(page)


def test_every_sidebar_value_survives_every_page_in_any_order(url: str, people: Any, artifacts: Path) -> None:
    page = people()
    _open(page, url)
    defaults = _read_all(page, chat=True)
    with FakeLlamaServer("Other server.") as other:
        _set_text(page, "llama-server URL", other.url)
        page.get_by_text(f"Talking to {other.url}").wait_for()
        _set_text(page, "System prompt", "Answer in French.")
        _nudge_slider(page, "Temperature", "ArrowRight", 2)
        set_number(page, "Max tokens", "100")
        set_number(page, "Prompt", "0.0030")
        set_number(page, "Completion", "0.0040")
        _click_toggle(page, "Capture message contents")
        _nudge_slider(page, "Sampling rate", "ArrowLeft", 5)
        _click_toggle(page, "Keep every error")
        _click_toggle(page, "Keep slow traces")
        set_number(page, "Slow from (ms)", "1500")
        set_number(page, "Error rate above (%)", "12.5")
        set_number(page, "p95 latency above (ms)", "3000")
        set_number(page, "Min requests in window", "3")
        chosen = _read_all(page, chat=True)
        assert all(chosen[label] != defaults[label] for label in chosen), (defaults, chosen)
        assert chosen["llama-server URL"] == other.url

        seen = {}
        for name in ("Dashboard", "Traces", "Logs", "Alerts", "Chat",
                     "Alerts", "Traces", "Chat", "Logs", "Dashboard", "Chat"):
            open_page(page, name)
            wait_idle(page)
            seen[name] = _read_all(page, chat=name == "Chat")
            expected = {label: chosen[label] for label in seen[name]}
            assert seen[name] == expected, name
        assert page.get_by_test_id("stSidebar").locator('[data-testid="stAlertContentError"]').count() == 0
        shot(page, artifacts, "security-sidebar-after-pages")
