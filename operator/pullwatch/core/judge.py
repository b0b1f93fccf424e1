"""What fires, and where it goes: the configuration in force and the verdicts it gives.

A ``Judge`` holds the scanner names and digests, the allowlist and the Suppressions in force,
and answers two questions about an image seen in a namespace: which rules fire on it
(``rules_for``, cached: the same few hundred pairs repeat all day), and which Findings an
observation of it belongs to (``judge``: a pure function of the observation and the
configuration). Any part of the configuration may be replaced at any time; the next observation
is judged by the new one, and no verdict of the old one outlives it.

    >>> from .allowlist import Allowlist
    >>> from .workload import infer
    >>> j = Judge(Allowlist())
    >>> found = j.judge("ci", "aquasec/kube-hunter:0.6.8", infer("hunter"))
    >>> [(identity.name, rule.short) for identity, rule, _, _ in found][0]
    ('scanner-hunter-kube-hunter-bcf4ccfe7e', 'scanner')
    >>> [rule.short for _, rule, _, _ in found]  # not allowlisted either
    ['scanner', 'suspicious']
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime

from .allowlist import Allowlist
from .findings import Identity, repository_of
from .imageref import ImageRef, InvalidImageReference, parse_image
from .ledger import uncached_hash
from .observations import Running
from .pulls import Pull
from .rules import DEFAULT_SCANNER_IMAGES, SCANNER_RULE, SUSPICIOUS_RULE, Rule
from .suppressions import Suppression, Suppressions
from .workload import Workload, infer

Fired = list[tuple[Rule, ImageRef | None, str | None]]


def series_of(pull: Pull) -> str:
    """The series an observation belongs to: its Event object; an Event that names no object (a
    hand-made file) is identified by its content, so a duplicate record still counts once."""
    if pull.series is not None:
        return pull.series
    inv = pull.involved
    return (
        f"anon:{pull.kind}:{pull.namespace}/{inv.name}/{inv.container}:{pull.image}:"
        f"{pull.first_seen}:{pull.last_seen}"
    )


def workload_of(pull: Pull) -> Workload:
    """The workload, inferred: from the pod's name, or the involved object itself if not a pod."""
    inv = pull.involved
    if inv.kind != "Pod":
        return Workload(inv.kind, inv.name, "inferred")
    return infer(inv.name)


class Judge:
    RULES_CACHE = 16384

    def __init__(
        self,
        allowlist: Allowlist,
        scanners: Iterable[str] = DEFAULT_SCANNER_IMAGES,
        scanner_digests: Iterable[str] = (),
    ):
        self._scanners = frozenset(scanners)
        self._digests = frozenset(scanner_digests)
        self._rules_cache: dict[tuple[str, str], Fired] = {}
        self.allowlist = allowlist
        self.suppressions = Suppressions()

    # -- configuration ---------------------------------------------------------------------
    @property
    def scanners(self) -> frozenset[str]:
        return self._scanners

    @scanners.setter
    def scanners(self, value: Iterable[str]) -> None:
        self._scanners = frozenset(value)
        self._rules_cache = {}  # verdicts made with the old names must not outlive them

    @property
    def scanner_digests(self) -> frozenset[str]:
        return self._digests

    @scanner_digests.setter
    def scanner_digests(self, value: Iterable[str]) -> None:
        self._digests = frozenset(value)
        self._rules_cache = {}

    @property
    def allowlist(self) -> Allowlist:
        return self._allowlist

    @allowlist.setter
    def allowlist(self, value: Allowlist) -> None:
        self._allowlist = value
        self._rules_cache = {}  # verdicts of the old allowlist must not outlive it

    def rules_for(self, namespace: str, image: str) -> Fired:
        """Which rules fire for ``image`` in ``namespace``: (rule, parsed image, why not allowed).
        Cached: the same few hundred (namespace, image) pairs repeat all day. ``image`` may carry
        the digest that ran (``repo:tag@sha256:…``): a scanner by digest is a scanner whatever
        its name, and an AllowedImages pin of that digest allows it whatever its tag."""
        key = (namespace, image)
        fired = self._rules_cache.get(key)
        if fired is not None:
            return fired
        try:
            ref: ImageRef | None = parse_image(image)
        except InvalidImageReference:
            ref = None
        fired = []
        # A scanner fires whether or not it is allowlisted: an allowlisted scanner still ran.
        if ref is not None and (
            ref.last_component in self._scanners
            or (ref.digest is not None and ref.digest in self._digests)
        ):
            fired.append((SCANNER_RULE, ref, None))
        verdict = self._allowlist.check(namespace, image)
        if not verdict.allowed:
            fired.append((SUSPICIOUS_RULE, ref, verdict.reason))
        if len(self._rules_cache) >= self.RULES_CACHE:
            self._rules_cache.clear()  # crude but bounded; refilling is cheap
        self._rules_cache[key] = fired
        return fired

    def run_rules(self, run: Running) -> tuple[Fired, str | None]:
        """Which rules fire for a container that ran, and what the kubelet reports ran when it
        is another repository than the spec's (None: the same, or nothing reported).

        The spec's image is the creator's to patch while the kubelet pulls; what the kubelet
        reports (``run.reported``) is not. A container is a scanner if the spec or anything
        reported names one (by name or digest); it is allowed only if both the spec's image
        and what the kubelet reports ran are (the reported image counts when it is another
        repository: the runtime shows whichever tag of the content it holds first)."""
        fired = self.rules_for(run.namespace, _with_digest(run.image, run.digest))
        ran_image = ran_image_of(run)
        if ran_image is not None and not any(f[0] is SUSPICIOUS_RULE for f in fired):
            ran = self.rules_for(run.namespace, _with_digest(ran_image, run.digest))
            fired = fired + [f for f in ran if f[0] is SUSPICIOUS_RULE]
        if fired and fired[0][0] is SCANNER_RULE:
            return fired, ran_image
        for image in run.reported:
            scanner = self.rules_for(run.namespace, _with_digest(image, run.digest))
            if scanner and scanner[0][0] is SCANNER_RULE:
                return [scanner[0], *fired], ran_image
        return fired, ran_image

    def judge(
        self, namespace: str, image: str, workload: Workload
    ) -> list[tuple[Identity, Rule, str | None, str]]:
        """The Findings an observation of ``image`` by ``workload`` in ``namespace`` belongs to:
        (identity, rule, why not allowed, the image normalized). A pure function of the
        observation and the configuration in force."""
        out = []
        for rule, ref, not_allowed in self.rules_for(namespace, image):
            repository = ref.repository if ref else repository_of(image)
            identity = Identity(rule.short, namespace, workload.name, repository)
            out.append((identity, rule, not_allowed, ref.normalized if ref else image))
        return out

    def covering(
        self, rule: Rule, namespace: str, workload: str, image: str, when: float
    ) -> Suppression | None:
        return self.suppressions.covering(rule.name, namespace, workload, image, when)


def ran_image_of(run: Running) -> str | None:
    """What the kubelet reports ran, when it is another repository than the spec's image."""
    if run.reported and repository_of(run.reported[0]) != repository_of(run.image):
        return run.reported[0]
    return None


def _with_digest(image: str, digest: str | None) -> str:
    return image if digest is None or "@" in image else f"{image}@{digest}"


def pull_slot(namespace: str, pod: str, container: str, image: str) -> int:
    """A container's pull Event, by the repository it pulled: an Event covers a container that
    ran (it was not "ran without a pull Event") only if it names what the container ran."""
    if len(namespace) + len(pod) + len(container) + len(image) <= _CACHED_SLOT_CHARS:
        return _pull_slot(namespace, pod, container, image)
    return uncached_hash(f"{namespace}\0{pod}\0{container}\0{repository_of(image)}", 48)


# Some names are hashed before they are validated: the cache holds what it is given, so it
# is bounded here (16,384 keys of at most 768 characters: about 13 MB).
_CACHED_SLOT_CHARS = 768


@functools.lru_cache(maxsize=16384)  # a pod's pulls come close together: one hash for them all
def _pull_slot(namespace: str, pod: str, container: str, image: str) -> int:
    return uncached_hash(f"{namespace}\0{pod}\0{container}\0{repository_of(image)}", 48)


def covered_expiry(s: Suppression) -> str:
    return datetime.fromtimestamp(s.expires or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
