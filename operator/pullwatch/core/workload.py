"""The workload a pod belongs to: read from its owners, or inferred from its name.

A Finding is about a workload, not a pod: 50 replicas of a Deployment pulling an unapproved image
are one problem, a DaemonSet is one problem on every node, a rollout is not a new one. The
workload is the pod's top controller: a Deployment (through its ReplicaSet), a StatefulSet, a
DaemonSet, a CronJob (through its Job), a Job, a bare ReplicaSet, or the pod itself.

The operator reads the owner chain (``from_owners``); ``pullwatch scan`` has only the pod's name
and infers it (``infer``) from the rules by which Kubernetes names controller-made pods:

* ``generateName``: base + 5 characters of ``bcdfghjklmnpqrstvwxz2456789`` (utilrand.String),
  the base cut to 58 characters first (k8s.io/apiserver/pkg/storage/names), which can eat the
  separating hyphen of a long name;
* ReplicaSet of a Deployment: ``<deployment>-<pod-template-hash>``, the hash a uint32 written in
  decimal and mapped digit by digit through the same alphabet (rand.SafeEncodeString), so it is
  1-10 characters of ``4-9bcdf`` (nearly always 6 or more);
* StatefulSet: ``<statefulset>-<ordinal>``;
* Job of a CronJob: ``<cronjob>-<scheduled time in minutes since the epoch>`` (8 digits today);
  an Indexed Job's pods add ``-<index>`` before the random suffix.

The identity of a Finding uses the workload's *name* only, not its kind: ``scan`` cannot tell a
DaemonSet's pods from a Job's, and the operator, which can, must still name the same detection
the same way. The kind is description (with ``source``: read or inferred).

    >>> infer("web-7d9f8b6c5d-x7k2p")
    Workload(kind='Deployment', name='web', source='inferred')
    >>> infer("node-exporter-z9qbx")
    Workload(kind='Controller', name='node-exporter', source='inferred')
    >>> infer("db-2")
    Workload(kind='StatefulSet', name='db', source='inferred')
    >>> infer("backup-29375040-4kgr7")
    Workload(kind='CronJob', name='backup', source='inferred')
    >>> infer("backup-1762387200-4kgr7")  # the CronJob controller before v2: Unix seconds
    Workload(kind='CronJob', name='backup', source='inferred')
    >>> infer("hunter")
    Workload(kind='Pod', name='hunter', source='inferred')
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

RANDOM = "bcdfghjklmnpqrstvwxz2456789"
MAX_NAME = 63
MAX_BASE = 58  # names.MaxGeneratedNameLength
# A DaemonSet's, a Job's and a bare ReplicaSet's pods are all named base + random: the name
# cannot tell which controller it was, only that one was.
CONTROLLER_KINDS = "Controller"
# Scheduled minutes since the epoch a CronJob's Job can carry: mid-2017 to 2046. (A date written
# as YYYYMMDD, 2026xxxx, is 20 million and some: below the range, so a Job named after a date is
# not taken for a CronJob's.)
MINUTES = range(25_000_000, 40_000_000)
# The CronJob controller before v2 (Kubernetes < 1.21 by default) named Jobs after the scheduled
# time in Unix *seconds*: the same years, and always a whole minute.
SECONDS = range(1_500_000_000, 2_400_000_000)

_RAND5 = re.compile(rf"[{RANDOM}]{{5}}")
_HASH = re.compile(r"[4-9bcdf]{6,10}")
_PARTIAL_HASH = re.compile(r"-[4-9bcdf]{0,10}$")
_ORDINAL = re.compile(r"(0|[1-9][0-9]{0,8})")
_DIGITS = re.compile(r"[0-9]+")


class Workload(NamedTuple):
    # Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod, … (or CONTROLLER_KINDS)
    kind: str
    name: str
    source: str  # "read" (the owner chain, by the operator) or "inferred" (from the pod's name)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "source": self.source}


@functools.lru_cache(maxsize=65536)
def infer(pod: str) -> Workload:
    """The workload of a pod, from nothing but its name (see the module docstring)."""
    base = _generated_base(pod)
    if base is None:
        ordinal = pod.rsplit("-", 1)
        if len(ordinal) == 2 and ordinal[0] and _ORDINAL.fullmatch(ordinal[1]):
            return Workload("StatefulSet", ordinal[0], "inferred")
        return Workload("Pod", pod, "inferred")
    cronjob = _cronjob(base, truncated=len(pod) == MAX_NAME)
    if cronjob is not None:
        return Workload("CronJob", cronjob, "inferred")
    deployment = _deployment(base, truncated=len(pod) == MAX_NAME)
    if deployment is not None:
        return Workload("Deployment", deployment, "inferred")
    return Workload(CONTROLLER_KINDS, base.rstrip("-") or pod, "inferred")


def _generated_base(pod: str) -> str | None:
    """The controller's name part of a generated pod name (without the random suffix), or None
    when the name was not made by generateName."""
    if len(pod) < 7 or not _RAND5.fullmatch(pod[-5:]):
        return None
    if pod[-6] == "-":
        return pod[:-6]
    if len(pod) == MAX_NAME:
        return pod[:MAX_BASE]  # the base was cut to 58 characters, its hyphen with it
    return None


def _cronjob(base: str, truncated: bool = False) -> str | None:
    parts = base.split("-")
    # <cronjob>-<minutes>, or an Indexed Job's <cronjob>-<minutes>-<index>
    for cut in (1, 2):
        if len(parts) > cut and all(_DIGITS.fullmatch(p) for p in parts[-cut:]):
            when = int(parts[-cut])
            scheduled = when in MINUTES or (when in SECONDS and when % 60 == 0)
            if scheduled and "-".join(parts[:-cut]):
                return "-".join(parts[:-cut])
    if (
        truncated
        and len(parts) > 1
        and _DIGITS.fullmatch(parts[-1])
        and len(parts[-1]) < 8
        and int(parts[-1].ljust(8, "0")) in MINUTES
    ):
        return "-".join(parts[:-1])  # the base was cut inside the minutes
    return None


def _deployment(base: str, truncated: bool) -> str | None:
    name, _, last = base.rpartition("-")
    if name and _HASH.fullmatch(last):
        return name
    if truncated:
        # The base was cut inside (or just after) the hash: drop what is left of it.
        m = _PARTIAL_HASH.search(base)
        if m and m.start() > 0:
            return base[: m.start()]
    return None


def infer_above(kind: str, name: str) -> Workload:
    """The workload above a pod's owner that could not be read (a ReplicaSet or Job whose own
    owner is unknown), by the same naming rules.

        >>> infer_above("ReplicaSet", "web-7d9f8b6c5d")
        Workload(kind='Deployment', name='web', source='inferred')
        >>> infer_above("Job", "backup-29375040")
        Workload(kind='CronJob', name='backup', source='inferred')
        >>> infer_above("ReplicaSet", "handmade")
        Workload(kind='ReplicaSet', name='handmade', source='read')
    """
    if kind == "ReplicaSet":
        deployment = _deployment(name, truncated=False)
        if deployment is not None:
            return Workload("Deployment", deployment, "inferred")
    elif kind == "Job":
        cronjob = _cronjob(name)
        if cronjob is not None:
            return Workload("CronJob", cronjob, "inferred")
    return Workload(kind, name, "read")


# -- the owner chain, as the operator reads it ------------------------------------------------


def controller_of(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the object's controller ownerReference, if any."""
    refs = metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            kind, name = ref.get("kind"), ref.get("name")
            if isinstance(kind, str) and isinstance(name, str) and kind and name:
                return kind, name[:253]
    return None


def from_owners(pod: str, chain: Iterable[tuple[str, str] | None]) -> Workload:
    """The workload from the owner chain as read: the pod's controller, then that controller's
    (for a ReplicaSet or a Job) - ``None`` where an object has no controller.

        >>> from_owners("web-7d9f8b6c5d-x7k2p",
        ...             [("ReplicaSet", "web-7d9f8b6c5d"), ("Deployment", "web")])
        Workload(kind='Deployment', name='web', source='read')
        >>> from_owners("ds-x7k2p", [("DaemonSet", "ds")])
        Workload(kind='DaemonSet', name='ds', source='read')
        >>> from_owners("job-x7k2p", [("Job", "job"), None])
        Workload(kind='Job', name='job', source='read')
        >>> from_owners("bare", [None])
        Workload(kind='Pod', name='bare', source='read')
    """
    top = ("Pod", pod)
    for link in chain:
        if link is None:
            break
        top = link
    return Workload(top[0], top[1], "read")
