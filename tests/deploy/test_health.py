"""Health probes answer for a live gRPC health server and fail for nothing."""

from flwr.supercore.grpc_health import run_health_server_grpc_no_tls

from fedmed.deploy.health import main, probe_grpc, probe_https
from fedmed.deploy.topology import free_port


def test_grpc_probe_sees_flowers_health_server_and_nothing_else():
    # Prepare
    address = f"127.0.0.1:{free_port()}"
    server = run_health_server_grpc_no_tls(address)
    try:
        # Execute
        healthy = probe_grpc(address)
        exit_code = main(["grpc", address])
    finally:
        server.stop(grace=None)
    # Assert
    assert healthy and exit_code == 0
    assert not probe_grpc(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    assert main(["grpc", f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1


def test_https_probe_fails_without_a_server(tmp_path):
    # Prepare
    from fedmed.deploy.certs import ensure_certificates

    layout = ensure_certificates(tmp_path)
    # Execute / Assert
    assert not probe_https(f"127.0.0.1:{free_port()}", str(layout.ca_cert), 1.0)
