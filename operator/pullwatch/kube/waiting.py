"""Waits that a cancellation always ends, and stops that cannot hang on a task.

``wait_event``: Python 3.11's ``asyncio.wait_for`` drops a ``cancel()`` that arrives between
the awaited thing completing and wait_for resuming: it returns the result, and the cancelled
loop goes on as if nothing happened (CPython gh-86296, fixed in 3.12 by rebuilding wait_for on
``asyncio.timeout``). A loop that sets its own wake-up event - the Finding writer wakes on every
completed write - met that race at SIGTERM: its task never ended, and the shutdown waited for it
with nothing logged. ``asyncio.timeout`` tells its own cancellation from anyone else's
(``Task.uncancel``).

    >>> async def stopped_while_woken():
    ...     wake = asyncio.Event()
    ...     async def loop():
    ...         while True:
    ...             await wait_event(wake, 60)
    ...     task = asyncio.create_task(loop())
    ...     await asyncio.sleep(0)
    ...     wake.set(); task.cancel()  # woken and cancelled in one step
    ...     for _ in range(5):
    ...         await asyncio.sleep(0)
    ...     return task.cancelled()
    >>> asyncio.run(stopped_while_woken())
    True

``cancel_and_wait``: a stop gives the tasks it cancels a deadline, not forever; a task that
swallows its cancellation anyway (a bug like the one above) is named in the log and returned, so
that the caller goes on - to the drain, then to leaving the process - instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

STOP_GRACE = 10.0  # at most, seconds cancelled tasks have to end before a stop goes on


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set or ``timeout`` seconds pass; whether it is set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task], logger: logging.Logger, until: float
) -> set[asyncio.Task]:
    """Cancel ``tasks`` and wait until they end, or until loop time ``until``; the tasks that did
    not end (each named in the log). What a task raised is retrieved here, not raised: the
    caller reports failures it cares about (the supervisor, from the engine's task)."""
    tasks = set(tasks)
    for task in tasks:
        task.cancel()
    pending: set[asyncio.Task] = {t for t in tasks if not t.done()}
    if pending:
        timeout = max(0.0, until - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(pending, timeout=timeout)
    for task in tasks - pending:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" when it is freed
    if pending:
        logger.error(
            "did not stop when cancelled (a bug in pullwatch), the stop goes on: %s",
            ", ".join(sorted(t.get_name() for t in pending)),
        )
    return pending
