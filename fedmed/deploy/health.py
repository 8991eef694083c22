"""Health probes for the deployment's programs (container healthchecks, tests).

Flower's SuperLink, SuperExec and SuperNode answer the standard gRPC health
check on ``--health-server-address`` (plaintext, so bind it to loopback). The
Fleet gate is probed the way a site would reach the SuperLink through it:
``GET /health`` over TLS, verified against the deployment's CA.

``python -m fedmed.deploy.health grpc 127.0.0.1:8081`` or
``python -m fedmed.deploy.health https 127.0.0.1:9092 --ca /certs/ca.crt``
exits 0 when healthy and 1 otherwise (what Docker's HEALTHCHECK expects).
Imports only grpc/httpx (no torch), so the probe itself is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def probe_grpc(address: str, timeout_s: float = 3.0) -> bool:
    """Whether the gRPC health service at ``address`` reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def probe_https(address: str, ca_cert: str, timeout_s: float = 3.0) -> bool:
    """Whether ``https://address/health`` answers 200 with a CA-verified cert."""
    import ssl

    import httpx

    context = ssl.create_default_context(cafile=ca_cert)
    try:
        reply = httpx.get(
            f"https://{address}/health", verify=context, timeout=timeout_s
        )
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; 0 if healthy, 1 if not."""
    parser = argparse.ArgumentParser(description="probe a fedmed deployment service")
    parser.add_argument("kind", choices=["grpc", "https"])
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--ca", default="", help="CA certificate (https)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.kind == "https" and not args.ca:
        parser.error("https needs --ca (the deployment's ca.crt)")
    if args.kind == "grpc":
        healthy = probe_grpc(args.address, args.timeout)
    else:
        healthy = probe_https(args.address, args.ca, args.timeout)
    sys.stdout.write("healthy\n" if healthy else "unhealthy\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
