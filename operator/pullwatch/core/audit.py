"""Decoding API server audit entries (``audit.k8s.io/v1`` ``Event``) into observations.

The audit log is the witness nobody but the API server writes: for each request it says who
made it (the authenticated user, which RBAC and the authenticators guarantee), from where, and
what was asked. ``audit_observations`` turns one entry into what it proves:

* a create of an Event (core or ``events.k8s.io``), or a patch/update whose logged object is the
  whole Event: a ``Pull`` when it is an image Event (a create's actor is the Event's real
  author; a patch's or update's Pull names none: see authorship.py) and an ``Authored`` saying
  who wrote that Event; a patch or update logged without the whole Event (``Request`` level:
  only the patch) is an ``Authored`` alone. A pull Event whose name was not logged (created
  with ``generateName``, which the kubelet never uses) is a ``Pull`` of a ``NAMELESS`` series,
  which the detector never counts (the Event watch counts it under its real name);
* a pod create, and ``pods/ephemeralcontainers`` (``kubectl debug``): an ``Intent`` per
  container, with its actor when a person made the request; an update or patch of a pod: an
  ``Intent`` per container whose image it wrote (see podwrites.py);
* a create, update or patch of deployments, statefulsets, daemonsets, replicasets, jobs,
  cronjobs (their ``scale`` subresource included) or pods, by a person: an ``ActorChange`` for
  the workload (a ReplicaSet's or Job's is its Deployment's or CronJob's; a pod's, its owner's).

What is never an observation: another resource, verb or API group (a custom resource whose
plural is ``events`` forges nothing), any other subresource (``status`` is the controllers'), a
request the server refused (``responseStatus.code`` >= 400), a ``Panic``, and a
``RequestReceived`` stage without objects (the request has not been answered yet). One request
is logged at several stages under one ``auditID``: the first stage that proves something counts
and the others are dropped (``AuditDeduper``). Everything counts in ``objectRef.namespace`` - the
request's URL, which RBAC checked - never in a namespace an object names.

Impersonation: the authenticated user did it. Its name is kept, with the impersonated one
noted (``alice (as bob)``), and whether it is a person is decided on the authenticated user.

    >>> entry = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a1",
    ...     "stage": "ResponseComplete", "verb": "create", "sourceIPs": ["10.0.9.9"],
    ...     "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
    ...     "objectRef": {"resource": "deployments", "namespace": "shop", "name": "web",
    ...                   "apiGroup": "apps", "apiVersion": "v1"},
    ...     "responseStatus": {"code": 201}, "requestReceivedTimestamp": "2026-11-18T11:06:40Z"}
    >>> (change,) = audit_observations(entry, AuditDeduper())
    >>> change.workload, change.kind, change.actor.user, change.action
    ('web', 'Deployment', 'alice', 'create deployments')

A controller's change names no actor, and a refused request proves nothing:

    >>> controller = "system:serviceaccount:kube-system:deployment-controller"
    >>> audit_observations({**entry, "user": {"username": controller}}, AuditDeduper())
    []
    >>> audit_observations({**entry, "responseStatus": {"code": 403}}, AuditDeduper())
    []
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .actors import is_person
from .authorship import NAMELESS
from .names import is_label, is_subdomain
from .observations import EPHEMERAL, ActorChange, Authored, Intent, Observation
from .pods import listed_containers, spec_containers, workload_of
from .podwrites import images_written
from .pulls import CANDIDATE, Actor, DecodeError, Pull, decode_event
from .workload import CONTROLLER_KINDS, MAX_BASE, Workload, controller_of, infer, infer_above

AUDIT_API_PREFIX = "audit.k8s.io/"
# dict first: decoded JSON is made of dicts, and an ABC's isinstance check is many times slower
_MAPPING = (dict, Mapping)
EVENT_GROUPS = (None, "", "events.k8s.io")  # the core group is logged without apiGroup
WRITE_VERBS = frozenset({"create", "update", "patch"})
# (apiGroup, resource) -> kind; a Finding's identity uses the workload's name only
WORKLOADS = {
    ("apps", "deployments"): "Deployment",
    ("apps", "statefulsets"): "StatefulSet",
    ("apps", "daemonsets"): "DaemonSet",
    ("apps", "replicasets"): "ReplicaSet",
    ("batch", "jobs"): "Job",
    ("batch", "cronjobs"): "CronJob",
}

# -- which lines a reader must parse --------------------------------------------------------
# Readers parse only the records that can be of use (counting the others unparsed):
# * a pull: its message quotes the image, `image \"` in JSON; inside a JSON string (an AKS
#   properties.log, a CloudWatch message) the entry is escaped once more: `image \\\"`;
# * any other observation is a write of one of RESOURCES: the record holds a verb (WRITE_BYTES,
#   bare words that match however it is wrapped: "verb":"create", \"verb\":\"create\", a GKE
#   methodName io.k8s.core.v1.pods.create) and, if it names a resource (RESOURCE_VALUE, quoted
#   any way), one of RESOURCES - any occurrence: an entry's requestURI comes before its
#   objectRef and its query string is the client's to write, so no "first resource named" can
#   be trusted; a false positive only costs a parse. A record naming no resource that way (a
#   GKE LogEntry) needs one of RESOURCE_BYTES anywhere.
PULL_BYTES = (CANDIDATE, b'image \\\\\\"')
WRITE_BYTES = (b"create", b"patch", b"update")
RESOURCES = frozenset(
    b"events pods deployments replicasets statefulsets daemonsets jobs cronjobs".split()
)
RESOURCE_BYTES = tuple(sorted(RESOURCES - {b"cronjobs"}))  # "jobs" is in "cronjobs"
RESOURCE_VALUE = re.compile(rb'"resource\\*"\s*:\s*\\*"([a-z0-9.-]{1,63})\\*"')


def wanted(data: bytes, start: int = 0, end: int = sys.maxsize) -> bool:
    """Could ``data[start:end]`` (an audit entry, however wrapped) be an observation?

    >>> wanted(b'{"verb":"get","objectRef":{"resource":"pods"}}')
    False
    >>> wanted(b'{"verb":"patch","objectRef":{"resource":"deployments","subresource":"scale"}}')
    True
    >>> wanted(b'{"verb":"update","objectRef":{"resource":"leases","name":"pods"}}')
    False
    """
    find = data.find
    for b in PULL_BYTES:
        if find(b, start, end) != -1:
            return True
    for b in WRITE_BYTES:
        if find(b, start, end) != -1:
            return names_resource(data, start, end)
    return False


def names_resource(data: bytes, start: int = 0, end: int = sys.maxsize) -> bool:
    """The second half of ``wanted``: does ``data[start:end]`` name one of RESOURCES?"""
    named = False
    for m in RESOURCE_VALUE.finditer(data, start, end):
        if m.group(1) in RESOURCES:
            return True
        named = True
    return not named and any(data.find(b, start, end) != -1 for b in RESOURCE_BYTES)


def wanted_text(text: str) -> bool:
    """``wanted`` for an entry already decoded from its wrapper (a ``str``)."""
    return wanted(text.encode("utf-8", "surrogatepass"))


def is_audit_entry(obj: Mapping[str, Any]) -> bool:
    api = obj.get("apiVersion")
    return obj.get("kind") == "Event" and isinstance(api, str) and api.startswith(AUDIT_API_PREFIX)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def actor_of(entry: Mapping[str, Any]) -> Actor:
    """The authenticated user (who did it), with an impersonated one noted."""
    user = entry.get("user") if isinstance(entry.get("user"), _MAPPING) else {}
    username = _str(user.get("username"))
    impersonated = entry.get("impersonatedUser")
    if isinstance(impersonated, _MAPPING) and _str(impersonated.get("username")):
        username = f"{username or 'unknown'} (as {impersonated['username']})"
    # sourceIPs: the client's X-Forwarded-For / X-Real-Ip claims first, the address the API
    # server saw last - so the last ones are kept, never the first (a client can send 16 claims).
    return Actor(
        user=username[:512] if username else None,
        groups=_strings(user.get("groups"))[:16],
        source_ips=tuple(ip[:64] for ip in _strings(entry.get("sourceIPs"))[-4:]),
        user_agent=(_str(entry.get("userAgent")) or "")[:256] or None,
    )


def _acted_by_person(entry: Mapping[str, Any]) -> bool:
    user = entry.get("user") if isinstance(entry.get("user"), _MAPPING) else {}
    return is_person(user.get("username"), _strings(user.get("groups")))


class AuditDeduper:
    """Remembers recent auditIDs so that the stages of one request count once.

    Bounded: a request's stages are logged within seconds of each other, so a window of the last
    ``capacity`` requests that proved something is plenty while memory stays flat."""

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, audit_id: str) -> bool:
        if audit_id in self._seen:
            return False
        self._seen[audit_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


# -- one entry --------------------------------------------------------------------------------


def _request(entry: Any) -> tuple | None:
    """(verb, group, resource, subresource, ref) of a write that succeeded, else None."""
    if not isinstance(entry, _MAPPING):
        raise DecodeError("audit entry is not an object")
    stage, logged = entry.get("stage"), entry.get("requestObject") or entry.get("responseObject")
    if stage == "Panic" or (stage == "RequestReceived" and not logged):
        return None
    status = entry.get("responseStatus")
    code = status.get("code") if isinstance(status, _MAPPING) else None
    if code.__class__ is int and code >= 400:
        return None
    uri = entry.get("requestURI")
    if isinstance(uri, str) and "dryRun" in uri and _dry_run(uri):
        return None  # nothing was stored: no pod, no Event, no change of anyone's
    verb = entry.get("verb")
    ref = entry.get("objectRef")
    if not isinstance(verb, str) or verb not in WRITE_VERBS or not isinstance(ref, _MAPPING):
        return None
    group, resource = ref.get("apiGroup") or "", ref.get("resource")
    subresource = ref.get("subresource") or ""
    if not (isinstance(group, str) and isinstance(resource, str) and isinstance(subresource, str)):
        return None  # not what the API server writes: no resource of ours
    return verb, group, resource, subresource, ref


def _dry_run(uri: str) -> bool:
    """Whether the request asked for a dry run (``?dryRun=All``): the API server's own record
    of the URL.

    >>> _dry_run("/api/v1/namespaces/a/pods?dryRun=All"), _dry_run("/api/v1/pods/dryRun-1")
    (True, False)
    """
    return "dryRun" in urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)


def _kind_of(group: str, resource: Any, subresource: str) -> str | None:
    if resource == "events" and group in EVENT_GROUPS and not subresource:
        return "events"
    if resource == "pods" and not group and subresource in ("", "ephemeralcontainers"):
        return "pods"
    if (group, resource) in WORKLOADS and subresource in ("", "scale"):
        return "workload"
    return None


def audit_observations(entry: Any, deduper: AuditDeduper, *, pulls_only: bool = False) -> list:
    """Every observation one audit entry proves (see the module docstring); ``[]`` for none
    and for a stage of a request already counted. Raises :class:`DecodeError` for an entry that
    should be an observation but cannot be read."""
    audit_id, found = entry_observations(entry, pulls_only=pulls_only)
    if found and not deduper.first_time(audit_id):
        return []
    return found


def entry_observations(entry: Any, *, pulls_only: bool = False) -> tuple[str, list]:
    """``(auditID, observations)`` of one entry, before de-duplication: a pure function of the
    entry, so that it can be decoded anywhere (a scan's worker processes) and de-duplicated in
    order later (``AuditDeduper.first_time(auditID)`` when there are observations)."""
    request = _request(entry)
    if request is None:
        return "", []
    verb, group, resource, subresource, ref = request
    kind = _kind_of(group, resource, subresource)
    if kind is None or (pulls_only and kind != "events"):
        return "", []
    namespace = ref.get("namespace")
    if not is_label(namespace):
        raise DecodeError("audit entry without a valid objectRef.namespace")
    audit_id = _str(entry.get("auditID"))
    if audit_id is None:
        raise DecodeError("audit entry without auditID")
    when = _str(entry.get("requestReceivedTimestamp")) or _str(entry.get("stageTimestamp"))
    if kind == "events":
        found = _event_write(entry, verb, namespace, ref, audit_id, when, pulls_only)
    elif kind == "pods":
        found = _pod_write(entry, verb, namespace, ref, subresource, audit_id, when)
    else:
        found = _workload_write(entry, verb, group, resource, subresource, namespace, ref, when)
    return audit_id, found


def decode_audit_entry(entry: Any, deduper: AuditDeduper) -> Pull | None:
    """The ``Pull`` an entry proves, ``None`` for anything else (and for repeated stages).

    Use either this or ``audit_observations`` with one deduper, not both on the same entries:
    each consumes the auditID it decodes."""
    for observation in audit_observations(entry, deduper, pulls_only=True):
        if isinstance(observation, Pull):
            return observation
    return None


def _obj(value: Any, kind: str) -> Mapping[str, Any] | None:
    return value if isinstance(value, _MAPPING) and value.get("kind") == kind else None


def _event_write(entry, verb, namespace, ref, audit_id, when, pulls_only) -> list[Observation]:
    actor = actor_of(entry)
    event = _obj(entry.get("responseObject"), "Event")
    if event is None and verb in ("create", "update"):
        event = _obj(entry.get("requestObject"), "Event")  # the whole Event, as sent
    found: list[Observation] = []
    name = _str(ref.get("name"))
    if name is None and event is not None:  # a generated name is only in the response
        meta = event.get("metadata")
        name = _str(meta.get("name")) if isinstance(meta, _MAPPING) else None
    node = None
    # Only a create names the Event's author: a later writer is not one (authorship.py).
    author = actor if verb == "create" else None
    if event is not None:
        pull = decode_event(event, source="audit", actor=author, namespace=namespace)
        if pull is not None:
            node = pull.node
            named = name is not None and is_subdomain(name)
            found.append(
                pull._replace(
                    series=f"{namespace}/{name}" if named else f"{NAMELESS}{audit_id}",
                    first_seen=pull.first_seen or when,
                    last_seen=pull.last_seen or when,
                )
            )
    if pulls_only:
        return found
    if name is not None:
        if not is_subdomain(name):
            raise DecodeError("audit entry of an Event with an invalid name")
        found.append(Authored(namespace, name, actor, verb, when, node if author else None))
    return found


def _pod_write(entry, verb, namespace, ref, subresource, audit_id, when) -> list[Observation]:
    person = _acted_by_person(entry)
    actor = actor_of(entry)
    if subresource == "ephemeralcontainers":
        name = ref.get("name")
        if not is_subdomain(name):
            raise DecodeError("audit entry of a pod with an invalid name")
        workload = _pod_workload(name, _obj(entry.get("responseObject"), "Pod"))
        containers = [(EPHEMERAL, c, i) for c, i in _ephemeral(entry)]
        action = f"{verb} pods/ephemeralcontainers"
    else:
        pod = _obj(entry.get("responseObject"), "Pod") or _obj(entry.get("requestObject"), "Pod")
        name, generated = _pod_name(ref, pod)
        workload = _pod_workload(name, pod, generated)
        # At Metadata level a create logs no pod: who did it is known, its containers are not.
        if verb == "create":
            containers = spec_containers(pod.get("spec")) if pod else []
        else:  # an image changed while the kubelet pulls is an intent too
            containers = images_written(entry, _obj(entry.get("responseObject"), "Pod"))
        action = f"{verb} pods"
    who = actor if person else None
    found: list[Observation] = [
        Intent(namespace, name, c, kind, image, workload, who, when, audit_id)
        for kind, c, image in containers
    ]
    if person:
        found.append(ActorChange(namespace, workload.name, workload.kind, actor, action, when))
    return found


def _pod_name(ref: Mapping[str, Any], pod: Mapping[str, Any] | None) -> tuple[str, bool]:
    meta = pod.get("metadata") if pod is not None else None
    meta = meta if isinstance(meta, _MAPPING) else {}
    name = _str(ref.get("name")) or _str(meta.get("name"))
    if name is not None:
        if not is_subdomain(name):
            raise DecodeError("audit entry of a pod with an invalid name")
        return name, False
    base = _str(meta.get("generateName"))
    if base is None or not is_subdomain(base.rstrip("-")):
        raise DecodeError("audit entry of a pod with neither a name nor a generateName")
    return base[:253] + "*", True


def _pod_workload(name: str, pod: Mapping[str, Any] | None, generated: bool = False) -> Workload:
    meta = pod.get("metadata") if pod is not None else None
    if isinstance(meta, _MAPPING) and controller_of(meta) is not None:
        return workload_of(name, meta)
    if generated:
        # Its name will be the base and 5 random characters: the workload of any such name,
        # as scan infers it from the pod's real name.
        base = name[:-1]
        if base.endswith("-"):
            return infer(base[:MAX_BASE] + "bbbbb")
        return Workload(CONTROLLER_KINDS, base, "inferred")
    if isinstance(meta, _MAPPING):
        return workload_of(name, meta)  # the whole pod, and no controller: its own workload
    return infer(name)


def _ephemeral(entry: Mapping[str, Any]):
    """The ephemeral containers a ``pods/ephemeralcontainers`` request adds: from the request
    (a patch of the Pod, the EphemeralContainers object of Kubernetes < 1.23, or a JSON patch),
    else from the response (all of the pod's ephemeral containers)."""
    request = entry.get("requestObject")
    if isinstance(request, list):  # JSON patch: [{"op": "add", "path": …, "value": …}]
        for op in request[:1000]:
            if not isinstance(op, _MAPPING) or op.get("op") not in ("add", "replace"):
                continue
            path, value = op.get("path"), op.get("value")
            if isinstance(path, str) and path.startswith("/spec/ephemeralContainers"):
                yield from listed_containers(value if isinstance(value, list) else [value])
        return
    for holder in (request, entry.get("responseObject")):
        if not isinstance(holder, _MAPPING):
            continue
        spec = holder.get("spec")
        listed = spec.get("ephemeralContainers") if isinstance(spec, _MAPPING) else None
        if listed is None:
            listed = holder.get("ephemeralContainers")
        if listed is not None:
            yield from listed_containers(listed)
            return


def _workload_write(entry, verb, group, resource, subresource, namespace, ref, when) -> list:
    if not _acted_by_person(entry):
        return []
    kind = WORKLOADS[(group, resource)]
    obj = _obj(entry.get("responseObject"), kind) or _obj(entry.get("requestObject"), kind)
    meta = obj.get("metadata") if obj is not None else None
    meta = meta if isinstance(meta, _MAPPING) else {}
    name = _str(ref.get("name")) or _str(meta.get("name"))
    if not is_subdomain(name):
        raise DecodeError(f"audit entry of {resource} without a valid name")
    workload = Workload(kind, name, "read")
    if kind in ("ReplicaSet", "Job"):
        if obj is None or subresource:
            above = infer_above(kind, name)  # the object was not logged: its name decides
        else:
            owner = controller_of(meta)  # logged whole: no controller, it is its own workload
            above = Workload(owner[0], owner[1], "read") if owner else workload
        if is_subdomain(above.name):
            workload = above
    action = f"{verb} {resource}" + (f"/{subresource}" if subresource else "")
    return [ActorChange(namespace, workload.name, workload.kind, actor_of(entry), action, when)]
