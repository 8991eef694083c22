"""Every process of a deployment, found and stopped, wherever Flower started it.

Flower's programs start helpers of their own: the SuperLink starts a
``flower-superexec`` in a new session (``start_new_session=True``), which
starts ``flwr-serverapp``; a SuperNode starts ``flower-superexec`` and
``flwr-clientapp`` processes. Those are not in the process groups of the
programs fedmed started, and a ``flwr-serverapp`` whose parent was killed lives
on until it notices. Process groups are therefore not enough to stop a
deployment.

Instead every process a deployment starts carries a tag in its environment
(``FEDMED_DEPLOYMENT_ID=<random id>``). Children inherit their parent's
environment (Flower passes none of its own), so the tag marks the whole tree,
also after a child was re-parented to init. ``DeploymentProcesses.stop`` asks
every tagged process to terminate, kills what is left after a grace period and
returns only when none is alive, or raises naming the survivors. A process once
found stays tracked until it is gone: while a killed process exits, its
environment may already read as empty although it is not yet a zombie.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable, Mapping

import psutil

log = logging.getLogger(__name__)

TAG = "FEDMED_DEPLOYMENT_ID"


class ProcessesSurvived(RuntimeError):
    """Processes of a deployment were still alive after being killed."""


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    return False


def _describe(procs: Iterable[psutil.Process]) -> str:
    parts = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            parts.append(f"{proc.pid} ({' '.join(proc.cmdline())[:120]})")
    return "; ".join(parts)


class DeploymentProcesses:
    """The processes of one deployment: tag them, list them, stop them all."""

    def __init__(self, deployment_id: str | None = None) -> None:
        self.deployment_id = deployment_id or uuid.uuid4().hex
        self._roots: set[int] = set()
        self._seen: dict[int, psutil.Process] = {}
        self._self_and_ancestors = {os.getpid(), *(p.pid for p in _parents())}

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus this deployment's tag, for every process it starts."""
        return {**base, TAG: self.deployment_id}

    def adopt(self, pid: int) -> None:
        """Remember a started process: its descendants belong to the deployment."""
        self._roots.add(pid)

    def members(self) -> list[psutil.Process]:
        """Live processes carrying the tag or descending from adopted ones.

        Includes every process found by an earlier call that is still alive
        (``psutil.Process`` checks its start time, so a reused pid is not it).
        """
        found = {pid: p for pid, p in self._seen.items() if _alive(p)}
        for proc in psutil.process_iter():
            if proc.pid in self._self_and_ancestors:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(TAG) == self.deployment_id and _alive(proc):
                    found[proc.pid] = proc
        for pid in self._roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    if _alive(proc):
                        found.setdefault(proc.pid, proc)
        self._seen = found
        return list(found.values())

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every member; returns how many were signalled."""
        members = self.members()
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        return len(members)

    def wait_gone(self, timeout_s: float) -> list[psutil.Process]:
        """Wait until no member is alive; returns those still alive at timeout."""
        deadline = time.monotonic() + timeout_s
        while (members := self.members()) and time.monotonic() < deadline:
            psutil.wait_procs(members, timeout=min(0.5, timeout_s))
        return members

    def stop(self, grace_s: float = 10.0, kill_timeout_s: float = 30.0) -> None:
        """SIGTERM every member, SIGKILL what is left after ``grace_s``, wait.

        Killing is repeated until a scan finds nobody, so a helper that was
        being started while the first signal went out is caught too.

        Raises:
            ProcessesSurvived: members still alive ``kill_timeout_s`` after
                SIGKILL (e.g. stuck in uninterruptible I/O).
        """
        if self.signal_all(signal.SIGTERM):
            self.wait_gone(grace_s)
        deadline = time.monotonic() + kill_timeout_s
        while self.signal_all(signal.SIGKILL):
            survivors = self.wait_gone(min(2.0, kill_timeout_s))
            if survivors and time.monotonic() > deadline:
                raise ProcessesSurvived(
                    f"deployment {self.deployment_id}: processes alive "
                    f"{kill_timeout_s} s after SIGKILL: {_describe(survivors)}"
                )
        self._roots.clear()
        self._seen.clear()


def _parents() -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process().parents()
    return []
