"""Exactness under the faults Kubernetes really throws, against the real API server.

Each test plays the kubelet for a set of bare pods (one Pulling series each; a bare pod is its own
workload, so one Finding per rule), keeps the true count of every series itself, and checks the
Findings against it: scanner pods make two Findings (scanner + not allowlisted), the others one,
and every Finding's count is its series' count.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import time

import pytest
from harness import wait_for

from kubelet import for_create, image_event, other_event

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

    def pull_all(self, pods: list[str], count: int = 1) -> None:
        """One new series per pod, created at once (in parallel, as a node's kubelets would)."""
        events = []
        for pod in pods:
            self.seq += 1
            image = SCANNER_IMAGE if pod.startswith("scan") else OTHER_IMAGE
            events.append(image_event("Pulling", self.ns, pod, image, count=count, seq=self.seq))
        for pod, stored in zip(pods, self.cluster.create_events(events), strict=True):
            self.names[pod], self.counts[pod] = stored["metadata"]["name"], count

    def bump_all(self, by: dict[str, int]) -> None:
        """Raise several series' counts at once."""
        for pod, n in by.items():
            self.counts[pod] += n
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        answers = self.cluster.local.requests(
            [
                (
                    "PATCH",
                    f"/api/v1/namespaces/{self.ns}/events/{self.names[pod]}",
                    {"count": self.counts[pod], "lastTimestamp": now},
                )
                for pod in by
            ]
        )
        assert all(status == 200 for status, _ in answers), answers[:3]

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
            what=lambda: (
                f"exact counts in {self.ns}: expected {self.expected()}, observed {self.observed()}"
            ),
        )
        return time.monotonic() - start


def test_operator_killed_mid_stream_counts_stay_exact(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("kill"))
    rng = random.Random(5)
    op = start_operator("--standalone", "-n", kubelet.ns)
    kubelet.pull_all([f"scan-p{i}" if i % 3 == 0 else f"app-p{i}" for i in range(30)])
    for step in range(80):
        kubelet.bump(rng.choice(list(kubelet.counts)), rng.randint(1, 3))
        if step == 40:
            op.kill()  # SIGKILL in the middle of the stream: no goodbye, no final flush
    # new pulls while it is down
    kubelet.pull_all([f"scan-p{i}" if i % 3 == 0 else f"app-p{i}" for i in range(30, 40)], 2)
    second = start_operator("--standalone", "-n", kubelet.ns)
    kubelet.wait_exact()
    # and it stays exact: once the new operator has written everything it counted, nothing was
    # counted twice (a re-count would be a write after the exact counts were seen)
    wait_for(second.settled, 30, what="the operator to have written all it counted")
    assert kubelet.exact()


def test_api_server_restart_reconnects_and_stays_exact(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("apirestart"))
    op = start_operator("--standalone", "-n", kubelet.ns)
    kubelet.pull_all([f"scan-p{i}" if i % 2 else f"app-p{i}" for i in range(10)])
    kubelet.wait_exact()
    cluster.local.kill_apiserver()
    cluster.local.start_apiserver()  # same ports and etcd: the data is still there
    kubelet.bump_all({pod: 2 for pod in list(kubelet.counts)[:5]})
    kubelet.pull("scan-new", count=3)
    kubelet.wait_exact(timeout=60)  # reconnected and caught up
    assert op.proc.poll() is None


def test_watch_relist_after_410_gone_stays_exact(cluster, start_operator):
    """A real 410: the operator's watch ends normally and resumes from a revision that etcd
    has compacted away (no watch cache in between to serve it), so the API server answers
    410 Gone and the operator lists every Event again."""
    local = cluster.local
    local.kill_apiserver()
    local.extra_api_args = ["--watch-cache=false"]
    local.start_apiserver()
    try:
        kubelet = Kubelet(cluster, cluster.namespace("relist"))
        op = start_operator("--standalone", "-n", kubelet.ns, "--debug", "--watch-timeout", "2")
        kubelet.pull_all([f"scan-p{i}" if i % 2 else f"app-p{i}" for i in range(10)])
        kubelet.wait_exact()
        os.killpg(op.proc.pid, signal.SIGSTOP)  # the operator falls behind...
        try:
            kubelet.bump_all({pod: 1 for pod in kubelet.counts})
            kubelet.pull("scan-late", count=2)
            local.requests(  # ...the cluster moves on...
                [
                    (
                        "POST",
                        f"/api/v1/namespaces/{kubelet.ns}/configmaps",
                        {"metadata": {"name": f"advance-{i}"}},
                    )
                    for i in range(5)
                ]
            )
            local.compact_etcd()  # ...and its resourceVersion is compacted away
            # the server ends its watch (--watch-timeout 2) while it cannot resume it at once
            wait_for(lambda: local.open_watches("events") == 0, 30, what="the Event watch to end")
        finally:
            os.killpg(op.proc.pid, signal.SIGCONT)
        kubelet.bump("scan-late", 1)
        kubelet.wait_exact(timeout=60)
        assert op.said(
            f"Event stream ({kubelet.ns}): resourceVersion expired (410 Gone); listing again"
        )
        assert not op.said("detection engine stopped")
    finally:
        local.kill_apiserver()
        local.extra_api_args = []
        local.start_apiserver()


def test_finding_deleted_by_a_user_is_recreated_with_the_full_count(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("deleted"))
    start_operator("--standalone", "-n", kubelet.ns)
    kubelet.pull("app-p1", count=3)
    kubelet.wait_exact()
    (name,) = cluster.findings(kubelet.ns)
    cluster.kubectl("delete", "finding", name, "-n", kubelet.ns)
    assert cluster.findings(kubelet.ns) == {}
    kubelet.bump("app-p1", 1)  # the next pull of that series
    kubelet.wait_exact()  # back, with every pull its Event records: 4
    assert list(cluster.findings(kubelet.ns)) == [name]


def expire_lease(cluster, priority: int) -> None:
    """Move the lease of the peer with ``priority`` back by its lifetime and more, as if it had
    not renewed it since (what a dead replica's lease looks like once it runs out): the others
    see the change at once and judge it dead by kopf's rule."""
    obj = json.loads(cluster.kubectl("get", "clusterkopfpeering", "pullwatch", "-o", "json").stdout)
    ((peer, info),) = [
        (k, v) for k, v in (obj.get("status") or {}).items() if v and v["priority"] == priority
    ]
    seen = datetime.datetime.fromisoformat(info["lastseen"])
    past = seen - datetime.timedelta(seconds=2 * int(info.get("lifetime", 60)))
    cluster.kubectl(
        "patch",
        "clusterkopfpeering",
        "pullwatch",
        "--type=merge",
        "-p",
        json.dumps({"status": {peer: {**info, "lastseen": past.isoformat()}}}),
    )


def test_two_replicas_one_stands_by_and_takes_over(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("replicas"))
    active = start_operator("--priority", "200", "-n", kubelet.ns)
    wait_for(
        lambda: "Resuming operations" in active.logs(),
        30,
        what="the first replica to become active",
    )
    standby = start_operator("--priority", "100", "-n", kubelet.ns)
    # kopf starts every replica paused until peering says it may run; a standby never resumes.
    kubelet.pull_all([f"scan-p{i}" if i % 2 else f"app-p{i}" for i in range(12)])
    kubelet.bump_all({pod: 2 for pod in list(kubelet.counts)[:6]})
    kubelet.wait_exact()
    wait_for(active.settled, 30, what="the active replica to have written all it counted")
    assert kubelet.exact()  # not doubled by the second replica
    assert standby.metric("pullwatch_active") == 0
    assert standby.metric("pullwatch_api_writes_total", verb="create", outcome="ok") == 0
    assert "Resuming operations" not in standby.logs()  # it stood by the whole time
    peers = json.loads(
        cluster.kubectl("get", "clusterkopfpeering", "pullwatch", "-o", "json").stdout
    )["status"]
    assert sorted(p["priority"] for p in peers.values() if p)[-2:] == [100, 200]
    active.kill()
    kubelet.bump_all({pod: 1 for pod in list(kubelet.counts)[6:]})
    kubelet.pull("scan-after", count=2)
    expire_lease(cluster, 200)  # instead of waiting out its 15 s
    kubelet.wait_exact(timeout=60)
    assert "Resuming operations" in standby.logs(), standby.logs()[-2000:]


# A storm of 6,000 Events around 300 pulls in the suite (the operator skips the noise by its bytes:
# its memory does not grow with it); 100,000 with PULLWATCH_HEAVY=1, and bench/ for the rates.
@pytest.mark.parametrize("total, pulls", [(6_000, 300)] + ([(100_000, 1500)] if HEAVY else []))
def test_event_storm_exact_and_memory_bounded(cluster, start_operator, total, pulls):
    kubelet = Kubelet(cluster, cluster.namespace("storm"))
    op = start_operator("--standalone", "-n", kubelet.ns)
    rng = random.Random(7)
    pods = [f"scan-p{i}" if i % 4 == 0 else f"app-p{i}" for i in range(pulls // 3)]
    pull_at = set(rng.sample(range(total), pulls))
    events = f"/api/v1/namespaces/{kubelet.ns}/events"
    calls, lanes = [], []  # the storm as the kubelets send it: every series' changes in order
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(total):
        if i in pull_at:
            pod = rng.choice(pods)
            if pod in kubelet.counts:
                kubelet.counts[pod] += 1
                patch = {"count": kubelet.counts[pod], "lastTimestamp": now}
                calls.append(("PATCH", f"{events}/{kubelet.names[pod]}", patch))
            else:
                image = SCANNER_IMAGE if pod.startswith("scan") else OTHER_IMAGE
                ev = for_create(image_event("Pulling", kubelet.ns, pod, image, seq=i))
                kubelet.names[pod], kubelet.counts[pod] = ev["metadata"]["name"], 1
                calls.append(("POST", events, ev))
            lanes.append(pod)
        else:
            reason = rng.choice(["Scheduled", "Created", "Started", "Killing"])
            noise = other_event(reason, kubelet.ns, f"noise-{i % 500}", "Started container", seq=i)
            calls.append(("POST", events, for_create(noise)))
            lanes.append(i)
    started = time.monotonic()
    answers = cluster.local.requests(calls, workers=6, lanes=lanes)
    rate = total / (time.monotonic() - started)
    assert all(status in (200, 201) for status, _ in answers), answers[:3]
    kubelet.wait_exact(timeout=120)
    rss = op.peak_rss_mb()
    print(
        f"\nstorm: {total} Events at {rate:.0f}/s, {len(kubelet.expected())} Findings exact, "
        f"operator peak RSS {rss:.0f} MB"
    )
    assert rss < 150


def test_malformed_events_are_skipped_logged_once_and_detection_goes_on(cluster, start_operator):
    kubelet = Kubelet(cluster, cluster.namespace("malformed"))
    op = start_operator("--standalone", "-n", kubelet.ns)
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
