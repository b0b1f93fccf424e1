"""A small fake of the Kubernetes API for the unit tests of kube/: an aiohttp server on loopback.

It keeps objects by path and answers what pullwatch asks of them the way the API server does:
create (409 when it exists), get, list (``limit``/``continue``, and ``resourceVersion=0``),
status update with optimistic concurrency (409 on a stale ``resourceVersion``, 404 when gone),
JSON patch (``test``/``replace``/``add``/``remove``) and merge patch, delete with preconditions.
Faults are injected per request (``fail``); watches are scripted (``script_watch``): each watch
request plays the next script of chunks, pauses and ends. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

HANG = "hang"  # in a watch script: stay silent until the client goes away


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int


class Config:
    """What pullwatch.kube.api.Api reads of a kubernetes client configuration."""

    def __init__(self, host: str):
        self.host = host
        self.verify_ssl = False
        self.ssl_ca_cert = self.cert_file = self.key_file = None

    def auth_settings(self) -> dict[str, Any]:
        return {"token": {"in": "header", "key": "Authorization", "value": "Bearer test"}}


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # object path -> stored body
        self.rv = 100
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, decoded body)
        self.faults: list[Fault] = []
        self.delays: list[tuple[str, re.Pattern[str], float]] = []  # (method, path, seconds)
        self.watches: list[tuple[str, list[Any]]] = []  # (path it is for, steps)
        self.lists: deque[Any] = deque()  # scripted list answers (a body, or an int status)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- what tests do ---------------------------------------------------------------------------
    def fail(self, method: str, pattern: str, status: int, times: int = 1) -> None:
        self.faults.append(Fault(method, re.compile(pattern), status, times))

    def delay(self, method: str, pattern: str, seconds: float) -> None:
        """Answer matching requests ``seconds`` late (a slow API server)."""
        self.delays.append((method, re.compile(pattern), seconds))

    def script_watch(self, *steps: Any, path: str = "") -> None:
        """The next watch (of a path that contains ``path``) plays ``steps``: bytes (sent as one
        chunk), a float (a pause), an int (answer with that HTTP status), HANG; after the last
        step the watch ends cleanly. A watch with no script left hangs."""
        self.watches.append((path, list(steps)))

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store ``body`` at ``path`` as if someone wrote it (a new resourceVersion)."""
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = self._next()
        self.objects[path] = body
        return copy.deepcopy(body)

    def get(self, path: str) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def _next(self) -> str:
        self.rv += 1
        return str(self.rv)

    # -- serving ---------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        self.requests.append((method, request.path_qs))
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self.bodies.append((method, request.path_qs, body))
        for m, pattern, seconds in self.delays:
            if m == method and pattern.search(path):
                await asyncio.sleep(seconds)
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                fault.times -= 1
                return _status(fault.status, "injected")
        if method == "GET" and request.query.get("watch"):
            return await self._watch(request)
        if method == "GET":
            return self._get(path, request.query)
        if method == "POST":
            return self._create(path, body)
        if method == "PUT" and path.endswith("/status"):
            return self._update_status(path[: -len("/status")], body)
        if method == "PATCH":
            return self._patch(path, body, request.content_type)
        if method == "DELETE":
            return self._delete(path, body)
        return _status(405, "MethodNotAllowed")

    def _get(self, path: str, query: Any) -> web.Response:
        if path in self.objects:
            return _json(self.objects[path])
        if self.lists:
            answer = self.lists.popleft()
            return _status(answer, "scripted") if isinstance(answer, int) else _json(answer)
        if _is_object(path):
            return _status(404, "NotFound")
        prefix = path.rstrip("/") + "/"
        items = [
            o
            for p, o in sorted(self.objects.items())
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        if path.startswith("/apis/"):  # custom resources: keys sorted, the metadata last
            return _json({"apiVersion": "v1", "items": page, "kind": "List", "metadata": meta})
        return _json({"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page})

    def _create(self, path: str, body: Any) -> web.Response:
        name = body["metadata"]["name"]
        where = f"{path}/{name}"
        if where in self.objects:
            return _status(409, "AlreadyExists")
        body = copy.deepcopy(body)
        body["metadata"].setdefault("uid", str(uuid.uuid4()))
        body["metadata"]["resourceVersion"] = self._next()
        self.objects[where] = body
        return _json(body, 201)

    def _update_status(self, path: str, body: Any) -> web.Response:
        stored = self.objects.get(path)
        if stored is None:
            return _status(404, "NotFound")
        if (body.get("metadata") or {}).get("resourceVersion") != stored["metadata"][
            "resourceVersion"
        ]:
            return _status(409, "Conflict")
        stored["status"] = copy.deepcopy(body.get("status"))
        stored["metadata"]["resourceVersion"] = self._next()
        return _json(stored)

    def _patch(self, path: str, body: Any, content_type: str) -> web.Response:
        stored = self.objects.get(path.removesuffix("/status"))
        if stored is None:
            return _status(404, "NotFound")
        new = copy.deepcopy(stored)
        if content_type == "application/json-patch+json":
            for op in body:
                parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
                parent = new
                for part in parts[:-1]:
                    if part not in parent:
                        return _status(422, "Invalid")
                    parent = parent[part]
                key = parts[-1]
                if op["op"] == "test" and parent.get(key) != op["value"]:
                    return _status(422, "Invalid")
                if op["op"] in ("replace", "add"):
                    parent[key] = copy.deepcopy(op["value"])
                if op["op"] == "remove":
                    parent.pop(key, None)
        else:
            _merge(new, body)
        new["metadata"]["resourceVersion"] = self._next()
        self.objects[path.removesuffix("/status")] = new
        return _json(new)

    def _delete(self, path: str, body: Any) -> web.Response:
        stored = self.objects.get(path)
        if stored is None:
            return _status(404, "NotFound")
        wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
        if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
            return _status(409, "Conflict")
        del self.objects[path]
        return _json({"kind": "Status", "status": "Success"})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        mine = next((w for w in self.watches if w[0] in request.path), None)
        if mine is not None:
            self.watches.remove(mine)
        steps = mine[1] if mine is not None else [HANG]
        if steps and isinstance(steps[0], int):
            return _status(steps[0], "scripted")
        rsp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await rsp.prepare(request)
        for step in steps:
            if step == HANG:
                await asyncio.sleep(3600)
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await rsp.write(step)
        await rsp.write_eof()
        return rsp


def _is_object(path: str) -> bool:
    """/api/v1/namespaces/ns/pods/x is an object, /api/v1/namespaces/ns/pods a collection (and
    /apis/<group> has one segment more)."""
    parts = path.strip("/").split("/")
    return len(parts) % 2 == (0 if parts[0] == "api" else 1)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _status(code: int, reason: str) -> web.Response:
    return _json({"kind": "Status", "code": code, "reason": reason, "message": reason}, code)


def line(event_type: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[FakeApi, Any]]:
    """A running fake and a pullwatch Api client for it."""
    from pullwatch.kube.api import Api

    fake = FakeApi()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    api = Api(Config(str(server.make_url("")).rstrip("/")), timeout=5)
    try:
        yield fake, api
    finally:
        await api.close()
        await server.close()


class Clock:
    """A clock the test moves (``clock.t += 5``)."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


async def until(predicate: Any, timeout: float = 45.0) -> Any:
    """Wait (on the loop, yielding to it) until ``predicate()`` holds; what it returned."""

    async def wait() -> Any:
        while True:
            got = predicate()
            if got:
                return got
            await asyncio.sleep(0.005)

    return await asyncio.wait_for(wait(), timeout)
