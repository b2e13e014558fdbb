"""The embedded server's configuration and the refusals of its command (no model loaded here)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from obs.llm.llama import server as server_module
from obs.llm.llama.server import (
    DEFAULT_PORT,
    ServerConfig,
    find_free_port,
    main,
    port_is_free,
    serve,
    start_embedded_server,
)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"port": 70000}, "port must be an integer in [0, 65535]"),
        ({"port": -1}, "port must be"),
        ({"ctx": 10}, "ctx must be an integer >= 64"),
        ({"parallel": 0}, "parallel must be an integer in [1, 64]"),
        ({"threads": 0}, "threads must be None or an integer in [1, 512]"),
        ({"host": ""}, "host must be a non-empty"),
        ({"api_key": ""}, "api_key must be None or a non-empty string"),
        ({"alias": ""}, "alias must be None"),
    ],
)
def test_config_validation(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError) as caught:
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    assert says in str(caught.value)


def test_config_defaults() -> None:
    config = ServerConfig()
    assert (config.host, config.port, config.ctx, config.parallel) == ("127.0.0.1", DEFAULT_PORT, 2048, 2)
    assert config.model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_free_port_helpers() -> None:
    port = find_free_port()
    assert 0 < port < 65536
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert not port_is_free("127.0.0.1", port)


def test_command_refuses_a_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--model", str(tmp_path / "nope.gguf"), "--port", "0"]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_command_refuses_a_file_that_is_not_gguf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    assert main(["--model", str(fake), "--port", "0"]) == 2
    assert "not a GGUF model file" in capsys.readouterr().err


def test_command_refuses_a_taken_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is taken" in err


def test_command_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--parallel", "0"]) == 2
    assert "parallel must be" in capsys.readouterr().err


def test_serve_reports_a_failed_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(config: ServerConfig, model: Path) -> object:
        raise RuntimeError("Failed to init server, please check the input params.")

    monkeypatch.setattr(server_module, "_start_xllamacpp", refuse)
    assert serve(ServerConfig(port=0), threading.Event()) == 1
    assert "llama-server did not start" in capsys.readouterr().err


def test_api_validates_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="startup_timeout_s"):
        start_embedded_server(startup_timeout_s=0)
    with pytest.raises(ValueError, match="ctx"):
        start_embedded_server(ctx=1)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        start_embedded_server(tmp_path / "missing.gguf", port=0)


def _time_wait_ports() -> set[int]:
    """Local ports of loopback TCP sockets in TIME-WAIT (state 06 in /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06":
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def _leave_in_time_wait() -> int:
    """A port whose listener is gone but whose server side of a connection is in TIME-WAIT.

    That is what a server that closed its clients' connections itself leaves behind for
    a minute after it stops; servers (llama.cpp's too) bind with SO_REUSEADDR and may
    listen there again at once.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: it is the one that waits
    assert client.recv(1) == b""
    client.close()
    listener.close()
    deadline = time.monotonic() + 5
    while port not in _time_wait_ports():
        assert time.monotonic() < deadline, "the server side never reached TIME-WAIT"
        time.sleep(0.01)
    return port


def test_a_port_in_time_wait_is_free() -> None:
    port = _leave_in_time_wait()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as holder:  # a new server there: taken again
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert not port_is_free("127.0.0.1", port)


def test_a_listener_on_every_interface_makes_the_loopback_port_taken() -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        assert not port_is_free("127.0.0.1", holder.getsockname()[1])
