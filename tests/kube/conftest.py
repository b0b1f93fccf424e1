"""Unit tests of kube/ against a fake API (fakeapi.py): each test is a coroutine run on a loop of
its own (``asyncio.run``), with the fake served on loopback for that test only."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests here (no asyncio plugin needed): one event loop per test."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {name: pyfuncitem.funcargs[name] for name in names}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), 120))
        return True
    return None
