"""obs.config: one line sends a program's traces and logs to the dashboard's SQLite file.

A program run as a real child process configures obs, chats with a loopback
llama-server through InstrumentedClient and exits without any cleanup call;
its traces and log entries are in the file, under its service name, for a
reader that had the file open all along (the dashboard).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import obs.config
import obs.storage.memory
from obs.config import DB_PATH_ENV, configure, current, db_path_from_env, default_tracer, shutdown
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from tests.llm.servers import good, serve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def unconfigured() -> Iterator[None]:
    shutdown()
    yield
    shutdown()


def test_configure_makes_the_default_tracer_write_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".obs" / "obs.db"
    assert default_tracer() is None
    tracer = configure(db=path, service_name="my-app", retention_interval_s=None)
    assert default_tracer() is tracer and tracer.service_name == "my-app"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    setup = current()
    assert setup is not None and setup.path == str(path) and setup.retention is None
    with tracer.start_span("chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}):
        pass
    assert tracer.logger is not None
    tracer.logger.warn("a warning from my-app")
    assert shutdown(timeout_s=10.0)  # flushes traces and logs
    assert default_tracer() is None and current() is None
    with SqliteTraceStore(path) as store:
        queries = DashboardQueries(store)
        assert queries.tiles(service="my-app").request_count == 1
        page = queries.logs()
        assert [e.message for e in page.items] == ["a warning from my-app"] and page.services == ("my-app",)


def test_a_client_given_no_tracer_uses_the_configured_one_and_chats_reach_the_file(tmp_path: Path) -> None:
    from obs.llm.client import InstrumentedClient

    path = tmp_path / "obs.db"
    tracer = configure(db=path, service_name="my-app", retention_interval_s=None)
    with serve(good) as server, InstrumentedClient(server.url) as client:
        assert client.tracer is tracer
        client.chat([{"role": "user", "content": "hi"}])
        own = InstrumentedClient(server.url, store=obs.storage.memory.TraceStore())
        assert own.tracer is not tracer  # a client given its own store keeps its own wiring
        own.close()
    assert shutdown(timeout_s=10.0)
    with SqliteTraceStore(path) as store:
        assert DashboardQueries(store).tiles(service="my-app").request_count == 1


def test_a_user_programs_traces_reach_the_file_a_dashboard_has_open(tmp_path: Path) -> None:
    path = tmp_path / ".obs" / "obs.db"
    path.parent.mkdir()
    dashboard = SqliteTraceStore(path)  # the dashboard, running while the program runs
    script = textwrap.dedent(
        """
        import sys
        from obs.config import configure
        from obs.llm.client import InstrumentedClient

        tracer = configure(db=sys.argv[1], service_name="user-script")
        with InstrumentedClient(sys.argv[2], tracer=tracer) as client:
            with client.conversation("conv-user"):
                for question in ("Name a colour.", "And a fruit?"):
                    response, span = client.chat([{"role": "user", "content": question}], max_tokens=8)
        # no shutdown: obs flushes at exit
        """
    )
    try:
        with serve(good) as server:
            done = subprocess.run(
                [sys.executable, "-c", script, str(path), server.url], cwd=tmp_path, timeout=120,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=False,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr
        queries = DashboardQueries(dashboard)
        assert queries.services() == ["user-script"]
        assert queries.tiles(service="user-script").request_count == 2
        assert [s.conversation_id for s in queries.sessions(service="user-script").items] == ["conv-user"]
        assert len(queries.session("conv-user")) == 2
        assert any("finished" in e.message for e in queries.logs(service="user-script").items)
    finally:
        dashboard.close()


def test_the_path_comes_from_obs_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert db_path_from_env({}) == ".obs/obs.db" == obs.config.DEFAULT_DB_PATH
    assert db_path_from_env({DB_PATH_ENV: "  /data/x.db "}) == "/data/x.db"
    monkeypatch.setenv(DB_PATH_ENV, str(tmp_path / "env" / "obs.db"))
    configure(service_name="from-env")
    assert (tmp_path / "env" / "obs.db").is_file()
    monkeypatch.setenv(DB_PATH_ENV, ":memory:")
    monkeypatch.chdir(tmp_path)
    tracer = configure()  # replaces the first setup, which is flushed and closed
    with tracer.start_span("in memory"):
        pass
    assert tracer.force_flush(timeout_s=10.0)
    setup = current()
    assert setup is not None and setup.path == ":memory:" and len(setup.store) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env"]  # no file for :memory:


def test_configure_again_replaces_the_earlier_setup(tmp_path: Path) -> None:
    first = configure(db=tmp_path / "a.db", service_name="first")
    with first.start_span("before"):
        pass
    second = configure(db=tmp_path / "b.db", service_name="second")
    assert default_tracer() is second and first is not second
    with SqliteTraceStore(tmp_path / "a.db") as store:  # the first was flushed when replaced
        assert [t.name for t in store.all()] == ["before"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service_name": ""}, r"service_name must be a non-empty string"),
        ({"schedule_delay_s": 0}, r"schedule_delay_s must be a finite number of seconds > 0"),
        ({"retention_interval_s": -1.0}, r"retention_interval_s must be a finite number of seconds > 0"),
        ({"log_level": "loud"}, r"min_level must be one of"),
        ({"db": ""}, r"db must be a file path"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure(**{"db": tmp_path / "obs.db", **kwargs})  # type: ignore[arg-type]
    assert default_tracer() is None


def _unprivileged() -> list[str]:
    """The command prefix that runs a child without root's power to ignore file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all"]


def test_an_unwritable_place_is_refused_with_its_reason(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "existing").mkdir()
    locked.chmod(0o555)
    (locked / "existing").chmod(0o555)
    code = (
        "import sys\n"
        "from obs.config import configure\n"
        "for db in sys.argv[1:]:\n"
        "    try:\n"
        "        configure(db=db)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
        "    else:\n"
        "        print('configured')\n"
    )
    try:
        done = subprocess.run(
            [*_unprivileged(), sys.executable, "-c", code, str(locked / ".obs" / "obs.db"),
             str(locked / "existing" / "obs.db"), str(tmp_path / "free" / "obs.db")],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
        (locked / "existing").chmod(0o755)
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip().splitlines()
    assert "cannot create directory" in said[0] and "Permission denied" in said[0], said
    assert "which is read-only" in said[1] and "writable directory" in said[1], said
    assert said[2] == "configured"


def test_a_path_that_cannot_be_used_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(ValueError, match=r"cannot create directory .* choose another path"):
        configure(db=blocker / "sub" / "obs.db")
    with pytest.raises(ValueError, match=r"is a directory: give a file path"):
        configure(db=tmp_path)
    assert default_tracer() is None
