"""Liveness that means "making progress": each long-running loop says it is alive as it goes.

A stream beats when its resourceVersion moves, a list gets further or a watch ends cleanly, and
while it waits on an API server that does not answer (stream.py says why); never merely because
it loops over data it cannot get past. The Finding writer beats on every pass of its loop and
every write it completes. Every call has a deadline, so a loop that is working beats within
seconds; a loop that does not beat for ``allowed`` seconds is stuck, and the liveness probe fails
so that Kubernetes restarts the pod. Nothing blocking runs on the event loop (the
allowlist is compiled in a thread), so the probe itself always answers.

    >>> clock = [0.0]
    >>> health = Health(clock=lambda: clock[0])
    >>> health.watch("writer", allowed=60)
    >>> clock[0] = 59; health.stuck()
    []
    >>> clock[0] = 61; health.stuck()
    ['writer (no progress for 61s)']
    >>> health.beat("writer"); health.stuck()
    []
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._beats: dict[str, float] = {}
        self._allowed: dict[str, float] = {}

    def watch(self, name: str, allowed: float) -> None:
        """From now on, ``name`` must beat at least every ``allowed`` seconds."""
        self._allowed[name] = allowed
        self._beats[name] = self.clock()

    def unwatch(self, name: str) -> None:
        """``name`` is not running (a standby replica's Event stream): nothing to expect of it."""
        self._allowed.pop(name, None)
        self._beats.pop(name, None)

    def beat(self, name: str) -> None:
        if name in self._allowed:
            self._beats[name] = self.clock()

    def stuck(self) -> list[str]:
        now = self.clock()
        return [
            f"{name} (no progress for {now - self._beats[name]:.0f}s)"
            for name, allowed in sorted(self._allowed.items())
            if now - self._beats[name] > allowed
        ]


def check_listen(url: str) -> None:
    """Raise OSError (or ValueError) now if the probe's ``http://HOST:PORT/path`` cannot be served.

    kopf binds it only after start-up, and its failure then ended the operator as if pullwatch
    had a bug; a port already taken is the operator's configuration, and is said so here. The
    URL is read as kopf reads it (probing.py): http only, the host "localhost" and the port 80
    when left out.

        >>> check_listen("http://127.0.0.1:0/healthz")
        >>> check_listen("https://127.0.0.1:8080/healthz")
        Traceback (most recent call last):
        ...
        ValueError: 'https://127.0.0.1:8080/healthz' is not an http://HOST:PORT/PATH URL
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r} is not an http://HOST:PORT/PATH URL")
    host, port = parts.hostname or "localhost", parts.port or 80
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds it
            s.bind(address)
