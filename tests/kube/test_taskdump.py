"""kube/taskdump.py: SIGUSR1 tells where an operator waits, and never ends it."""

from __future__ import annotations

import signal
import subprocess
import sys

from paths import ROOT

OUTSIDE_THE_LOOP = """
import asyncio, logging, os, signal
from pullwatch.kube import taskdump
taskdump.install_fallback()
os.kill(os.getpid(), signal.SIGUSR1)  # before the loop runs
async def operator():
    taskdump.install(logging.getLogger())
asyncio.run(operator())  # a loop came and went, and its handler with it (SIG_DFL: the end)
{again}
os.kill(os.getpid(), signal.SIGUSR1)  # after it
print("still running")
"""


def run(again: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", OUTSIDE_THE_LOOP.format(again=again)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )


def test_sigusr1_before_and_after_the_event_loop_writes_stacks_and_does_not_end_the_process():
    r = run("taskdump.install_fallback()")
    assert r.returncode == 0 and r.stdout == "still running\n", (r.returncode, r.stderr)
    assert r.stderr.count("Current thread") == 2, r.stderr


def test_without_the_fallback_after_the_loop_sigusr1_ends_the_process():
    """What install_fallback after kopf.run is for."""
    r = run("")
    assert r.returncode == -signal.SIGUSR1 and "still running" not in r.stdout, (
        r.returncode,
        r.stderr,
    )
