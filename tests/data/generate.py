"""Writes the input files under tests/data/ (committed; rerun after changing tests/kubelet.py).

    python tests/data/generate.py

The scenario, shared by every input shape so their Findings can be compared:
  * kube-hunter in `default`, Pulling count 3 (a series seen at 1 then 3 in the watch stream)
    and its "Successfully pulled" events: 3 pulls, not 6;
  * kube-bench from a mirror with a port, in `ci`: scanner fires whatever the registry;
  * kube-hunter allowlisted in `security`: the scanner rule still fires, the suspicious one not;
  * peirates "already present on machine" in `default`: a cached scanner still runs;
  * an allowed quay.io image in `team-a-web` and nginx:1.25.3 there: no Finding;
  * an unlisted image in `team-a-web`: suspicious;
  * a pull of kube-bench:nope that fails (Failed "Failed to pull image …: not found") in `ci`: an
    attempt all the same, so it fires, and says nothing ran; the Back-off that follows a failed
    hunter pull is an outcome, not a pull;
  * Scheduled/Created/Started events that mention scanner images, and a Failed "Error:
    ErrImagePull" (which names no image): never fire.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kubelet import (  # noqa: E402 - from tests/, put on the path above
    as_events_v1,
    audit_entries,
    image_event,
    other_event,
    with_count,
)

HUNTER = "aquasec/kube-hunter:0.6.8"
BENCH = "registry.example.net:5000/mirrors/aquasec/kube-bench:v0.7.0"


def scenario() -> list[dict]:
    hunter = image_event("Pulling", "default", "hunter-7d9f", HUNTER, count=3, seq=1)
    return [
        other_event(
            "Scheduled",
            "default",
            "hunter-7d9f",
            "Successfully assigned default/hunter-7d9f to worker-1",
            seq=0,
        ),
        hunter,
        image_event("Pulled", "default", "hunter-7d9f", HUNTER, seq=2, t=3),
        image_event("Pulled", "default", "hunter-7d9f", HUNTER, seq=3, t=40),
        image_event("Pulled", "default", "hunter-7d9f", HUNTER, seq=4, t=70),
        other_event(
            "Created",
            "default",
            "hunter-7d9f",
            "Created container hunter (image aquasec/kube-hunter)",
            seq=5,
        ),
        other_event(
            "Started",
            "default",
            "hunter-7d9f",
            'Started container "kube-hunter" pulling image "kube-hunter"',
            seq=6,
        ),
        other_event(
            "BackOff",
            "default",
            "hunter-7d9f",
            'Back-off pulling image "aquasec/kube-hunter:0.6.8"',
            seq=7,
        ),
        other_event(
            "Failed",
            "ci",
            "bench-fail",
            'Failed to pull image "aquasec/kube-bench:nope": rpc error: code = '
            'NotFound desc = failed to resolve reference "docker.io/aquasec/kube-bench:nope": '
            "not found",
            seq=8,
        ),
        other_event("Failed", "ci", "bench-fail", "Error: ErrImagePull", seq=15),
        image_event("Pulling", "ci", "bench-x2k", BENCH, node="worker-2", seq=9, t=100),
        image_event(
            "Pulling",
            "security",
            "audit-hunter-1",
            "aquasec/kube-hunter:0.6.8",
            node="worker-2",
            seq=10,
            t=200,
        ),
        image_event(
            "Present",
            "default",
            "pp-0",
            "bishopfox/peirates:1.1.13",
            node="worker-3",
            seq=11,
            t=300,
        ),
        image_event(
            "Pulling",
            "team-a-web",
            "web-5d8f",
            "quay.io/prometheus/node-exporter:v1.8.1",
            seq=12,
            t=400,
        ),
        image_event(
            "Pulling", "team-a-web", "web-5d8f", "nginx:1.25.3", container="nginx", seq=13, t=401
        ),
        image_event(
            "Pulling",
            "team-a-web",
            "miner-1",
            "docker.io/randomuser/xmrig:latest",
            node="worker-3",
            seq=14,
            t=500,
        ),
    ]


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def main() -> None:
    events = scenario()
    (HERE / "events-list.json").write_text(json.dumps(as_list(events), indent=4) + "\n")
    (HERE / "events-list.yaml").write_text(yaml.safe_dump(as_list(events), sort_keys=False))
    (HERE / "events-v1.json").write_text(
        json.dumps(
            {
                "apiVersion": "events.k8s.io/v1",
                "kind": "EventList",
                "items": [as_events_v1(e) for e in events],
            },
            indent=2,
        )
        + "\n"
    )

    # Watch stream: the hunter series arrives at count 1, then is MODIFIED to 3; every other
    # Event once; one is DELETED at the end (a deletion is no pull); the list is repeated at
    # the end the way a relist after a reconnect delivers it again (no double counting).
    lines = []
    hunter = events[1]
    lines.append({"type": "ADDED", "object": with_count(hunter, 1)})
    for ev in events:
        lines.append({"type": "MODIFIED" if ev is hunter else "ADDED", "object": ev})
    lines.append({"type": "DELETED", "object": events[-1]})
    lines.extend({"type": "ADDED", "object": ev} for ev in events[:-1])
    (HERE / "watch.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (HERE / "bare.jsonl").write_text("".join(json.dumps(ev) + "\n" for ev in events))

    audit = []
    for n, ev in enumerate(events):
        # The hunter series: the kubelet creates once (count 3 stands in for three creates).
        audit.extend(
            audit_entries(
                ev,
                f"a{n:03d}-0000-4000-8000-000000000000",
                node=ev["source"]["host"],
                ip=f"10.0.3.{n + 10}",
            )
        )
    audit.append(
        audit_entries(
            events[1], "bad-0000-4000-8000-000000000000", stages=("ResponseComplete",), code=403
        )[0]
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hunter", "namespace": "default"},
        "spec": {"containers": [{"name": "h", "image": HUNTER}]},
        "reason": "Pulling",
        "message": 'Pulling image "aquasec/kube-hunter"',
        "involvedObject": {"name": "hunter"},
        "firstTimestamp": "2026-11-18T00:00:00Z",
    }
    audit.extend(
        audit_entries(
            pod, "pod-0000-4000-8000-000000000000", resource="pods", stages=("ResponseComplete",)
        )
    )
    audit.extend(
        audit_entries(
            events[1],
            "patch-000-4000-8000-000000000000",
            verb="patch",
            stages=("ResponseComplete",),
        )
    )
    (HERE / "audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in audit))

    bad = [
        'this is not json but mentions Pulling image \\"x\\"',
        '{"truncated": "Pulling image \\"x',
        '["a", "list", "Pulling image \\"x\\""]',
        json.dumps('just a string Pulling image "x"'),
        json.dumps({"type": "ADDED", "object": None, "note": 'Pulling image "x"'}),
        json.dumps(
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "message": 'too old resource version "Pulling image "x""',
                },
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": None,
                "involvedObject": {"name": "p"},
                "note": 'Pulling image "x"',
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": 'Pulling image "x"',
                "involvedObject": None,
            }
        ),
        json.dumps({"kind": "Event", "reason": "Pulling", "message": 'Pulling image "x"'}),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": "Pulling image without quotes",
                "involvedObject": {"name": "p", "namespace": "default"},
                "note": 'image "x"',
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": 'Pulling image "' + "a" * 100_000 + '"',
                "involvedObject": {"name": "p", "namespace": "default"},
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": "x" * 100_000 + ' image "x"',
                "involvedObject": {"name": "p", "namespace": "default"},
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": 'Pulling image "nginx"',
                "involvedObject": {"name": None, "namespace": None},
                "count": None,
                "metadata": None,
                "source": None,
                "series": None,
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": 'Pulling image "Evil/\u001b[31mImage"',
                "metadata": {"uid": "bad-ref"},
                "involvedObject": {"name": "evil-image", "namespace": "default"},
            }
        ),
        json.dumps(
            {
                "kind": "Event",
                "reason": "Pulling",
                "message": 'Pulling image "nginx"',
                "metadata": {"uid": "bad-pod-name"},
                "involvedObject": {"name": "p\u001b]0;pwned\u0007", "namespace": "default"},
            }
        ),
        json.dumps(image_event("Pulling", "default", "after-the-garbage", HUNTER, seq=99)),
    ]
    (HERE / "malformed.jsonl").write_text("\n".join(bad) + "\n")


if __name__ == "__main__":
    main()
