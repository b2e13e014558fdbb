"""The spare upstream connection that relay threads take for a request (`obs.proxy._kept`).

llama-server closes its connection after every streamed answer, so a call
that first had to connect would wait for it. `Spares` keeps at most one
plain socket open and ready, as `UpstreamPool` keeps one for the event
loop: a thread takes it for a request, and after each answer one is opened
again (off the path of any call), for `keep_ready_s` after the last answer.
One that has waited 4 s is not used (llama-server closes an idle connection
after 5), nor one the upstream closed or sent anything on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import httpx

__all__ = ["Spares"]

_POLLIN = getattr(select, "POLLIN", 1)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_SPARE_S = 4.0  # a spare older than this is not used (llama-server closes idle connections after 5 s)


class Spares:
    """At most one spare upstream connection, open and ready, for the relay threads (thread-safe).

    `keep_ready_s` > 0 keeps one (`make_ready`) for that long after each
    answer, as `UpstreamPool` does for the event loop; 0 keeps none.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float, keep_ready_s: float) -> None:
        """Nothing is opened yet."""
        self._address = (host, port)
        self._connect_timeout_s = connect_timeout_s
        self._keep_s = keep_ready_s
        self._lock = threading.Lock()
        self._spare: tuple[socket.socket, float] | None = None
        self._until = 0.0  # time.monotonic() until which a spare is kept ready

    def put(self, sock: socket.socket) -> None:
        """Keep `sock` (an open upstream connection nothing was sent on) as the spare if none is kept (and
        spares are kept at all), else close it."""
        with self._lock:
            if self._spare is None and self._keep_s > 0:
                sock.settimeout(self._connect_timeout_s)  # for writing a request: it is read with poll
                self._spare = (sock, time.monotonic())
                self._until = max(self._until, time.monotonic() + self._keep_s)
                return
        sock.close()

    def take_spare(self) -> socket.socket | None:
        """The spare, if there is one still open and young enough to carry a request."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        sock, since = spare
        if time.monotonic() - since < _SPARE_S and _quiet(sock):
            return sock
        sock.close()
        return None

    def take(self) -> tuple[socket.socket, bool]:
        """A connection for one request: (the spare, True), else (a new one, False).

        httpx's ConnectError or ConnectTimeout when connecting fails.
        """
        sock = self.take_spare()
        return (sock, True) if sock is not None else (self.connect(), False)

    def connect(self) -> socket.socket:
        """A new connection upstream, within the connect timeout (httpx's errors when that fails)."""
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout_s)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {self._connect_timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def make_ready(self, answered: bool) -> None:
        """Open a spare if none is kept (after an answer if `answered`, which keeps one for `keep_ready_s`
        more; else only while that lasts), replacing one too old to use (dropped in any case); never
        raises: a request that finds none connects."""
        now = time.monotonic()
        with self._lock:
            if answered:
                self._until = now + self._keep_s
            spare = self._spare
            if spare is not None and now - spare[1] < _SPARE_S:
                return
            self._spare = None
            renew = self._keep_s > 0 and now <= self._until
        if spare is not None:
            spare[0].close()
        if renew:
            with contextlib.suppress(httpx.HTTPError):
                self.put(self.connect())

    def renew_at(self) -> float | None:
        """When the spare gets too old to use (time.monotonic()), None if none is kept."""
        spare = self._spare
        return None if spare is None else spare[1] + _SPARE_S

    @property
    def holds(self) -> bool:
        """True while a spare is kept."""
        return self._spare is not None

    def close(self) -> None:
        """Close the spare, and keep none until the next answer."""
        with self._lock:
            spare, self._spare, self._until = self._spare, None, 0.0
        if spare is not None:
            spare[0].close()


def _quiet(sock: socket.socket) -> bool:
    """True for a connection with nothing to read: not closed by the upstream, nothing unexpected sent."""
    poller = select.poll()
    poller.register(sock, _POLLIN | _POLLRDHUP)
    return not poller.poll(0)
