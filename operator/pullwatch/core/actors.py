"""Who changed a workload: a person, not the control plane, in a bounded and expiring map.

A Deployment's pods are created by the ReplicaSet controller; the person who did it is whoever
created or changed the Deployment. The audit witness reports such changes (``ActorChange``)
only when a *person* made them, and this map keeps, per ``(namespace, workload)``, the first
person known and the last few distinct ones, so that a Finding can say who.

**A person** is any authenticated identity that is not the control plane's own. The control
plane is, exactly:

* the nodes: ``system:node:<name>`` (and anything in the group ``system:nodes``);
* the core components' own users (``k8s.io/apiserver/pkg/authentication/user``):
  ``system:apiserver``, ``system:kube-controller-manager``, ``system:kube-scheduler``,
  ``system:kube-proxy``, ``system:cloud-controller-manager``;
* the controllers' service accounts in ``kube-system``, as the bootstrap RBAC policy names them
  (``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``: controller_policy.go's
  ``system:controller:<name>`` roles bound to ``kube-system:<name>``, namespace_policy.go's
  leader-election and token identities, and the cloud controller manager's clients) - those of
  the kube-controller-manager with ``--use-service-account-credentials``;
* managed control planes: AKS's ``aksService`` (its control plane's operations) and
  ``nodeclient`` (its agent nodes), EKS's ``eks:*`` identities (its internal service roles, such
  as ``eks:node-manager``; EKS reserves the prefix).

Anything else is a person - or acts for one: an admin (``system:masters``), a tenant's CI
ServiceAccount (``system:serviceaccount:ci:deployer``), a GitOps controller, anyone anonymous. A
service account in ``kube-system`` that is not one of the controllers above (an add-on's, or one
an admin made there) is a person too: only the names the API server itself binds are trusted.
The authenticated user decides, never an impersonated one: whoever impersonates the control
plane is still a person.

    >>> is_person("system:serviceaccount:kube-system:replicaset-controller")
    False
    >>> is_person("system:node:worker-1"), is_person("system:kube-scheduler")
    (False, False)
    >>> is_person("system:serviceaccount:ci:deployer"), is_person("alice@example.com")
    (True, True)
    >>> is_person("system:serviceaccount:kube-system:tiller")  # not a controller's identity
    True
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .observations import ActorChange
from .pulls import Actor

NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
CONTROL_PLANE_USERS = frozenset(
    {
        "system:apiserver",
        "system:kube-controller-manager",
        "system:kube-scheduler",
        "system:kube-proxy",
        "system:cloud-controller-manager",
        "aksService",  # AKS: control plane operations (AKS docs, "log roles")
        "nodeclient",  # AKS: the agent nodes' client certificate
    }
)
# kube-system service accounts the bootstrap RBAC policy binds to controller roles
KUBE_SYSTEM_CONTROLLERS = frozenset(
    {
        "attachdetach-controller",
        "bootstrap-signer",
        "certificate-controller",
        "cloud-controller-manager",
        "cloud-node-controller",
        "cloud-node-lifecycle-controller",
        "cloud-provider",
        "clusterrole-aggregation-controller",
        "cronjob-controller",
        "daemon-set-controller",
        "deployment-controller",
        "device-taint-eviction-controller",
        "disruption-controller",
        "endpoint-controller",
        "endpointslice-controller",
        "endpointslicemirroring-controller",
        "ephemeral-volume-controller",
        "expand-controller",
        "generic-garbage-collector",
        "horizontal-pod-autoscaler",
        "job-controller",
        "kube-apiserver-serving-clustertrustbundle-publisher",
        "kube-controller-manager",
        "kube-scheduler",
        "leader-election-controller",
        "legacy-service-account-token-cleaner",
        "namespace-controller",
        "node-controller",
        "node-ipam-controller",
        "persistent-volume-binder",
        "pod-garbage-collector",
        "podcertificaterequestcleaner",
        "pv-protection-controller",
        "pvc-protection-controller",
        "replicaset-controller",
        "replication-controller",
        "resource-claim-controller",
        "resourcequota-controller",
        "root-ca-cert-publisher",
        "route-controller",
        "selinux-warning-controller",
        "service-account-controller",
        "service-cidrs-controller",
        "service-controller",
        "statefulset-controller",
        "storage-version-garbage-collector",
        "storage-version-migrator-controller",
        "token-cleaner",
        "ttl-after-finished-controller",
        "ttl-controller",
        "validatingadmissionpolicy-status-controller",
        "volumeattributesclass-protection-controller",
    }
)
KUBE_SYSTEM_SA = "system:serviceaccount:kube-system:"
MANAGED_PREFIXES = ("eks:",)


def is_person(username: Any, groups: Iterable[str] = ()) -> bool:
    """Is this authenticated identity someone other than the control plane? (see above)"""
    if not isinstance(username, str) or not username:
        return True  # nobody the control plane knows: whoever it is, not a controller
    if username in CONTROL_PLANE_USERS or username.startswith(NODE_PREFIX):
        return False
    if username.startswith(KUBE_SYSTEM_SA):
        return username[len(KUBE_SYSTEM_SA) :] not in KUBE_SYSTEM_CONTROLLERS
    if username.startswith(MANAGED_PREFIXES):
        return False
    return NODES_GROUP not in groups


# -- the map ----------------------------------------------------------------------------------

DEFAULT_CAPACITY = 100_000
DEFAULT_TTL = 30 * 86400  # a month: long enough for a slow rollout and the responder after it
RECENT = 5
_INTERN_LIMIT = 4096  # distinct actors shared; more (a flood of user agents) are just not shared


class Change(NamedTuple):
    """One change of a workload by a person, as the map holds it (compact: the actor shared, the
    time in seconds)."""

    actor: Actor
    action: str  # e.g. "patch deployments/scale"
    time: int | None  # seconds since the epoch, from the audit entry (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        out = self.actor.as_dict()
        out["action"] = self.action
        out["time"] = (
            None
            if self.time is None
            else _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(self.time))
        )
        return out


class WorkloadActors(NamedTuple):
    first: Change  # the first person known to have changed the workload
    recent: tuple[Change, ...]  # the last distinct people (by user), newest first


class ActorMap:
    """``(namespace, workload) -> WorkloadActors``, bounded and expiring.

    Bounded: at most ``capacity`` workloads; the one changed longest ago goes first. Expiring:
    a workload nobody changed for ``ttl`` seconds (the map's clock, never the entry's time,
    which the writer chose) is forgotten. Compact: the tuples are immutable, and the same actor
    (one person's many changes) and the same strings (namespaces, actions, groups, user agents)
    are stored once, through bounded intern tables.

        >>> m = ActorMap(clock=lambda: 1000.0)
        >>> alice = Actor("alice", ("dev",), ("10.0.0.1",), "kubectl/v1.29.4")
        >>> m.observe(ActorChange("shop", "web", "Deployment", alice, "create deployments",
        ...                       "2026-11-18T11:06:40Z"))
        >>> m.get("shop", "web").first.as_dict()["action"]
        'create deployments'
        >>> m.get("shop", "db") is None
        True
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = _time.time,
    ):
        self.capacity, self.ttl, self.clock = capacity, ttl, clock
        # value: (expiry, first, *recent) - one flat tuple per workload, the smallest holder;
        # insertion order == order of the last change == order of expiry
        self._map: OrderedDict[tuple[str, str], tuple] = OrderedDict()
        self._actors: OrderedDict[Actor, Actor] = OrderedDict()
        self._strings: dict[str, str] = {}
        self._times: dict[str | None, int | None] = {}
        self.evicted = 0  # dropped to stay within capacity (not expired)

    def __len__(self) -> int:
        return len(self._map)

    def observe(self, change: ActorChange, now: float | None = None) -> None:
        self.record(
            change.namespace, change.workload, change.actor, change.action, change.time, now
        )

    def record(
        self,
        namespace: str,
        workload: str,
        actor: Actor,
        action: str,
        when: str | None,
        now: float | None = None,
    ) -> None:
        now = self.clock() if now is None else now
        key = (self._string(namespace), workload)
        rec = Change(self._intern(actor), self._string(action), self._time(when))
        held = self._map.pop(key, None)
        # A create starts the history again: the name may have been deleted and reused (by
        # another team, in a namespace handed on), and its earlier people did not make this one.
        if held is None or held[0] <= now or action.startswith("create "):
            self._map[key] = (now + self.ttl, rec, rec)
        else:
            others = tuple(r for r in held[2:] if r.actor.user != rec.actor.user)
            self._map[key] = (now + self.ttl, held[1], rec, *others[: RECENT - 1])
        while len(self._map) > self.capacity:
            self._map.popitem(last=False)
            self.evicted += 1

    def get(self, namespace: str, workload: str, now: float | None = None) -> WorkloadActors | None:
        held = self._map.get((namespace, workload))
        if held is None:
            return None
        if held[0] <= (self.clock() if now is None else now):
            del self._map[(namespace, workload)]
            return None
        return WorkloadActors(held[1], held[2:])

    def expire(self, now: float | None = None) -> int:
        """Forget every workload past its ``ttl``; returns how many (oldest first, so this
        stops at the first one still alive)."""
        now = self.clock() if now is None else now
        dropped = 0
        while self._map:
            key, held = next(iter(self._map.items()))
            if held[0] > now:
                break
            del self._map[key]
            dropped += 1
        return dropped

    def _time(self, when: str | None) -> int | None:
        """The entry's time in seconds, one int object per second seen (a ``kubectl apply``
        of many workloads shares it)."""
        held = self._times.get(when)
        if held is None:
            if len(self._times) >= _INTERN_LIMIT:
                self._times.clear()
            held = self._times[when] = parse_time(when)
        return held

    def _string(self, value: str) -> str:
        held = self._strings.get(value)
        if held is None:
            if len(self._strings) >= _INTERN_LIMIT:
                self._strings.clear()  # a flood of distinct names: stop sharing, stay bounded
            self._strings[value] = held = value
        return held

    def _intern(self, actor: Actor) -> Actor:
        held = self._actors.get(actor)
        if held is not None:
            self._actors.move_to_end(actor)
            return held
        actor = Actor(
            self._string(actor.user) if actor.user else actor.user,
            tuple(self._string(g) for g in actor.groups),
            actor.source_ips,
            self._string(actor.user_agent) if actor.user_agent else actor.user_agent,
        )
        self._actors[actor] = actor
        if len(self._actors) > _INTERN_LIMIT:
            self._actors.popitem(last=False)
        return actor


def parse_time(value: Any) -> int | None:
    """Seconds since the epoch of an RFC 3339 time (an audit entry's), ``None`` if unreadable.

    >>> parse_time("2026-11-18T11:06:40.123456Z"), parse_time("yesterday")
    (1795000000, None)
    """
    if not isinstance(value, str) or not 0 < len(value) <= 40:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return int(parsed.timestamp())
