"""One Finding's state: exact counts (the ledger), what the Finding shows, and its bounded body.

``status`` holds the exact total ``count`` and ``firstSeen``/``lastSeen``; what each pull became
(``outcomes``: succeeded, served from cache, failed - with the last error's class - and back-offs;
``ran`` says whether the image can have run: ``yes`` once a pull succeeded or was served from
cache, ``no`` while every attempt that ended failed, ``unknown`` while no attempt has ended); the
image references seen, each with its count, at
most ``MAX_IMAGES`` (the rest summed in ``imagesOther``); the most recent pods with their node,
container and count, at most ``MAX_PODS``; how many distinct pods and nodes (exact up to
``MAX_DISTINCT`` each, then counted on from there); the origin (the first pull); the Suppression
that covers its latest pull, if one does, and how many of its pulls were covered; and the ledger.

No Finding outgrows ``BUDGET`` bytes of JSON whatever its inputs: strings from Events are cut,
lists are capped, and ``body()`` trims the oldest pods, the smallest images and, last, closes
ledger slots until the body fits (the API server adds metadata and managedFields on top, within
etcd's 16 KiB that ``bench/cluster_scale.py`` measures).

A Finding at rest (adopted at start-up, or not pulled for a while) is kept *cold*: what only a
write needs (the ledger, pods, images, origin, ...) is packed into a few hundred compressed
bytes, and unpacked the moment anything reads it (``__getattr__``), so no caller can see the
difference. The operator holds 20,000 Findings this way in a fraction of the memory; the
routing keys, the count and the newest slot's minute stay at hand, for the detector and the
maintenance that touch every Finding.
"""

from __future__ import annotations

import sys
import zlib
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


# What a cold Finding packs away (see cool()); and the status keys kept hot instead.
_COLD = (
    "origin",
    "ledger",
    "images",
    "images_other",
    "pods",
    "pod_count",
    "node_count",
    "pod_hashes",
    "node_hashes",
    "last_error",
    "folded",
    "folded_count",
    "folded_hashes",
)
_COLD_SET = frozenset(_COLD)
_HOT_KEYS = ("count", "firstSeen", "lastSeen", "lastImage", "suppression", "suppressedPulls")
# zlib's preset dictionary: the words every packed status repeats, so that a small one compresses
# to a few hundred bytes instead of barely shrinking.
_ZDICT = orjson.dumps(
    {
        "outcomes": {
            "succeeded": 0,
            "cached": 0,
            "failed": 0,
            "backoff": 0,
            "ran": "unknown",
            "lastError": {
                "class": "not found",
                "message": "rpc error: code = ",
                "time": "2026-01-01T00:00:00Z",
            },
        },
        "images": [{"image": "docker.io/library/", "count": 1}],
        "imagesOther": 0,
        "pods": [
            {
                "name": "-",
                "node": "node-",
                "container": "",
                "count": 1,
                "lastSeen": "2026-01-01T00:00:00Z",
            }
        ],
        "podCount": 1,
        "nodeCount": 1,
        "origin": {
            "image": "",
            "node": "",
            "workloadKind": "Deployment",
            "workloadSource": "inferred",
            "component": "kubelet",
            "source": "events",
            "user": None,
            "groups": None,
            "sourceIPs": None,
            "userAgent": None,
            "notAllowedReason": "no AllowedImages allows it in namespace ",
        },
        "ledger": {
            "v": 1,
            "closed": [0, 0, 0, 0, 0],
            "base": 29000000,
            "series": [],
            "pods": "",
            "nodes": "",
        },
    }
)


def _pack(status: dict[str, Any]) -> bytes:
    z = zlib.compressobj(6, zdict=_ZDICT)
    return z.compress(orjson.dumps(status)) + z.flush()


def _unpack(packed: bytes) -> Any:
    z = zlib.decompressobj(zdict=_ZDICT)
    return orjson.loads(z.decompress(packed) + z.flush())


class FindingState:
    __slots__ = (
        "__weakref__",
        "_count",
        "_keys",
        "_newest",
        "_packed",
        "first_seen",
        "folded",
        "folded_count",
        "folded_hashes",
        "identity",
        "images",
        "images_other",
        "last_error",
        "last_image",
        "last_seen",
        "ledger",
        "name",
        "node_count",
        "node_hashes",
        "origin",
        "pod_count",
        "pod_hashes",
        "pods",
        "suppressed_pulls",
        "suppression",
        "touched",
    )

    def __init__(self, identity: Identity, origin: Origin):
        self._packed: bytes | None = None  # set: cold (see cool())
        self.identity, self.origin = identity, origin
        self.name = identity.name  # kept: names are asked for all the time, and cost a hash to make
        self.touched = 0  # minute of the latest observation (the operator's clock): what cools
        self.ledger = Ledger()
        self.first_seen: str | None = None
        self.last_seen: str | None = None
        self.images: dict[str, int] = {}  # kubelet spelling -> pulls attributed to it
        self.images_other = 0
        self.pods: dict[
            str, list[Any]
        ] = {}  # pod -> [node, container, pulls, lastSeen]; oldest first
        self.pod_count = self.node_count = 0
        self.pod_hashes: set[int] = set()
        self.node_hashes: set[int] = set()
        self.last_error: tuple[str, str, str | None] | None = None  # (class, message, when)
        self.folded: dict[str, int] = {}  # overflow: "workload image" -> pulls
        self.folded_count = 0
        self.folded_hashes: set[int] = set()
        self.suppression: dict[str, Any] | None = (
            None  # {namespace, name, reason, expires} covering it
        )
        self.suppressed_pulls = 0
        self.last_image: str | None = None  # the latest pull's image, normalized

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def count(self) -> int:
        return self._count if self._packed is not None else self.ledger.count

    # -- cold and warm
    # --------------------------------------------------------------------------------
    def __getattr__(self, attr: str) -> Any:
        # Called only when the normal lookup fails: a packed field of a cold Finding. Unpack.
        if attr in _COLD_SET and object.__getattribute__(self, "_packed") is not None:
            self.warm()
            return object.__getattribute__(self, attr)
        raise AttributeError(attr)

    @property
    def cold(self) -> bool:
        return self._packed is not None

    def cool(self) -> None:
        """Pack what only a write needs. (Not an overflow Finding: its folded identities are
        hashes the stored status does not keep.)"""
        if self.identity.is_overflow:
            return
        if self._packed is None:
            status = self.status()
            for key in _HOT_KEYS:
                status.pop(key, None)
            self._pack_from(status, self.ledger)
        for attr in _COLD:  # a Finding fresh from from_body still has these: unchanged, drop them
            try:
                object.__delattr__(self, attr)
            except AttributeError:
                pass

    def _pack_from(self, status: dict[str, Any], ledger: Ledger) -> None:
        self._count, self._keys = ledger.count, tuple(ledger.series)
        self._newest = max((t[5] for t in ledger.slots.values()), default=None)
        self._packed = _pack(status)

    def warm(self) -> None:
        """Unpack (every method that changes a Finding calls this first)."""
        packed = self._packed
        if packed is None:
            return
        status = _unpack(packed)
        self._packed, self._keys = None, ()
        self.origin = Origin.from_dict(status["origin"])
        self._fill(status)

    def series_keys(self) -> Any:
        """The hashes of the live series (routing), cold or warm."""
        return self._keys if self._packed is not None else self.ledger.series.keys()

    def close_before(self, minute: int) -> int:
        """Close the ledger slots not updated since ``minute``. A cold Finding is unpacked only
        when all of them are that old (it is then written smaller)."""
        if self._packed is not None and (self._newest is None or self._newest >= minute):
            return 0
        self.warm()
        return self.ledger.close_before(minute)

    # -- observing --------------------------------------------------------------------------------
    def observe(self, pull: Pull, series: str, minute: int) -> int:
        """Count one observation; return the pulls it adds (0 for a repeat)."""
        self.warm()
        pod, container = pull.involved.name, pull.involved.container or ""
        self.touched = max(self.touched, minute)
        delta = self.ledger.observe(series, (pod, container), pull.kind, pull.count, minute)
        when = pull.last_seen or pull.first_seen
        self.first_seen = earlier(self.first_seen, pull.first_seen)
        self.last_seen = later(self.last_seen, when)
        if (
            pull.kind == FAILED
            and pull.error is not None
            and later(self.last_error[2] if self.last_error else None, when) == when
        ):
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
        self.warm()
        self.folded_count += _note(
            self.folded_hashes, f"{identity.workload}\0{identity.repository}"
        )
        key = f"{cut(identity.workload, 253)} {cut(image, 256)}"
        if key in self.folded or len(self.folded) < MAX_FOLDED:
            self.folded[key] = self.folded.get(key, 0) + delta

    # -- the body
    # -----------------------------------------------------------------------------------
    def status(self, max_pods: int = MAX_PODS, max_images: int = MAX_IMAGES) -> dict[str, Any]:
        outcomes: dict[str, Any] = self.ledger.outcomes()
        outcomes["ran"] = ran(outcomes)
        if self.last_error is not None:
            outcomes["lastError"] = {
                "class": self.last_error[0],
                "message": self.last_error[1],
                "time": self.last_error[2],
            }
        images = sorted(self.images.items(), key=lambda kv: -kv[1])
        shown, hidden = images[:max_images], images[max_images:]
        status: dict[str, Any] = {
            "count": self.ledger.count,
            "firstSeen": self.first_seen,
            "lastSeen": self.last_seen,
            "outcomes": outcomes,
            "images": [{"image": i, "count": n} for i, n in shown],
            "imagesOther": self.images_other + sum(n for _, n in hidden),
            "pods": [
                {"name": p, "node": e[0], "container": e[1], "count": e[2], "lastSeen": e[3]}
                for p, e in list(self.pods.items())[::-1][:max_pods]
            ],
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
            status["folded"] = {
                "identities": self.folded_count,
                "sample": [
                    {"what": k, "count": n}
                    for k, n in sorted(self.folded.items(), key=lambda kv: -kv[1])
                ],
            }
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

    # -- adopting what is stored
    # ----------------------------------------------------------------------
    @classmethod
    def from_body(cls, body: Any) -> FindingState:
        """A state from a stored Finding. Raises ValueError when it is not one pullwatch wrote (its
        name must be the one its identity gives, so a renamed or hand-made object is refused)."""
        try:
            meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
            name, namespace = meta["name"], sys.intern(meta["namespace"])  # shared by its Findings
            rule = sys.intern(name.split("-", 1)[0])
            if spec.get("overflow"):
                identity = Identity.overflow(rule, namespace)
            else:
                identity = Identity(rule, namespace, spec["workload"]["name"], spec["repository"])
            if identity.name != name:
                raise ValueError(f"its name is not the one its spec gives ({identity.name})")
            origin = Origin.from_dict(status.get("origin") or _origin_from_spec(spec))
            state = cls(identity, origin)
            # Packed as stored, not unpacked: most adopted Findings are never pulled again. The
            # ledger is read now (the count is checked against it, the series are routed).
            ledger = Ledger.decode(status.get("ledger") or {"v": 1})
            packed = {k: v for k, v in status.items() if k not in _HOT_KEYS}
            packed["origin"] = origin.as_dict()
            state._pack_from(packed, ledger)
            for attr in _COLD:
                if attr not in ("origin", "ledger"):
                    object.__delattr__(state, attr)
            state.ledger = ledger
            state.first_seen, state.last_seen = (
                _str(status.get("firstSeen")),
                _str(status.get("lastSeen")),
            )
            state.last_image = (
                cut(status["lastImage"], 1100) if isinstance(status.get("lastImage"), str) else None
            )
            state.suppressed_pulls = _int(status.get("suppressedPulls"))
            return state
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(
                f"not a Finding pullwatch wrote ({type(exc).__name__}: {exc})"
            ) from None

    def _fill(self, status: dict[str, Any]) -> None:
        """The packed fields, from a stored (or packed) status. What is there is shown, not
        trusted: a malformed entry (someone edited the status) is left out, never raised - the
        counts are the ledger's, and the next write puts pullwatch's status back."""
        ledger = _dict(status.get("ledger"))
        self.ledger = Ledger.decode(ledger or {"v": 1})
        self.pod_hashes = _hashes(ledger.get("pods"))
        self.node_hashes = _hashes(ledger.get("nodes"))
        self.pod_count = max(_int(status.get("podCount")), len(self.pod_hashes))
        self.node_count = max(_int(status.get("nodeCount")), len(self.node_hashes))
        self.images = {
            cut(str(i["image"]), 256): _int(i.get("count"))
            for i in _dicts(status.get("images"), "image")
        }
        self.images_other = _int(status.get("imagesOther"))
        self.pods = {}
        for pod in reversed(_dicts(status.get("pods"), "name")):
            self.pods[cut(str(pod["name"]), 253)] = [
                _str(pod.get("node")),
                _str(pod.get("container")) or "",
                _int(pod.get("count")),
                _str(pod.get("lastSeen")),
            ]
        error = _dict(status.get("outcomes")).get("lastError")
        self.last_error = (
            (str(error.get("class")), cut(str(error.get("message")), 300), _str(error.get("time")))
            if isinstance(error, dict)
            else None
        )
        folded = _dict(status.get("folded"))
        self.folded_count = _int(folded.get("identities"))
        self.folded = {
            cut(str(i["what"]), 512): _int(i.get("count"))
            for i in _dicts(folded.get("sample"), "what")
        }
        self.folded_hashes = set()

    def merge(self, other: FindingState) -> None:
        """Fold in the same Finding as stored elsewhere (never counts a pull twice)."""
        self.warm()
        other.warm()
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
        if (
            other.last_error
            and later(self.last_error[2] if self.last_error else None, other.last_error[2])
            == other.last_error[2]
        ):
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


def _origin_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored Finding without status.origin (its first status write never happened)."""
    workload = spec.get("workload") or {}
    actor = spec.get("actor") or {}
    return (
        {
            "image": spec.get("image"),
            "node": spec.get("node"),
            "workloadKind": workload.get("kind"),
            "workloadSource": workload.get("source"),
            "component": (spec.get("reportedBy") or {}).get("component"),
            "source": spec.get("source"),
            "user": actor.get("user"),
            "groups": actor.get("groups"),
            "sourceIPs": actor.get("sourceIPs"),
            "userAgent": actor.get("userAgent"),
            "notAllowedReason": spec.get("notAllowedReason"),
        }
        if spec.get("image")
        else {"image": "", "source": "events"}
    )
