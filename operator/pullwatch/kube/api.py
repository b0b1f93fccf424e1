"""The operator's API client: every call has a deadline, and every failure is one exception type.

kopf keeps its own client for what it does (login, peering). Everything else
pullwatch asks of the API server goes through here, on aiohttp, so that nothing blocks the event
loop and nothing waits forever: a frozen connection (a peer that stops answering, no RST) ends in
``ApiError(0, "Timeout")`` after ``timeout`` seconds and the connection is dropped, not reused.
(The kubernetes client's calls had no deadline and ran in threads: one hung call froze the
Finding writer for good.)

Credentials are read from the kubernetes client's configuration on every request (in-cluster
ServiceAccount or KUBECONFIG), so a rotated ServiceAccount token is picked up.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import ijson
import orjson

FIELD_MANAGER = "pullwatch"
JSON, MERGE_PATCH, JSON_PATCH = (
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
)
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    """A failed request: ``status`` is the HTTP status, or 0 when no answer came (unreachable,
    deadline passed, broken stream)."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        super().__init__(f"{method} {path}: {status or reason} {message}"[:400])
        self.status, self.reason, self.message, self.method, self.path = (
            status,
            reason,
            message,
            method,
            path,
        )

    @property
    def what(self) -> str:
        """The request in RBAC words (``patch findings``), for "forbidden: <verb> <resource>"."""
        verb = {
            "GET": "get",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(self.method, self.method.lower())
        parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
        if "namespaces" in parts and parts.index("namespaces") + 2 < len(parts):
            rest = parts[parts.index("namespaces") + 2 :]
        else:
            rest = parts[3:] if parts[:1] == ["apis"] else parts[2:]
        resource = rest[0] if rest else "?"
        if len(rest) >= 3:
            resource += "/" + rest[2]  # a subresource: findings/status
        elif len(rest) == 1 and verb == "get":
            verb = "list"
        return f"{verb} {resource}"


class ApiEndpoint:
    """Where and how to reach the API server, from the kubernetes client's configuration."""

    def __init__(self, configuration: Any):
        self.conf = configuration

    @property
    def host(self) -> str:
        return self.conf.host.rstrip("/")

    def headers(self) -> dict[str, str]:
        # auth_settings() is how the client itself builds its headers (and it runs the token
        # refresh hook); the key names differ between client versions.
        return {
            a["key"]: a["value"]
            for a in self.conf.auth_settings().values()
            if a.get("in") == "header" and a.get("value")
        }

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.conf.verify_ssl:
            return False
        ctx = (
            ssl.create_default_context(cafile=self.conf.ssl_ca_cert)
            if self.conf.ssl_ca_cert
            else ssl.create_default_context()
        )
        if self.conf.cert_file:
            ctx.load_cert_chain(self.conf.cert_file, self.conf.key_file)
        return ctx


class Api:
    def __init__(self, configuration: Any, timeout: float = 10.0, connections: int = 16):
        self.endpoint = ApiEndpoint(configuration)
        self.timeout = timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None
        self.requests = 0  # for the metrics and the benchmarks
        self.largest_read = 0  # the most bytes read() held of one answer (tests, benchmarks)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._ssl = self.endpoint.ssl_context()
            connector = aiohttp.TCPConnector(
                limit=self.connections, ssl=self._ssl, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
        timeout: float | None = None,
    ) -> Any:
        """One request, within ``timeout`` seconds all told; the decoded JSON answer."""
        headers = {**self.endpoint.headers(), "Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        if method in ("POST", "PUT", "PATCH"):
            params = {**(params or {}), "fieldManager": FIELD_MANAGER}
        self.requests += 1
        deadline = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self.session().request(
                method,
                self.endpoint.host + path,
                params=params,
                data=data,
                headers=headers,
                timeout=deadline,
            ) as rsp:
                raw = await rsp.read()
                if rsp.status >= 300:
                    raise _error(rsp.status, raw, method, path)
                return orjson.loads(raw) if raw else None
        except ApiError:
            raise
        except TimeoutError:
            raise ApiError(
                0, "Timeout", f"no answer within {timeout or self.timeout:.0f}s", method, path
            ) from None
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc)[:200], method, path) from None

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> AsyncIterator[Any]:
        """A watch: the response, whose lines are read with ``read_timeout`` between them (a
        silent stream raises ``asyncio.TimeoutError`` from the read)."""
        deadline = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=read_timeout
        )
        self.requests += 1
        try:
            rsp = await self.session().get(
                self.endpoint.host + path,
                params=params,
                timeout=deadline,
                headers={**self.endpoint.headers(), "Accept": JSON},
            )
        except TimeoutError:
            raise ApiError(
                0, "Timeout", f"no answer within {self.timeout:.0f}s", "GET", path
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc)[:200], "GET", path) from None
        try:
            if rsp.status != 200:
                raise _error(rsp.status, await rsp.read(), "GET", path)
            yield rsp
        finally:
            rsp.release()

    async def read(
        self,
        path: str,
        params: dict[str, str],
        *,
        bound: int,
        drain: bool = False,
        timeout: float | None = None,
    ) -> Body:
        """A GET whose answer is held in at most ``bound`` bytes (paging.py), within ``timeout``
        seconds all told. An answer over the bound has ``data`` None: with ``drain`` it is read
        to its end all the same, keeping only the bytes around it (``head``, ``tail``), else the
        connection is dropped at once."""
        wait = timeout or self.timeout
        self.requests += 1
        try:
            async with self.session().get(
                self.endpoint.host + path,
                params=params,
                headers={**self.endpoint.headers(), "Accept": JSON},
                timeout=aiohttp.ClientTimeout(total=wait),
            ) as rsp:
                if rsp.status >= 300:
                    raw = b""
                    async for chunk in rsp.content.iter_any():
                        raw += chunk[: _ERROR_BODY - len(raw)]
                        if len(raw) >= _ERROR_BODY:
                            break
                    raise _error(rsp.status, raw, "GET", path)
                data: bytearray | None = bytearray()
                head, tail, size = b"", b"", 0
                async for chunk in rsp.content.iter_any():
                    size += len(chunk)
                    if len(head) < _EDGE:
                        head += chunk[: _EDGE - len(head)]
                    if data is not None and len(data) + len(chunk) <= bound:
                        data += chunk
                        self.largest_read = max(self.largest_read, len(data))
                        continue
                    if data is not None:  # over the bound: nothing more is held
                        tail, data = bytes(data[-_EDGE:]), None
                        if not drain:
                            rsp.close()
                            return Body(None, head, tail, size)
                    tail = (tail + chunk)[-_EDGE:]
                if data is not None:
                    tail = bytes(data[-_EDGE:])
                return Body(data, head, tail, size)
        except ApiError:
            raise
        except TimeoutError:
            raise ApiError(0, "Timeout", f"no answer within {wait:.0f}s", "GET", path) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc)[:200], "GET", path) from None

    async def items(
        self, path: str, listing: Listing, read_timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """A whole list from the API server's watch cache (``resourceVersion=0``, as client-go's
        informers ask: served from memory, not etcd; 10,000 Findings in about a third of the
        time of a paginated list), its items parsed as they arrive (ijson), so that memory stays
        flat however long the list. Sets ``listing.resource_version`` once the list is read."""
        found = ijson.sendable_list()
        parse_items = ijson.items_coro(found, "items.item", use_float=True)
        head, tail = b"", b""
        async with self.stream(
            path, {"resourceVersion": "0"}, read_timeout or max(self.timeout, 30)
        ) as rsp:
            try:
                while True:
                    chunk = await rsp.content.read(1 << 16)
                    if chunk:
                        parse_items.send(chunk)
                        if len(head) < _EDGE:
                            head += chunk[: _EDGE - len(head)]
                        tail = (tail + chunk)[-_EDGE:]
                    else:
                        parse_items.close()  # raises if the document is incomplete
                    for item in found:
                        yield item
                    del found[:]
                    if not chunk:
                        break
            except TimeoutError:
                raise ApiError(0, "Timeout", "the list stopped arriving", "GET", path) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ApiError(0, type(exc).__name__, str(exc)[:200], "GET", path) from None
            except ijson.JSONError as exc:
                raise ApiError(0, "BadJSON", str(exc).splitlines()[0][:200], "GET", path) from None
        version = list_version(head, tail)
        if not version:
            raise ApiError(0, "BadList", "the list has no metadata.resourceVersion", "GET", path)
        listing.resource_version = version


_EDGE = 4096
_ERROR_BODY = 1 << 16  # of an error answer: its Status (reason, message) is at its start
_VERSION = re.compile(rb'"resourceVersion":"([0-9]+)"')
_CONTINUE = re.compile(rb'"continue":"([A-Za-z0-9_=+/-]*)"')


def list_version(head: bytes, tail: bytes) -> str:
    """A List's own ``metadata.resourceVersion``, from the bytes around its items (a second
    streaming parser just for it cost as much as parsing every item). The API server writes the
    List's metadata either before ``"items"`` (built-in kinds) or after the items array (custom
    resources: their keys are sorted), and nothing in those places but the List's own fields.

    >>> list_version(b'{"kind":"EventList","metadata":{"resourceVersion":"12"},"items":'
    ...              b'[{"metadata":{"resourceVersion":"9"}}', b'"9"}}]}')
    '12'
    >>> list_version(b'{"apiVersion":"pullwatch.dev/v1alpha1","items":[{"metadata":'
    ...              b'{"resourceVersion":"9"}}', b'"9"}}],"kind":"FindingList",'
    ...              b'"metadata":{"continue":"","resourceVersion":"40"}}')
    '40'
    >>> list_version(b'{"items":[', b'"resourceVersion":"9"}}]}')
    ''
    """
    return list_metadata(head, tail)[0]


def list_metadata(head: bytes, tail: bytes) -> tuple[str, str]:
    """A List's ``metadata.resourceVersion`` and ``metadata.continue`` ("" for the last page),
    read from the bytes around its items as ``list_version`` does.

    >>> list_metadata(b'{"kind":"PodList","metadata":{"resourceVersion":"7","continue":"eyJ2"'
    ...               b',"remainingItemCount":3},"items":[{"metadata":{"continue":"x"', b'}]}')
    ('7', 'eyJ2')
    >>> list_metadata(b'{"apiVersion":"v1","items":[', b'}}],"kind":"SuppressionList",'
    ...               b'"metadata":{"continue":"","resourceVersion":"40"}}')
    ('40', '')
    """
    before = head.split(b'"items":', 1)[0] if b'"items":' in head else b""
    after = tail.rsplit(b"]", 1)[1] if b"]" in tail else b""
    for part in (before, after):
        m = _VERSION.search(part)
        if m:
            token = _CONTINUE.search(part)
            return m.group(1).decode(), token.group(1).decode() if token else ""
    return "", ""


class Body(NamedTuple):
    """An answer read within a bound: its bytes (None: over the bound, not kept), the first and
    last ``_EDGE`` of them, and how many there were."""

    data: bytearray | None
    head: bytes
    tail: bytes
    size: int


class Listing:
    """Where a streamed list got to: its resourceVersion, to watch from."""

    resource_version = ""


def _error(status: int, raw: bytes, method: str, path: str) -> ApiError:
    try:
        doc = orjson.loads(raw)
        reason, message = str(doc.get("reason") or ""), str(doc.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        reason, message = "", raw[:200].decode(errors="replace")
    return ApiError(status, reason, message[:300], method, path)
