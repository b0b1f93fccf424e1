"""The ports the end-to-end tests give their servers (hack/localcluster.py free_port).

An operator's liveness probe once failed to bind a port that bind(0) had handed out: in the window
between the allocator's release and the server's bind, something else on the machine took it.
"""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from paths import ROOT

TAKE = """
import sys
sys.path.insert(0, {hack!r})
import localcluster
print(" ".join(str(localcluster.free_port()) for _ in range(100)), flush=True)  # < its 128 held
sys.stdin.read()  # hold the reservations until the test has read both lists
"""


def test_two_processes_are_never_handed_the_same_port_and_none_is_ephemeral():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    sys.path.insert(0, str(ROOT / "hack"))
    import localcluster

    if low < localcluster.LOWEST_PORT + 1000:
        pytest.skip(f"the ephemeral range starts at {low}: free_port falls back to bind(0)")
    code = TAKE.format(hack=str(ROOT / "hack"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        lists = [set(map(int, p.stdout.readline().split())) for p in procs]
        assert all(lists), [p.stderr.read() for p in procs if p.poll() is not None]
        with socket.socket() as s:  # reserved for its process, and free: a server can bind it
            s.bind(("127.0.0.1", min(lists[0])))
    finally:
        for p in procs:
            p.communicate("", timeout=60)
    assert all(len(ports) == 100 for ports in lists), "a process was given one port twice"
    assert not lists[0] & lists[1], "two processes were given the same port"
    assert max(lists[0] | lists[1]) < low, "a port from the ephemeral range"
