"""A deadline for one HTTP request that httpx's own timeouts cannot give.

httpx bounds each read, not a whole request: a server that trickles one
byte at a time keeps it alive forever. `CuttableRequest` keeps the socket of
the request's connection (through httpcore's `trace` extension) so that a
timer, or whoever closes the sender, can shut it down: the blocked read or
write then returns at once. Used by the webhook notifier and the exporters'
HTTP sender.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CuttableRequest"]


class CuttableRequest:
    """One request in flight: its socket, once connected, so a deadline or a close can cut it.

    Pass `extensions={"trace": request.trace}` to httpx; `cut` tells afterwards
    whether the request was cut (its error is then the deadline's, not the network's).
    """

    def __init__(self) -> None:
        """Start with no socket and not cut."""
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.cut = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace hook: keep the connection's socket as soon as it exists."""
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                with self.lock:
                    self.sockets.append(sock)
                    cut = self.cut
                if cut:  # the deadline passed while connecting
                    self._shutdown(sock)

    def stop(self) -> None:
        """End the request now: shut its socket down, so a blocked read or write returns at once."""
        with self.lock:
            self.cut = True
            sockets = list(self.sockets)
        for sock in sockets:
            self._shutdown(sock)

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[CuttableRequest]:
        """Cut the request if it is still running `seconds` from now; the timer ends with the block."""
        timer = threading.Timer(seconds, self.stop)
        timer.daemon = True
        timer.start()
        try:
            yield self
        finally:
            timer.cancel()

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
