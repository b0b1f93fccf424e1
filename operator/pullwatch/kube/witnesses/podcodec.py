"""A minimal Pod decoder for the Pod witness, with the API of ``core/pods.py`` (``decode_pod``,
``pod_fingerprint``, ``CANDIDATE``): used until that module (branch ``decoders``) is on main,
then removed in favour of it.

A container *ran* when its state is ``running``, or ``terminated`` with a ``startedAt``. The
image is the spec's (what the kubelet was asked to pull, what the Events quote); the digest is
the repository digest of the status' ``imageID`` (``repo@sha256:…``; a bare image id names no
pull and is left unknown). The workload comes from the controller ownerReference, no API read.

    >>> pod = {"metadata": {"name": "web-7d9f8b6c5d-x7k2p", "namespace": "shop", "uid": "u-1",
    ...            "labels": {"pod-template-hash": "7d9f8b6c5d"},
    ...            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
    ...                                 "controller": True}]},
    ...        "spec": {"nodeName": "node-1",
    ...                 "containers": [{"name": "web", "image": "nginx:1.25"}]},
    ...        "status": {"containerStatuses": [{"name": "web", "containerID": "containerd://1",
    ...            "imageID": "docker.io/library/nginx@sha256:" + "ab" * 32,
    ...            "state": {"running": {"startedAt": "2026-11-18T11:06:40Z"}}}]}}
    >>> (run,) = decode_pod(pod)
    >>> run.image, run.digest[:13], run.workload
    ('nginx:1.25', 'sha256:ababab', Workload(kind='Deployment', name='web', source='inferred'))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...core.names import is_label, is_subdomain
from ...core.observations import EPHEMERAL, INIT, MAIN, Running
from ...core.pulls import DecodeError
from ...core.workload import Workload, controller_of, infer_above

CANDIDATE = b'"containerID"'  # a pod with no started container has none: never parsed
_LISTS = (
    ("initContainers", "initContainerStatuses", INIT),
    ("containers", "containerStatuses", MAIN),
    ("ephemeralContainers", "ephemeralContainerStatuses", EPHEMERAL),
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def workload_of(pod: str, metadata: Mapping[str, Any]) -> Workload:
    owner = controller_of(metadata)
    if owner is None:
        return Workload("Pod", pod, "read")
    kind, name = owner
    if not is_subdomain(name):
        raise DecodeError("pod whose controller has an invalid name")
    if kind == "ReplicaSet":
        labels = metadata.get("labels")
        template = labels.get("pod-template-hash") if isinstance(labels, Mapping) else None
        if isinstance(template, str) and template and name.endswith("-" + template):
            return Workload("Deployment", name[: -len(template) - 1], "inferred")
    if kind in ("ReplicaSet", "Job"):
        return infer_above(kind, name)
    return Workload(kind, name, "read")


def decode_pod(obj: Any, *, at_startup: bool = False) -> list[Running]:
    if not isinstance(obj, Mapping):
        raise DecodeError("pod is not an object")
    meta, spec, status = obj.get("metadata"), obj.get("spec"), obj.get("status") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise DecodeError("pod without metadata or spec")
    if not isinstance(status, Mapping):
        raise DecodeError("pod whose status is not an object")
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not is_label(namespace) or not is_subdomain(name):
        raise DecodeError("pod with an invalid name or namespace")
    node = spec.get("nodeName")
    if node is not None and not is_subdomain(node):
        raise DecodeError("pod with an invalid nodeName")
    out: list[Running] = []
    for spec_key, status_key, container_type in _LISTS:
        images = {
            c.get("name"): c.get("image") for c in spec.get(spec_key) or [] if isinstance(c, dict)
        }
        for cs in status.get(status_key) or []:
            if not isinstance(cs, Mapping) or not is_label(cs.get("name")):
                raise DecodeError("pod with an invalid container status")
            image = images.get(cs["name"])
            state = cs.get("state") if isinstance(cs.get("state"), Mapping) else {}
            ran = next((s for s in ("running", "terminated") if isinstance(state.get(s), dict)), "")
            started = (state.get(ran) or {}).get("startedAt") if ran else None
            if not ran or (ran == "terminated" and not started):
                continue
            if not isinstance(image, str) or not image or len(image) > 4096:
                raise DecodeError("pod with a started container that names no image")
            digest = str(cs.get("imageID") or "").rpartition("@")[2]
            out.append(
                Running(
                    namespace,
                    name,
                    uid if isinstance(uid, str) else None,
                    cs["name"],
                    container_type,
                    image,
                    digest if _DIGEST.fullmatch(digest) else None,
                    node,
                    started if isinstance(started, str) else None,
                    workload_of(name, meta),
                    at_startup,
                    ran,
                )
            )
    return out


def pod_fingerprint(obj: Any) -> tuple[int, int]:
    """(key from the uid, hash of each started container's name, imageID and startedAt)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        raise DecodeError("pod without metadata")
    uid = meta.get("uid")
    key = (
        hash(uid)
        if isinstance(uid, str) and uid
        else hash((meta.get("namespace"), meta.get("name")))
    )
    status = obj.get("status")
    runs = []
    if isinstance(status, Mapping):
        for _, status_key, _ in _LISTS:
            for cs in status.get(status_key) or []:
                if isinstance(cs, Mapping) and cs.get("containerID"):
                    state = cs.get("state") if isinstance(cs.get("state"), Mapping) else {}
                    started = [
                        (state.get(s) or {}).get("startedAt")
                        for s in ("running", "terminated")
                        if isinstance(state.get(s), dict)
                    ]
                    runs.append((str(cs.get("name")), str(cs.get("imageID")), str(started)))
    return key, hash(tuple(runs))
