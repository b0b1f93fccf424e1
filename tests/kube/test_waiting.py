"""kube/waiting.py: a stop that cannot hang on a task that will not end."""

from __future__ import annotations

import asyncio
import logging

from pullwatch.kube.waiting import cancel_and_wait


async def test_a_task_that_swallows_its_cancel_is_named_and_the_stop_goes_on(caplog):
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # what Python 3.11's wait_for did to the writer's loop

    async def obedient() -> None:
        await asyncio.sleep(3600)

    async def failed() -> None:
        raise ValueError("its own failure, reported elsewhere")

    tasks = [
        asyncio.create_task(deaf(), name="deaf"),
        asyncio.create_task(obedient(), name="obedient"),
        asyncio.create_task(failed(), name="failed"),
    ]
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(tasks, logging.getLogger("test"), grace=0.05)
    assert tasks[1].cancelled() and isinstance(tasks[2].exception(), ValueError)
    assert not tasks[0].done()
    assert [r.getMessage() for r in caplog.records] == [
        "deaf did not stop within 0.05s of being cancelled; stopping without waiting for it"
    ]
    release.set()
    await tasks[0]


async def test_tasks_that_end_are_waited_for_without_a_word(caplog):
    tasks = [asyncio.create_task(asyncio.sleep(3600), name=f"t{i}") for i in range(3)]
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(tasks, logging.getLogger("test"))
    assert all(t.cancelled() for t in tasks) and not caplog.records
