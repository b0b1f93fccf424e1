"""Property tests for the Pod, audit and export decoders: on anything - valid objects with any
part replaced by any JSON value - they raise nothing but DecodeError, and the reader hooks
nothing at all."""

import copy
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from paths import DATA
from pullwatch.core import exports
from pullwatch.core.audit import AuditDeduper, audit_observations
from pullwatch.core.pods import decode_pod, pod_fingerprint
from pullwatch.core.pulls import DecodeError
from pullwatch.scan.records import ReadStats, iter_objects

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
POD = json.loads((DATA / "pods" / "kuard-docker.json").read_text())["items"][0]
AUDIT = [json.loads(line) for line in (DATA / "audit.jsonl").read_text().splitlines()]
POD_CREATE = next(e for e in AUDIT if e["objectRef"]["resource"] == "pods")
GKE = json.loads((DATA / "exports" / "gke-binauthz-denied.json").read_text())[0]
AKS = json.loads((DATA / "exports" / "aks-sumologic-docs.jsonl").read_text().splitlines()[0])


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def mutated(base):
    """The object with one of its parts (any depth) replaced by any JSON value."""
    places = list(paths(base))[1:]

    @st.composite
    def build(draw):
        obj = copy.deepcopy(base)
        where = draw(st.sampled_from(places))
        holder = obj
        for key in where[:-1]:
            holder = holder[key]
        holder[where[-1]] = draw(JSON)
        return obj

    return build()


@settings(max_examples=400)
@given(mutated(POD) | JSON)
def test_pod_decoder(obj):
    for decode in (decode_pod, pod_fingerprint):
        try:
            decode(obj)
        except DecodeError:
            pass


@settings(max_examples=400)
@given(st.sampled_from(AUDIT).flatmap(mutated) | mutated(POD_CREATE) | JSON)
def test_audit_decoder(entry):
    try:
        audit_observations(entry, AuditDeduper())
    except DecodeError:
        pass


@settings(max_examples=300)
@given(mutated(GKE) | mutated(AKS) | mutated({"records": [AKS]}) | JSON)
def test_export_unwrapping_and_the_reader_hook(obj):
    for what, value in exports.unwrap(obj):
        assert what in ("audit", "unread", "skip", "damage")
        if what == "audit":
            try:
                audit_observations(value, AuditDeduper())
            except DecodeError:
                pass
    stats = ReadStats()
    data = (json.dumps(obj) + "\n").encode() * 10
    list(iter_objects(io.BufferedReader(io.BytesIO(data)), stats))
