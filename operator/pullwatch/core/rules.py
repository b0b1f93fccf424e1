"""Detection rules, as data (after pySigma: frozen dataclasses, validated on construction).

The two rules carry the identity, scoring and ATT&CK mapping of the public SIEM detections they
reimplement, so a Finding can be correlated with the same alert from a SIEM.

    >>> SCANNER_RULE.risk_score, SUSPICIOUS_RULE.risk_score
    (81, 49)
    >>> SCANNER_RULE.render(host="node-1")
    'Kubernetes Scanner image pulled on host node-1'
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

SEVERITIES = ("informational", "low", "medium", "high", "critical")
_TEMPLATE_FIELD = re.compile(r"\$([a-z_]+)\$")
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Mitre:
    technique_id: str
    technique: str
    tactic: str

    def as_dict(self) -> dict[str, str]:
        return {
            "techniqueId": self.technique_id,
            "technique": self.technique,
            "tactic": self.tactic,
        }


@dataclass(frozen=True)
class Rule:
    name: str
    short: str  # prefix of Finding names: short, readable, stable
    id: str
    title: str
    impact: int
    confidence: int
    severity: str
    mitre: Mitre
    message: str  # template with $field$ placeholders, as in the seed detections

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or not _NAME.match(self.short):
            raise ValueError(f"rule name {self.name!r} / short {self.short!r} must be kebab-case")
        uuid.UUID(self.id)  # raises ValueError on a malformed id
        for label, value in (("impact", self.impact), ("confidence", self.confidence)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ValueError(f"rule {self.name}: {label} must be an integer 0..100")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.name}: severity must be one of {SEVERITIES}")
        if not re.match(r"^T\d{4}(\.\d{3})?$", self.mitre.technique_id):
            raise ValueError(
                f"rule {self.name}: bad ATT&CK technique id {self.mitre.technique_id!r}"
            )

    @property
    def risk_score(self) -> int:
        return self.impact * self.confidence // 100

    def render(self, **values: str) -> str:
        """Fill the message template; a missing value renders as ``unknown``."""
        return _TEMPLATE_FIELD.sub(lambda m: str(values.get(m.group(1)) or "unknown"), self.message)


CLOUD_SERVICE_DISCOVERY = Mitre("T1526", "Cloud Service Discovery", "Discovery")

SCANNER_RULE = Rule(
    name="kubernetes-scanner-image-pulling",
    short="scanner",
    id="4890cd6b-0112-4974-a272-c5c153aee551",
    title="Kubernetes Scanner Image Pulling",
    impact=90,
    confidence=90,
    severity="high",
    mitre=CLOUD_SERVICE_DISCOVERY,
    message="Kubernetes Scanner image pulled on host $host$",
)

SUSPICIOUS_RULE = Rule(
    name="kubernetes-suspicious-image-pulling",
    short="suspicious",
    id="4d3a17b3-0a6d-4ae0-9421-46623a69c122",
    title="Kubernetes Suspicious Image Pulling",
    impact=70,
    confidence=70,
    severity="medium",
    mitre=CLOUD_SERVICE_DISCOVERY,
    message="Suspicious image $image$ pulled in Kubernetes from ip $src_ip$ by user $user$",
)

RULES = (SCANNER_RULE, SUSPICIOUS_RULE)

# Images whose repository's last path component is one of these are cluster reconnaissance or
# offensive tools. Matched on the last component so that any registry or mirror counts.
DEFAULT_SCANNER_IMAGES: frozenset[str] = frozenset(
    {
        "kube-hunter",  # Aqua Security: hunts for weaknesses in a cluster (the seed rule's list)
        "kube-bench",  # Aqua Security: CIS benchmark checks of nodes (the seed rule's list)
        "kube-recon",  # in-cluster reconnaissance (the seed rule's list)
        "peirates",  # InGuardians: Kubernetes penetration-testing / privilege escalation tool
        "kdigger",  # Quarkslab: context discovery from inside a pod
        "kubeletctl",  # CyberArk: attacks the kubelet API (exec, token theft)
        "kubesploit",  # CyberArk: post-exploitation C2 framework for containers
        "kubiscan",  # CyberArk: scans RBAC for risky permissions
        "kubestriker",  # security scanner for cluster misconfigurations
        "kube-scan",  # Octarine: workload risk scanner
        "botb",  # "Break out the Box": container escape and recon toolkit
    }
)

_SCANNER_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def validate_scanner_names(names: object) -> frozenset[str]:
    """Scanner names must be single repository path components (the grammar's, lowercase)."""
    if not isinstance(names, (list, tuple, set, frozenset)):
        raise ValueError("scanner image names must be a list of strings")
    bad = [n for n in names if not isinstance(n, str) or not _SCANNER_NAME.match(n)]
    if bad:
        raise ValueError(f"not a single image path component: {bad!r}")
    return frozenset(names)


# -- scanner names as data: ScannerImages objects ------------------------------------------------

SCANNER_IMAGES_KIND = "ScannerImages"


# A registry manifest digest as a status' imageID carries it: what was actually pulled.
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_DIGESTS = 1000  # the CRD's bound too


@dataclass(frozen=True)
class ScannerList:
    """One ScannerImages object: names to add to the scanner rule's list, or (``replaceDefaults``)
    to use instead of the built-in list, and digests that are scanners whatever an image is called
    (never replaced: no digest is built in). Invalid names and digests are refused and listed;
    the others apply."""

    name: str
    names: frozenset[str]
    replace_defaults: bool
    problems: tuple[str, ...] = ()
    digests: frozenset[str] = frozenset()


def scanner_list_from_object(obj: object) -> ScannerList:
    """Validate one ScannerImages object; never raises.

    >>> scanner_list_from_object({"apiVersion": "pullwatch.dev/v1alpha1", "kind": "ScannerImages",
    ...     "metadata": {"name": "extra"}, "spec": {"names": ["trufflehog", "Not/Valid"]}}).problems
    ("spec.names[1]: 'Not/Valid' is not a single image path component",)
    >>> lst = scanner_list_from_object({"apiVersion": "pullwatch.dev/v1alpha1",
    ...     "kind": "ScannerImages", "metadata": {"name": "red-team"},
    ...     "spec": {"names": [], "digests": ["sha256:" + "ab" * 32, "sha256:AB", "md5:1"]}})
    >>> [d[:13] for d in lst.digests], lst.problems[0]
    (['sha256:ababab'], "spec.digests[1]: 'sha256:AB' is not sha256: and 64 lowercase hex digits")
    """
    from .. import API_VERSION

    meta = (
        obj.get("metadata")
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict)
        else {}
    )
    name = meta.get("name") if isinstance(meta.get("name"), str) else "<unnamed>"
    if (
        not isinstance(obj, dict)
        or obj.get("kind") != SCANNER_IMAGES_KIND
        or obj.get("apiVersion") != API_VERSION
    ):
        return ScannerList(
            name, frozenset(), False, (f"not a {API_VERSION} {SCANNER_IMAGES_KIND}",)
        )
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    raw = spec.get("names")
    if raw is None and "digests" in spec:
        raw = []  # an object of digests only
    replace = spec.get("replaceDefaults", False)
    problems = []
    if not isinstance(raw, list):
        return ScannerList(name, frozenset(), False, ("spec.names must be a list of image names",))
    if not isinstance(replace, bool):
        problems.append("spec.replaceDefaults must be true or false")
        replace = False
    good = set()
    for i, n in enumerate(raw):
        if isinstance(n, str) and _SCANNER_NAME.match(n):
            good.add(n)
        else:
            problems.append(
                f"spec.names[{i}]: {str(n)[:100]!r} is not a single image path component"
            )
    digests = _digests(spec.get("digests"), problems)
    return ScannerList(name, frozenset(good), replace, tuple(problems), digests)


def _digests(raw: object, problems: list[str]) -> frozenset[str]:
    """The valid digests of ``spec.digests`` (absent: none); what is wrong goes to ``problems``."""
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        problems.append("spec.digests must be a list of sha256: digests")
        return frozenset()
    if len(raw) > MAX_DIGESTS:
        problems.append(f"spec.digests: {len(raw)} digests, only the first {MAX_DIGESTS} apply")
    good = set()
    for i, d in enumerate(raw[:MAX_DIGESTS]):
        if isinstance(d, str) and _DIGEST.match(d):
            good.add(d)
        else:
            problems.append(
                f"spec.digests[{i}]: {str(d)[:100]!r} is not sha256: and 64 lowercase hex digits"
            )
    return frozenset(good)


def scanner_names(
    lists: Iterable[ScannerList],
    extra: frozenset[str] = frozenset(),
    defaults: frozenset[str] = DEFAULT_SCANNER_IMAGES,
) -> frozenset[str]:
    """The scanner rule's names in force: the built-in list (unless an object replaces it), every
    object's names, and ``extra`` (command-line ``--scanner``).

        >>> a = ScannerList("a", frozenset({"trufflehog"}), False)
        >>> "kube-hunter" in scanner_names([a]), "trufflehog" in scanner_names([a])
        (True, True)
        >>> sorted(scanner_names([a, ScannerList("b", frozenset({"nmap"}), True)]))
        ['nmap', 'trufflehog']
    """
    lists = list(lists)
    base = frozenset() if any(s.replace_defaults for s in lists) else defaults
    return base.union(*(s.names for s in lists)) | extra


def scanner_digests(lists: Iterable[ScannerList]) -> frozenset[str]:
    """The scanner rule's digests in force: every object's (``replaceDefaults`` replaces names
    only; no digest is built in).

        >>> scanner_digests([ScannerList("a", frozenset(), True, (), frozenset({"sha256:1"}))])
        frozenset({'sha256:1'})
    """
    return frozenset().union(*(s.digests for s in lists))
