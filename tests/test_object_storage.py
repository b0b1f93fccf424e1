"""``pullwatch scan s3://…``: objects read from a local S3 server (moto's, on 127.0.0.1) give
exactly what the same bytes give as a local file - Findings, summary, damage and exit code - and
what cannot be read is a clear one-line error (missing object, refused credentials, a prefix
without its slash, a missing optional package)."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s3server import LocalS3

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
DATA = Path(__file__).resolve().parent / "data"
ALLOW = str(DATA / "allowed-images.yaml")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = LocalS3(tmp_path_factory.mktemp("home"))
    server.bucket("audit-archive")
    yield server
    server.stop()


def scan(env, *inputs, timeout=120):
    return subprocess.run(
        [PULLWATCH, "scan", *inputs, "-a", ALLOW, "-o", "json"],
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def same_as_local(s3, tmp_path, name: str, data: bytes):
    """Scan ``data`` as an object and as a file: everything but the input's name must agree."""
    url = s3.put("audit-archive", f"cluster-a/{name}", data)
    local = tmp_path / name
    local.write_bytes(data)
    remote_run, local_run = scan(s3.env(), url), scan(s3.env(), str(local))
    assert remote_run.returncode == local_run.returncode
    assert remote_run.stdout == local_run.stdout
    assert remote_run.stderr.replace(url.encode(), b"INPUT") == local_run.stderr.replace(
        str(local).encode(), b"INPUT"
    )
    return remote_run


@pytest.mark.parametrize(
    "name", ["watch.jsonl", "audit.jsonl", "events-list.json", "events-list.yaml"]
)
def test_an_object_gives_what_the_same_file_gives(s3, tmp_path, name):
    r = same_as_local(s3, tmp_path, name, (DATA / name).read_bytes())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"]  # the corpus has Findings: nothing silently empty


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_compressed_objects_are_sniffed_from_their_bytes(s3, tmp_path, compress):
    data = compress((DATA / "watch.jsonl").read_bytes())
    r = same_as_local(s3, tmp_path, "watch-no-suffix", data)
    assert r.returncode == 0 and json.loads(r.stdout)["items"]


def test_a_damaged_object_keeps_what_was_read_and_says_so(s3, tmp_path):
    whole = gzip.compress((DATA / "watch.jsonl").read_bytes() * 20)
    r = same_as_local(s3, tmp_path, "watch.jsonl.gz", whole[: len(whole) * 2 // 3])
    assert r.returncode == 3
    assert b"gzip data is truncated" in r.stderr and json.loads(r.stdout)["items"]
    lines = (DATA / "watch.jsonl").read_bytes().splitlines(keepends=True)
    cut = b"".join(lines[:5]) + lines[5][:100] + b"\n" + b"".join(lines[6:])
    r = same_as_local(s3, tmp_path, "cut.jsonl", cut)
    assert r.returncode == 3 and b"1 damaged record(s)" in r.stderr


def test_a_missing_object_or_bucket_is_an_input_error_and_the_others_are_read(s3):
    good = s3.put("audit-archive", "cluster-b/watch.jsonl", (DATA / "watch.jsonl").read_bytes())
    r = scan(s3.env(), "s3://audit-archive/cluster-b/nope.jsonl", "s3://no-such-bucket/x", good)
    assert r.returncode == 3
    err = r.stderr.decode()
    assert "s3://audit-archive/cluster-b/nope.jsonl: no such object" in err
    assert "s3://no-such-bucket/x: no such object (The specified bucket does not exist)" in err
    assert "Traceback" not in err and json.loads(r.stdout)["items"]


def test_refused_credentials_are_a_clear_error(s3):
    url = s3.put("audit-archive", "cluster-c/watch.jsonl", (DATA / "watch.jsonl").read_bytes())
    with s3.authenticating() as (key, secret):
        ok = scan(s3.env(key, secret), url)
        wrong_secret = scan(s3.env(key, "not-the-secret"), url)
        unknown_key = scan(s3.env("AKIAUNKNOWN000000000", secret), url)
    assert ok.returncode == 0, ok.stderr
    for r in (wrong_secret, unknown_key):
        assert r.returncode == 3
        err = r.stderr.decode()
        assert f"{url}: access refused" in err and "AWS_ACCESS_KEY_ID" in err, err
        assert "Traceback" not in err


def test_a_prefix_or_glob_names_its_objects_in_key_order(s3, tmp_path):
    watch = (DATA / "watch.jsonl").read_bytes()
    audit = (DATA / "audit.jsonl").read_bytes()
    s3.put("audit-archive", "fleet/2026-01/a.jsonl", watch)
    s3.put("audit-archive", "fleet/2026-01/b/c.log", audit)
    s3.put("audit-archive", "fleet/2026-02/a.jsonl", watch)
    (tmp_path / "a.jsonl").write_bytes(watch)
    (tmp_path / "c.log").write_bytes(audit)
    both = scan(s3.env(), str(tmp_path / "a.jsonl"), str(tmp_path / "c.log"))
    prefix = scan(s3.env(), "s3://audit-archive/fleet/2026-01/")
    glob = scan(s3.env(), "s3://audit-archive/fleet/*/a.jsonl")
    assert prefix.returncode == 0 and prefix.stdout == both.stdout
    assert b"records read: 68" in prefix.stderr
    assert glob.returncode == 0 and b"records read: 66" in glob.stderr  # two objects of 33
    no_slash = scan(s3.env(), "s3://audit-archive/fleet/2026-01")
    assert no_slash.returncode == 3
    assert b"a prefix, not an object: end it with / to scan" in no_slash.stderr
    nothing = scan(s3.env(), "s3://audit-archive/fleet/2027-*/x", "s3://audit-archive/none/")
    assert nothing.returncode == 3
    assert b"no object matches s3://audit-archive/fleet/2027-*/x" in nothing.stderr
    assert b"no objects under s3://audit-archive/none/" in nothing.stderr


def test_a_large_object_is_scanned_by_ranges_exactly_as_in_one_read(s3, monkeypatch):
    """The multi-core path on an object: forked workers with their own ranged GETs."""
    import fsspec

    import pullwatch.scan.cloud as cloud
    import pullwatch.scan.parallel as parallel
    from pullwatch.core.allowlist import Allowlist
    from pullwatch.scan.pipeline import load_config, scan_paths

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    lines = (DATA / "watch.jsonl").read_bytes().splitlines(keepends=True)
    data = b"".join(lines * 40)  # the same series again and again: counts must not double
    url = s3.put("audit-archive", "big/watch.jsonl", data)
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    monkeypatch.setattr(cloud, "PIECE", 4096)  # many GETs per range, several in flight
    assert parallel.usable(url)
    ranges = parallel.line_aligned_ranges(url, 8)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) and len(ranges) == 8
    assert all(data[b - 1 : b] == b"\n" for _, b in ranges)
    allow = Allowlist(load_config([ALLOW]).policies)
    sequential = scan_paths([url], allow, parallel=False)
    by_ranges = scan_paths([url], allow, parallel=True)
    assert list(by_ranges.findings) == list(sequential.findings) and list(sequential.findings)
    for result in (by_ranges, sequential):  # each range samples its first lines: recognized
        result.stats.recognized = 0  # differs, as for a local file (tests/test_parallel.py)
    assert by_ranges.stats == sequential.stats and by_ranges.pulls == sequential.pulls
    assert not by_ranges.input_errors and not sequential.input_errors


def test_an_object_overwritten_while_it_is_read_is_damage_not_a_mix(s3, monkeypatch):
    import fsspec

    import pullwatch.scan.cloud as cloud
    from pullwatch.scan.sources import open_path

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    monkeypatch.setattr(cloud, "PIECE", 1024)
    url = s3.put("audit-archive", "moving.jsonl", b"x" * 100_000)
    source = open_path(url)
    first = source.read(10)
    s3.put("audit-archive", "moving.jsonl", b"y" * 100_000)
    rest = source.read(-1)
    source.close()
    assert first == b"x" * 10 and b"y" not in rest and len(rest) < 100_000 - 10
    assert source.damage and source.damage[0].startswith("read error after")


def test_pieces_come_by_signed_gets_and_from_s3fs_where_those_are_refused(s3, monkeypatch):
    """The pieces of an S3 object are plain GETs on a URL s3fs signs (presigned.py); a server
    that refuses them (moto checking credentials answers a presigned GET with an error) gets
    s3fs's own GETs for the rest of the object, and the bytes are the same."""
    import fsspec

    import pullwatch.scan.cloud as cloud
    import pullwatch.scan.presigned as presigned
    from pullwatch.scan.presigned import SignedGets

    monkeypatch.setattr(cloud, "PIECE", 8192)
    monkeypatch.setattr(presigned, "_REFUSED_ENDPOINTS", set())  # this test's refusals only
    data = bytes(range(256)) * 400  # 102,400 bytes: 13 pieces
    url = s3.put("audit-archive", "signed/pieces.bin", data)

    def read_all(env: dict[str, str], signed: bool = True) -> tuple[bytes, Any]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        fsspec.get_filesystem_class("s3").clear_instance_cache()
        reader = cloud.open_object(url, 100, len(data) - 7)
        fetch = reader._fetch_piece
        assert isinstance(fetch, SignedGets) == signed
        chunks = []
        while chunk := reader.read(5000):
            chunks.append(chunk)
        reader.close()
        return b"".join(chunks), fetch

    signed, fetch = read_all(s3.env())
    assert signed == data[100:-7] and fetch._proven and not fetch._refused
    with s3.authenticating() as (key, secret):
        refused, fetch = read_all(s3.env(key, secret))
        assert refused == data[100:-7] and fetch._refused and not fetch._proven
        again, _ = read_all(s3.env(key, secret), signed=False)  # the endpoint is remembered
        assert again == data[100:-7]
    presigned._REFUSED_ENDPOINTS.clear()
    monkeypatch.setenv("PULLWATCH_S3_PRESIGNED", "0")
    assert read_all(s3.env(), signed=False)[0] == data[100:-7]  # turned off


def test_refused_presigned_gets_are_told_once_and_nothing_is_lost(s3, monkeypatch):
    """An endpoint that refuses presigned GETs costs twice the CPU (s3fs's own GETs): the scan
    says so once, on one core and on several (the parent learns it from its workers), and its
    Findings are those of a scan where they worked."""
    import fsspec

    import pullwatch.scan.parallel as parallel
    import pullwatch.scan.presigned as presigned
    from pullwatch.core.allowlist import Allowlist
    from pullwatch.scan.pipeline import load_config, scan_paths

    data = (DATA / "watch.jsonl").read_bytes() * 20
    url = s3.put("audit-archive", "told/watch.jsonl", data)
    quiet = scan(s3.env(), url)
    assert quiet.returncode == 0 and b"note:" not in quiet.stderr
    monkeypatch.setattr(presigned, "_REFUSED_ENDPOINTS", set())
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    allow = Allowlist(load_config([ALLOW]).policies)
    with s3.authenticating() as (key, secret):
        told = scan(s3.env(key, secret), url)
        for name, value in s3.env(key, secret).items():
            monkeypatch.setenv(name, value)
        fsspec.get_filesystem_class("s3").clear_instance_cache()
        by_ranges = scan_paths([url], allow, parallel=True)
    assert told.returncode == 0 and told.stdout == quiet.stdout
    notes = [line for line in told.stderr.decode().splitlines() if "note:" in line]
    # (moto answers a presigned GET it cannot check with HTTP 500)
    assert len(notes) == 1 and "presigned URL answered HTTP " in notes[0], told.stderr
    assert "PULLWATCH_S3_PRESIGNED=0" in notes[0] and "X-Amz" not in notes[0]
    assert by_ranges.notices and set(by_ranges.notices) == {notes[0].split("note: ", 1)[1]}
    assert list(by_ranges.findings) and not by_ranges.input_errors
    # what the workers found, the parent knows: the next object's workers (forked from it) do
    # not try that endpoint again
    refused = presigned._REFUSED_ENDPOINTS
    assert refused == {s3.endpoint.split("://", 1)[1]}, refused


def test_a_notice_names_the_endpoint_without_its_credentials_or_the_servers_words(monkeypatch):
    """An endpoint URL may carry user:password@ (botocore keeps it in the URLs it signs), and
    what a failing server says is its own choice (byte counts, text): the notice names host and
    port and the kind of failure only, so every object of a fleet that fails alike gives one."""
    import http.server
    import threading

    import pullwatch.scan.presigned as presigned
    from pullwatch.scan import cloud

    sent = iter(range(1, 9))

    class CutsShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the range's first bytes, then gone: a different count each time
            head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n"
            self.wfile.write(head + b"x" * next(sent))
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), CutsShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(presigned, "_REFUSED_ENDPOINTS", set())
    url = f"http://scanner:hunter2@127.0.0.1:{server.server_port}/bkt/k?X-Amz-Signature=abc"

    class Signs:
        def sign(self, path, expiration):
            return url

    cloud.take_notices()
    try:
        for _ in range(3):  # three objects of one endpoint
            gets = presigned.SignedGets(Signs(), "bkt/k", None, lambda a, b: b"x" * (b - a), url)
            assert gets(0, 10) == b"x" * 10  # s3fs's own GET (here a stand-in) read it
            presigned._REFUSED_ENDPOINTS.clear()
    finally:
        server.shutdown()
    notices = cloud.take_notices()
    assert len(notices) == 1, notices
    assert notices[0].startswith(f"127.0.0.1:{server.server_port}: ")
    assert "hunter2" not in notices[0] and "scanner" not in notices[0] and "?" not in notices[0]


def _without(tmp_path: Path, package: str) -> dict[str, str]:
    """PYTHONPATH with a stand-in for ``package`` that cannot be imported, as on a machine where
    pullwatch was installed without its [cloud] extra."""
    shadow = tmp_path / "shadow" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f'raise ImportError("No module named {package}")\n')
    return {"PYTHONPATH": str(shadow.parent)}


@pytest.mark.parametrize(
    ("url", "package"),
    [("s3://b/k.jsonl", "s3fs"), ("gs://b/k.jsonl", "gcsfs"), ("az://c/k.jsonl", "adlfs")],
)
def test_a_missing_extra_says_what_to_install(s3, tmp_path, url, package):
    r = scan({**s3.env(), **_without(tmp_path, package)}, url, str(DATA / "watch.jsonl"))
    assert r.returncode == 3
    err = r.stderr.decode()
    assert f"{url}: reading {url[:2]}:// needs {package}: pip install 'pullwatch[cloud]'" in err
    assert "Traceback" not in err and json.loads(r.stdout)["items"]  # the local file is read


def test_azure_without_an_account_says_what_to_set(s3):
    env = {k: v for k, v in s3.env().items() if not k.startswith("AZURE_")}
    r = scan(env, "az://logs/audit.jsonl")
    assert r.returncode == 3
    assert b"az://logs/audit.jsonl: no Azure storage account given: set" in r.stderr


def test_local_scans_load_no_object_storage_library():
    code = (
        "import sys; from pullwatch.scan.pipeline import scan_paths; "
        "from pullwatch.core.allowlist import Allowlist; "
        f"r = scan_paths([{str(DATA / 'watch.jsonl')!r}], Allowlist([])); "
        "assert r.findings and not r.input_errors; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fsspec', 's3fs', 'aiobotocore')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_signed_url_never_reaches_a_message(caplog):
    """The presigned URL is a credential: neither a damage message nor any of urllib3's log
    records (a retry's warning, DEBUG lines), at any level, carries its query string."""
    import logging

    from pullwatch.scan.presigned import SignedGets

    class Unsigning:
        def sign(self, path: str, expiration: int) -> str:
            return "http://127.0.0.1:9/bucket/key?X-Amz-Signature=SECRET"  # port 9: refused

    def fallback(start: int, stop: int) -> bytes:
        raise AssertionError("only before a signed GET worked")

    fetch = SignedGets(Unsigning(), "bucket/key", None, fallback, Unsigning().sign("", 0))
    fetch._proven = True  # as after a first GET: a failure is now the read's
    with caplog.at_level(logging.DEBUG), pytest.raises(OSError) as raised:
        fetch(0, 10)
    assert "GET of bytes 0-10 failed" in str(raised.value)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "Retrying" in logged and "SECRET" not in logged + str(raised.value)
