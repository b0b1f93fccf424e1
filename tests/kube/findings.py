"""Findings as the operator makes them, for the writer's and custody's unit tests."""

from __future__ import annotations

from typing import Any

from fakeapi import Clock

from kubelet import image_event
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.detector import Detector
from pullwatch.core.pulls import decode_event
from pullwatch.kube.health import Health
from pullwatch.kube.writer import FindingWriter, path_of

SCANNER_IMAGE = "aquasec/kube-hunter:0.6.8"


class Setup:
    """A detector, a writer on an injected clock, and the pulls the test makes."""

    def __init__(self, api: Any, **writer_args: Any):
        self.clock = Clock()
        self.detector = Detector(Allowlist())
        self.health = Health(clock=self.clock)
        writer_args.setdefault("flush_interval", 0.25)
        writer_args.setdefault("status_interval", 2.0)
        self.writer = FindingWriter(
            api, self.detector, self.health, clock=self.clock, **writer_args
        )
        self.seq = 0

    def pull(
        self,
        namespace: str,
        pod: str,
        image: str = "evil/miner:1",
        count: int = 1,
        mark: bool = True,
        repeat: bool = False,
    ) -> str:
        """A kubelet's pull Event counted (``repeat``: the last Event again, its count raised);
        the name of the (first) Finding it lands in."""
        if not repeat:
            self.seq += 1
        ev = image_event("Pulling", namespace, pod, image, count=count, seq=self.seq)
        return self.count(ev, mark)

    def count(self, ev: dict[str, Any], mark: bool = True) -> str:
        detections = self.detector.observe(decode_event(ev), minute=29_000_000)
        for det in detections:
            if mark:
                self.writer.mark(det.state.name)
        return detections[0].state.name

    def path(self, name: str) -> str:
        return path_of(self.detector.states[name].namespace, name)

    async def write(self, after: float = 0.3) -> list[str]:
        """Move the clock on, start what is due and wait for it; the names started."""
        self.clock.t += after
        started = self.writer.pump()
        await self.writer.settle()
        return started
