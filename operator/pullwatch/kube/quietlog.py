"""A repeated error is logged once per interval, not once per try.

``Quiet`` is for pullwatch's own messages: the first occurrence of a key is logged, repeats are
counted, and the next message after ``interval`` says how many were held back; when the trouble
ends, ``recovered`` says so once. ``KopfRetryFilter`` does the same to kopf's "Request attempt #N
failed; will retry" lines, which kopf writes at ERROR on every attempt.

    >>> import logging, io
    >>> out = io.StringIO(); log = logging.getLogger("doc")
    >>> log.addHandler(logging.StreamHandler(out)); log.setLevel(logging.INFO)
    >>> quiet = Quiet(log, interval=300, clock=lambda: 0.0)
    >>> for _ in range(5):
    ...     _ = quiet.warning("forbidden: patch findings", "forbidden: patch findings (%s)", "ns/x")
    >>> quiet.recovered("forbidden: patch findings", "allowed again: patch findings")
    >>> out.getvalue().splitlines()
    ['forbidden: patch findings (ns/x)', 'allowed again: patch findings (4 more times since)']
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable


class Quiet:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self._log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self._log(logging.ERROR, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self._log(logging.INFO, key, msg, *args)

    def _log(self, level: int, key: str, msg: str, *args: object) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} more times in the last {self.interval:.0f}s)"
        self._last[key] = now
        self.logger.log(level, msg, *args)
        return True

    def active(self, key: str) -> bool:
        return key in self._last

    def recovered_all(self, prefixes: tuple[str, ...], msg: str, *args: object) -> None:
        """``recovered`` for every reported key that starts with one of ``prefixes``."""
        for key in [k for k in self._last if k.startswith(prefixes)]:
            self.recovered(key, msg, *args)

    def recovered(self, key: str, msg: str, *args: object) -> None:
        """The trouble named ``key`` is over: say so, once (nothing if it was never reported)."""
        if self._last.pop(key, None) is None:
            return
        held = self._held.pop(key, 0)
        if held:
            msg += f" ({held} more times since)"
        self.logger.info(msg, *args)


_ATTEMPT = re.compile(
    r"^Request attempt #\d+(?:/\d+)? failed; (?:will retry|escalating): "
    r"(\S+) (\S+?)(?:\?\S*)? -> (\w+)"
)


class KopfRetryFilter(logging.Filter):
    """Let one "Request attempt … failed" line per (method, path, error) through per interval."""

    def __init__(self, interval: float = 300.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval, self.clock = interval, clock
        self._last: dict[tuple[str, ...], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            m = _ATTEMPT.match(record.getMessage())
        except Exception:
            return True
        if m is None:
            return True
        key = m.groups()
        now = self.clock()
        if now - self._last.get(key, -1e18) < self.interval:
            return False
        self._last[key] = now
        return True
