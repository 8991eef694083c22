"""The Fleet gate: Fleet calls and health pass over TLS, everything else is refused."""

import hashlib
import ssl
import threading
import time

import httpx
import pytest
import uvicorn

from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.fleet_gate import FleetGate, allowed
from fedmed.deploy.topology import free_port


class Upstream:
    """Stand-in SuperLink: records each request, answers with a body digest."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, dict]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append((scope["raw_path"].decode(), body, headers))
        digest = hashlib.sha256(body).hexdigest().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": digest})


def serve(app, port: int, layout) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(layout.superlink_cert),
        ssl_keyfile=str(layout.superlink_key),
        log_level="warning",
        lifespan="on" if isinstance(app, FleetGate) else "off",
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    layout = ensure_certificates(tmp_path_factory.mktemp("certs"))
    upstream, up_port, gate_port = Upstream(), free_port(), free_port()
    servers = [serve(upstream, up_port, layout)]
    gate_app = FleetGate(f"127.0.0.1:{up_port}", str(layout.ca_cert))
    servers.append(serve(gate_app, gate_port, layout))
    verify = ssl.create_default_context(cafile=str(layout.ca_cert))
    with httpx.Client(
        base_url=f"https://127.0.0.1:{gate_port}", verify=verify
    ) as client:
        yield client, upstream
    for server in servers:
        server.should_exit = True


def test_fleet_call_passes_with_body_and_signature_headers(gate):
    # Prepare
    client, upstream = gate
    body = bytes(range(256)) * 20_000  # 5 MB, streamed through
    headers = {"x-flwr-signature": "c2ln", "content-type": "application/x-protobuf"}
    # Execute
    reply = client.post("/v1/fleet/push-object", content=body, headers=headers)
    # Assert
    assert reply.status_code == 200
    assert reply.content == hashlib.sha256(body).hexdigest().encode()
    path, seen_body, seen_headers = upstream.seen[-1]
    assert path == "/v1/fleet/push-object" and seen_body == body
    assert seen_headers["x-flwr-signature"] == "c2ln"


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/runtime/acquire-task"),
        ("POST", "/v1/fleet/../control/start-run"),
        ("POST", "/v1/fleet/%2e%2e/control/start-run"),
        ("POST", "/v1/fleet//pull-messages"),
        ("POST", "/v1/fleet/pull-messages?x=1"),
        ("GET", "/v1/fleet/pull-messages"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
def test_everything_but_fleet_calls_is_refused_before_the_superlink(gate, method, path):
    # Prepare
    client, upstream = gate
    before = len(upstream.seen)
    url = httpx.URL(f"{client.base_url}").copy_with(raw_path=path.encode())
    # Execute
    reply = client.request(method, url, content=b"payload")
    # Assert
    assert reply.status_code == 403, path
    assert len(upstream.seen) == before


def test_health_passes_and_the_rule_is_exact():
    # Assert
    assert allowed("GET", b"/health", b"")
    assert allowed("POST", b"/v1/fleet/send-node-heartbeat", b"")
    assert not allowed("POST", b"/v1/fleetx/pull-messages", b"")
    assert not allowed("POST", b"/v1/fleet/Pull-Messages", b"")
    assert not allowed("PUT", b"/v1/fleet/pull-messages", b"")
