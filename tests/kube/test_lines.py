"""kube/lines.py: lines come out whole however the bytes are chunked, oversize ones as Oversize;
a resourceVersion is read by structure, never found inside a value or another object."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pullwatch.kube.lines import Lines, Oversize, resource_version_of

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceVersion", "metadata", "object", "a"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@given(
    st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")), max_size=12), st.data()
)
def test_any_chunking_gives_the_same_lines(lines, data):
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    splitter, out = Lines(limit=40, head=8), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += splitter.feed(stream[a:b])
    want = [Oversize(line[:8], len(line)) if len(line) > 40 else line for line in lines if line]
    assert out == want and splitter.pending == 0


@given(json_values, st.one_of(st.none(), st.from_regex(r"[0-9a-z.-]{1,12}", fullmatch=True)))
def test_the_version_is_the_objects_own(other, version):
    obj = {"type": "ADDED", "object": {"x": other, "involvedObject": {"resourceVersion": "7"}}}
    if version is not None:
        obj["object"]["metadata"] = {
            "annotations": {"resourceVersion": "9"},
            "resourceVersion": version,
        }
    data = orjson.dumps(obj)
    assert resource_version_of(data) == version
    assert resource_version_of(data[: len(data) // 2]) in (None, version)
