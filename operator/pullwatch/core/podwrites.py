"""Which images an update or a patch of a pod writes (audit): each is an ``Intent``.

A pod's ``spec.*containers[].image`` is the one field of its containers that can change after
creation, and its creator may change it while the kubelet pulls: created with an innocent image,
patched to a scanner (or the other way round, to hide what the kubelet pulled). Who wrote which
image is what the audit log proves. The request says which images were written - a whole pod
(update), a strategic-merge or merge patch (``spec.containers[]`` with names), a JSON patch
(``/spec/containers/0/image``) - and the response, when logged, is the pod as it then was: the
containers that now run an image the request wrote are those it changed.

    >>> entry = {"requestObject": [{"op": "replace", "path": "/spec/containers/0/image",
    ...                             "value": "aquasec/kube-hunter"}],
    ...          "responseObject": {"kind": "Pod", "spec": {"containers": [
    ...              {"name": "web", "image": "aquasec/kube-hunter"},
    ...              {"name": "side", "image": "busybox"}]}}}
    >>> images_written(entry, entry["responseObject"])
    [('main', 'web', 'aquasec/kube-hunter')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .pods import spec_containers
from .pulls import DecodeError

MAX_OPS = 1000


def images_written(entry: Mapping[str, Any], pod: Mapping[str, Any] | None) -> list[tuple]:
    """``(type, container, image)`` of each container whose image the request wrote."""
    request = entry.get("requestObject")
    named = _named(request)
    if not named:
        return []
    holder = pod if pod is not None else request  # not logged: the patch's own containers
    try:
        containers = spec_containers(holder.get("spec")) if isinstance(holder, Mapping) else []
    except DecodeError:
        return []  # a partial patch without every name and image: nothing to attribute
    return [(kind, name, image) for kind, name, image in containers if image in named]


def _named(request: Any) -> set[str]:
    named: set[str] = set()
    if isinstance(request, list):  # JSON patch
        for op in request[:MAX_OPS]:
            if not isinstance(op, Mapping) or op.get("op") not in ("add", "replace"):
                continue
            path, value = op.get("path"), op.get("value")
            if not (isinstance(path, str) and path.startswith("/spec/")):
                continue
            if isinstance(value, Mapping):
                value = value.get("image")  # a whole container added or replaced
            elif not path.endswith("/image"):
                continue
            if isinstance(value, str):
                named.add(value)
        return named
    spec = request.get("spec") if isinstance(request, Mapping) else None
    if isinstance(spec, Mapping):
        for key in ("initContainers", "containers", "ephemeralContainers"):
            listed = spec.get(key)
            if isinstance(listed, list):
                for c in listed[:MAX_OPS]:
                    if isinstance(c, Mapping) and isinstance(c.get("image"), str):
                        named.add(c["image"])
    return named
