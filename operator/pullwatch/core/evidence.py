"""What a Finding shows besides its counts: the evidence, bounded, and packed while at rest.

A Finding's ``Evidence`` is everything a reader of ``status`` needs beyond the counts the
detector itself works with: the images and pods seen, what ran (by digest), who changed the
workload, what pods were created with the image, who wrote forged Events. Every list is capped
and every string cut, whatever the inputs (an attacker sizes them).

At rest - adopted at start-up, or not observed for a while - the operator keeps a Finding's
evidence *packed*: its status form, zlib-compressed against a dictionary of the words every
status repeats, a few hundred bytes instead of a few kilobytes. ``FindingState.evidence()``
unpacks it; nothing else does, so the cost is visible where it is paid.

    >>> ev = Evidence(Origin("nginx", None, "Pod", "inferred", "kubelet", "events"))
    >>> ev.note_image("nginx", 2); ev.note_pod("web", "node-1", "web", 2, "2026-11-18T10:00:00Z")
    >>> packed = pack(ev.parts())
    >>> again = Evidence.from_status(unpack(packed), ev.origin, ev.ledger)
    >>> again.images, again.pods["web"]
    ({'nginx': 2}, ['node-1', 'web', 2, '2026-11-18T10:00:00Z'])
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from .findings import ActorRecord, Origin, cut, later
from .ledger import Ledger, b64_each, short_hash, unb64

MAX_IMAGES = 10
MAX_PODS = 10
MAX_DISTINCT = 100
MAX_FOLDED = 10
MAX_RUNNING = 10
MAX_DIGESTS = 10
MAX_ACTORS = 5
# What each running container's pull Event turned out to be.
SEEN, MISSING, PENDING, EXPIRED = "seen", "missing", "pending", "expired"

# zlib's preset dictionary: the words every packed status repeats, so that a small one compresses
# to a few hundred bytes instead of barely shrinking.
_ZDICT = orjson.dumps(
    {
        "outcomes": {"succeeded": 0, "cached": 0, "failed": 0, "backoff": 0, "ran": "unknown"},
        "lastError": {"class": "not found", "message": "rpc error: code = ", "time": "2026-"},
        "images": [{"image": "docker.io/library/", "count": 1}],
        "imagesOther": 0,
        "pods": [{"name": "-", "node": "node-", "container": "", "count": 1, "lastSeen": ""}],
        "podCount": 1,
        "nodeCount": 1,
        "running": {"containers": 1, "sample": [{"pod": "", "digest": "sha256:", "startedAt": ""}]},
        "origin": {
            "image": "",
            "node": "",
            "workloadKind": "Deployment",
            "workloadSource": "inferred",
            "component": "kubelet",
            "source": "events",
            "notAllowedReason": "no AllowedImages pattern for namespace ",
        },
        "ledger": {"v": 2, "closed": [0, 0, 0, 0, 0], "base": 29000000, "series": []},
    }
)


def pack(parts: dict[str, Any]) -> bytes:
    z = zlib.compressobj(6, zdict=_ZDICT)
    return z.compress(orjson.dumps(parts)) + z.flush()


def unpack(packed: bytes) -> dict[str, Any]:
    z = zlib.decompressobj(zdict=_ZDICT)
    return orjson.loads(z.decompress(packed) + z.flush())


class Evidence:
    __slots__ = (
        "actors",
        "digests",
        "folded",
        "folded_count",
        "folded_hashes",
        "forged_by",
        "images",
        "images_other",
        "intent",
        "intent_hashes",
        "last_error",
        "ledger",
        "node_count",
        "node_hashes",
        "origin",
        "pod_count",
        "pod_hashes",
        "pods",
        "running",
        "running_count",
        "running_hashes",
        "without_pull_event",
    )

    def __init__(self, origin: Origin, ledger: Ledger | None = None):
        self.origin = origin
        self.ledger = ledger if ledger is not None else Ledger()
        self.images: dict[str, int] = {}  # the kubelet's spelling -> pulls attributed to it
        self.images_other = 0
        self.pods: dict[str, list[Any]] = {}  # pod -> [node, container, pulls, lastSeen]
        self.pod_count = self.node_count = 0
        self.pod_hashes: set[int] = set()
        self.node_hashes: set[int] = set()
        self.last_error: tuple[str, str, str | None] | None = None  # (class, message, when)
        self.folded: dict[str, int] = {}  # overflow: "workload image" -> pulls
        self.folded_count = 0
        self.folded_hashes: set[int] = set()
        # "pod\0container" -> [pod, container, node, digest, startedAt, pullEvent, atStartup,
        # ranImage]
        self.running: dict[str, list[Any]] = {}
        self.running_count = 0
        self.running_hashes: set[int] = set()
        self.digests: dict[str, int] = {}  # digest -> containers seen running it
        self.without_pull_event = 0  # containers that ran with no pull Event
        self.actors: list[ActorRecord] = []  # recent distinct people, newest last
        self.forged_by: str | None = None  # the latest author of a forged pull Event
        self.intent: dict[str, Any] | None = None  # {pods, first, last}: pods created with it
        self.intent_hashes: set[int] = set()

    # -- what is noted --------------------------------------------------------------------
    def note_image(self, image: str, delta: int) -> None:
        image = cut(image, 256)
        if image in self.images or len(self.images) < MAX_IMAGES:
            self.images[image] = self.images.get(image, 0) + delta
        else:
            self.images_other += delta

    def note_pod(self, pod: str, node: str | None, container: str, delta: int, when: Any) -> None:
        entry = self.pods.pop(pod, None) or [None, container, 0, when]
        entry[0] = cut(node, 253) or entry[0]
        entry[1] = cut(container, 253) or entry[1]
        entry[2] += delta
        entry[3] = later(entry[3], when)
        self.pods[cut(pod, 253)] = entry
        if len(self.pods) > MAX_PODS:
            del self.pods[next(iter(self.pods))]
        self.pod_count += note(self.pod_hashes, pod)
        if node:
            self.node_count += note(self.node_hashes, node)

    def note_running(self, entry: list[Any]) -> bool:
        """A container seen running ([pod, container, node, digest, startedAt, pullEvent,
        atStartup, ranImage]); whether it is new to this Finding."""
        key = f"{entry[0]}\0{entry[1]}"
        old = self.running.pop(key, None)
        if old is not None:
            entry[3] = entry[3] or old[3]
            entry[5] = old[5] if old[5] in (SEEN, MISSING) else entry[5]
            entry[6] = old[6]
            entry[7] = entry[7] or old[7]
        self.running[key] = entry
        if len(self.running) > MAX_RUNNING:
            del self.running[next(iter(self.running))]
        new = note(self.running_hashes, key)
        self.running_count += new
        if entry[2]:
            self.node_count += note(self.node_hashes, entry[2])
        if new and entry[3]:
            digest = entry[3]
            if digest in self.digests or len(self.digests) < MAX_DIGESTS:
                self.digests[digest] = self.digests.get(digest, 0) + 1
        return bool(new)

    def note_actor(self, record: ActorRecord) -> bool:
        """A person who changed the workload; whether anything changed."""
        if self.actors and self.actors[-1] == record:
            return False
        self.actors = [a for a in self.actors if a.user != record.user] + [record]
        del self.actors[:-MAX_ACTORS]
        return True

    # -- the stored form --------------------------------------------------------------------
    def parts(self) -> dict[str, Any]:
        """The packable form (the status keys this object holds), never bounded further here."""
        out: dict[str, Any] = {
            "images": [{"image": i, "count": n} for i, n in self.images.items()],
            "imagesOther": self.images_other,
            "pods": [
                {"name": p, "node": e[0], "container": e[1], "count": e[2], "lastSeen": e[3]}
                for p, e in reversed(self.pods.items())  # newest first, as in status
            ],
            "podCount": self.pod_count,
            "nodeCount": self.node_count,
            "origin": self.origin.as_dict(),
            "hashes": {
                "pods": hashes_text(self.pod_hashes),
                "nodes": hashes_text(self.node_hashes),
                "running": hashes_text(self.running_hashes),
                "intents": hashes_text(self.intent_hashes),
                "foldedIdentities": hashes_text(self.folded_hashes),
            },
        }
        if self.last_error is not None:
            out["lastError"] = {
                "class": self.last_error[0],
                "message": self.last_error[1],
                "time": self.last_error[2],
            }
        if self.folded or self.folded_count:
            out["folded"] = {
                "identities": self.folded_count,
                "sample": [{"what": k, "count": n} for k, n in self.folded.items()],
            }
        if self.running:
            out["running"] = {
                "containers": self.running_count,
                "sample": [running_dict(e) for e in reversed(self.running.values())],
            }
            out["digests"] = [{"digest": d, "containers": n} for d, n in self.digests.items()]
        if self.without_pull_event:
            out["ranWithoutPullEvent"] = self.without_pull_event
        if self.actors:
            out["actors"] = [a.as_dict() for a in reversed(self.actors)]
        if self.forged_by is not None:
            out["forgedBy"] = self.forged_by
        if self.intent is not None:
            out["intent"] = self.intent
        return out

    @classmethod
    def from_status(cls, status: dict[str, Any], origin: Origin, ledger: Ledger) -> Evidence:
        """The evidence of a stored (or packed) status. What is there is shown, not trusted: a
        malformed entry (someone edited the status) is left out, never raised - the counts are
        the ledger's, and the next write puts pullwatch's status back."""
        ev = cls(origin, ledger)
        hashes = _dict(status.get("hashes")) or _dict(status.get("ledger"))
        ev.pod_hashes = parse_hashes(hashes.get("pods"))
        ev.node_hashes = parse_hashes(hashes.get("nodes"))
        ev.running_hashes = parse_hashes(hashes.get("running"))
        ev.intent_hashes = parse_hashes(hashes.get("intents"))
        ev.folded_hashes = parse_hashes(hashes.get("foldedIdentities"))
        ev.pod_count = max(_int(status.get("podCount")), len(ev.pod_hashes))
        ev.node_count = max(_int(status.get("nodeCount")), len(ev.node_hashes))
        for item in _dicts(status.get("images"), "image")[:MAX_IMAGES]:
            ev.images[cut(str(item["image"]), 256)] = _int(item.get("count"))
        ev.images_other = _int(status.get("imagesOther"))
        for pod in reversed(_dicts(status.get("pods"), "name")[:MAX_PODS]):  # newest first
            ev.pods[cut(str(pod["name"]), 253)] = [
                _str(pod.get("node")),
                _str(pod.get("container")) or "",
                _int(pod.get("count")),
                _str(pod.get("lastSeen")),
            ]
        error = _dict(status.get("lastError")) or _dict(
            _dict(status.get("outcomes")).get("lastError")
        )
        if error:
            ev.last_error = (
                cut(str(error.get("class")), 32),
                cut(str(error.get("message")), 300),
                _str(error.get("time")),
            )
        folded = _dict(status.get("folded"))
        ev.folded_count = _int(folded.get("identities"))
        for item in _dicts(folded.get("sample"), "what")[:MAX_FOLDED]:
            ev.folded[cut(str(item["what"]), 512)] = _int(item.get("count"))
        running = _dict(status.get("running"))
        ev.running_count = max(_int(running.get("containers")), len(ev.running_hashes))
        for item in reversed(_dicts(running.get("sample"), "pod")[:MAX_RUNNING]):
            entry = running_entry(item)
            ev.running[f"{entry[0]}\0{entry[1]}"] = entry
        for item in _dicts(status.get("digests"), "digest")[:MAX_DIGESTS]:
            ev.digests[cut(str(item["digest"]), 80)] = _int(item.get("containers"))
        ev.without_pull_event = _int(status.get("ranWithoutPullEvent"))
        actors = status.get("actors") if isinstance(status.get("actors"), list) else []
        for item in reversed(actors[:MAX_ACTORS]):  # shown newest first, held oldest first
            record = ActorRecord.from_dict(item)
            if record is not None:
                ev.actors.append(record)
        ev.forged_by = (
            cut(status["forgedBy"], 253) if isinstance(status.get("forgedBy"), str) else None
        )
        intent = _dict(status.get("intent"))
        if intent:
            ev.intent = {
                "pods": _int(intent.get("pods")),
                **{k: _intent_end(intent.get(k)) for k in ("first", "last") if intent.get(k)},
            }
        return ev


def running_dict(e: list[Any]) -> dict[str, Any]:
    out = {"pod": e[0], "container": e[1], "node": e[2], "digest": e[3], "startedAt": e[4]}
    out["pullEvent"] = e[5]
    if e[6]:
        out["atStartup"] = True
    if e[7]:
        out["ranImage"] = e[7]
    return out


def running_entry(item: dict[str, Any]) -> list[Any]:
    pull_event = item.get("pullEvent")
    return [
        cut(str(item["pod"]), 253),
        cut(str(item.get("container") or ""), 63),
        _str(item.get("node")),
        _str(item.get("digest")),
        _str(item.get("startedAt")),
        pull_event if pull_event in (SEEN, MISSING, PENDING, EXPIRED) else PENDING,
        item.get("atStartup") is True,
        cut(item["ranImage"], 256) if isinstance(item.get("ranImage"), str) else None,
    ]


def _intent_end(value: Any) -> dict[str, Any]:
    value = _dict(value)
    return {
        k: cut(v, 253)
        for k, v in value.items()
        if k in ("pod", "container", "user", "time") and isinstance(v, str)
    }


def note(seen: set[int], text: str) -> int:
    """1 if ``text`` is new to the bounded set of hashes ``seen`` (exact while the set has room;
    past ``MAX_DISTINCT``, a hash not in it is taken as new)."""
    h = short_hash(text, 36)
    if h in seen:
        return 0
    if len(seen) < MAX_DISTINCT:
        seen.add(h)
    return 1


def hashes_text(seen: set[int]) -> str:
    return "".join(b64_each(sorted(seen), 6))


def parse_hashes(text: Any) -> set[int]:
    if not isinstance(text, str) or len(text) % 6 or len(text) > 6 * MAX_DISTINCT:
        return set()
    try:
        return {unb64(text[i : i + 6]) for i in range(0, len(text), 6)}
    except KeyError:
        return set()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any, key: str) -> list[dict[str, Any]]:
    """The entries of a stored list that are objects with ``key``."""
    return [v for v in value if isinstance(v, dict) and key in v] if isinstance(value, list) else []


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
