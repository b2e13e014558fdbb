"""Browser test fixtures: Debian's Chromium driven by Playwright, and the app on a free loopback port.

The browser is the system's `/usr/bin/chromium` (Playwright's own download
is never used). Without it the tests skip, except when `CI` is set: then a
missing browser fails the run. The app is started with
`python -m streamlit run streamlit_app.py` as a user would (`run_app`);
`app_url` points it at a dead URL so that it starts its own embedded
llama-server. `browser` gives separate contexts: separate people, each with
their own cookies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from obs.llm.llama.server import find_free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
_APP_START_TIMEOUT_S = 90.0


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"Chromium not found at {CHROMIUM} (Debian package `chromium`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright Python package is not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI is set, so browser tests must run")
        pytest.skip(missing)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Directory for screenshots (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def run_app(log_dir: Path, env: dict[str, str], args: tuple[str, ...] = (),
            name: str = "streamlit") -> Iterator[str]:
    """Serve the dashboard with `streamlit run` on a free loopback port; yield its URL, stop it after.

    `env` is added to this process's environment; `args` go after the
    script name (Streamlit options). The app's history file is
    `log_dir/obs.db` unless `env` names one (`OBS_DB_PATH`), so no test writes
    into the repository's .obs/. The app's output is copied to
    tests/artifacts/<name>.log when it stops.
    """
    _need_browser()
    port = find_free_port()
    log_path = log_dir / "app.log"
    full_env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
                "OBS_DB_PATH": str(log_dir / "obs.db"),
                # No app under test takes the receiver's fixed port 4318 unless a test asks for one:
                # two apps alive at once would fight over it.
                "OBS_RECEIVER_PORT": "0", **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1",
             # Edits to the sources while the tests run must not rerun the app under them.
             "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", *args],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _APP_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / f"{name}.log")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard served by `streamlit run` on a free port; stopped after the module."""
    # Nothing answers at LLAMA_SERVER_URL, so the app starts the embedded server, as `make run` does on
    # a fresh machine.
    env = {"LLAMA_SERVER_URL": f"http://127.0.0.1:{find_free_port()}", "OBS_EMBEDDED_SERVER": "1"}
    with run_app(tmp_path_factory.mktemp("streamlit"), env) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Playwright page in a fresh Chromium profile, sized like a laptop screen."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            tab = context.pages[0] if context.pages else context.new_page()
            tab.set_default_timeout(60_000)
            yield tab
        finally:
            context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A Chromium browser; each `browser.new_context()` is another person, with cookies of their own."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()
