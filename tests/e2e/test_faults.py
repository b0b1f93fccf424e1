"""Exactness under the faults Kubernetes really throws, against the real API server.

Each test plays the kubelet for a set of bare pods (one Pulling series each; a bare pod is its own
workload, so one Finding per rule), keeps the true count of every series itself, and checks the
Findings against it: scanner pods make two Findings (scanner + not allowlisted), the others one,
and every Finding's count is its series' count.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from harness import wait_for

from kubelet import image_event, other_event

SCANNER_IMAGE, OTHER_IMAGE = "aquasec/kube-hunter:0.6.8", "evil/miner:1"
HEAVY = os.environ.get("PULLWATCH_HEAVY") == "1"


class Kubelet:
    """Plays one namespace's kubelet and remembers the truth."""

    def __init__(self, cluster, ns: str):
        self.cluster, self.ns = cluster, ns
        self.names: dict[str, str] = {}  # pod -> Event name
        self.counts: dict[str, int] = {}  # pod -> the series' count
        self.seq = 0

    def pull(self, pod: str, count: int = 1) -> None:
        self.seq += 1
        image = SCANNER_IMAGE if pod.startswith("scan") else OTHER_IMAGE
        stored = self.cluster.create_event(
            image_event("Pulling", self.ns, pod, image, count=count, seq=self.seq)
        )
        self.names[pod], self.counts[pod] = stored["metadata"]["name"], count

    def bump(self, pod: str, by: int = 1) -> None:
        self.counts[pod] += by
        self.cluster.set_count(self.ns, self.names[pod], self.counts[pod])

    def expected(self) -> dict[tuple[str, str], int]:
        out = {}
        for pod, n in self.counts.items():
            out[(pod, "kubernetes-suspicious-image-pulling")] = n
            if pod.startswith("scan"):
                out[(pod, "kubernetes-scanner-image-pulling")] = n
        return out

    def observed(self) -> dict[tuple[str, str], int]:
        return {
            (f["spec"]["workload"]["name"], f["spec"]["rule"]): (f.get("status") or {}).get(
                "count", 0
            )
            for f in self.cluster.findings(self.ns).values()
        }

    def exact(self) -> bool:
        return self.observed() == self.expected()

    def wait_exact(self, timeout: float = 30) -> float:
        start = time.monotonic()
        wait_for(
            self.exact,
            timeout,
            interval=0.3,
            what=f"exact counts in {self.ns}: expected {self.expected()}, observed {self.observed()}",
        )
        return time.monotonic() - start


def test_operator_killed_mid_stream_counts_stay_exact(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("kill"))
    rng = random.Random(5)
    op = start_operator("--standalone")
    for i in range(30):
        kubelet.pull(f"scan-p{i}" if i % 3 == 0 else f"app-p{i}")
    for step in range(80):
        kubelet.bump(rng.choice(list(kubelet.counts)), rng.randint(1, 3))
        if step == 40:
            op.kill()  # SIGKILL in the middle of the stream: no goodbye, no final flush
    for i in range(30, 40):  # new pulls while it is down
        kubelet.pull(f"scan-p{i}" if i % 3 == 0 else f"app-p{i}", count=2)
    start_operator("--standalone")
    kubelet.wait_exact()
    time.sleep(1.5)  # and it stays exact: nothing re-counted by late writes
    assert kubelet.exact()


def test_api_server_restart_reconnects_and_stays_exact(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("apirestart"))
    op = start_operator("--standalone")
    for i in range(10):
        kubelet.pull(f"scan-p{i}" if i % 2 else f"app-p{i}")
    kubelet.wait_exact()
    cluster.local.kill_apiserver()
    time.sleep(2)
    cluster.local.start_apiserver()  # same ports and etcd: the data is still there
    for pod in list(kubelet.counts)[:5]:
        kubelet.bump(pod, 2)
    kubelet.pull("scan-new", count=3)
    took = kubelet.wait_exact(timeout=45)
    assert op.proc.poll() is None
    assert took < 30, f"reconnected and caught up in {took:.1f}s"


def test_watch_relist_after_410_gone_stays_exact(cluster, start_operator):
    """A real 410: the operator's watch ends normally and resumes from a revision that etcd
    has compacted away (no watch cache in between to serve it), so the API server answers
    410 Gone and kopf re-lists every Event."""
    local = cluster.local
    local.kill_apiserver()
    local.extra_api_args = ["--watch-cache=false"]
    local.start_apiserver()
    try:
        kubelet = Kubelet(cluster, cluster.namespace("relist"))
        op = start_operator("--standalone", "--debug", "--watch-timeout", "2")
        for i in range(10):
            kubelet.pull(f"scan-p{i}" if i % 2 else f"app-p{i}")
        kubelet.wait_exact()
        os.killpg(op.proc.pid, signal.SIGSTOP)  # the operator falls behind...
        try:
            for pod in list(kubelet.counts):
                kubelet.bump(pod, 1)
            kubelet.pull("scan-late", count=2)
            for i in range(5):  # ...the cluster moves on...
                local.request(
                    "POST",
                    f"/api/v1/namespaces/{kubelet.ns}/configmaps",
                    {"metadata": {"name": f"advance-{i}"}},
                )
            local.compact_etcd()  # ...and its resourceVersion is compacted away
            time.sleep(3)  # its watch times out server-side meanwhile
        finally:
            os.killpg(op.proc.pid, signal.SIGCONT)
        kubelet.bump("scan-late", 1)
        kubelet.wait_exact(timeout=45)
        assert (
            "Event stream (all namespaces): resourceVersion expired (410 Gone); listing again"
            in op.logs()
        )
        assert "detection engine stopped" not in op.logs()
    finally:
        local.kill_apiserver()
        local.extra_api_args = []
        local.start_apiserver()


def test_finding_deleted_by_a_user_is_recreated_with_the_full_count(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("deleted"))
    start_operator("--standalone")
    kubelet.pull("app-p1", count=3)
    kubelet.wait_exact()
    (name,) = cluster.findings(kubelet.ns)
    cluster.kubectl("delete", "finding", name, "-n", kubelet.ns)
    assert cluster.findings(kubelet.ns) == {}
    kubelet.bump("app-p1", 1)  # the next pull of that series
    kubelet.wait_exact()  # back, with every pull its Event records: 4
    assert list(cluster.findings(kubelet.ns)) == [name]


def test_two_replicas_one_stands_by_and_takes_over(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("replicas"))
    active = start_operator("--priority", "200")
    wait_for(
        lambda: "Resuming operations" in active.logs(),
        20,
        what="the first replica to become active",
    )
    standby = start_operator("--priority", "100")
    # kopf starts every replica paused until peering says it may run; a standby never resumes.
    for i in range(12):
        kubelet.pull(f"scan-p{i}" if i % 2 else f"app-p{i}")
    for pod in list(kubelet.counts)[:6]:
        kubelet.bump(pod, 2)
    kubelet.wait_exact()
    time.sleep(1)
    assert kubelet.exact()  # not doubled by the second replica
    assert "Resuming operations" not in standby.logs()  # it stood by the whole time
    peers = json.loads(
        cluster.kubectl("get", "clusterkopfpeering", "pullwatch", "-o", "json").stdout
    )["status"]
    assert sorted(p["priority"] for p in peers.values() if p)[-2:] == [100, 200]
    active.kill()
    for pod in list(kubelet.counts)[6:]:
        kubelet.bump(pod, 1)
    kubelet.pull("scan-after", count=2)
    took = kubelet.wait_exact(timeout=60)  # the dead peer's lease (15 s) must expire first
    assert "Resuming operations" in standby.logs(), standby.logs()[-2000:]
    assert took < 45


@pytest.mark.parametrize("total, pulls", [(20_000, 300)] + ([(100_000, 1500)] if HEAVY else []))
def test_event_storm_exact_and_memory_bounded(cluster, start_operator, total, pulls):
    kubelet = Kubelet(cluster, cluster.namespace("storm"))
    op = start_operator("--standalone")
    rng = random.Random(7)
    pods = [f"scan-p{i}" if i % 4 == 0 else f"app-p{i}" for i in range(pulls // 3)]
    pull_at = set(rng.sample(range(total), pulls))
    created = 0
    started = time.monotonic()
    for i in range(total):
        if i in pull_at:
            pod = rng.choice(pods)
            if pod in kubelet.counts:
                kubelet.bump(pod)
            else:
                kubelet.pull(pod)
        else:
            cluster.create_event(
                other_event(
                    rng.choice(["Scheduled", "Created", "Started", "Killing"]),
                    kubelet.ns,
                    f"noise-{i % 500}",
                    "Started container",
                    seq=i,
                )
            )
        created += 1
    rate = created / (time.monotonic() - started)
    kubelet.wait_exact(timeout=120)
    rss = op.peak_rss_mb()
    print(
        f"\nstorm: {created} Events at {rate:.0f}/s, {len(kubelet.expected())} Findings exact, operator peak RSS {rss:.0f} MB"
    )
    assert rss < 150


def test_malformed_events_are_skipped_logged_once_and_detection_goes_on(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("malformed"))
    op = start_operator("--standalone")
    ns = kubelet.ns
    bad = []
    for i in range(3):  # the same problem three times: logged once
        ev = image_event("Pulling", ns, f"noquote-{i}", "x", seq=100 + i)
        ev["message"] = (
            'Pulling image "' + "x" * 100_000
        )  # a 100 kB message, its quote never closed
        bad.append(ev)
    ev = image_event("Pulling", ns, "empty", "x", seq=200)
    ev["message"] = ""
    bad.append(ev)
    ev = image_event("Pulling", ns, "noinvolved", "x", seq=201)
    ev["involvedObject"] = None
    bad.append(ev)
    ev = image_event("Pulling", ns, "noname", "x", seq=202)
    ev["involvedObject"] = {"kind": "Pod", "namespace": ns}
    bad.append(ev)
    accepted = 0
    for ev in bad:
        from kubelet import for_create

        status, _ = cluster.local.request("POST", f"/api/v1/namespaces/{ns}/events", for_create(ev))
        accepted += status == 201
    assert accepted >= 3  # the API server stores at least the 100 kB ones
    kubelet.pull("scan-after-garbage")
    kubelet.wait_exact()
    assert op.proc.poll() is None
    logs = op.logs()
    assert logs.count("image event with no quoted image in its message") == 1
