"""Finding custom resource bodies: deterministic names, spec, status.

A Finding is identified by (rule, namespace, involved object kind/name, image), where the image
is its normalized reference (or the raw string when it does not parse). The name is derived from
exactly that, so ``pullwatch scan`` and ``pullwatch run`` name the same detection the same way,
and a re-delivered Event finds its Finding again.

    >>> finding_name("scanner", "default", "Pod", "hunter-7d9f", "docker.io/aquasec/kube-hunter:0.6.8")
    'scanner-kube-hunter-hunter-7d9f-72e9923749'
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from .. import API_VERSION
from .imageref import ImageRef
from .pulls import PULLING, Pull
from .rules import Rule

KIND = "Finding"
LABEL_RULE = "pullwatch.dev/rule"
LABEL_SEVERITY = "pullwatch.dev/severity"
_UNSAFE = re.compile(r"[^a-z0-9]+")


def _slug(text: str, limit: int) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


@functools.lru_cache(maxsize=65536)
def finding_name(rule_short: str, namespace: str, kind: str, name: str, image_id: str) -> str:
    """Readable and deterministic; a valid DNS subdomain name well under 253 characters."""
    digest = hashlib.sha256("\0".join((rule_short, namespace, kind, name, image_id)).encode()).hexdigest()[:10]
    image_part = image_id.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{rule_short}-{_slug(image_part, 40)}-{_slug(name, 60)}-{digest}"


def build_spec(rule: Rule, pull: Pull, ref: ImageRef | None, not_allowed: str | None) -> dict[str, Any]:
    actor = pull.actor
    message = rule.render(
        host=pull.node or "unknown",
        image=pull.image,
        src_ip=",".join(actor.source_ips) if actor and actor.source_ips else None,
        user=actor.user if actor else None,
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
        "image": pull.image,
        "normalizedImage": ref.normalized if ref else None,
        "involvedObject": pull.involved.as_dict(),
        "node": pull.node,
        "reason": "Pulling" if pull.kind == PULLING else "Pulled",  # see Detector._count
        "source": pull.source,
        "reportedBy": reported_by(pull),
    }
    if actor is not None:
        spec["actor"] = actor.as_dict()
    if not_allowed is not None:
        spec["notAllowedReason"] = not_allowed
    return spec


def reported_by(pull: Pull) -> dict[str, Any]:
    """Who says the pull happened. Anyone allowed to create Events can write one that reads like
    a kubelet's; what is recorded here makes such a forgery visible: the component it claims and
    (audit logs) the authenticated user, which for a kubelet is ``system:node:<node>``."""
    out: dict[str, Any] = {"component": pull.component}
    if pull.actor is not None:
        out["user"] = pull.actor.user
    user = out.get("user")
    out["kubelet"] = pull.component == "kubelet" and (user is None or user.startswith("system:node:"))
    return out


def finding_body(name: str, namespace: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_RULE: spec["rule"], LABEL_SEVERITY: spec["severity"]},
        },
        "spec": spec,
        "status": status,
    }


def _instant(stamp: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


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
    ta, tb = _instant(a), _instant(b)
    if ta is None or tb is None:
        return a if ta is not None else b
    return b if better(tb, ta) else a
