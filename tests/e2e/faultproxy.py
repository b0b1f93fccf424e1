"""A fault-injecting proxy in front of the real API server, for the resilience tests.

    python faultproxy.py --port P --control C --upstream https://127.0.0.1:A \
        --cert cert.pem --key key.pem

It terminates TLS (its own self-signed certificate; the operator's kubeconfig skips verification,
as for the API server itself) and forwards every request to the API server, streaming the answer
back (watches included). On its control port (plain HTTP, 127.0.0.1 only):

* ``POST /freeze``: every connection open now stops answering - no bytes, no RST - as a frozen
  peer, a stalled NAT entry or a SIGSTOPped middlebox would; connections opened later work.
* ``POST /thaw``: the frozen connections carry on.
* ``POST /fail`` with ``{"method": "GET", "path": "<regex>", "status": 500, "times": 3}``: the
  next ``times`` matching requests get that status (a Kubernetes Status body) instead.
* ``GET /stats``: requests forwarded, failed on purpose, and frozen.

Whole-process freezes are done by the tests with SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl

import aiohttp
from aiohttp import web

HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


class Proxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.protocols: set[object] = set()  # connections seen (aiohttp request handlers)
        self.frozen: set[int] = set()
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.rules: list[dict] = []
        self.stats = {"forwarded": 0, "failed": 0, "frozen_requests": 0}
        self.session: aiohttp.ClientSession | None = None

    async def wait_if_frozen(self, request: web.Request) -> None:
        if id(request.protocol) in self.frozen:
            await self.thawed.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.protocols.add(request.protocol)
        if id(request.protocol) in self.frozen:
            self.stats["frozen_requests"] += 1
        await self.wait_if_frozen(request)
        for rule in self.rules:
            if (
                rule["times"] > 0
                and request.method == rule["method"]
                and re.search(rule["path"], request.path_qs)
            ):
                rule["times"] -= 1
                self.stats["failed"] += 1
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": "injected by faultproxy",
                        "reason": "InternalError",
                        "code": rule["status"],
                    },
                    status=rule["status"],
                )
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        self.stats["forwarded"] += 1
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as up:
            rsp = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in HOP},
            )
            await rsp.prepare(request)
            async for chunk in up.content.iter_any():
                await self.wait_if_frozen(request)
                await rsp.write(chunk)
            await rsp.write_eof()
            return rsp

    # -- control ------------------------------------------------------------------------------
    async def freeze(self, _: web.Request) -> web.Response:
        self.frozen = {id(p) for p in self.protocols}
        self.thawed.clear()
        return web.json_response({"frozen": len(self.frozen)})

    async def thaw(self, _: web.Request) -> web.Response:
        self.frozen = set()
        self.thawed.set()
        return web.json_response({"thawed": True})

    async def fail(self, request: web.Request) -> web.Response:
        rule = await request.json()
        self.rules.append(
            {
                "method": rule.get("method", "GET"),
                "path": rule["path"],
                "status": int(rule["status"]),
                "times": int(rule.get("times", 1)),
            }
        )
        return web.json_response({"rules": len(self.rules)})

    async def get_stats(self, _: web.Request) -> web.Response:
        return web.json_response({**self.stats, "connections": len(self.protocols)})


async def main(args: argparse.Namespace) -> None:
    proxy = Proxy(args.upstream)
    # auto_decompress off: the body is forwarded as the API server sent it, under its own
    # Content-Encoding (decompressing it here while passing "gzip" on would corrupt it).
    proxy.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=False),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ctx).start()
    control = web.Application()
    control.router.add_post("/freeze", proxy.freeze)
    control.router.add_post("/thaw", proxy.thaw)
    control.router.add_post("/fail", proxy.fail)
    control.router.add_get("/stats", proxy.get_stats)
    control_runner = web.AppRunner(control, access_log=None)
    await control_runner.setup()
    await web.TCPSite(control_runner, "127.0.0.1", args.control).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    asyncio.run(main(parser.parse_args()))
