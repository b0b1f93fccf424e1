"""The merge state's stored form: what each Finding kept, as compact rows, versioned.

``pullwatch scan`` writes it into each Finding (the ``pullwatch.dev/merge-state`` annotation)
and ``pullwatch merge`` reads it back. The form is versioned: a state from another version is
refused by name, never half read; a damaged one is refused as damaged. Rows are lists, not
objects - the same few field names repeated for every series would be most of the bytes - and
the whole is zlib-compressed and base64'd.

    >>> unpack(pack({"v": 2, "pulls": []}))
    {'v': 2, 'pulls': []}
    >>> unpack("v9:AAAA")
    Traceback (most recent call last):
    ...
    ValueError: merge state v9 is from another pullwatch version (this one reads v2)
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson

from .observations import Intent, Running
from .pulls import Actor, InvolvedObject, Pull
from .workload import Workload

# 2: a running row holds what the kubelet reported ran; a pulled hash names the repository pulled
STATE_VERSION = 2


def pack(doc: Any) -> str:
    # Level 1: every Finding of a scan packs one (measured on bench/scan_throughput.py's
    # Finding-heavy stream: half the time of level 6, for 9 % more bytes).
    return f"v{STATE_VERSION}:" + base64.b64encode(zlib.compress(orjson.dumps(doc), 1)).decode()


def unpack(text: Any) -> Any:
    if not isinstance(text, str) or not text.startswith("v"):
        raise ValueError("not a pullwatch merge state")
    version, _, data = text.partition(":")
    if version != f"v{STATE_VERSION}":
        raise ValueError(
            f"merge state {version} is from another pullwatch version "
            f"(this one reads v{STATE_VERSION})"
        )
    try:
        doc = orjson.loads(zlib.decompress(base64.b64decode(data, validate=True)))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"damaged merge state ({exc})") from None
    if not isinstance(doc, dict) or doc.get("v") != STATE_VERSION:
        raise ValueError("damaged merge state")
    return doc


def pull_row(p: Pull) -> list[Any]:
    a = p.actor
    return [
        p.kind,
        p.image,
        p.reason,
        p.involved.kind,
        p.involved.name,
        p.involved.namespace,
        p.involved.uid,
        p.involved.container,
        p.node,
        p.count,
        p.first_seen,
        p.last_seen,
        p.source,
        p.component,
        p.error,
        actor_row(a) if a else None,
    ]


def pull_of(row: list[Any], namespace: str) -> Pull:
    (
        kind,
        image,
        reason,
        ikind,
        iname,
        ins,
        iuid,
        icontainer,
        node,
        count,
        first,
        last,
        source,
        component,
        error,
        actor,
    ) = row
    if not isinstance(count, int) or count < 0 or not isinstance(image, str):
        raise ValueError("bad pull")
    return Pull(
        kind,
        image,
        reason,
        InvolvedObject(ikind, iname, ins, iuid, icontainer),
        node,
        None,
        count,
        first,
        last,
        source,
        actor_of(actor) if actor else None,
        component,
        error,
        namespace,
    )


def actor_row(a: Actor) -> list[Any]:
    return [a.user, list(a.groups), list(a.source_ips), a.user_agent]


def actor_of(row: list[Any]) -> Actor:
    return Actor(row[0], tuple(row[1]), tuple(row[2]), row[3])


def running_row(r: Running) -> list[Any]:
    return [
        r.pod,
        r.pod_uid,
        r.container,
        r.container_type,
        r.image,
        r.digest,
        r.node,
        r.started_at,
        list(r.workload),
        r.state,
        list(r.reported),
    ]


def running_of(row: list[Any], namespace: str) -> Running:
    pod, uid, container, ctype, image, digest, node, started, workload, state = row[:10]
    reported = tuple(str(i) for i in row[10]) if len(row) > 10 else ()
    return Running(
        namespace,
        pod,
        uid,
        container,
        ctype,
        image,
        digest,
        node,
        started,
        Workload(*workload),
        False,
        state,
        reported,
    )


def intent_row(i: Intent) -> list[Any]:
    return [
        i.pod,
        i.container,
        i.container_type,
        i.image,
        list(i.workload),
        actor_row(i.actor) if i.actor else None,
        i.time,
        i.audit_id,
    ]


def intent_of(row: list[Any], namespace: str) -> Intent:
    pod, container, ctype, image, workload, actor, time, audit_id = row
    return Intent(
        namespace,
        pod,
        container,
        ctype,
        image,
        Workload(*workload),
        actor_of(actor) if actor else None,
        time,
        audit_id,
    )
