"""A real deployment on one machine: SuperLink + one SuperNode per site, loopback only.

The same topology as docker-compose.yml, as plain ``flower-superlink`` /
``flower-supernode`` processes on 127.0.0.1: TLS on every Fleet/Control link,
SuperNode authentication with one registered key per site, the SuperLink's
state in a database file (so a restarted SuperLink knows its sites again).

Every process is started with the deployment's tag in its environment
(``fedmed.deploy.processes``), which Flower's helpers inherit: stopping the
deployment stops the SuperExec, ServerApp and ClientApp processes the Flower
programs started in sessions of their own, and returns only once all are gone.
Flower commands are run as subprocesses: this module imports no Flower code.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from fedmed.deploy.certs import CertLayout
from fedmed.deploy.processes import DeploymentProcesses, ProcessesSurvived
from fedmed.deploy.registration import (
    CONNECTION,
    flower_bin,
    flower_env,
    flwr_runner,
    json_reply,
    register_key,
    write_connection,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class DeploymentError(RuntimeError):
    """A deployment process failed to start, register or finish its run."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, alive: subprocess.Popen) -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise DeploymentError(
                f"process {alive.pid} exited with {alive.returncode} before "
                f"listening on port {port}; see its log"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise DeploymentError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s} s")


def node_config_arg(data_dir: Path, site_id: int, role: str | None = None) -> str:
    """``--node-config`` of site ``site_id``: its own data folder (+ VFL role)."""
    text = f'data-dir="{data_dir}" site-id={site_id}'
    return f'{text} role="{role}"' if role else text


@dataclass
class Site:
    """One hospital: its id, data folder, role and the port of its Runtime API."""

    site_id: int
    data_dir: Path
    port: int
    role: str | None = None


@dataclass
class LocalDeployment:
    """Start, watch and stop a TLS + node-auth deployment on 127.0.0.1.

    Use as a context manager: every process it started is stopped on exit,
    also after an error or Ctrl-C.
    """

    workdir: Path
    certs: CertLayout
    sites: list[Site]
    superlink_port: int = field(default_factory=free_port)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    processes: DeploymentProcesses = field(default_factory=DeploymentProcesses)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.write_connection()

    # ------------------------------------------------------------- environment
    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.superlink_port}"

    @property
    def database(self) -> Path:
        return self.workdir / "superlink.db"

    def env(self) -> dict[str, str]:
        """Process environment: hermetic, Flower state under the workdir, tagged."""
        env = self.processes.environment(flower_env(self.flwr_home))
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def write_connection(self) -> Path:
        """The ``flwr`` CLI's connection to this SuperLink (TLS, our CA)."""
        return write_connection(self.flwr_home, self.address, self.certs.ca_cert)

    # ------------------------------------------------------------- processes
    def _spawn(self, name: str, command: Sequence[str]) -> subprocess.Popen:
        logfile = (self.workdir / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            list(command),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        logfile.close()
        self._procs[name] = proc
        self.processes.adopt(proc.pid)
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(command))
        return proc

    def start_superlink(self, timeout_s: float = 60.0) -> subprocess.Popen:
        """SuperLink with TLS, SuperNode authentication and a persistent state DB."""
        command = [
            flower_bin("flower-superlink"),
            "--ssl-ca-certfile",
            str(self.certs.ca_cert),
            "--ssl-certfile",
            str(self.certs.superlink_cert),
            "--ssl-keyfile",
            str(self.certs.superlink_key),
            "--enable-supernode-auth",
            "--database",
            str(self.database),
            "--host",
            LOOPBACK,
            "--port",
            str(self.superlink_port),
            "--disable-runtime-dependency-installation",
        ]
        proc = self._spawn("superlink", command)
        wait_for_port(self.superlink_port, timeout_s, proc)
        return proc

    def start_supernode(
        self,
        site: Site,
        *,
        key: Path | None = None,
        insecure: bool = False,
        name: str | None = None,
        max_wait_s: float | None = None,
    ) -> subprocess.Popen:
        """SuperNode of ``site``, authenticating with its key, verifying our CA."""
        command = [
            flower_bin("flower-supernode"),
            "--superlink",
            self.address,
            "--node-config",
            node_config_arg(site.data_dir, site.site_id, site.role),
            "--host",
            LOOPBACK,
            "--port",
            str(site.port),
            "--auth-supernode-private-key",
            str(key or self.certs.site_key(site.site_id)),
        ]
        if insecure:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(self.certs.ca_cert)]
        if max_wait_s is not None:
            command += ["--max-wait-time", str(max_wait_s)]
        return self._spawn(name or f"site_{site.site_id}", command)

    def restart_supernode(self, site: Site, timeout_s: float = 120.0) -> None:
        """Start ``site`` again after a crash.

        The SuperLink refuses a key whose node still counts as online (until
        its heartbeats have been missed), so a refused start is retried.
        """
        name = f"site_{site.site_id}"
        deadline = time.monotonic() + timeout_s
        while True:
            proc = self.start_supernode(site, name=name)
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                return  # connected and running
            if time.monotonic() > deadline:
                raise DeploymentError(f"{name} could not rejoin within {timeout_s} s")
            time.sleep(5.0)

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command against this SuperLink."""
        return flwr_runner(self.flwr_home)(*args)

    def register_sites(self) -> list[int]:
        """Register every site's public key; already registered keys are fine."""
        return [
            register_key(self.flwr, self.certs.site_public_key(s.site_id))
            for s in self.sites
        ]

    def start(self) -> None:
        """SuperLink, site registration, then one SuperNode per site."""
        self.start_superlink()
        self.register_sites()
        for site in self.sites:
            self.start_supernode(site)

    def superlink_alive(self) -> bool:
        """Whether the SuperLink process this deployment started is running."""
        proc = self._procs.get("superlink")
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
    def submit(self, app_dir: Path, run_config: Path) -> int:
        """``flwr run`` the Flower App in ``app_dir``; returns the run id."""
        done = subprocess.run(
            [
                flower_bin("flwr"),
                "run",
                str(app_dir),
                CONNECTION,
                "--run-config",
                str(run_config),
                "--format",
                "json",
            ],
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


def write_run_config(config: Mapping[str, object], path: Path) -> Path:
    """The resolved run config as the override TOML ``flwr run`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(config)))
    return path
