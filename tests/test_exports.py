"""Managed clusters' audit exports: each shape unwraps to exactly the entries of the plain log.

Shapes, from the providers' documentation and published samples:

* AKS: records as Azure Monitor writes them (category, operationName, properties.log/stream/
  pod/containerID, resourceId, time). tests/data/exports/aks-sumologic-docs.jsonl holds the
  kube-audit, kube-audit-admin and kube-apiserver samples published in Sumo Logic's AKS
  integration docs (github.com/SumoLogic/sumologic-documentation,
  docs/integrations/microsoft-azure/kubernetes.md; the kube-audit-admin one abridged of its
  managedFields). Event Hubs wrap records in {"records": [...]} (Azure Monitor, "Stream Azure
  resource logs to Event Hubs": `CROSS APPLY GetArrayElements(e.records)`; Falco's k8saudit-aks
  plugin reads the same envelope: falcosecurity/plugins, shared/go/azure/eventhub). A storage
  account writes one record per line. properties.log is a string in most containers and an
  object in others (Azure/AKS#4092), `/` may be escaped `\\/`, and AKS cuts it at 16 KiB
  (Azure/AKS#4635).
* EKS: `aws logs filter-log-events` output (CloudWatch Logs API FilterLogEvents: events[] of
  logStreamName, timestamp, message, ingestionTime, eventId; searchedLogStreams; nextToken) and
  subscription messages (CloudWatch Logs "Validate the flow of log events": owner, logGroup,
  logStream, subscriptionFilters, messageType DATA_MESSAGE with logEvents[] of id, timestamp,
  message; CONTROL_MESSAGE "mainly for checking if the destination is reachable", whose
  published form is {"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"",
  "logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":…,"message":"CWL
  CONTROL MESSAGE: Checking health of destination Firehose."}]}), gzip'd by CloudWatch, the
  gzip members back to back in the S3 objects Firehose writes.
* GKE: a Cloud Audit LogEntry as `gcloud logging read --format=json` prints it (an array).
  tests/data/exports/gke-binauthz-denied.json is the LogEntry of a pod create refused by Binary
  Authorization, published in a Google Cloud Skills Boost lab write-up (GSP479, "Google
  Kubernetes Engine Security: Binary Authorization"; two webhook labels dropped).
"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubelet import audit_entries, image_event, with_count
from paths import DATA
from pullwatch.core import audit, exports
from pullwatch.core.audit import AuditDeduper, audit_observations
from pullwatch.core.observations import ActorChange, Intent
from pullwatch.scan.records import ReadStats, iter_objects
from pullwatch.scan.sources import open_path

EXPORTS = DATA / "exports"
PLAIN = DATA / "audit.jsonl"
ALLOW = str(DATA / "allowed-images.yaml")
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")


def plain_entries():
    return [json.loads(line) for line in PLAIN.read_text().splitlines() if line.strip()]


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


# -- AKS --------------------------------------------------------------------------------------


def aks_samples():
    return [json.loads(line) for line in (EXPORTS / "aks-sumologic-docs.jsonl").open()]


def test_aks_published_records_unwrap_to_their_entries():
    kube_audit, admin, apiserver = aks_samples()
    for record in (kube_audit, admin):
        ((what, entry),) = exports.unwrap(record)
        assert what == "audit" and entry == json.loads(record["properties"]["log"])
        assert audit_observations(entry, AuditDeduper()) == []  # a lease, a SubjectAccessReview
    assert list(exports.unwrap(apiserver)) == [
        ("skip", "AKS log of another category (not an audit log)")
    ]
    assert exports.unwrap({"records": aks_samples()}).__next__()[1]["auditID"] == (
        "10e60f03-0635-429b-b324-315166f249cc"
    )


def test_aks_log_as_an_object_with_escaped_slashes_and_cut_short():
    entry = plain_entries()[1]
    as_object = {"category": "kube-audit-admin", "properties": {"log": entry}}
    escaped = {
        "category": "kube-audit",
        "properties": {"log": compact(entry).replace("/", "\\/") + "\n"},
    }
    assert list(exports.unwrap(as_object)) == list(exports.unwrap(escaped)) == [("audit", entry)]
    text = compact(entry)
    cut = {"category": "kube-audit", "properties": {"log": text[: len(text) // 2]}}
    assert list(exports.unwrap(cut)) == [
        ("damage", "AKS kube-audit record whose properties.log is not JSON (cut short?)")
    ]
    assert list(exports.unwrap({"category": "kube-audit", "properties": {}})) == [
        ("damage", "AKS kube-audit record without properties.log")
    ]


# -- EKS --------------------------------------------------------------------------------------


def log_event(entry, i, stream="kube-apiserver-audit-0a1b2c"):
    return {
        "logStreamName": stream,
        "timestamp": 1795000000000 + i,
        "message": compact(entry),
        "ingestionTime": 1795000000400 + i,
        "eventId": f"3783{i:052d}",
    }


CONTROL = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [
        {
            "id": "",
            "timestamp": 1510109208016,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose.",
        }
    ],
}


def data_message(entries, first=0):
    return {
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": "/aws/eks/prod/cluster",
        "logStream": "kube-apiserver-audit-0a1b2c",
        "subscriptionFilters": ["to-firehose"],
        "logEvents": [
            {"id": f"3783{first + i:052d}", "timestamp": 1795000000000 + i, "message": compact(e)}
            for i, e in enumerate(entries)
        ],
    }


def test_cloudwatch_events_and_messages():
    entries = plain_entries()[:3]
    page = {
        "events": [log_event(e, i) for i, e in enumerate(entries)],
        "searchedLogStreams": [],
        "nextToken": "abc",
    }
    assert [v for _, v in exports.unwrap(page)] == entries
    assert [v for _, v in exports.unwrap(data_message(entries))] == entries
    assert list(exports.unwrap(CONTROL)) == [
        ("skip", "CloudWatch Logs control message (no logs in it)")
    ]
    klog = {
        **log_event({}, 9, stream="kube-apiserver-0a1b2c"),
        "message": "I0624 20:14:59.855669 1 wrap.go:47] GET /healthz: (1ms) 200",
    }
    assert list(exports.unwrap(klog)) == [
        ("skip", "CloudWatch log event that is not JSON (another log stream)")
    ]
    broken = {**log_event({}, 9), "message": "not json"}
    assert list(exports.unwrap(broken)) == [
        ("damage", "CloudWatch audit log event that is not JSON")
    ]


# -- GKE --------------------------------------------------------------------------------------


def test_gke_published_entry_is_a_refused_pod_create():
    (log_entry,) = json.loads((EXPORTS / "gke-binauthz-denied.json").read_text())
    ((what, entry),) = exports.unwrap(log_entry)
    assert what == "audit"
    assert entry["verb"] == "create" and entry["auditID"] == "5a3a3498-e69a-47f5-a02d-67bcc8f9efae"
    assert entry["objectRef"] == {
        "resource": "pods",
        "namespace": "default",
        "name": "nginx",
        "apiVersion": "v1",
    }
    assert entry["user"] == {"username": "student-01-03aeec6f7a0c@qwiklabs.net"}
    assert entry["sourceIPs"] == ["34.143.180.117"]
    assert entry["userAgent"] == "kubectl/v1.28.9 (linux/amd64) kubernetes/587f5fe"
    assert entry["requestObject"]["kind"] == "Pod" and "@type" not in entry["requestObject"]
    assert entry["responseStatus"] == {"code": 400}  # gRPC 3, INVALID_ARGUMENT
    assert entry["requestURI"] == "/api/v1/namespaces/default/pods/nginx"
    assert audit_observations(entry, AuditDeduper()) == []  # refused: nothing was created
    # the same request, admitted: the person's intent to run the image
    admitted = json.loads(json.dumps(log_entry))
    admitted["protoPayload"]["status"] = {}
    admitted["protoPayload"].pop("response")
    ((_, entry),) = exports.unwrap(admitted)
    intent, change = audit_observations(entry, AuditDeduper())
    assert isinstance(intent, Intent) and isinstance(change, ActorChange)
    assert intent.image == "gcr.io/qwiklabs-gcp-04-e98db2f05087/nginx:latest"
    assert intent.actor.user == "student-01-03aeec6f7a0c@qwiklabs.net"


def test_gke_other_services_and_damage():
    other = {
        "protoPayload": {
            "serviceName": "container.googleapis.com",
            "methodName": "google.container.v1.ClusterManager.GetCluster",
        }
    }
    assert list(exports.unwrap(other)) == [("skip", "Cloud Audit log entry of another service")]
    broken = {
        "protoPayload": {
            "serviceName": "k8s.io",
            "methodName": "io.k8s.core.v1.pods.create",
            "resourceName": "pods",
        },
        "insertId": "x",
    }
    assert list(exports.unwrap(broken)) == [
        ("damage", "GKE audit log entry whose resourceName cannot be read")
    ]


def to_gke(entry):
    """The LogEntry GKE writes for an audit entry (written independently of exports.py)."""
    ref = entry["objectRef"]
    group = ref.get("apiGroup") or "core"
    path = [group, ref["apiVersion"], "namespaces", ref["namespace"], ref["resource"]]
    path += [ref["name"]] if ref.get("name") else []
    path += [ref["subresource"]] if ref.get("subresource") else []
    method = ".".join(
        [
            "io.k8s",
            group.removesuffix(".k8s.io"),
            ref["apiVersion"],
            ref["resource"],
            *([ref["subresource"]] if ref.get("subresource") else []),
            entry["verb"],
        ]
    )
    payload = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io",
        "methodName": method,
        "resourceName": "/".join(path),
        "authenticationInfo": {"principalEmail": entry["user"]["username"]},
        "requestMetadata": {
            "callerIp": entry["sourceIPs"][0],
            "callerSuppliedUserAgent": entry["userAgent"],
        },
        "status": {},
    }
    if "requestObject" in entry:
        payload["request"] = {"@type": "core.k8s.io/v1.Event", **entry["requestObject"]}
    if "responseObject" in entry:
        payload["response"] = {"@type": "core.k8s.io/v1.Event", **entry["responseObject"]}
    return {
        "protoPayload": payload,
        "insertId": entry["auditID"] + "-i",
        "operation": {"id": entry["auditID"], "producer": "k8s.io", "first": True, "last": True},
        "timestamp": entry["requestReceivedTimestamp"],
        "logName": "projects/p/logs/x",
    }


def as_gke_keeps_it(entry):
    """What survives in a GKE LogEntry: no groups, one source IP, one stage."""
    kept = {
        k: v
        for k, v in entry.items()
        if k not in ("level", "stage", "requestURI", "stageTimestamp", "responseStatus")
    }
    kept["user"] = {"username": entry["user"]["username"]}
    kept["sourceIPs"] = entry["sourceIPs"][:1]
    return kept


# -- reader level: every shape yields the plain log's entries ------------------------------------


def corpus():
    """Observations among the noise an audit log is mostly made of, more than the readers'
    sample, so that their byte pre-filters decide."""
    out = []
    ev = image_event("Pulling", "shop", "hunter", "aquasec/kube-hunter:0.6.8")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hunter", "namespace": "shop"},
        "spec": {"containers": [{"name": "hunter", "image": "aquasec/kube-hunter:0.6.8"}]},
    }
    for i in range(30):
        noise = audit_entries(
            ev, f"n{i}", stages=("ResponseComplete",), verb="get", resource="pods"
        )[0]
        noise.pop("requestObject"), noise.pop("responseObject")
        lease = {
            **noise,
            "auditID": f"l{i}",
            "verb": "update",
            "objectRef": {
                "resource": "leases",
                "namespace": "kube-system",
                "name": "kube-controller-manager",
                "apiGroup": "coordination.k8s.io",
                "apiVersion": "v1",
            },
        }
        out += [noise, lease]
        if i % 5 == 0:
            create = audit_entries(ev, f"p{i}", stages=("ResponseComplete",))[0]
            patch = audit_entries(
                with_count(ev, i + 2), f"q{i}", stages=("ResponseComplete",), verb="patch"
            )[0]
            patch["requestObject"] = {"count": i + 2}
            patch.pop("responseObject")  # Request level: no image text in it
            pod_create = {
                **create,
                "auditID": f"c{i}",
                "user": {"username": "alice"},
                "objectRef": {
                    "resource": "pods",
                    "namespace": "shop",
                    "name": "hunter",
                    "apiVersion": "v1",
                },
                "requestObject": pod,
                "responseObject": pod,
            }
            scale = {
                **noise,
                "auditID": f"s{i}",
                "verb": "patch",
                "user": {"username": "system:serviceaccount:ci:deployer"},
                "objectRef": {
                    "resource": "deployments",
                    "namespace": "shop",
                    "name": "web",
                    "apiGroup": "apps",
                    "apiVersion": "v1",
                    "subresource": "scale",
                },
            }
            out += [create, patch, pod_create, scale]
    return out


def write_shapes(tmp_path, entries):
    """Every export shape of the same entries, and the plain log."""
    paths = {"plain": tmp_path / "audit.log"}
    paths["plain"].write_text("".join(compact(e) + "\n" for e in entries))
    records = [
        {
            "time": e["requestReceivedTimestamp"],
            "category": "kube-audit",
            "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
            "resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/"
            "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/PROD",
            "properties": {
                "log": compact(e) + "\n",
                "stream": "stdout",
                "pod": "kube-apiserver-5c5b9c8d4-abcde",
                "containerID": "c",
            },
        }
        for e in entries
    ]
    other = {"category": "kube-apiserver", "properties": {"log": "I0624 20:14:59 wrap.go:47] GET"}}
    paths["aks-storage"] = tmp_path / "PT1H.json"
    paths["aks-storage"].write_text("".join(compact(r) + "\n" for r in records))
    objects = [{**r, "properties": {**r["properties"], "log": e}} for r, e in zip(records, entries)]
    paths["aks-storage-objects"] = tmp_path / "objects.json"
    paths["aks-storage-objects"].write_text("".join(json.dumps(r) + "\n" for r in objects))
    batches = [records[i : i + 7] + [other] for i in range(0, len(records), 7)]
    paths["eventhub-lines"] = tmp_path / "eventhub.jsonl"
    paths["eventhub-lines"].write_text("".join(compact({"records": b}) + "\n" for b in batches))
    paths["eventhub-indented"] = tmp_path / "eventhub.json"
    paths["eventhub-indented"].write_text(json.dumps({"records": records}, indent=2))
    events = [log_event(e, i) for i, e in enumerate(entries)]
    half = len(events) // 2
    paths["eks-filter-log-events"] = tmp_path / "filter.json"
    paths["eks-filter-log-events"].write_text(  # two pages, as two runs with --next-token print
        json.dumps({"events": events[:half], "searchedLogStreams": [], "nextToken": "t"}, indent=4)
        + "\n"
        + json.dumps({"events": events[half:], "searchedLogStreams": []}, indent=4)
        + "\n"
    )
    paths["eks-firehose"] = tmp_path / "firehose-s3-object.gz"
    members = [gzip.compress(compact(CONTROL).encode())]
    members += [
        gzip.compress(compact(data_message(entries[i : i + 9], i)).encode())
        for i in range(0, len(entries), 9)
    ]
    paths["eks-firehose"].write_bytes(b"".join(members))
    return paths


def read_entries(path):
    stats = ReadStats()
    source = open_path(str(path))
    try:
        found = [obj for kind, obj in iter_objects(source, stats) if kind == "audit"]
    finally:
        source.close()
    assert not stats.damaged and not source.damage, (stats.damaged, source.damage)
    return found, stats


@pytest.mark.parametrize(
    "shape",
    [
        "aks-storage",
        "aks-storage-objects",
        "eventhub-lines",
        "eventhub-indented",
        "eks-filter-log-events",
        "eks-firehose",
    ],
)
def test_every_export_yields_the_entries_the_plain_log_yields(tmp_path, shape):
    entries = corpus()
    paths = write_shapes(tmp_path, entries)
    plain, plain_stats = read_entries(paths["plain"])
    wrapped, _ = read_entries(paths[shape])
    assert wrapped == plain
    wanted = [e for e in entries if audit_observations(e, AuditDeduper())]
    assert all(e in plain for e in wanted)  # every observation reaches the pipeline
    assert plain_stats.examined < len(entries)  # and the pre-filter dropped reads and leases


@pytest.mark.parametrize("shape", ["eventhub-indented", "eks-filter-log-events"])
def test_an_export_document_too_big_to_hold_is_streamed_record_by_record(
    tmp_path, monkeypatch, shape
):
    """A year of `filter-log-events` is one JSON document: its events are streamed like a
    List's items, each one through the pre-filter (here with 4 KiB standing for 16 MiB)."""
    import pullwatch.scan.jsontext as jsontext
    import pullwatch.scan.records as records

    entries = corpus()
    paths = write_shapes(tmp_path, entries)
    plain, _ = read_entries(paths["plain"])
    monkeypatch.setattr(records, "CHUNK", 2048)
    monkeypatch.setattr(jsontext, "CHUNK", 2048)
    monkeypatch.setattr(jsontext, "MAX_RECORD", 4096)
    wrapped, stats = read_entries(paths[shape])
    assert wrapped == plain
    assert stats.records == len(entries) and stats.examined < len(entries)


def test_gke_yields_what_the_plain_log_yields_less_what_gke_does_not_log(tmp_path):
    entries = [e for e in corpus() if e.get("userAgent")]
    path = tmp_path / "gcloud.json"
    path.write_text(json.dumps([to_gke(e) for e in entries], indent=2))
    wrapped, _ = read_entries(path)
    kept = [as_gke_keeps_it(e) for e in entries]
    expected = [obs for e in kept for obs in audit_observations(e, AuditDeduper())]
    got = [obs for e in wrapped for obs in audit_observations(e, AuditDeduper())]
    assert got == expected and any(isinstance(o, Intent) for o in got)


# -- scan level: the same Findings -------------------------------------------------------------


def scan_json(path):
    r = subprocess.run(
        [PULLWATCH, "scan", str(path), "-a", ALLOW, "-o", "json"], capture_output=True, timeout=120
    )
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def test_scan_of_each_export_gives_the_plain_logs_findings(tmp_path):
    paths = write_shapes(tmp_path, plain_entries())
    reference = scan_json(paths.pop("plain"))
    # 10 from the kubelets' pulls, 2 from a pod created with kube-hunter (intent, no pull yet)
    assert len([i for i in reference["items"] if i["kind"] == "Finding"]) == 12
    for shape, path in paths.items():
        assert scan_json(path) == reference, shape


def test_scan_of_gke_gives_the_findings_of_the_same_entries_logged_plainly(tmp_path):
    entries = [e for e in plain_entries() if e["stage"] == "ResponseComplete"]
    gke = tmp_path / "gcloud.json"
    gke.write_text(json.dumps([to_gke(e) for e in entries], indent=2))
    plain = tmp_path / "plain.log"
    plain.write_text("".join(compact(as_gke_keeps_it(e)) + "\n" for e in entries))
    found = scan_json(gke)
    assert found == scan_json(plain)
    assert len([i for i in found["items"] if i["kind"] == "Finding"]) == 12


def test_wanted_text_decides_what_is_parsed_inside_a_wrapper():
    noise = corpus()[0]
    record = {"category": "kube-audit", "properties": {"log": compact(noise)}}
    assert list(exports.unwrap(record, audit.wanted_text)) == [("unread", None)]
    assert list(exports.unwrap(record)) == [("audit", noise)]
