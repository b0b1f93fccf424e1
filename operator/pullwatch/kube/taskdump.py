"""SIGUSR1 logs where every asyncio task waits: what an operator that does not stop waits for.

faulthandler (PYTHONFAULTHANDLER=1, then SIGABRT) shows the threads, but a loop that waits for a
task that never ends sits idle in select(); only the tasks' await chains say which await it is.
``kill -USR1 <pid>`` (in a pod: ``kubectl exec <pod> -- sh -c 'kill -USR1 1'``) writes one
WARNING with each task's name and the chain of coroutines it is suspended in, innermost last.

    >>> async def inner(): await asyncio.sleep(3600)
    >>> async def outer(): await inner()
    >>> async def show():
    ...     task = asyncio.create_task(outer(), name="demo")
    ...     await asyncio.sleep(0)
    ...     chain = [line.split(" at ")[0] for line in await_chain(task)]
    ...     task.cancel()
    ...     return chain
    >>> asyncio.run(show())
    ['outer', 'inner', 'sleep', 'FutureIter']
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from typing import Any


def await_chain(task: asyncio.Task) -> list[str]:
    """``name at file:line`` for each coroutine ``task`` is suspended in, outermost first."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is None:
            # a Future (FutureIter) or a C awaitable: what the task waits for says more
            waiter = getattr(task, "_fut_waiter", None)
            what = f" ({repr(waiter)[:160]})" if waiter is not None else ""
            chain.append(f"{type(coro).__name__} at ?{what}")
            break
        # two path components: kube/api.py is not kopf's clients/api.py
        path = "/".join(code.co_filename.rsplit("/", 2)[-2:])
        where = f"{path}:{frame.f_lineno}" if frame else "done"
        chain.append(f"{code.co_name} at {where}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def dump(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    lines = [f"{len(tasks)} asyncio tasks (SIGUSR1):"]
    for task in tasks:
        lines.append(f"  {task.get_name()}: " + " -> ".join(await_chain(task)))
    logger.warning("\n".join(lines))


def install_fallback(signum: int = signal.SIGUSR1) -> None:
    """Outside the event loop's life (before it starts, after it is closed): ``signum`` writes
    every thread's stack to stderr, instead of its default action - ending the process, or
    nothing at all for PID 1 in a container."""
    faulthandler.unregister(signum)  # registered before: it would not install itself again
    faulthandler.register(signum, all_threads=True)


def install(logger: logging.Logger, signum: int = signal.SIGUSR1) -> None:
    """From now on ``signum`` dumps the running loop's tasks (call it from inside the loop)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signum, dump, loop, logger)
