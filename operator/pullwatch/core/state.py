"""One Finding's state: exact counts (the ledger), what the Finding shows, and its bounded body.

``status`` holds the exact total ``count`` and ``firstSeen``/``lastSeen``; what each pull became
(``outcomes``: succeeded, served from cache, failed - with the last error's class - and back-offs;
``ran`` says whether the image can have run: ``yes`` once a pull succeeded or was served from
cache, ``no`` while every attempt that ended failed, ``unknown`` while no attempt has ended); the image references seen, each with its count, at
most ``MAX_IMAGES`` (the rest summed in ``imagesOther``); the most recent pods with their node,
container and count, at most ``MAX_PODS``; how many distinct pods and nodes (exact up to
``MAX_DISTINCT`` each, then counted on from there); the origin (the first pull); the Suppression
that covers its latest pull, if one does, and how many of its pulls were covered; and the ledger.

No Finding outgrows ``BUDGET`` bytes of JSON whatever its inputs: strings from Events are cut,
lists are capped, and ``body()`` trims the oldest pods, the smallest images and, last, closes
ledger slots until the body fits (the API server adds metadata and managedFields on top, within
etcd's 16 KiB that ``bench/cluster_scale.py`` measures).
"""

from __future__ import annotations

from typing import Any

import orjson

from .findings import Identity, Origin, build_spec, cut, earlier, finding_body, later
from .ledger import FAILED, Ledger, b64, short_hash, unb64
from .pulls import Pull, error_class

MAX_IMAGES = 10
MAX_PODS = 10
MAX_DISTINCT = 100
MAX_FOLDED = 10
BUDGET = 12 * 1024


class FindingState:
    __slots__ = ("identity", "origin", "ledger", "first_seen", "last_seen", "images", "images_other",
                 "pods", "pod_count", "node_count", "pod_hashes", "node_hashes", "last_error", "folded",
                 "folded_count", "folded_hashes", "suppression", "suppressed_pulls", "last_image", "__weakref__")

    def __init__(self, identity: Identity, origin: Origin):
        self.identity, self.origin = identity, origin
        self.ledger = Ledger()
        self.first_seen: str | None = None
        self.last_seen: str | None = None
        self.images: dict[str, int] = {}          # kubelet spelling -> pulls attributed to it
        self.images_other = 0
        self.pods: dict[str, list[Any]] = {}      # pod -> [node, container, pulls, lastSeen]; oldest first
        self.pod_count = self.node_count = 0
        self.pod_hashes: set[int] = set()
        self.node_hashes: set[int] = set()
        self.last_error: tuple[str, str, str | None] | None = None  # (class, message, when)
        self.folded: dict[str, int] = {}          # overflow: "workload image" -> pulls
        self.folded_count = 0
        self.folded_hashes: set[int] = set()
        self.suppression: dict[str, Any] | None = None  # {namespace, name, reason, expires} covering it
        self.suppressed_pulls = 0
        self.last_image: str | None = None               # the latest pull's image, normalized

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def count(self) -> int:
        return self.ledger.count

    # -- observing --------------------------------------------------------------------------------
    def observe(self, pull: Pull, series: str, minute: int) -> int:
        """Count one observation; return the pulls it adds (0 for a repeat)."""
        pod, container = pull.involved.name, pull.involved.container or ""
        delta = self.ledger.observe(series, (pod, container), pull.kind, pull.count, minute)
        when = pull.last_seen or pull.first_seen
        self.first_seen = earlier(self.first_seen, pull.first_seen)
        self.last_seen = later(self.last_seen, when)
        if pull.kind == FAILED and pull.error is not None and later(self.last_error[2] if self.last_error else None,
                                                                    when) == when:
            self.last_error = (error_class(pull.error), cut(pull.error, 300), when)
        if delta:
            image = cut(pull.image, 256)
            if image in self.images or len(self.images) < MAX_IMAGES:
                self.images[image] = self.images.get(image, 0) + delta
            else:
                self.images_other += delta
        entry = self.pods.pop(pod, None) or [None, container, 0, when]
        entry[0] = cut(pull.node, 253) or entry[0]
        entry[1] = cut(container, 253) or entry[1]
        entry[2] += delta
        entry[3] = later(entry[3], when)
        self.pods[cut(pod, 253)] = entry
        if len(self.pods) > MAX_PODS:
            del self.pods[next(iter(self.pods))]
        self.pod_count += _note(self.pod_hashes, pod)
        if pull.node:
            self.node_count += _note(self.node_hashes, pull.node)
        return delta

    def fold(self, identity: Identity, image: str, delta: int) -> None:
        """An overflow Finding: remember what was folded into it (a bounded sample, exact pulls)."""
        self.folded_count += _note(self.folded_hashes, f"{identity.workload}\0{identity.repository}")
        key = f"{cut(identity.workload, 253)} {cut(image, 256)}"
        if key in self.folded or len(self.folded) < MAX_FOLDED:
            self.folded[key] = self.folded.get(key, 0) + delta

    # -- the body -----------------------------------------------------------------------------------
    def status(self, max_pods: int = MAX_PODS, max_images: int = MAX_IMAGES) -> dict[str, Any]:
        outcomes: dict[str, Any] = self.ledger.outcomes()
        outcomes["ran"] = ran(outcomes)
        if self.last_error is not None:
            outcomes["lastError"] = {"class": self.last_error[0], "message": self.last_error[1],
                                     "time": self.last_error[2]}
        images = sorted(self.images.items(), key=lambda kv: -kv[1])
        shown, hidden = images[:max_images], images[max_images:]
        status: dict[str, Any] = {
            "count": self.ledger.count,
            "firstSeen": self.first_seen,
            "lastSeen": self.last_seen,
            "outcomes": outcomes,
            "images": [{"image": i, "count": n} for i, n in shown],
            "imagesOther": self.images_other + sum(n for _, n in hidden),
            "pods": [{"name": p, "node": e[0], "container": e[1], "count": e[2], "lastSeen": e[3]}
                     for p, e in list(self.pods.items())[::-1][:max_pods]],
            "podCount": self.pod_count,
            "nodeCount": self.node_count,
            "origin": self.origin.as_dict(),
        }
        if self.last_image is not None:
            status["lastImage"] = self.last_image
        if self.suppression is not None:
            status["suppression"] = self.suppression
        if self.suppressed_pulls:
            status["suppressedPulls"] = self.suppressed_pulls
        if self.identity.is_overflow:
            status["folded"] = {"identities": self.folded_count,
                                "sample": [{"what": k, "count": n} for k, n in
                                           sorted(self.folded.items(), key=lambda kv: -kv[1])]}
        ledger = self.ledger.encode()
        ledger["pods"] = "".join(b64(h, 6) for h in sorted(self.pod_hashes))
        ledger["nodes"] = "".join(b64(h, 6) for h in sorted(self.node_hashes))
        status["ledger"] = ledger
        return status

    def body(self) -> dict[str, Any]:
        """The whole Finding, never over BUDGET bytes of JSON."""
        spec = build_spec(self.identity, self.origin)
        for max_pods, max_images in ((MAX_PODS, MAX_IMAGES), (3, 3), (1, 1), (0, 0)):
            body = finding_body(self.identity, spec, self.status(max_pods, max_images))
            if len(orjson.dumps(body)) <= BUDGET:
                return body
        while len(orjson.dumps(body)) > BUDGET and self.ledger.series:
            self.ledger.bound(len(self.ledger.series) // 2)  # last resort: close older slots
            body = finding_body(self.identity, spec, self.status(0, 0))
        return body

    # -- adopting what is stored ----------------------------------------------------------------------
    @classmethod
    def from_body(cls, body: Any) -> "FindingState":
        """A state from a stored Finding. Raises ValueError when it is not one pullwatch wrote (its
        name must be the one its identity gives, so a renamed or hand-made object is refused)."""
        try:
            meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
            name, namespace = meta["name"], meta["namespace"]
            rule = name.split("-", 1)[0]
            if spec.get("overflow"):
                identity = Identity.overflow(rule, namespace)
            else:
                identity = Identity(rule, namespace, spec["workload"]["name"], spec["repository"])
            if identity.name != name:
                raise ValueError(f"its name is not the one its spec gives ({identity.name})")
            origin = Origin.from_dict(status.get("origin") or _origin_from_spec(spec))
            state = cls(identity, origin)
            state.ledger = Ledger.decode(status.get("ledger") or {"v": 1})
            ledger = status.get("ledger") or {}
            state.pod_hashes = _hashes(ledger.get("pods"))
            state.node_hashes = _hashes(ledger.get("nodes"))
            state.pod_count = max(_int(status.get("podCount")), len(state.pod_hashes))
            state.node_count = max(_int(status.get("nodeCount")), len(state.node_hashes))
            state.first_seen, state.last_seen = _str(status.get("firstSeen")), _str(status.get("lastSeen"))
            for item in status.get("images") or []:
                state.images[cut(str(item["image"]), 256)] = _int(item.get("count"))
            state.images_other = _int(status.get("imagesOther"))
            for pod in reversed(status.get("pods") or []):
                state.pods[cut(str(pod["name"]), 253)] = [_str(pod.get("node")), _str(pod.get("container")) or "",
                                                         _int(pod.get("count")), _str(pod.get("lastSeen"))]
            error = (status.get("outcomes") or {}).get("lastError")
            if isinstance(error, dict):
                state.last_error = (str(error.get("class")), cut(str(error.get("message")), 300), _str(error.get("time")))
            state.last_image = cut(status["lastImage"], 1100) if isinstance(status.get("lastImage"), str) else None
            state.suppressed_pulls = _int(status.get("suppressedPulls"))
            folded = status.get("folded") or {}
            state.folded_count = _int(folded.get("identities"))
            for item in folded.get("sample") or []:
                state.folded[cut(str(item["what"]), 512)] = _int(item.get("count"))
            return state
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"not a Finding pullwatch wrote ({type(exc).__name__}: {exc})") from None

    def merge(self, other: "FindingState") -> None:
        """Fold in the same Finding as stored elsewhere (never counts a pull twice)."""
        self.ledger.merge(other.ledger)
        self.first_seen = earlier(self.first_seen, other.first_seen)
        self.last_seen = later(self.last_seen, other.last_seen)
        for image, n in other.images.items():
            if image in self.images or len(self.images) < MAX_IMAGES:
                self.images[image] = max(self.images.get(image, 0), n)
        self.images_other = max(self.images_other, other.images_other)
        for pod, entry in other.pods.items():
            if pod not in self.pods:
                self.pods[pod] = entry
        while len(self.pods) > MAX_PODS:
            del self.pods[next(iter(self.pods))]
        self.pod_hashes |= other.pod_hashes
        self.node_hashes |= other.node_hashes
        self.pod_count = max(self.pod_count, other.pod_count, len(self.pod_hashes))
        self.node_count = max(self.node_count, other.node_count, len(self.node_hashes))
        if other.last_error and later(self.last_error[2] if self.last_error else None, other.last_error[2]) \
                == other.last_error[2]:
            self.last_error = other.last_error
        for key, n in other.folded.items():
            if key in self.folded or len(self.folded) < MAX_FOLDED:
                self.folded[key] = max(self.folded.get(key, 0), n)
        self.folded_count = max(self.folded_count, other.folded_count)
        self.suppressed_pulls = max(self.suppressed_pulls, other.suppressed_pulls)
        self.last_image = self.last_image or other.last_image


def ran(outcomes: dict[str, int]) -> str:
    if outcomes["succeeded"] or outcomes["cached"]:
        return "yes"
    return "no" if outcomes["failed"] or outcomes["backoff"] else "unknown"


def _note(seen: set[int], text: str) -> int:
    """1 if ``text`` is new to the bounded set of hashes ``seen`` (exact while the set has room;
    past ``MAX_DISTINCT``, a hash not in it is taken as new)."""
    h = short_hash(text, 36)
    if h in seen:
        return 0
    if len(seen) < MAX_DISTINCT:
        seen.add(h)
    return 1


def _hashes(text: Any) -> set[int]:
    if not isinstance(text, str) or len(text) % 6 or len(text) > 6 * MAX_DISTINCT:
        return set()
    try:
        return {unb64(text[i:i + 6]) for i in range(0, len(text), 6)}
    except KeyError:
        return set()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _origin_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored Finding without status.origin (its first status write never happened)."""
    workload = spec.get("workload") or {}
    actor = spec.get("actor") or {}
    return {"image": spec.get("image"), "node": spec.get("node"), "workloadKind": workload.get("kind"),
            "workloadSource": workload.get("source"), "component": (spec.get("reportedBy") or {}).get("component"),
            "source": spec.get("source"), "user": actor.get("user"), "groups": actor.get("groups"),
            "sourceIPs": actor.get("sourceIPs"), "userAgent": actor.get("userAgent"),
            "notAllowedReason": spec.get("notAllowedReason")} if spec.get("image") else \
        {"image": "", "source": "events"}
