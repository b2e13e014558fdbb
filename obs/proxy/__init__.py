"""A recording proxy in front of llama-server: observe any program without changing it.

Programs that talk to llama-server through its HTTP API (Open WebUI, a
LangChain app, curl, code in any language) are pointed at the proxy instead;
it forwards every request unchanged, streams every answer back unchanged,
and records the model calls as InstrumentedClient would, into the SQLite
file the dashboard reads.

- `python -m obs.proxy --upstream http://127.0.0.1:8080 --port 8033` serves
  it alone (`obs.proxy.cli`);
- `start_proxy(upstream, port, db=... | tracer=...)` serves it on a thread
  and returns a `ProxyHandle` (`.url`, `.stop()`, `.stats`);
- `ProxyApp(upstream, tracer=...)` is the ASGI app itself, to mount.
"""

from obs.proxy.app import ProxyApp, ProxyStats
from obs.proxy.server import ProxyHandle, ProxyStartError, open_recording, start_proxy

__all__ = ["ProxyApp", "ProxyHandle", "ProxyStartError", "ProxyStats", "open_recording", "start_proxy"]
