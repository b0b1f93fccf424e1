"""JSON lines: every damaged line is counted once, whatever it holds and wherever it falls in the
reads; whole lines of any shape are never counted (the reader's cheap structural check and its
exact fallback must agree with a parse of every line)."""

import io
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelet import image_event, other_event
from pullwatch.scan.records import ReadStats, iter_objects

PULL = json.dumps({"type": "ADDED", "object": image_event("Pulling", "ns", "p", "nginx")})
NOISE = json.dumps(
    {"type": "ADDED", "object": other_event("Started", "ns", "n", "Started container x")}
)


def read(data: bytes, chunk: int | None = None, monkeypatch=None):
    """The records of JSON lines; ``chunk``: read in pieces this small, past the sniffing of the
    format (which needs whole lines), so that lines straddle reads."""
    stats = ReadStats()
    stream = io.BufferedReader(io.BytesIO(data))
    if not chunk:
        return list(iter_objects(stream, stats)), stats
    import pullwatch.scan.records as records

    monkeypatch.setattr(records, "CHUNK", chunk)
    return list(records.json_lines(stream, stats)), stats


def parse_failures(lines: list[str]) -> int:
    """What parsing every line one by one says is damaged (blank lines are not records)."""
    bad = 0
    for line in lines:
        if line.strip():
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
    return bad


@pytest.mark.parametrize("chunk", [None, 97, 4096])
def test_lines_cut_short_anywhere_are_each_counted_once(monkeypatch, chunk):
    lines = []
    for i in range(60):
        lines.append(NOISE if i % 5 else PULL)
        if i % 7 == 3:  # a forwarder's line limit: the rest of the line is lost
            lines.append(NOISE[: (i * 37) % len(NOISE)])
    data = ("\n".join(lines) + "\n").encode()
    objs, stats = read(data, chunk, monkeypatch)
    assert stats.damaged["not JSON"] == parse_failures(lines) > 0
    assert len(objs) == 12 and stats.records == len(lines)


def test_merged_lines_text_without_braces_and_blank_lines(monkeypatch):
    lines = [
        NOISE,
        NOISE[:300] + NOISE,  # a line cut short whose newline was lost: merged with the next
        "a line of text without any brace",
        "",
        "   ",
        NOISE,
        "[1, 2, 3]",  # JSON, no braces: read, not damage
        '{"message": "braces in strings: }{ {{ }"}',  # whole, though its braces do not nest
        '{"a": ' * 40 + "1" + "}" * 40,  # deeper than the reader's quick check goes
        "}" + NOISE,
        PULL,
    ]
    data = ("\n".join(lines) + "\n").encode()
    for chunk in (None, 64):
        objs, stats = read(data, chunk, monkeypatch)
        assert dict(stats.damaged) == {"not JSON": 3}, chunk
        assert len(objs) == 1 and stats.records == len(lines)


def test_a_last_line_cut_short_without_its_newline_is_counted():
    objs, stats = read((PULL + "\n" + NOISE[:200]).encode())
    assert len(objs) == 1 and stats.damaged["not JSON"] == 1 and stats.records == 2


def test_backslashes_everywhere_still_find_every_pull():
    """Audit exports that quote whole entries as strings are full of backslashes; the reader's
    backslash hopping gives way to a plain search there and still finds each pull."""
    quoted = json.dumps({"log": NOISE * 3})  # a string full of \"
    lines = [quoted] * 300 + [PULL] + [quoted] * 300 + [PULL]
    objs, stats = read(("\n".join(lines) + "\n").encode())
    assert len(objs) == 2 and not stats.damaged


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([PULL, NOISE, "", "x", "{", "}", '{"a": "}"}', "{}", "[]"])
        | st.tuples(st.sampled_from([PULL, NOISE]), st.integers(0, 2000)).map(
            lambda t: t[0][: t[1]]
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([None, 5, 128, 1500]),
)
def test_damage_counts_equal_a_parse_of_every_line(lines, chunk):
    import pullwatch.scan.records as records

    saved = records.CHUNK
    records.CHUNK = chunk or saved
    try:
        stats = ReadStats()
        data = ("\n".join(lines) + "\n").encode()
        list(records.json_lines(io.BufferedReader(io.BytesIO(data)), stats))
    finally:
        records.CHUNK = saved
    bad = parse_failures(lines)
    assert dict(stats.damaged) == ({"not JSON": bad} if bad else {})
    assert stats.records == len(lines)  # blank lines too
