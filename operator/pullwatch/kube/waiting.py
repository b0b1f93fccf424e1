"""Wait for an ``asyncio.Event`` with a timeout, without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` drops a ``cancel()`` that arrives in the same loop step as
the awaited thing completing: it returns the result, and the cancelled loop goes on as if
nothing happened (CPython gh-86296, fixed in 3.12 by rebuilding wait_for on ``asyncio.timeout``).
A loop that sets its own wake-up event - the Finding writer wakes on every completed write - met
that race at SIGTERM: its task never ended, and the shutdown waited for it with nothing logged.
``asyncio.timeout`` tells its own cancellation from anyone else's (``Task.uncancel``).

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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set or ``timeout`` seconds pass; whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


STOP_GRACE = 10.0  # seconds a cancelled task has to end before a stop goes on without it


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task], logger: logging.Logger, grace: float = STOP_GRACE
) -> None:
    """Cancel ``tasks`` and wait until they end, at most ``grace`` seconds: a task that swallows
    its cancellation (as above) is named in the log, and the stop goes on instead of hanging.
    What the tasks raised is theirs to report (the engine's TaskGroup does): it is not raised
    here."""
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=grace)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    if pending:
        logger.error(
            "%s did not stop within %gs of being cancelled; stopping without waiting for it",
            ", ".join(sorted(t.get_name() for t in pending)),
            grace,
        )
