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

from .. import API_VERSION
from .imageref import InvalidImageReference, parse_image
from .pulls import Pull
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


@functools.lru_cache(
    maxsize=4096
)  # the operator keeps each Finding's name; scan's hot path repeats
def finding_name(rule: str, namespace: str, workload: str, repository: str) -> str:
    """Readable and deterministic; a valid DNS subdomain well under 253 characters."""
    digest = hashlib.sha256(
        "\0".join((rule, namespace, workload, repository)).encode()
    ).hexdigest()[:10]
    if workload == OVERFLOW:
        return f"{rule}-overflow-{digest}"
    image = repository.rsplit("/", 1)[-1]
    return f"{rule}-{_slug(workload, 40)}-{_slug(image, 30)}-{digest}"


class Origin(NamedTuple):
    """The first pull of a Finding, as evidence (``status.origin``)."""

    image: str
    node: str | None
    workload_kind: str
    workload_source: str
    component: str | None
    source: str  # events | audit
    user: str | None = None  # audit: who created the kubelet's Event
    groups: tuple[str, ...] = ()
    source_ips: tuple[str, ...] = ()
    user_agent: str | None = None
    not_allowed: str | None = None  # suspicious rule: why the image is not allowed

    @classmethod
    def of(cls, pull: Pull, workload: Workload, not_allowed: str | None) -> Origin:
        actor = pull.actor
        return cls(
            cut(pull.image),
            cut(pull.node),
            workload.kind,
            workload.source,
            cut(pull.component),
            pull.source,
            cut(actor.user) if actor else None,
            tuple(cut(g, 253) for g in actor.groups[:16]) if actor else (),
            tuple(cut(ip, 64) for ip in actor.source_ips[:8]) if actor else (),
            cut(actor.user_agent, 256) if actor else None,
            cut(not_allowed),
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
        if self.source == "audit":
            out.update(
                user=self.user,
                groups=list(self.groups),
                sourceIPs=list(self.source_ips),
                userAgent=self.user_agent,
            )
        if self.not_allowed is not None:
            out["notAllowedReason"] = self.not_allowed
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Origin:
        """Raises ValueError for anything but what ``as_dict`` writes."""
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("image"), str)
            or d.get("source") not in ("events", "audit")
        ):
            raise ValueError("not a Finding origin")

        def text(key: str, limit: int = MAX_TEXT) -> str | None:
            v = d.get(key)
            return cut(v, limit) if isinstance(v, str) else None

        def texts(key: str) -> tuple[str, ...]:
            v = d.get(key)
            return (
                tuple(cut(x, 253) for x in v[:16] if isinstance(x, str))
                if isinstance(v, list)
                else ()
            )

        return cls(
            cut(d["image"]),
            text("node"),
            text("workloadKind", 64) or "Pod",
            text("workloadSource", 16) or "inferred",
            text("component"),
            d["source"],
            text("user"),
            texts("groups"),
            texts("sourceIPs"),
            text("userAgent", 256),
            text("notAllowedReason"),
        )


def build_spec(identity: Identity, origin: Origin) -> dict[str, Any]:
    """The spec: the rule's identity and scoring, and the origin's facts. Deterministic."""
    rule = RULES_BY_SHORT[identity.rule]
    message = rule.render(
        host=origin.node or "unknown",
        image=origin.image,
        src_ip=",".join(origin.source_ips) or None,
        user=origin.user,
    )
    spec: dict[str, Any] = {
        "rule": rule.name,
        "ruleId": rule.id,
        "title": rule.title,
        "severity": rule.severity,
        "riskScore": rule.risk_score,
        "impact": rule.impact,
        "confidence": rule.confidence,
        "mitre": rule.mitre.as_dict(),
        "message": message,
    }
    if identity.is_overflow:
        spec["message"] = (
            f"{rule.title}: detections past pullwatch's cap on Findings in namespace "
            f"{identity.namespace}, counted here together (see status.folded)"
        )
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
            "reportedBy": reported_by(origin),
        }
    )
    if origin.source == "audit":
        spec["actor"] = {
            "user": origin.user,
            "groups": list(origin.groups),
            "sourceIPs": list(origin.source_ips),
            "userAgent": origin.user_agent,
        }
    if origin.not_allowed is not None:
        spec["notAllowedReason"] = origin.not_allowed
    return spec


def reported_by(origin: Origin) -> dict[str, Any]:
    """Who says the pull happened. Anyone allowed to create Events can write one that reads like
    a kubelet's; what is recorded here makes such a forgery visible: the component it claims and
    (audit logs) the authenticated user, which for a kubelet is ``system:node:<node>``."""
    out: dict[str, Any] = {"component": origin.component}
    if origin.source == "audit":
        out["user"] = origin.user
    user = out.get("user")
    out["kubelet"] = origin.component == "kubelet" and (
        user is None or user.startswith("system:node:")
    )
    return out


def rule_of_name(name: str) -> Rule | None:
    """The rule a Finding's name says it is for (names are immutable: a rule cannot be forged)."""
    return RULES_BY_SHORT.get(name.split("-", 1)[0])


def finding_body(
    identity: Identity, spec: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    rule = RULES_BY_SHORT[identity.rule]
    labels = {LABEL_RULE: rule.name, LABEL_SEVERITY: rule.severity}
    if identity.is_overflow:
        labels[LABEL_OVERFLOW] = "true"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": identity.name, "namespace": identity.namespace, "labels": labels},
        "spec": spec,
        "status": status,
    }


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
    moment = instant(stamp)
    return None if moment is None else int(moment.timestamp()) // 60


def earlier(a: str | None, b: str | None) -> str | None:
    """The earlier of two RFC 3339 stamps (formats differ: eventTime has microseconds)."""
    return _pick(a, b, lambda x, y: x < y)


def later(a: str | None, b: str | None) -> str | None:
    return _pick(a, b, lambda x, y: x > y)


def _pick(a: str | None, b: str | None, better) -> str | None:
    if a is None or b is None:
        return a or b
    if len(a) == len(b) and a[-1:] == b[-1:] == "Z":
        # Same layout, both UTC: RFC 3339 strings then sort like the instants they name.
        return b if better(b, a) else a
    ta, tb = instant(a), instant(b)
    if ta is None or tb is None:
        return a if ta is not None else b
    return b if better(tb, ta) else a
