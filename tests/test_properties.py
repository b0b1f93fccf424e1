"""Property tests: the parsers and decoders raise nothing but their own errors, on anything."""

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kubelet import image_event
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.core.detector import Detector
from pullwatch.core.imageref import InvalidImageReference, parse_image
from pullwatch.core.patterns import InvalidPattern, compile_pattern
from pullwatch.core.pulls import DecodeError, decode_event
from pullwatch.scan.records import ReadStats, iter_objects

REF_ALPHABET = st.sampled_from(list("abcXYZ019._-:/@[]*+ \n\x1b\""))
# Reference-like strings: grammar pieces glued together, so the parser's deeper branches are hit.
REF_LIKE = st.lists(st.sampled_from(["sha256:", "docker.io/", "localhost", "index.docker.io/", "a", "b1",
                                     "/", ":", "@", "-", "_", "__", ".", "*", "**", "[::1]", ":5000",
                                     "0" * 64, "Z", "\n"]), max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


@given(st.text(REF_ALPHABET, max_size=80) | REF_LIKE | st.text(max_size=80))
def test_parse_image_raises_only_its_own_error(raw):
    try:
        ref = parse_image(raw)
    except InvalidImageReference:
        return
    assert parse_image(ref.normalized).normalized == ref.normalized  # normalization is idempotent


@given(st.text(REF_ALPHABET, max_size=60) | REF_LIKE | json_values)
def test_compile_pattern_raises_only_its_own_error(raw):
    try:
        compile_pattern(raw)
    except InvalidPattern:
        pass


@st.composite
def mutated_events(draw):
    ev = image_event("Pulling", "ns", "p", draw(st.text(REF_ALPHABET, max_size=40) | REF_LIKE))
    for key in draw(st.lists(st.sampled_from(sorted(ev) + ["series", "note", "regarding"]), max_size=4)):
        ev[key] = draw(json_values)
    for key in draw(st.lists(st.sampled_from(["name", "namespace", "fieldPath", "uid", "kind"]), max_size=3)):
        if isinstance(ev.get("involvedObject"), dict):
            ev["involvedObject"][key] = draw(json_values)
    if draw(st.booleans()):
        ev["apiVersion"] = "events.k8s.io/v1"
    return ev


@settings(max_examples=300)
@given(mutated_events() | json_values)
def test_decoders_and_detector_raise_only_decode_errors(obj):
    detector = Detector(Allowlist([policy_from_object({"apiVersion": "pullwatch.dev/v1alpha1",
                                                        "kind": "AllowedImages", "metadata": {"name": "a"},
                                                        "spec": {"images": ["**"]}})]))
    try:
        pull = decode_event(obj)
    except DecodeError:
        return
    if pull is not None:
        detector.observe(pull)
        json.dumps(list(detector.findings()))
    entry = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "x", "verb": "create",
             "objectRef": {"resource": "events"}, "requestObject": obj}
    try:
        decode_audit_entry(entry, AuditDeduper())
    except DecodeError:
        pass


@given(json_values)
def test_audit_decoder_on_arbitrary_entries(entry):
    if isinstance(entry, dict):
        try:
            decode_audit_entry(entry, AuditDeduper())
        except DecodeError:
            pass


@given(st.binary(max_size=300) | st.lists(json_values, max_size=5).map(
    lambda xs: "\n".join(json.dumps(x) + ' "Pull' * (i % 2) for i, x in enumerate(xs)).encode()))
def test_reader_never_raises_on_arbitrary_bytes(data):
    stats = ReadStats()
    for _ in iter_objects(io.BufferedReader(io.BytesIO(data)), stats):
        pass


@given(json_values)
def test_policy_from_arbitrary_objects_never_raises(obj):
    policy_from_object(obj)
    if isinstance(obj, dict):
        policy_from_object({"apiVersion": "pullwatch.dev/v1alpha1", "kind": "AllowedImages", "spec": obj})
