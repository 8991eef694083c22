"""A real, closed deployment as processes: one machine or network namespaces.

The topology of ``fedmed.deploy.topology`` (SuperLink on the coordinator's
loopback, SuperExec with the shared secret, the Fleet gate as the sites' only
door, one app-pinning SuperNode per site) started as plain processes. With
the default ``Placement`` everything runs on 127.0.0.1; ``fedmed.deploy.netns``
places the coordinator and each site in network namespaces of their own.

Every process is started with the deployment's tag in its environment
(``fedmed.deploy.processes``), which Flower's helpers inherit: stopping the
deployment stops the SuperExec, ServerApp and ClientApp processes the Flower
programs started in sessions of their own, and returns only once all are gone.
Flower commands are run as subprocesses: this module imports no Flower code.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from fedmed.deploy.app_pin import add_trusted_apps, build_fab, fab_sha256
from fedmed.deploy.certs import CertLayout
from fedmed.deploy.processes import DeploymentProcesses, ProcessesSurvived
from fedmed.deploy.registration import (
    CONNECTION,
    flower_bin,
    flower_env,
    flwr_runner,
    json_reply,
    write_connection,
)
from fedmed.deploy.registry import REGISTRY_ENV, SiteRegistry, registry_path
from fedmed.deploy.site_admin import add_site
from fedmed.deploy.site_keys import key_fingerprint, read_public_key
from fedmed.deploy.topology import (
    LOOPBACK,
    CoordinatorPorts,
    Placement,
    Site,
    gate_command,
    superexec_command,
    superlink_command,
    supernode_command,
)

log = logging.getLogger(__name__)

# Connect once to host:port from inside a placement (its own network stack).
_CONNECT = (
    "import socket,sys,time\n"
    "end=time.monotonic()+float(sys.argv[3])\n"
    "while time.monotonic()<end:\n"
    "    s=socket.socket(); s.settimeout(1)\n"
    "    if s.connect_ex((sys.argv[1],int(sys.argv[2])))==0: sys.exit(0)\n"
    "    s.close(); time.sleep(0.2)\n"
    "sys.exit(1)\n"
)


class DeploymentError(RuntimeError):
    """A deployment process failed to start, register or finish its run."""


@dataclass
class LocalDeployment:
    """Start, watch and stop a closed TLS + node-auth deployment.

    Use as a context manager: every process it started, and every process
    those started, is stopped on exit, also after an error or Ctrl-C.
    """

    workdir: Path
    certs: CertLayout
    sites: list[Site]
    coordinator: Placement = Placement()
    gate_host: str = LOOPBACK
    ports: CoordinatorPorts = field(default_factory=CoordinatorPorts)
    processes: DeploymentProcesses = field(default_factory=DeploymentProcesses)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        write_connection(self.flwr_home, self.control_address, self.certs.ca_cert)

    # ------------------------------------------------------------- addresses
    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def database(self) -> Path:
        return self.state_dir / "superlink.db"

    @property
    def registry(self) -> SiteRegistry:
        return SiteRegistry(registry_path(self.state_dir))

    @property
    def control_address(self) -> str:
        """The SuperLink itself: Control and Runtime APIs (coordinator only)."""
        return f"{LOOPBACK}:{self.ports.superlink}"

    @property
    def fleet_address(self) -> str:
        """What sites dial: the Fleet gate."""
        return f"{self.gate_host}:{self.ports.gate}"

    def env(self) -> dict[str, str]:
        """Process environment: hermetic, Flower state under the workdir, tagged."""
        env = self.processes.environment(flower_env(self.flwr_home))
        env.setdefault("OMP_NUM_THREADS", "1")
        env[REGISTRY_ENV] = str(registry_path(self.state_dir))
        return env

    # ------------------------------------------------------------- processes
    def spawn(
        self, name: str, command: Sequence[str], placement: Placement | None = None
    ) -> subprocess.Popen:
        """Start ``command`` (tagged, logged to ``logs/<name>.log``)."""
        full = (placement or self.coordinator).wrap(command)
        logfile = (self.workdir / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            full,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        logfile.close()
        self._procs[name] = proc
        self.processes.adopt(proc.pid)
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(full))
        return proc

    def wait_listening(
        self, placement: Placement, host: str, port: int, timeout_s: float, proc
    ) -> None:
        """Block until something accepts TCP connections on host:port there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DeploymentError(
                    f"process {proc.pid} exited with {proc.returncode} before "
                    f"listening on {host}:{port}; see {self.workdir / 'logs'}"
                )
            probe = placement.wrap(
                [sys.executable, "-c", _CONNECT, host, str(port), "5"]
            )
            if subprocess.run(probe, check=False, timeout=30).returncode == 0:
                return
        raise DeploymentError(f"nothing listens on {host}:{port} after {timeout_s} s")

    def start_superlink(self, timeout_s: float = 90.0) -> subprocess.Popen:
        """SuperLink on loopback: TLS, node auth, process isolation, state DB."""
        command = superlink_command(self.certs, self.database, self.ports)
        proc = self.spawn("superlink", command)
        self.wait_listening(
            self.coordinator, LOOPBACK, self.ports.superlink, timeout_s, proc
        )
        return proc

    def start_superexec(
        self, name: str = "superexec", secret: Path | None = None, authenticated=True
    ) -> subprocess.Popen:
        """The ServerApp SuperExec, holding the shared secret unless told not to."""
        secret = (secret or self.certs.superexec_secret) if authenticated else None
        return self.spawn(name, superexec_command(self.certs, self.ports, secret))

    def start_gate(self, timeout_s: float = 60.0) -> subprocess.Popen:
        """The Fleet gate on the address the sites dial."""
        proc = self.spawn(
            "fleet-gate", gate_command(self.certs, self.ports, self.gate_host)
        )
        self.wait_listening(
            self.coordinator, self.gate_host, self.ports.gate, timeout_s, proc
        )
        return proc

    def start_supernode(
        self, site: Site, *, name: str | None = None, **options
    ) -> subprocess.Popen:
        """SuperNode of ``site`` dialling the gate (``supernode_command`` options)."""
        shutil.copyfile(self.certs.ca_cert, site.keys.ca_cert)
        command = supernode_command(site, self.fleet_address, **options)
        return self.spawn(name or site.name, command, site.placement)

    def restart_supernode(self, site: Site, timeout_s: float = 120.0) -> None:
        """Start ``site`` again after a crash.

        The SuperLink refuses a key whose node still counts as online (until
        its heartbeats have been missed), so a refused start is retried.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            proc = self.start_supernode(site)
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                return  # connected and running
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{site.name} could not rejoin within {timeout_s} s"
                )
            time.sleep(5.0)

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command against this SuperLink (coordinator side)."""
        return flwr_runner(
            self.flwr_home, prefix=self.coordinator.prefix, env=self.env()
        )(*args)

    def register_sites(self) -> dict[str, int]:
        """Register each site's public key (sites already in the register are kept)."""
        registry = self.registry
        node_ids = {}
        for site in self.sites:
            text = read_public_key(site.keys.public_key)
            known = registry.sites.get(site.name)
            if known and known.fingerprint == key_fingerprint(text):
                node_ids[site.name] = known.node_id
                continue
            record = add_site(self.flwr, registry, site.keys.public_key, site.name)
            node_ids[site.name] = record.node_id
        return node_ids

    def trust_app(self, app_dir: Path) -> str:
        """Pin ``app_dir``'s FAB hash at every site (a site's review, automated)."""
        digest = fab_sha256(build_fab(app_dir))
        for site in self.sites:
            add_trusted_apps(site.keys.trusted_apps, [digest], note=f"{app_dir.name}")
        return digest

    def start(self) -> None:
        """SuperLink, SuperExec, gate, site registration, one SuperNode per site."""
        self.start_superlink()
        self.start_superexec()
        self.start_gate()
        self.register_sites()
        for site in self.sites:
            if not site.keys.trusted_apps.exists():
                add_trusted_apps(site.keys.trusted_apps, [])
            self.start_supernode(site)

    def alive(self, name: str) -> bool:
        """Whether the process started as ``name`` is running."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one started process only (its children stay)."""
        proc = self._procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=30)

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every process of the deployment and return once all are gone.

        Raises:
            ProcessesSurvived: a process outlived SIGKILL (named in the error).
        """
        try:
            self.processes.stop(grace_s=grace_s)
        finally:
            for proc in self._procs.values():  # reap our own children
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.stop()
        except ProcessesSurvived:
            if exc_type is None:
                raise
            log.exception("stopping the deployment after an error")

    # ------------------------------------------------------------- runs
    def submit(
        self, app_dir: Path, run_config: Path | None = None, *, overrides: str = ""
    ) -> int:
        """``flwr run`` the Flower App in ``app_dir``; returns the run id."""
        command = [flower_bin("flwr"), "run", str(app_dir), CONNECTION]
        if run_config is not None:
            command += ["--run-config", str(run_config)]
        elif overrides:
            command += ["--run-config", overrides]
        done = subprocess.run(
            self.coordinator.wrap([*command, "--format", "json"]),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=app_dir,
        )
        reply = json_reply(done)
        if not reply.get("success"):
            raise DeploymentError(f"flwr run failed: {reply or done.stderr[-2000:]}")
        return int(reply["run-id"])

    def run_status(self, run_id: int) -> str:
        """Flower's status of a run, e.g. ``running`` or ``finished:completed``."""
        reply = json_reply(self.flwr("ls", "--run-id", str(run_id), "--format", "json"))
        runs = reply.get("runs") or []
        return str(runs[0]["status"]) if runs else "unknown"

    def online_sites(self) -> int:
        """How many registered SuperNodes the SuperLink sees online."""
        reply = json_reply(self.flwr("supernode", "list", "--format", "json"))
        return sum(n.get("status") == "online" for n in reply.get("nodes", []))

    def wait_online(self, count: int, timeout_s: float = 120.0) -> None:
        """Block until ``count`` sites are online at the SuperLink."""
        deadline = time.monotonic() + timeout_s
        while self.online_sites() < count:
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"fewer than {count} sites online after {timeout_s} s"
                )
            time.sleep(1.0)


def write_run_config(config: Mapping[str, object], path: Path) -> Path:
    """The resolved run config as the override TOML ``flwr run`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(config)))
    return path
