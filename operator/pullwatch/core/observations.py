"""What the witnesses hand the core: one kind of observation each, through one interface.

pullwatch believes no single witness. Three of them see an image arrive in a cluster, each from
its own side, and each can be lossy or lied to on its own:

* the kubelet's **Events** say that a pull was attempted and what became of it (``Pull``, in
  pulls.py) - but the kubelet drops Events past 25 per pod, and anyone allowed to create Events
  can write one that reads like a kubelet's;
* the **Pods** say what actually runs (``Running``): the image of each container and its
  ``imageID`` digest, whatever the Events said or dropped;
* the API server's **audit** log says who did it: who created a pod with which images
  (``Intent``), who changed a workload (``ActorChange``) and who really wrote each Event
  (``Authored``) - the authenticated user, which RBAC and the API server guarantee.

Every observation names the namespace it counts in, and that namespace is always one the API
server vouches for (an object's own ``metadata.namespace``, an audit entry's ``objectRef``),
never a claim inside an object. Each witness decodes its input into these types and hands them to
``Detector.observe``; the witness never touches a Finding itself.

NamedTuples, not dataclasses: just as immutable, built at C speed on the hot paths.
"""

from __future__ import annotations

from typing import NamedTuple

from .pulls import Actor, Pull
from .workload import Workload

INIT, MAIN, EPHEMERAL = "init", "main", "ephemeral"  # a container's place in its pod


class Running(NamedTuple):
    """A container a pod's status shows running (or terminated after it ran): the image that
    actually ran, by name and by digest. Never a pull: it adds nothing to a Finding's count."""

    namespace: str  # the pod's own namespace
    pod: str
    pod_uid: str | None
    container: str
    container_type: str  # INIT, MAIN or EPHEMERAL
    image: str  # as the pod's spec names it (what the kubelet was asked to pull)
    digest: str | None  # sha256:<hex> from the status' imageID: what was actually pulled
    node: str | None  # spec.nodeName
    started_at: str | None  # state.running.startedAt (or terminated's): the kubelet's word
    workload: Workload  # from the pod's ownerReferences (source "read"), else inferred
    at_startup: bool = False  # seen in the first list of pods (already running at start-up)
    state: str = "running"  # running | terminated
    # What the kubelet reports ran, which the pod's creator cannot patch (the spec's image
    # can be, while the kubelet pulls): status.image when it is a name, then imageID's
    # repository. Empty when the status says nothing of this run.
    reported: tuple[str, ...] = ()


class Intent(NamedTuple):
    """A pod created with a container of this image (audit): what was meant to run, before any
    pull - and by whom."""

    namespace: str  # objectRef.namespace
    pod: str  # its name (or generateName followed by "*" when the name was generated)
    container: str
    container_type: str  # INIT, MAIN or EPHEMERAL (kubectl debug adds ephemeral containers)
    image: str
    workload: Workload  # from the pod's ownerReferences, else inferred from its name
    actor: Actor | None  # the person who created it; None when a controller did
    time: str | None  # requestReceivedTimestamp
    audit_id: str


class Authored(NamedTuple):
    """Who really wrote an Event (audit): the authenticated user of a create, patch or update of
    ``events``. A kubelet's own pull Events are created by ``system:node:<its node>``; only the
    create decides who wrote a pull Event (see authorship.py)."""

    namespace: str  # objectRef.namespace: where the Event is
    name: str  # the Event's name
    actor: Actor
    verb: str  # create | patch | update
    time: str | None
    node: str | None = None  # a create's: the node its logged Event names (None: not logged)


class ActorChange(NamedTuple):
    """A person (not a controller) created or changed a workload (audit): the workload's actor.
    A Deployment's pods are created by controllers; who changed the Deployment is who did it."""

    namespace: str
    workload: str  # the workload's name: a Finding's identity uses the name only
    kind: str  # Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod
    actor: Actor
    action: str  # e.g. "create deployments", "patch deployments/scale"
    time: str | None


Observation = Pull | Running | Intent | Authored | ActorChange

__all__ = [
    "EPHEMERAL",
    "INIT",
    "MAIN",
    "ActorChange",
    "Authored",
    "Intent",
    "Observation",
    "Pull",
    "Running",
]
