"""What a Finding is: its identity and name, its origin (the first pull), and its spec.

A Finding is one (rule, namespace, workload, image repository): the replicas of a Deployment,
every node of a DaemonSet, every run of a CronJob and every tag of a rollout are one Finding. Its
name is derived from exactly that, so ``pullwatch scan`` and ``pullwatch run`` name the same
detection the same way, and a re-delivered Event finds its Finding again.

The *origin* - what the first pull said: the kubelet's spelling of the image, the node, who
reported it - is evidence, kept in ``status.origin`` (only pullwatch may write status). The spec
is a presentation of the rule and the origin, rebuilt from them whenever someone edits it.

    >>> identity = Identity("scanner", "default", "hunter", "docker.io/aquasec/kube-hunter")
    >>> identity.name
    'scanner-hunter-kube-hunter-d4c16b6bfb'
    >>> Identity.overflow("suspicious", "default").name
    'suspicious-overflow-f4fd3f2665'
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .imageref import InvalidImageReference, parse_image
from .pulls import Actor, Pull
from .rules import RULES, Rule
from .workload import Workload

KIND = "Finding"
LABEL_RULE = "pullwatch.dev/rule"
LABEL_SEVERITY = "pullwatch.dev/severity"
LABEL_OVERFLOW = "pullwatch.dev/overflow"
LABEL_KEEP = "pullwatch.dev/keep"  # set by people: retention never deletes such a Finding
OVERFLOW = ""  # the workload of an overflow Finding
MAX_TEXT = 512  # any string from an Event kept in a Finding is cut to this
_UNSAFE = re.compile(r"[^a-z0-9]+")
RULES_BY_SHORT = {r.short: r for r in RULES}


def _slug(text: str, limit: int) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


def cut(text: Any, limit: int = MAX_TEXT) -> Any:
    """Attacker-sized strings stay bounded: cut, and marked as cut."""
    if isinstance(text, str) and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def repository_of(image: str) -> str:
    """The normalized repository (``docker.io/library/nginx``) - a rollout changes the tag, not
    this - or the raw string when it is not a valid reference."""
    try:
        return parse_image(image).repository
    except InvalidImageReference:
        return image


class Identity(NamedTuple):
    rule: str  # the rule's short name: scanner | suspicious
    namespace: str
    workload: str  # the workload's name (OVERFLOW for the overflow Finding)
    repository: str

    @classmethod
    def overflow(cls, rule: str, namespace: str) -> Identity:
        return cls(rule, namespace, OVERFLOW, "")

    @property
    def is_overflow(self) -> bool:
        return self.workload == OVERFLOW

    @property
    def name(self) -> str:
        return finding_name(*self)


# A name held by another identity - a forced collision of the short digest: 40 bits, found in
# seconds - makes the identity take a salted name: the next round whose name is free or its own
# (see FindingSet.lookup). Salted names carry 64 bits, beyond anyone's search; a stored Finding
# is recognized under any round up to this one (``identity_of``).
SALT_ROUNDS = 16


@functools.lru_cache(
    maxsize=4096
)  # the operator keeps each Finding's name; scan's hot path repeats
def finding_name(rule: str, namespace: str, workload: str, repository: str, salt: int = 0) -> str:
    """Readable and deterministic; a valid DNS subdomain well under 253 characters (at most 99).
    ``salt``: the round of a name taken after a collision (0: the identity's own name)."""
    key = "\0".join((rule, namespace, workload, repository))
    if salt:
        key = f"{key}\0{salt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[: 16 if salt else 10]
    if workload == OVERFLOW:
        return f"{rule}-overflow-{digest}"
    image = repository.rsplit("/", 1)[-1]
    return f"{rule}-{_slug(workload, 40)}-{_slug(image, 30)}-{digest}"


def name_among(identity: Identity, holder: Any) -> str:
    """The name ``identity`` has among Findings already named, ``holder(name)`` giving the
    identity that holds a name (None: free): its own name unless another identity holds it,
    else the first salted round that is free or its own. Deterministic given what is held."""
    salt = 0
    while True:
        name = finding_name(*identity, salt)
        held = holder(name)
        if held is None or held == identity:
            return name
        salt += 1


class ActorRecord(NamedTuple):
    """Who did it: a person (not a controller) who created or changed the workload (audit)."""

    user: str | None
    groups: tuple[str, ...]
    source_ips: tuple[str, ...]
    user_agent: str | None
    action: str | None  # e.g. "create deployments"
    time: str | None

    @classmethod
    def of(cls, actor: Actor, action: str | None, time: str | None) -> ActorRecord:
        return cls(
            cut(actor.user, 253),
            tuple(cut(g, 253) for g in actor.groups[:16]),
            tuple(cut(ip, 64) for ip in actor.source_ips[-4:]),  # the last: see audit.actor_of
            cut(actor.user_agent, 256),
            cut(action, 128),
            time if isinstance(time, str) and len(time) <= 40 else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "groups": list(self.groups),
            "sourceIPs": list(self.source_ips),
            "userAgent": self.user_agent,
            "action": self.action,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ActorRecord | None:
        """What ``as_dict`` wrote, or None for anything else (shown, never trusted)."""
        if not isinstance(d, dict) or not isinstance(d.get("user"), str):
            return None
        return cls(
            cut(d["user"], 253),
            _texts(d.get("groups"), 16, 253),
            _texts(d.get("sourceIPs"), 8, 64),
            _text(d.get("userAgent"), 256),
            _text(d.get("action"), 128),
            _text(d.get("time"), 40),
        )


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return cut(value, limit) if isinstance(value, str) else None


def _texts(value: Any, items: int, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(cut(x, limit) for x in value[:items] if isinstance(x, str))


SOURCES = ("events", "audit", "pods")


class Origin(NamedTuple):
    """The first observation of a Finding, as evidence (``status.origin``): the spec is a
    presentation of it. Facts learned later about that same first pull (who really wrote its
    Event, who changed the workload) fill in what was not known, never overwrite it."""

    image: str
    node: str | None
    workload_kind: str
    workload_source: str
    component: str | None  # the Event's claimed reporter (its source.component)
    source: str  # events | audit | pods: which witness saw it first
    author: str | None = None  # who wrote the first pull's Event (audit)
    verified: bool | None = None  # that author is the kubelet of its node; None: not known
    claimed_namespace: str | None = None  # the namespace the Event named, when not its own
    not_allowed: str | None = None  # suspicious rule: why the image is not allowed
    actor: ActorRecord | None = None  # the first person known to have changed the workload

    @classmethod
    def of(cls, pull: Pull, workload: Workload, not_allowed: str | None) -> Origin:
        author = pull.actor.user if pull.actor is not None else None
        claimed = pull.claimed_namespace
        return cls(
            cut(pull.image),
            cut(pull.node),
            workload.kind,
            workload.source,
            cut(pull.component),
            pull.source,
            cut(author, 253),
            verdict_of(pull),
            cut(claimed, 63),
            cut(not_allowed),
        )

    @classmethod
    def of_running(
        cls,
        image: str,
        node: str | None,
        workload: Workload,
        not_allowed: str | None,
        source: str = "pods",
    ) -> Origin:
        return cls(
            cut(image),
            cut(node),
            workload.kind,
            workload.source,
            None,
            source,
            not_allowed=cut(not_allowed),
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "node": self.node,
            "workloadKind": self.workload_kind,
            "workloadSource": self.workload_source,
            "component": self.component,
            "source": self.source,
        }
        for key, value in (
            ("author", self.author),
            ("verified", self.verified),
            ("claimedNamespace", self.claimed_namespace),
            ("notAllowedReason", self.not_allowed),
        ):
            if value is not None:
                out[key] = value
        if self.actor is not None:
            out["actor"] = self.actor.as_dict()
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Origin:
        """Raises ValueError for anything but what ``as_dict`` writes (or pullwatch 0.1 wrote:
        its ``user`` was the Event's author)."""
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("image"), str)
            or d.get("source") not in SOURCES
        ):
            raise ValueError("not a Finding origin")
        verified = d.get("verified")
        return cls(
            cut(d["image"]),
            _text(d.get("node")),
            _text(d.get("workloadKind"), 64) or "Pod",
            _text(d.get("workloadSource"), 16) or "inferred",
            _text(d.get("component")),
            d["source"],
            _text(d.get("author"), 253) or _text(d.get("user"), 253),
            verified if isinstance(verified, bool) else None,
            _text(d.get("claimedNamespace"), 63),
            _text(d.get("notAllowedReason")),
            ActorRecord.from_dict(d.get("actor")),
        )


def verdict_of(pull: Pull) -> bool | None:
    """Was this pull's Event written by the kubelet of the node it names? ``False`` when it names
    another namespace than its own or its author (audit) is anyone else; ``None`` when the author
    is not known (no audit entry for it)."""
    if pull.claimed_namespace is not None:
        return False
    if pull.actor is None or pull.actor.user is None:
        return None
    return pull.node is not None and pull.actor.user == f"system:node:{pull.node}"


def build_spec(identity: Identity, origin: Origin) -> dict[str, Any]:
    """The spec: the rule's identity and scoring, and the origin's facts. Deterministic."""
    rule = RULES_BY_SHORT[identity.rule]
    spec: dict[str, Any] = {
        "rule": rule.name,
        "ruleId": rule.id,
        "title": rule.title,
        "severity": rule.severity,
        "riskScore": rule.risk_score,
        "impact": rule.impact,
        "confidence": rule.confidence,
        "mitre": rule.mitre.as_dict(),
        "message": message_of(rule, identity, origin),
    }
    if identity.is_overflow:
        spec["overflow"] = True
        return spec
    spec.update(
        {
            "image": origin.image,
            "repository": identity.repository,
            "workload": {
                "kind": origin.workload_kind,
                "name": identity.workload,
                "source": origin.workload_source,
            },
            "node": origin.node,
            "source": origin.source,
        }
    )
    if origin.source != "pods":
        spec["reportedBy"] = reported_by(origin)
    if origin.actor is not None:
        spec["actor"] = origin.actor.as_dict()
    if origin.not_allowed is not None:
        spec["notAllowedReason"] = origin.not_allowed
    return spec


def message_of(rule: Rule, identity: Identity, origin: Origin) -> str:
    """The seed detection's message with real values. Where it would say "unknown" (no audit
    witness: nobody known), it says what is known instead: the node and the workload."""
    if identity.is_overflow:
        return (
            f"{rule.title}: detections past pullwatch's cap on Findings in namespace "
            f"{identity.namespace}, counted here together (see status.folded)"
        )
    actor = origin.actor
    if rule.short == "suspicious" and (actor is None or actor.user is None):
        return (
            f"Suspicious image {origin.image} pulled in Kubernetes on node "
            f"{origin.node or 'unknown'} by {origin.workload_kind}/{identity.workload} "
            "(actor unknown)"
        )
    return rule.render(
        host=origin.node or "unknown",
        image=origin.image,
        # the address the API server saw (the last); the ones before it are the client's claims
        src_ip=actor.source_ips[-1] if actor and actor.source_ips else None,
        user=actor.user if actor else None,
    )


def reported_by(origin: Origin) -> dict[str, Any]:
    """Who says the pull happened. Anyone allowed to create Events can write one that reads like
    a kubelet's; what is recorded here makes such a forgery visible: the component it claims, the
    authenticated user who really wrote it (audit; a kubelet is ``system:node:<node>``), and the
    verdict - false as well when the Event named another namespace than its own."""
    out: dict[str, Any] = {"component": origin.component}
    if origin.author is not None:
        out["user"] = origin.author
    out["kubelet"] = (
        origin.component == "kubelet"
        and origin.verified is not False
        and (origin.author is None or origin.author.startswith("system:node:"))
    )
    if origin.verified is not None:
        out["verified"] = origin.verified
    if origin.claimed_namespace is not None:
        out["claimedNamespace"] = origin.claimed_namespace
    return out


# -- time ----------------------------------------------------------------------------------------


def instant(stamp: str) -> datetime | None:
    """The moment an RFC 3339 stamp names (UTC when it says no zone), or None."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def minute_of(stamp: str | None) -> int | None:
    """Minutes since the epoch of an RFC 3339 stamp (the ledger's clock), or None."""
    if not stamp:
        return None
    if (
        len(stamp) == 20
        and stamp[16] == ":"
        and stamp[19] == "Z"
        and stamp[17] in "012345"
        and stamp[18] in "0123456789"
        and stamp[11:13] != "24"  # newer Pythons take 24:00:00 as midnight; not 24:00:30
    ):
        # What Events carry (2026-11-18T10:23:45Z): valid seconds do not change its minute, so
        # one cache entry serves a minute of stamps, not one second of them.
        return _minute_of(stamp[:17] + "00Z")
    if len(stamp) > 40:  # not a stamp the cache should keep (RFC 3339 with nanoseconds: 35)
        return _minute_of.__wrapped__(stamp)
    return _minute_of(stamp)


@functools.lru_cache(maxsize=8192)  # a stream's stamps repeat: Events of one second, one minute
def _minute_of(stamp: str) -> int | None:
    moment = instant(stamp)
    return None if moment is None else int(moment.timestamp()) // 60


def earlier(a: str | None, b: str | None) -> str | None:
    """The earlier of two RFC 3339 stamps (formats differ: eventTime has microseconds)."""
    if a is None or b is None:
        return a or b
    if len(a) == len(b) and a[-1:] == b[-1:] == "Z":
        # Same layout, both UTC: RFC 3339 strings then sort like the instants they name.
        return b if b < a else a
    return _pick(a, b, True)


def later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    if len(a) == len(b) and a[-1:] == b[-1:] == "Z":
        return b if b > a else a
    return _pick(a, b, False)


def _pick(a: str, b: str, earliest: bool) -> str:
    ta, tb = instant(a), instant(b)
    if ta is None or tb is None:
        return a if ta is not None else b
    return b if (tb < ta if earliest else tb > ta) else a
