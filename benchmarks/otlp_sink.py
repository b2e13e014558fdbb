"""An OTLP/HTTP trace receiver that stores nothing: what a sender can reach when receiving costs nothing.

`python -m benchmarks.otlp_sink --port N` listens on 127.0.0.1:N, reads
each `POST` body (by `Content-Length`, or chunked), and answers 200 with an
empty `ExportTraceServiceResponse` in the request's content type, on the
same keep-alive connection. It prints `listening` once it accepts
connections. The receiver benchmark runs OpenTelemetry's exporter against it,
side by side with the real receiver, to show how fast the sender alone goes
on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

__all__ = ["main"]


async def _body(reader: asyncio.StreamReader, head: bytes) -> None:
    """Read (and drop) the request body that `head` announces."""
    headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    headers = {name.strip().lower(): value.strip().lower() for name, value in headers.items()}
    if headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    length = int(headers.get(b"content-length", b"0"))
    if length:
        await reader.readexactly(length)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await _body(reader, head)
            json = b"content-type: application/json" in head.lower()
            body, kind = (b"{}", b"application/json") if json else (b"", b"application/x-protobuf")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b"
                         % (kind, len(body), body))  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, limit=1 << 20)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_sink", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_main(parser.parse_args(argv).port))


if __name__ == "__main__":
    main()
