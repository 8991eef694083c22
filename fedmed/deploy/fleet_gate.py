"""The only door sites get into the SuperLink: Fleet API calls, nothing else.

Flower 1.42 serves its Fleet API (SuperNodes), Control API (``flwr run``,
``flwr supernode register``) and Runtime API (SuperExec, ServerApp) as HTTP
routes on one port: ``/v1/fleet/...``, ``/v1/control/...``, ``/v1/runtime/...``.
A site holding only ``ca.crt`` could therefore register keys, submit apps or
claim ServerApp tasks. The gate terminates TLS on the address the sites dial,
passes ``POST /v1/fleet/<call>`` and ``GET|HEAD /health`` to the SuperLink
(over TLS, verified against the deployment's CA) and answers everything else
with 403. The SuperLink itself listens only where the coordinator's own
processes reach it (loopback or an internal network).

Requests and responses are streamed through unchanged (SuperNode signature
headers included; the SuperLink still authenticates every node). The path is
matched on the raw request target, so encoded or dotted paths cannot slip a
Control or Runtime call through a Fleet-looking prefix.

Run: ``python -m fedmed.deploy.fleet_gate --listen 0.0.0.0:9092 --upstream
127.0.0.1:9091 --ssl-certfile superlink.crt --ssl-keyfile superlink.key
--upstream-ca ca.crt`` (imports only Flower's own web stack, no torch).
"""

from __future__ import annotations

import argparse
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)

FLEET_CALL = re.compile(rb"/v1/fleet/[a-z][a-z-]{0,63}")
HEALTH = b"/health"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def allowed(method: str, raw_path: bytes, query: bytes) -> bool:
    """Whether a request is one a SuperNode makes: a Fleet call or a health probe."""
    if query:
        return False
    if method == "POST":
        return FLEET_CALL.fullmatch(raw_path) is not None
    return method in ("GET", "HEAD") and raw_path == HEALTH


class FleetGate:
    """ASGI app: forward allowed requests to the SuperLink, refuse the rest."""

    def __init__(self, upstream: str, upstream_ca: str | None) -> None:
        verify: ssl.SSLContext | bool = False
        scheme = "http"
        if upstream_ca:
            verify = ssl.create_default_context(cafile=upstream_ca)
            scheme = "https"
        self.base = f"{scheme}://{upstream}"
        self.client = httpx.AsyncClient(
            verify=verify, timeout=httpx.Timeout(600.0, connect=10.0)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, raw_path = scope["method"], scope.get("raw_path") or b""
        if not allowed(method, raw_path, scope.get("query_string", b"")):
            client = scope.get("client") or ("?", 0)
            log.warning("refused %s %r from %s", method, raw_path[:200], client[0])
            await _plain(send, 403, b"fleet gate: only Fleet API calls pass\n")
            return
        await self._forward(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        request = self.client.build_request(
            scope["method"],
            self.base + scope["raw_path"].decode("ascii"),
            headers=headers,
            content=_body(receive),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("SuperLink unreachable: %s", exc)
            await _plain(send, 502, b"fleet gate: SuperLink unreachable\n")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v)
                        for k, v in response.headers.raw
                        if k.lower() not in HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        if event.get("body"):
            yield event["body"]
        if not event.get("more_body"):
            return


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"%d" % len(text)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": text})


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, found {address!r}")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the gate until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_host_port, required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="SuperLink HOST:PORT")
    parser.add_argument("--ssl-certfile", required=True)
    parser.add_argument("--ssl-keyfile", required=True)
    parser.add_argument("--upstream-ca", required=True, help="CA of the SuperLink")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call
    host, port = args.listen
    uvicorn.run(
        FleetGate(args.upstream, args.upstream_ca),
        host=host,
        port=port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        access_log=False,
        log_level="warning",
        lifespan="on",
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
