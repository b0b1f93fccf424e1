"""Decoding kubelet Events: every wording, both APIs, and what never counts."""

import pytest

from kubelet import as_events_v1, image_event, other_event
from pullwatch.core.pulls import PRESENT, PULLED, PULLING, DecodeError, decode_event

IMG = "aquasec/kube-hunter:0.6.8"


@pytest.mark.parametrize(
    "reason, message, kind",
    [
        ("Pulling", f'Pulling image "{IMG}"', PULLING),
        ("Pulling", f'pulling image "{IMG}"', PULLING),  # kubelets before 1.15
        ("Pulling", f'PULLING IMAGE "{IMG}"', PULLING),
        ("Pulled", f'Successfully pulled image "{IMG}" in 1.2s (1.2s including waiting)', PULLED),
        ("Pulled", f'Successfully pulled image "{IMG}"', PULLED),
        ("Pulled", f'successfully pulled image "{IMG}" in 3ms', PULLED),
        ("Pulled", f'Container image "{IMG}" already present on machine', PRESENT),
        ("Pulled", f'container image "{IMG}" ALREADY PRESENT ON MACHINE', PRESENT),
        ("Pulling", f'(combined from similar events): Pulling image "{IMG}"', PULLING),
        (
            "Pulled",
            f'(combined from similar events): Successfully pulled image "{IMG}" in 2s',
            PULLED,
        ),
        (
            "Pulled",
            f'(Combined from similar events): Container image "{IMG}" already present on machine',
            PRESENT,
        ),
    ],
)
def test_image_wordings(reason, message, kind):
    ev = image_event("Pulling", "default", "hunter", IMG)
    ev.update(reason=reason, message=message)
    pull = decode_event(ev)
    assert pull is not None and pull.kind == kind and pull.image == IMG


@pytest.mark.parametrize(
    "reason, message",
    [
        ("Scheduled", f'Successfully assigned default/hunter to node-1 (image "{IMG}")'),
        ("Created", f'Created container hunter from image "{IMG}"'),
        ("Started", f'Pulling image "{IMG}"'),  # right words, wrong reason
        ("Killing", f'Stopping container hunter; Pulling image "{IMG}"'),
        ("BackOff", "Back-off restarting failed container"),  # BackOff, but not a pull
        ("Failed", "Error: ErrImagePull"),  # Failed, but names no image
        ("Failed", f'Failed to start container "{IMG}"'),
        ("ErrImagePull", f'Pulling image "{IMG}"'),
        ("InspectFailed", f'Failed to inspect image "{IMG}"'),
        (None, f'Pulling image "{IMG}"'),
        ("pulling", f'Pulling image "{IMG}"'),  # reasons are kubelet constants: exact case
        ("PULLED", f'Successfully pulled image "{IMG}"'),
        (42, f'Pulling image "{IMG}"'),
    ],
)
def test_other_reasons_never_fire(reason, message):
    ev = other_event("Started", "default", "hunter", "x")
    ev.update(reason=reason, message=message)
    assert decode_event(ev) is None


@pytest.mark.parametrize(
    "reason, message",
    [
        ("Pulled", f'Pulling image "{IMG}"'),  # a Pulled event must use a Pulled wording
        ("Pulling", f'Successfully pulled image "{IMG}"'),
        ("Pulling", "Pulling image kube-hunter"),
        ("Pulling", 'Pulling image ""'),
        ("Pulling", f'Something else first. Pulling image "{IMG}"'),
    ],
)
def test_image_reason_with_unreadable_wording_is_a_counted_skip(reason, message):
    ev = image_event("Pulling", "default", "hunter", IMG)
    ev.update(reason=reason, message=message)
    with pytest.raises(DecodeError):
        decode_event(ev)


def test_core_v1_fields():
    ev = image_event(
        "Pulling", "team-a", "web-1", "nginx:1.25.3", node="worker-9", container="nginx", count=4
    )
    pull = decode_event(ev)
    assert pull.involved.as_dict() == {
        "kind": "Pod",
        "name": "web-1",
        "namespace": "team-a",
        "uid": ev["involvedObject"]["uid"],
        "container": "nginx",
    }
    series = f"team-a/{ev['metadata']['name']}"  # by name: the audit witness names it the same
    assert (pull.node, pull.count, pull.series) == ("worker-9", 4, series)
    assert (pull.namespace, pull.claimed_namespace, pull.uid) == (
        "team-a",
        None,
        ev["metadata"]["uid"],
    )
    assert (pull.first_seen, pull.last_seen) == (ev["firstTimestamp"], ev["lastTimestamp"])


def test_events_k8s_io_v1_same_pull():
    ev = image_event("Pulling", "team-a", "web-1", "nginx:1.25.3", node="worker-9", count=4)
    a, b = decode_event(ev), decode_event(as_events_v1(ev))
    assert a == b


def test_events_k8s_io_v1_series_and_reporting_instance():
    ev = as_events_v1(image_event("Pulling", "ns", "p", "nginx"))
    ev.pop("deprecatedSource")
    ev["deprecatedCount"] = None
    ev["series"] = {"count": 7, "lastObservedTime": "2026-11-18T12:00:00.000000Z"}
    pull = decode_event(ev)
    assert (
        pull.count == 7
        and pull.node == "worker-1"
        and pull.last_seen == "2026-11-18T12:00:00.000000Z"
    )


def test_series_identity_falls_back_to_namespace_and_name():
    ev = image_event("Pulling", "ns", "p", "nginx", with_uid=False)
    assert decode_event(ev).series == f"ns/{ev['metadata']['name']}"


def test_init_and_ephemeral_containers():
    for path, container in (
        ("spec.initContainers{init}", "init"),
        ("spec.ephemeralContainers{dbg}", "dbg"),
        ("spec.containers{a}", "a"),
        ("weird", None),
    ):
        ev = image_event("Pulling", "ns", "p", "nginx")
        ev["involvedObject"]["fieldPath"] = path
        assert decode_event(ev).involved.container == container


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda e: e.update(message=None), "without a message"),
        (lambda e: e.update(message=12), "without a message"),
        (lambda e: e.update(involvedObject=None), "without involvedObject"),
        (lambda e: e.pop("involvedObject"), "without involvedObject"),
        (lambda e: e["involvedObject"].update(name=None), "involvedObject.name"),
        (lambda e: e.update(message='Pulling image "' + "a" * 100_000 + '"'), "no quoted image"),
        (lambda e: e.update(message="Pulling image " + "x" * 100_000), "no quoted image"),
    ],
)
def test_bad_image_events(mutate, reason):
    ev = image_event("Pulling", "ns", "p", "nginx")
    mutate(ev)
    with pytest.raises(DecodeError, match=reason):
        decode_event(ev)


def test_null_and_odd_fields_do_not_crash():
    ev = image_event("Pulling", "ns", "p", "nginx")
    ev.update(
        count=None, source=None, metadata=None, series="x", firstTimestamp=5, lastTimestamp=None
    )
    pull = decode_event(ev)
    assert pull.count == 1 and pull.node == "worker-1" and pull.series is None
    ev.update(count=True)
    assert decode_event(ev).count == 1
    ev.update(count=-3)
    assert decode_event(ev).count == 1


def test_not_an_object():
    for bad in (None, [], "Pulling", 3):
        with pytest.raises(DecodeError):
            decode_event(bad)
