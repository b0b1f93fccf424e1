"""The audit webhook receiver over real HTTPS on loopback (certificates made by the test):
who may POST, what is refused and counted, what is queued; and the audit witness that empties
the queue (kinds counted, observations handed on, a policy that drops Events noticed)."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp
import pytest

from certs import CA
from kubelet import audit_entries, image_event
from pullwatch.core.observations import ActorChange, Authored
from pullwatch.core.pulls import Pull
from pullwatch.kube import metrics
from pullwatch.kube.auditserver import (
    AuditQueue,
    AuditServer,
    decode_body,
    entries_of,
    looks_like_audit,
)
from pullwatch.kube.options import AuditWebhook
from pullwatch.kube.witnesses.audit import AuditWitness

TOKEN = "s3cr3t-token-for-the-api-server"


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def requests_of(outcome: str) -> float:
    return sample("pullwatch_audit_requests_total", outcome=outcome)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(d / "ca"), CA(d / "rogue", "someone-else")
    (d / "token").write_text(TOKEN + "\n")
    return {
        "ca": ca,
        "server": ca.issue("server", "pullwatch-audit-webhook", server=True),
        "client": ca.issue("client", "kube-apiserver-audit", server=False),
        "rogue": rogue.issue("rogue", "kube-apiserver-audit", server=False),
        "token": d / "token",
    }


def settings(pki, **kw: Any) -> AuditWebhook:
    base = dict(
        address="127.0.0.1:0",
        cert=str(pki["server"].cert),
        key=str(pki["server"].key),
        client_ca=str(pki["ca"].pair.cert),
        token_file=str(pki["token"]),
    )
    return AuditWebhook(**{**base, **kw})


def client_ctx(pki, client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"].pair.cert))
    if client is not None:
        ctx.load_cert_chain(str(pki[client].cert), str(pki[client].key))
    return ctx


class Running:
    def __init__(self, server: AuditServer):
        self.server = server

    async def __aenter__(self) -> AuditServer:
        await self.server.start()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


async def post(
    pki, server: AuditServer, body: Any, *, token: str | None = TOKEN, client=None, path="/audit"
) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or not isinstance(body, dict | list) else None
    data = json.dumps(body).encode() if data is None else data
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"https://127.0.0.1:{server.port}{path}",
            data=data,
            headers=headers,
            ssl=client_ctx(pki, client),
        ) as rsp,
    ):
        return rsp.status, await rsp.text()


def event_list(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": entries}


def body(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(event_list(entries)).encode()


def kubelet_pull(n: int = 0) -> dict[str, Any]:
    ev = image_event("Pulling", "shop", f"web-7d9f8b6c5d-x7k2{n}", "aquasec/kube-hunter:0.6.8")
    (entry,) = audit_entries(ev, f"id-{n}", stages=("ResponseComplete",))
    return entry


async def test_token_or_client_certificate_in_and_the_query_string_ignored(pki):
    async with Running(AuditServer(settings(pki))) as server:
        ok = requests_of("ok")
        assert await post(pki, server, event_list([kubelet_pull(1)]), path="/audit?timeout=30s")
        assert (
            await post(pki, server, event_list([kubelet_pull(2)]), token=None, client="client")
        )[0] == 200
        assert requests_of("ok") == ok + 2
        assert len(server.queue) == 2 and server.queue.bytes > 0


async def test_no_or_wrong_credentials_are_401_and_counted(pki):
    async with Running(AuditServer(settings(pki))) as server:
        before = requests_of("unauthenticated")
        assert (await post(pki, server, event_list([]), token=None))[0] == 401
        assert (await post(pki, server, event_list([]), token=TOKEN + "x"))[0] == 401
        assert (await post(pki, server, event_list([]), token=""))[0] == 401
        assert requests_of("unauthenticated") == before + 3 and len(server.queue) == 0


async def test_a_certificate_of_another_ca_fails_the_handshake(pki):
    async with Running(AuditServer(settings(pki))) as server:
        with pytest.raises(aiohttp.ClientError):
            await post(pki, server, event_list([]), token=None, client="rogue")
        assert len(server.queue) == 0


async def test_a_token_alone_does_not_accept_certificates(pki):
    async with Running(AuditServer(settings(pki, client_ca=None))) as server:
        assert (await post(pki, server, event_list([]), token=None, client="client"))[0] == 401
        assert (await post(pki, server, event_list([])))[0] == 200


async def test_a_rotated_token_file_takes_effect(pki, tmp_path, monkeypatch):
    from pullwatch.kube import auditserver

    monkeypatch.setattr(auditserver, "TOKEN_RECHECK", 0.0)
    token = tmp_path / "token"
    token.write_text("first")
    async with Running(AuditServer(settings(pki, token_file=str(token)))) as server:
        assert (await post(pki, server, event_list([]), token="first"))[0] == 200
        token.write_text("second")
        import os

        os.utime(token, (1, 1))  # a new mtime, however fast the test runs
        assert (await post(pki, server, event_list([]), token="first"))[0] == 401
        assert (await post(pki, server, event_list([]), token="second"))[0] == 200


async def test_over_the_bound_is_413_counted_and_never_read_whole(pki):
    async with Running(AuditServer(settings(pki, max_body=64 << 10))) as server:
        before = requests_of("too_large")
        big = json.dumps(event_list([kubelet_pull(i) for i in range(100)])).encode()
        assert len(big) > 64 << 10
        assert (await post(pki, server, big))[0] == 413  # by its Content-Length

        async def chunks():  # no Content-Length: the bounded reader stops past the bound
            for _ in range(1000):
                yield b" " * 4096

        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"https://127.0.0.1:{server.port}/audit",
                data=chunks(),
                headers={"Authorization": f"Bearer {TOKEN}"},
                ssl=client_ctx(pki),
            ) as rsp,
        ):
            assert rsp.status == 413
        assert requests_of("too_large") == before + 2 and len(server.queue) == 0
        # and the server goes on answering
        assert (await post(pki, server, event_list([kubelet_pull(0)])))[0] == 200


async def test_what_is_not_audit_json_is_400(pki):
    async with Running(AuditServer(settings(pki))) as server:
        before = requests_of("bad")
        core_list = {"kind": "EventList", "apiVersion": "v1", "items": []}
        for body in (b"not json", b"[1, 2]", core_list, {"kind": "Event", "apiVersion": "v1"}):
            assert (await post(pki, server, body))[0] == 400, body
        late = {"items": {}, "kind": "EventList", "apiVersion": "audit.k8s.io/v1"}
        assert (await post(pki, server, late))[0] == 400  # decoded in full: items not a list
        assert requests_of("bad") == before + 5 and len(server.queue) == 0
        # Opening as the API server's do, it is taken as it is; the witness decodes it (and
        # counts it malformed if it cannot: test_flush_processes_what_is_left)
        bad_items = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": {}}
        assert (await post(pki, server, bad_items))[0] == 200
        assert decode_body(server.queue.pop()[0]) is None


async def test_batch_and_single_event_bodies(pki):
    async with Running(AuditServer(settings(pki))) as server:
        assert (await post(pki, server, event_list([kubelet_pull(1), kubelet_pull(2)])))[0] == 200
        assert (await post(pki, server, kubelet_pull(3)))[0] == 200  # blocking mode: one Event
        batches = [decode_body(server.queue.pop()[0]) for _ in range(2)]
        assert [len(b) for b in batches] == [2, 1]
        assert batches[1][0]["auditID"] == "id-3"


async def test_a_full_queue_drops_counts_and_still_answers_200(pki):
    one = json.dumps(event_list([kubelet_pull(0)])).encode()
    async with Running(AuditServer(settings(pki, queue_bytes=2 * len(one)))) as server:
        dropped = requests_of("dropped")
        answers = [(await post(pki, server, one))[0] for _ in range(3)]
        assert answers == [200, 200, 200]
        assert requests_of("dropped") == dropped + 1 and len(server.queue) == 2
        assert sample("pullwatch_audit_queue_bytes") == 2 * len(one)
        server.queue.pop()
        assert (await post(pki, server, one))[0] == 200 and len(server.queue) == 2


async def test_a_standby_answers_503_and_is_not_ready(pki):
    state = {"active": False}
    server = AuditServer(
        settings(pki), accepting=lambda: state["active"], ready=lambda: state["active"]
    )
    async with Running(server):
        assert (await post(pki, server, event_list([])))[0] == 503
        async with aiohttp.ClientSession() as session:

            async def ready() -> int:
                url = f"https://127.0.0.1:{server.port}/readyz"
                async with session.get(url, ssl=client_ctx(pki)) as rsp:
                    return rsp.status

            assert await ready() == 503  # no credentials needed: the kubelet's probe has none
            state["active"] = True
            assert await ready() == 200
        assert (await post(pki, server, event_list([])))[0] == 200


def test_the_receiver_refuses_to_start_without_a_token_it_can_read(pki, tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(ValueError):
            AuditServer(settings(pki, token_file=str(path)))


def test_the_head_check_and_what_is_decoded_in_full():
    assert looks_like_audit(body([kubelet_pull(1)]))
    assert looks_like_audit(json.dumps(kubelet_pull(1)).encode())  # kind and apiVersion first
    assert not looks_like_audit(b'{"kind":"EventList","apiVersion":"v1","items":[]}')
    late = {"items": [kubelet_pull(1)] * 3, "kind": "EventList", "apiVersion": "audit.k8s.io/v1"}
    assert not looks_like_audit(json.dumps(late).encode())
    assert decode_body(json.dumps(late).encode()) is not None  # decoded in full: accepted


def test_entries_of():
    assert entries_of(event_list([{"a": 1}])) == [{"a": 1}]
    assert entries_of({"kind": "EventList", "apiVersion": "audit.k8s.io/v1"}) == []
    assert entries_of({"kind": "Event", "apiVersion": "audit.k8s.io/v1beta1"}) is not None
    assert entries_of({"kind": "Pod", "apiVersion": "audit.k8s.io/v1"}) is None


# -- the witness -----------------------------------------------------------------------------


def deployment_change(name: str, audit_id: str) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "create",
        "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
        "sourceIPs": ["10.0.9.9"],
        "objectRef": {
            "resource": "deployments",
            "namespace": "shop",
            "name": name,
            "apiGroup": "apps",
            "apiVersion": "v1",
        },
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": "2026-11-18T11:06:40Z",
    }


def witness(clock: list[float], pulls: list[int]) -> tuple[AuditWitness, list, list]:
    queue = AuditQueue(1 << 20)
    seen: list[Any] = []
    took: list[Pull] = []
    w = AuditWitness(
        queue,
        lambda obs: seen.append(obs) or False,
        took.append,
        pulls_seen=lambda: pulls[0],
        missing_after=600,
        clock=lambda: clock[0],
        wall=lambda: 1e9 + clock[0],
    )
    return w, seen, took


def test_the_witness_hands_pulls_and_the_rest_on_and_counts_kinds():
    w, seen, took = witness([0.0], [0])
    malformed = sample("pullwatch_audit_entries_total", kind="malformed")
    events = sample("pullwatch_audit_entries_total", kind="events")
    broken = {
        **deployment_change("web", "x2"),
        "objectRef": {
            "resource": "deployments",
            "apiGroup": "apps",
            "namespace": "shop",
            "name": "Not A Name",
        },
    }
    w.process([kubelet_pull(1), deployment_change("web", "x1"), "junk", broken])
    assert [p.actor.user for p in took] == ["system:node:worker-1"]
    assert [type(o) for o in seen] == [Authored, ActorChange]
    assert sample("pullwatch_audit_entries_total", kind="malformed") == malformed + 2
    assert sample("pullwatch_audit_entries_total", kind="events") == events + 1
    w.process([kubelet_pull(1)])  # the same request again: deduplicated by auditID
    assert len(took) == 1
    assert w.state()[0] == "Receiving"


def test_entries_without_any_event_create_while_pulls_are_seen_is_said_once(caplog):
    clock, pulls = [0.0], [0]
    w, _, _ = witness(clock, pulls)
    assert w.state()[0] == "Silent"
    w.process([deployment_change("web", "a")])
    clock[0] = 700
    assert not w.check()  # no pull Event seen meanwhile: a quiet cluster, nothing to say
    pulls[0] = 3
    w.process([deployment_change("web", "b")])
    assert w.check() and w.check()
    assert sample("pullwatch_audit_event_creates_missing") == 1
    assert w.state()[0] == "Blind"
    assert sum("drops `events`" in r.getMessage() for r in caplog.records) == 1
    w.process([kubelet_pull(7)])  # an Event create: the policy logs them after all
    assert not w.missing and sample("pullwatch_audit_event_creates_missing") == 0
    clock[0] = 900
    assert not w.check()


async def test_the_witness_empties_the_queue():
    w, seen, took = witness([0.0], [0])
    task = asyncio.create_task(w.run())
    w.queue.offer(body([kubelet_pull(1)]))
    w.queue.offer(body([deployment_change("web", "q1")]))
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(took) == 1 and len(seen) == 2 and w.queue.bytes == 0


def test_flush_processes_what_is_left():
    w, _, took = witness([0.0], [0])
    w.queue.offer(body([kubelet_pull(1)]))
    w.queue.offer(body([kubelet_pull(2)]))
    malformed = sample("pullwatch_audit_entries_total", kind="malformed")
    w.queue.offer(b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[')  # cut short
    assert w.flush() == 3 and len(took) == 2 and w.queue.bytes == 0
    assert sample("pullwatch_audit_entries_total", kind="malformed") == malformed + 1


async def test_the_audit_witness_object_says_disabled_then_what_the_witness_sees():
    from fakeapi import serving

    from pullwatch.kube.witnessboard import WitnessBoard
    from pullwatch.kube.witnesses.audit import audit_report

    async with serving() as (fake, api):
        path = "/apis/pullwatch.dev/v1alpha1/witnesses/audit"
        await WitnessBoard(api, {"audit": lambda: audit_report(None)}).publish()
        assert fake.objects[path]["status"]["state"] == "Disabled"
        clock = [0.0]
        w, _, _ = witness(clock, [0])
        board = WitnessBoard(api, {"audit": lambda: audit_report(w)})
        await board.publish()
        assert fake.objects[path]["status"]["state"] == "Silent"
        w.process([kubelet_pull(1)])
        await board.publish()
        status = fake.objects[path]["status"]
        assert status["state"] == "Receiving" and status["lastObservation"].endswith("Z")
        clock[0] = 3600.0  # an hour without a POST
        await board.publish()
        assert fake.objects[path]["status"]["state"] == "Silent"


def test_the_flags_are_off_by_default_and_never_unauthenticated():
    from pullwatch.cli import build_parser
    from pullwatch.kube.options import run_options

    def options(*flags: str):
        return run_options(build_parser().parse_args(["run", *flags]))

    assert options().audit_webhook is None
    base = [
        "--audit-webhook-address=0.0.0.0:8443",
        "--audit-webhook-cert=c",
        "--audit-webhook-key=k",
    ]
    on = options(*base, "--audit-webhook-token-file=t", "--audit-webhook-max-body=512Ki")
    assert on.audit_webhook.max_body == 512 << 10 and on.audit_webhook.queue_bytes == 64 << 20
    for flags in (base, base[:2] + ["--audit-webhook-token-file=t"], ["--audit-webhook-cert=c"]):
        with pytest.raises(ValueError):
            options(*flags)
