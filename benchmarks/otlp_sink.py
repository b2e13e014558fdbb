"""An OTLP/HTTP trace receiver that stores nothing: what a sender can reach when receiving costs nothing.

`python -m benchmarks.otlp_sink [--port 0]` listens on 127.0.0.1, reads each
protobuf `POST` body (by its `Content-Length`, as OpenTelemetry's exporter
sends it), and answers 200 with an empty `ExportTraceServiceResponse` on the
same keep-alive connection. It prints `listening on http://127.0.0.1:PORT`
once it accepts connections. The receiver benchmark runs OpenTelemetry's
exporter against it, side by side with the real receiver, to show how fast
the sender alone goes on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Sequence

__all__ = ["main"]

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            if length is not None:
                await reader.readexactly(int(length.group(1)))
            writer.write(_ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, limit=1 << 20)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_sink", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    asyncio.run(_main(parser.parse_args(argv).port))


if __name__ == "__main__":
    main()
