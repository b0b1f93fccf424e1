"""Decoding a Pod object into the ``Running`` observations of its containers that ran.

A Pod as the API server sends it in a list or watch, or as ``kubectl get pods -o json|yaml``
prints it, says what actually ran whatever the kubelet's Events said or dropped: for each
container (init, main and ephemeral), ``status.*ContainerStatuses[]`` holds its state and the
``imageID`` of what the runtime runs. A container *ran* when its state is ``running``, or
``terminated`` with a ``startedAt``; its ``lastState.terminated`` is an earlier run of the same
container and ran too.

* The image is the spec's, by container name: the user's spelling, the one the kubelet was asked
  to pull and the one the Events quote. The spec's image can be patched by the pod's creator
  while the kubelet pulls, so what the kubelet reports is kept too (``reported``):
  ``status.image`` (the runtime's name for what runs - another tag, even another repository
  of the same content when a node holds several) and ``imageID``'s repository. The detector
  judges all of them (see ``Judge.run_rules``).
* The digest is the repo digest in ``imageID``: containerd and CRI-O write ``repo@sha256:…``,
  dockershim ``docker-pullable://repo@sha256:…``. A bare ``sha256:…`` (dockershim:
  ``docker://sha256:…``) is an *image id* - the hash of the image's config, not of a registry
  manifest. It names no pull: the node holds the image without a registry digest (built or
  imported on the node: ``ctr import``, ``kind load``, ``docker build``). It cannot be compared
  with a registry's digests, so the digest is unknown (``None``); ``parse_image_id`` tells the
  two apart for whoever wants to report a side-loaded image.
* ``imageID`` describes the container the status is about: the current one, and also the one
  in ``lastState`` when that is the same container (the kubelet moves a crashed container to
  ``lastState`` and waits); an older ``lastState`` run may have had another image, so its digest
  is left unknown.
* The workload comes from the controller ``ownerReference`` with no API read, by the rules the
  operator's workload resolver applies when it cannot read the owner's owner: a ReplicaSet named
  ``<deployment>-<the pod's pod-template-hash label>`` is that Deployment's, a Job's CronJob
  comes from the Job's name (``workload.infer_above``); no controller: the pod is its own.

Every name is validated (``names``); damaged input raises :class:`DecodeError` with a short,
countable reason, never another exception.

    >>> pod = {"metadata": {"name": "web-7d9f8b6c5d-x7k2p", "namespace": "shop", "uid": "u-1",
    ...            "labels": {"pod-template-hash": "7d9f8b6c5d"},
    ...            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
    ...                                 "controller": True}]},
    ...        "spec": {"nodeName": "node-1",
    ...                 "containers": [{"name": "web", "image": "nginx:1.25"}]},
    ...        "status": {"containerStatuses": [{"name": "web", "image": "nginx:1.25",
    ...            "imageID": "docker.io/library/nginx@sha256:" + "ab" * 32,
    ...            "state": {"running": {"startedAt": "2026-11-18T11:06:40Z"}}}]}}
    >>> (run,) = decode_pod(pod)
    >>> run.image, run.digest[:13], run.node, run.state
    ('nginx:1.25', 'sha256:ababab', 'node-1', 'running')
    >>> run.workload
    Workload(kind='Deployment', name='web', source='inferred')

A container that never started (still pulling, or refused) ran nothing:

    >>> pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull"}}
    >>> decode_pod(pod)
    []
    >>> parse_image_id("docker-pullable://aquasec/kube-hunter@sha256:" + "0" * 64)[0][:10]
    'sha256:000'
    >>> parse_image_id("sha256:" + "1" * 64)  # an image id: built or imported on the node
    (None, 'sha256:1111111111111111111111111111111111111111111111111111111111111111')
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .imageref import MAX_REFERENCE_LENGTH, InvalidImageReference, parse_image
from .names import is_label, is_subdomain
from .observations import EPHEMERAL, INIT, MAIN, Running
from .pulls import DecodeError
from .workload import Workload, infer_above

# (spec key, status key, container type), in the order a pod runs them
_CONTAINER_LISTS = (
    ("initContainers", "initContainerStatuses", INIT),
    ("containers", "containerStatuses", MAIN),
    ("ephemeralContainers", "ephemeralContainerStatuses", EPHEMERAL),
)
# A container that started has a containerID in its status: a pod's JSON without these bytes
# shows nothing that ran, and readers skip it unparsed (scan, and the operator's Pod stream).
CANDIDATE = b'"containerID"'
_DIGEST = re.compile(r"(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_RUNTIME_PREFIXES = ("docker-pullable://", "docker://")
MAX_TIME = 40  # an RFC 3339 time with nanoseconds and an offset is 35 characters
MAX_CONTAINERS = 1000  # far beyond any pod the API server accepts; a bound on damaged input


def parse_image_id(image_id: Any) -> tuple[str | None, str | None]:
    """``(repo digest, image id)`` of a status' ``imageID``: at most one of them is set.

    The repo digest (``repo@sha256:…``) is what a registry served; an image id (a bare
    ``sha256:…``) is only the local image's config hash. Anything else is unknown."""
    if not isinstance(image_id, str) or not image_id or len(image_id) > MAX_REFERENCE_LENGTH:
        return None, None
    for prefix in _RUNTIME_PREFIXES:
        if image_id.startswith(prefix):
            image_id = image_id[len(prefix) :]
            break
    repo, at, digest = image_id.rpartition("@")
    if at and repo and _DIGEST.fullmatch(digest):
        return digest, None
    if not at and _DIGEST.fullmatch(image_id):
        return None, image_id
    return None, None


def workload_of(pod: str, metadata: Mapping[str, Any]) -> Workload:
    """The pod's workload from its own metadata (no API read): see the module docstring.

    >>> workload_of("backup-29375040-4kgr7", {"ownerReferences": [
    ...     {"kind": "Job", "name": "backup-29375040", "controller": True}]})
    Workload(kind='CronJob', name='backup', source='inferred')
    >>> workload_of("agent-x7k2p", {"ownerReferences": [
    ...     {"kind": "DaemonSet", "name": "agent", "controller": True}]})
    Workload(kind='DaemonSet', name='agent', source='read')
    >>> workload_of("hunter", {})
    Workload(kind='Pod', name='hunter', source='read')
    """
    owner = _controller(metadata)
    if owner is None:
        return Workload("Pod", pod, "read")
    kind, name = owner
    if kind == "ReplicaSet":
        labels = metadata.get("labels")
        hash_label = labels.get("pod-template-hash") if isinstance(labels, Mapping) else None
        if isinstance(hash_label, str) and hash_label and name.endswith("-" + hash_label):
            deployment = name[: -len(hash_label) - 1]
            if is_subdomain(deployment):
                return Workload("Deployment", deployment, "inferred")
    if kind in ("ReplicaSet", "Job"):
        above = infer_above(kind, name)
        if is_subdomain(above.name):  # a name cut by the naming rules may end in "-"
            return above
    return Workload(kind, name, "read")


def _controller(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    refs = metadata.get("ownerReferences")
    if refs is None:
        return None
    if not isinstance(refs, list):
        raise DecodeError("pod whose ownerReferences is not a list")
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            kind, name = ref.get("kind"), ref.get("name")
            if not isinstance(kind, str) or not _KIND.fullmatch(kind):
                raise DecodeError("pod whose controller has an invalid kind")
            if not is_subdomain(name):
                raise DecodeError("pod whose controller has an invalid name")
            return kind, name
    return None


def decode_pod(obj: Any, *, at_startup: bool = False) -> list[Running]:
    """The ``Running`` observations of every container of the pod that ran (see above)."""
    namespace, name, uid, metadata, spec, status = _pod_parts(obj)
    node = spec.get("nodeName")
    if node is not None and not is_subdomain(node):
        raise DecodeError("pod with an invalid nodeName")
    found: list[Running] = []
    workload: Workload | None = None
    for container_type, container, image, cstatus in _containers(spec, status):
        for state, started_at, digest, reported in _runs(cstatus):
            if workload is None:
                workload = workload_of(name, metadata)
            found.append(
                Running(
                    namespace,
                    name,
                    uid,
                    container,
                    container_type,
                    image,
                    digest,
                    node,
                    started_at,
                    workload,
                    at_startup,
                    state,
                    reported,
                )
            )
    return found


def pod_fingerprint(obj: Any) -> tuple[int, int]:
    """``(key, fingerprint)`` for the operator's Pod witness: the key from the pod's uid, the
    fingerprint from what its started containers ran (name, imageID, startedAt of each one's
    latest run). The witness remembers the two ints per pod (about 100 bytes in a dict) and
    judges a pod again only when its fingerprint changes: a status update about readiness,
    probes or conditions costs a hash, not a decode.

    Python's ``hash`` is salted per process: nobody can build collisions in advance, and the
    ints mean nothing outside this process (they are never stored).

    >>> a = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "status": {
    ...     "containerStatuses": [{"name": "c", "imageID": "i", "ready": False,
    ...                            "state": {"running": {"startedAt": "t"}}}]}}
    >>> b = {**a, "status": {"containerStatuses": [{**a["status"]["containerStatuses"][0],
    ...                                             "ready": True}]}}
    >>> pod_fingerprint(a) == pod_fingerprint(b)  # only readiness changed: nothing new ran
    True
    """
    if not isinstance(obj, Mapping):
        raise DecodeError("pod is not an object")
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise DecodeError("pod without metadata")
    uid = metadata.get("uid")
    key = (
        hash(uid)
        if isinstance(uid, str) and uid
        else hash((_text(metadata.get("namespace")), _text(metadata.get("name"))))
    )

    status = obj.get("status")
    runs = []
    if isinstance(status, Mapping):
        for _, status_key, _ in _CONTAINER_LISTS:
            statuses = status.get(status_key)
            if not isinstance(statuses, list):
                continue
            for cs in statuses:
                if isinstance(cs, Mapping):
                    started = _latest_start(cs)
                    if started is not None:
                        runs.append(
                            (_text(cs.get("name")), _text(cs.get("imageID")), _text(started))
                        )
    return key, hash(tuple(runs))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _latest_start(cs: Mapping[str, Any]) -> Any:
    for holder in (cs.get("state"), cs.get("lastState")):
        if isinstance(holder, Mapping):
            for state in ("running", "terminated"):
                detail = holder.get(state)
                if isinstance(detail, Mapping) and detail.get("startedAt"):
                    return detail["startedAt"]
    return None


def _pod_parts(obj: Any):
    if not isinstance(obj, Mapping):
        raise DecodeError("pod is not an object")
    metadata, spec, status = obj.get("metadata"), obj.get("spec"), obj.get("status")
    if not isinstance(metadata, Mapping):
        raise DecodeError("pod without metadata")
    if not isinstance(spec, Mapping):
        raise DecodeError("pod without spec")
    if status is None:
        status = {}
    elif not isinstance(status, Mapping):
        raise DecodeError("pod whose status is not an object")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not is_label(namespace):
        raise DecodeError("pod in an invalid namespace")
    if not is_subdomain(name):
        raise DecodeError("pod with an invalid name")
    uid = metadata.get("uid")
    uid = uid if isinstance(uid, str) and 0 < len(uid) <= 128 else None
    return namespace, name, uid, metadata, spec, status


def _containers(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Iterator[tuple]:
    """(type, name, image, status) of every container that has a status."""
    images: dict[str, tuple[str, str | None]] = {}
    for container_type, name, image in spec_containers(spec, images_required=False):
        if name in images:
            raise DecodeError("pod with two containers of one name")
        images[name] = (container_type, image)
    for _, status_key, container_type in _CONTAINER_LISTS:
        statuses = status.get(status_key)
        if statuses is None:
            continue
        if not isinstance(statuses, list) or len(statuses) > MAX_CONTAINERS:
            raise DecodeError(f"pod whose status.{status_key} is not a list")
        for cs in statuses:
            if not isinstance(cs, Mapping):
                raise DecodeError("pod with a container status that is not an object")
            known = images.get(_text(cs.get("name")))
            if known is None or known[0] != container_type:
                raise DecodeError("container status without its container in the spec")
            if known[1] is None:
                if _latest_start(cs) is not None:
                    raise DecodeError("pod with a started container that names no image")
                continue
            yield container_type, cs["name"], known[1], cs


def spec_containers(spec: Any, images_required: bool = True) -> list[tuple[str, str, str | None]]:
    """``(type, name, image)`` of every container of a pod spec (init, main, ephemeral).

    >>> spec_containers({"containers": [{"name": "app", "image": "nginx"}],
    ...                  "initContainers": [{"name": "setup", "image": "busybox"}]})
    [('init', 'setup', 'busybox'), ('main', 'app', 'nginx')]
    """
    if not isinstance(spec, Mapping):
        raise DecodeError("pod without spec")
    found = []
    for spec_key, _, container_type in _CONTAINER_LISTS:
        listed = spec.get(spec_key)
        if listed is not None:
            for name, image in listed_containers(listed, images_required):
                found.append((container_type, name, image))
    return found


def listed_containers(listed: Any, images_required: bool = True) -> list[tuple[str, str | None]]:
    """``(name, image)`` of a list of containers, every name and image validated."""
    if not isinstance(listed, list) or len(listed) > MAX_CONTAINERS:
        raise DecodeError("pod whose containers are not a list of containers")
    found = []
    for container in listed:
        if not isinstance(container, Mapping):
            raise DecodeError("pod with a container that is not an object")
        name, image = container.get("name"), container.get("image")
        if not is_label(name):
            raise DecodeError("pod with an invalid container name")
        if image is None and not images_required:
            found.append((name, None))
            continue
        if not isinstance(image, str) or not 0 < len(image) <= MAX_REFERENCE_LENGTH:
            raise DecodeError("pod with an invalid container image")
        found.append((name, image))
    return found


def reported_images(cs: Mapping[str, Any]) -> tuple[str, ...]:
    """What the kubelet reports a container runs: ``status.image`` when it is a reference (with
    containerd, a pod that named its image by digest only shows the image id, ``sha256:…``),
    then the repository of ``imageID``'s repo digest.

    >>> reported_images({"image": "sha256:" + "1" * 64,
    ...                  "imageID": "docker.io/aquasec/kube-hunter@sha256:" + "0" * 64})
    ('docker.io/aquasec/kube-hunter',)
    """
    found = []
    image = cs.get("image")
    if isinstance(image, str) and _is_reference(image):
        found.append(image)
    image_id = cs.get("imageID")
    if parse_image_id(image_id)[0] is not None:
        repo = image_id.rpartition("@")[0]
        for prefix in _RUNTIME_PREFIXES:
            repo = repo.removeprefix(prefix)
        if _is_reference(repo) and repo not in found:
            found.append(repo)
    return tuple(found)


def _is_reference(image: str) -> bool:
    if _DIGEST.fullmatch(image):
        return False  # an image id, not a name
    try:
        parse_image(image)
    except InvalidImageReference:
        return False
    return True


def _runs(cs: Mapping[str, Any]) -> Iterator[tuple[str, str | None, str | None, tuple]]:
    """(state, startedAt, digest, reported images) of each run the status shows: the current
    one, then the one before it."""
    digest = parse_image_id(cs.get("imageID"))[0]
    reported = reported_images(cs)
    current = cs.get("state")
    current = current if isinstance(current, Mapping) else {}
    for state in ("running", "terminated"):
        detail = current.get(state)
        if isinstance(detail, Mapping):
            started = _time(detail.get("startedAt"))
            if state == "running" or started is not None:
                yield state, started, digest, reported
            break
    last = cs.get("lastState")
    detail = last.get("terminated") if isinstance(last, Mapping) else None
    if isinstance(detail, Mapping):
        started = _time(detail.get("startedAt"))
        if started is not None:
            # imageID is the latest container's: the one in lastState only when the status
            # names it (the kubelet moved it there and waits to restart it).
            same = detail.get("containerID") and detail.get("containerID") == cs.get("containerID")
            yield "terminated", started, *((digest, reported) if same else (None, ()))


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TIME else None
