"""kube/waiting.py: a stop that cannot hang on a task that will not end."""

from __future__ import annotations

import asyncio
import logging

from pullwatch.kube.waiting import cancel_and_wait


async def test_a_task_that_swallows_its_cancel_is_named_returned_and_the_stop_goes_on(caplog):
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
    until = asyncio.get_running_loop().time() + 0.05
    with caplog.at_level(logging.ERROR):
        pending = await cancel_and_wait(tasks, logging.getLogger("test"), until)
    assert pending == {tasks[0]} and not tasks[0].done()
    assert tasks[1].cancelled() and isinstance(tasks[2].exception(), ValueError)
    assert [r.getMessage() for r in caplog.records] == [
        "did not stop when cancelled (a bug in pullwatch), the stop goes on: deaf"
    ]
    release.set()
    await tasks[0]


async def test_tasks_that_end_are_waited_for_without_a_word(caplog):
    tasks = [asyncio.create_task(asyncio.sleep(3600), name=f"t{i}") for i in range(3)]
    until = asyncio.get_running_loop().time() + 3600  # they end at once: never waited for
    with caplog.at_level(logging.ERROR):
        pending = await cancel_and_wait(tasks, logging.getLogger("test"), until)
    assert not pending and all(t.cancelled() for t in tasks) and not caplog.records
