"""Which lines of a JSON-lines chunk are damaged, found without parsing the sound ones.

A line the pre-filter does not parse (no candidate bytes) must still be counted as damage when
it is not whole JSON: a pull cut short by a log forwarder may have lost exactly those bytes. One
``bytes.translate`` per chunk keeps only its braces and newlines (about 3 % of it); the lines of
a stream have few distinct shapes of braces, each checked once for braces that nest; only the
lines of a suspect shape are parsed, to know for sure. A line is then counted exactly when
orjson refuses it, except a line whose braces nest although it is not JSON (text around a whole
object, a cut inside a string that happens to balance): that is the price of not parsing.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.pulls import CANDIDATE

# Everything but braces and newlines, deleted by one bytes.translate: what is left of a chunk
# (about 3 % of it) tells in one pass how many lines it has and whether each is a whole object.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"{}\n")
_MAX_NESTING = 32  # deeper lines are checked one by one (exactly, just slower)


def skeleton(buf: bytes) -> bytes:
    """The braces and newlines of ``buf``, in order.

    >>> skeleton(b'{"a": {"b": "c"}}\\n{"d": 1\\n')
    b'{{}}\\n{\\n'
    """
    return buf.translate(None, _NOT_STRUCTURE)


def _unnested(skeleton: bytes) -> bytes:
    """The skeleton of a line with every properly nested ``{…}`` pair removed: the braces of a
    whole JSON object leave nothing.

    >>> _unnested(b'{{}{{}}}'), _unnested(b'{{}'), _unnested(b'}{')
    (b'', b'{', b'}{')
    """
    for _ in range(_MAX_NESTING):
        reduced = skeleton.replace(b"{}", b"")
        if len(reduced) == len(skeleton):
            break
        skeleton = reduced
    return skeleton


def check_lines(buf: bytes, start: int, end: int, skeleton: bytes, stats: Any) -> None:
    """Count as damage the lines of ``buf[start:end]`` (whole lines; ``skeleton`` is theirs)
    that are not whole JSON and hold no candidate (those are parsed, and counted, by the
    pre-filter in ``records.py``).

    Cheap in the common case: a JSON object's braces nest, so a line cut short (it has more
    ``{`` than ``}``), two merged lines (likewise) and a line of text without braces all leave
    a trace in their skeleton. The lines of a stream have few distinct skeletons (one per shape
    of record), each checked once; only the lines whose skeleton is suspect are parsed, to know
    for sure."""
    shapes = skeleton[:-1].split(b"\n")  # one per line: the skeleton ends with a newline
    suspect = {shape for shape in set(shapes) if not shape or _unnested(shape)}
    if not suspect:
        return
    for line, shape in zip(buf[start:end].split(b"\n"), shapes):
        if shape not in suspect:
            continue
        s = line.rstrip()
        if not s or CANDIDATE in s:
            continue
        try:
            orjson.loads(s)
        except orjson.JSONDecodeError:
            stats.damaged["not JSON"] += 1
