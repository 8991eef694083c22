"""Who runs where and with which flags: the command lines of a closed deployment.

The coordinator runs three programs, the sites one each::

    site k: site_supernode ──TLS──> fleet gate (gate_host:gate_port) ──TLS──>
                                        SuperLink (127.0.0.1:superlink_port)
                                          ^ Control API: flwr (coordinator only)
                                          ^ Runtime API: SuperExec (shared secret)

* SuperLink: TLS, SuperNode authentication, ``--isolation process`` (so the
  SuperExec must prove the shared secret), listening on the coordinator's
  loopback only.
* SuperExec: runs the ServerApp, authenticated by ``--superexec-auth-secret-file``.
* Fleet gate (``fedmed.deploy.fleet_gate``): the only listener sites can reach;
  Fleet API calls pass, Control and Runtime calls are refused.
* Site SuperNode (``clients.site_supernode``): its own key, the CA, and
  the list of app hashes it runs.

Every program also serves Flower's gRPC health check on loopback. A
``Placement`` says where a process runs: a command prefix (e.g. ``ip netns exec
coord``) and nothing else, so the same command lines serve one machine and a
network-namespace topology.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedmed.deploy.certs import CertLayout
from fedmed.deploy.registration import flower_bin
from fedmed.deploy.site_keys import SiteFolder

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Placement:
    """Where a process runs: a command prefix such as ``ip netns exec NS``."""

    prefix: tuple[str, ...] = ()

    def wrap(self, command: Sequence[str]) -> list[str]:
        return [*self.prefix, *command]


def node_config_arg(data_dir: Path, site_id: int, role: str | None = None) -> str:
    """``--node-config`` of site ``site_id``: its own data folder (+ VFL role)."""
    text = f'data-dir="{data_dir}" site-id={site_id}'
    return f'{text} role="{role}"' if role else text


@dataclass
class Site:
    """One hospital: its folder (keys, CA, pins), data, role and placement."""

    site_id: int
    data_dir: Path
    folder: Path
    port: int = field(default_factory=free_port)  # its SuperNode's Runtime API
    health_port: int = field(default_factory=free_port)
    role: str | None = None
    placement: Placement = Placement()

    @property
    def name(self) -> str:
        return f"site-{self.site_id}"

    @property
    def keys(self) -> SiteFolder:
        return SiteFolder(Path(self.folder))


@dataclass
class CoordinatorPorts:
    """The coordinator's ports; only ``gate`` is reachable by sites."""

    superlink: int = field(default_factory=free_port)
    gate: int = field(default_factory=free_port)
    superlink_health: int = field(default_factory=free_port)
    superexec_health: int = field(default_factory=free_port)


def superlink_command(
    certs: CertLayout, database: Path, ports: CoordinatorPorts
) -> list[str]:
    """SuperLink on the coordinator's loopback: TLS, node auth, SuperExec secret."""
    return [
        flower_bin("flower-superlink"),
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.superlink_cert),
        "--ssl-keyfile",
        str(certs.superlink_key),
        "--enable-supernode-auth",
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(certs.superexec_secret),
        "--database",
        str(database),
        "--host",
        LOOPBACK,
        "--port",
        str(ports.superlink),
        "--health-server-address",
        f"{LOOPBACK}:{ports.superlink_health}",
        "--disable-runtime-dependency-installation",
    ]


def superexec_command(
    certs: CertLayout, ports: CoordinatorPorts, secret: Path | None
) -> list[str]:
    """The SuperExec that runs ServerApps; ``secret=None`` leaves auth out."""
    command = [
        flower_bin("flower-superexec"),
        "--runtime-api-address",
        f"{LOOPBACK}:{ports.superlink}",
        "--root-certificates",
        str(certs.ca_cert),
        "--health-server-address",
        f"{LOOPBACK}:{ports.superexec_health}",
    ]
    if secret is not None:
        command += ["--superexec-auth-secret-file", str(secret)]
    return command


def gate_command(
    certs: CertLayout, ports: CoordinatorPorts, gate_host: str
) -> list[str]:
    """The Fleet gate on the address sites dial, forwarding to the SuperLink."""
    return [
        sys.executable,
        "-m",
        "fedmed.deploy.fleet_gate",
        "--listen",
        f"{gate_host}:{ports.gate}",
        "--upstream",
        f"{LOOPBACK}:{ports.superlink}",
        "--ssl-certfile",
        str(certs.superlink_cert),
        "--ssl-keyfile",
        str(certs.superlink_key),
        "--upstream-ca",
        str(certs.ca_cert),
    ]


def supernode_command(
    site: Site,
    superlink: str,
    *,
    key: Path | None = None,
    insecure: bool = False,
    pinned: bool = True,
    max_wait_s: float | None = None,
) -> list[str]:
    """A site's SuperNode dialling ``superlink`` (the gate), pinned by default."""
    keys = site.keys
    if pinned:
        command = [sys.executable, "-m", "clients.site_supernode"]
        command += ["--trusted-apps", str(keys.trusted_apps)]
    else:
        command = [flower_bin("flower-supernode")]
    command += [
        "--superlink",
        superlink,
        "--node-config",
        node_config_arg(site.data_dir, site.site_id, site.role),
        "--host",
        LOOPBACK,
        "--port",
        str(site.port),
        "--health-server-address",
        f"{LOOPBACK}:{site.health_port}",
        "--auth-supernode-private-key",
        str(key or keys.key),
    ]
    if insecure:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(keys.ca_cert)]
    if max_wait_s is not None:
        command += ["--max-wait-time", str(max_wait_s)]
    return command
