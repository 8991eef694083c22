"""``flower-supernode`` that runs only the apps its site pinned, warm.

``python -m clients.site_supernode --trusted-apps FILE <flower-supernode
options>`` starts Flower's own SuperNode after hooking functions of
``flwr.supernode.start_client_internal`` (Flower 1.42):

* the FAB a run arrives with is checked with ``fedmed.deploy.app_pin.check_app``
  against the site's ``trusted-apps.txt`` (re-read for every new run, so a
  site trusts a new release without a restart);
* a refused FAB goes down Flower's own "FAB could not be verified" path: the
  SuperNode replies with an error to the ServerApp, stores nothing and never
  starts a ClientApp for that run.

Flower reaches the same path only with ``--trusted-entities`` and Flower Hub
signatures; here the site's pin takes the place of both (an accepted FAB is
marked as verified by ``PIN_ENTITY``). Other Flower versions are refused at
start, because the hooked functions are internal to Flower.

Warm rounds: unless ``--isolation`` is given, the SuperNode runs with
``--isolation process`` and this process supervises one
:mod:`clients.warm_worker` that claims its messages (restarted whenever it
exits), instead of Flower starting a fresh ClientApp process per message. The
runner proves itself with a random secret made at every start (owner-only
file in a private temporary folder, removed at exit). The SuperNode's waits
(3 s between polls of the SuperLink when idle, 0.5 s for a reply) are cut to
``--poll-interval`` (default 0.25 s) and 50 ms, so a message does not sit idle.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fedmed.deploy.app_pin import (
    UntrustedApp,
    check_app,
    fab_sha256,
    read_trusted_apps,
)
from fedmed.wire.retries import prompt_retries

log = logging.getLogger("clients.site_supernode")  # also when run as __main__

PIN_ENTITY = "fedmed-site-pin"
SUPPORTED_FLOWER = "1.42."
POLL_S = 0.25
LOCAL_WAIT_S = 0.05
#: How often the warm runner asks its own SuperNode (loopback) for a message.
RUNNER_POLL_S = 0.1
RESTART_S = 1.0


def _pinned_get_fab(get_fab: Callable, pin_file: Path) -> Callable:
    """``get_fab`` that marks a pinned FAB verified and strips any other."""

    def get(fab_hash: str, run_id: int) -> Any:
        fab = get_fab(fab_hash, run_id)
        try:
            digest = check_app(fab.content, read_trusted_apps(pin_file))
        except (UntrustedApp, OSError, ValueError) as exc:
            log.error("refusing the app of run %s: %s", run_id, exc)
            fab.verifications = {}
            return fab
        log.info("run %s: app %s is trusted by %s", run_id, digest, pin_file)
        fab.verifications = {"valid_license": PIN_ENTITY, PIN_ENTITY: digest}
        return fab

    return get


def install_app_pin(pin_file: Path) -> None:
    """Hook the pin check into Flower's SuperNode (this process only)."""
    import flwr
    from flwr.supernode import start_client_internal as node

    if not flwr.__version__.startswith(SUPPORTED_FLOWER):
        raise RuntimeError(
            f"app pinning hooks Flower {SUPPORTED_FLOWER}x internals, found "
            f"flwr {flwr.__version__}: check clients/site_supernode.py "
            f"against that version before running it"
        )
    read_trusted_apps(pin_file)  # fail at start, not at the first run
    pull = node._pull_and_store_message

    def pull_pinned(**kwargs: Any) -> int | None:
        kwargs["get_fab"] = _pinned_get_fab(kwargs["get_fab"], pin_file)
        kwargs["trusted_entities"] = {PIN_ENTITY: str(pin_file)}
        return pull(**kwargs)

    def verify_pinned(fab: Any, trusted_entities: dict[str, str]) -> bool:
        return fab.verifications.get(PIN_ENTITY) == fab_sha256(fab.content)

    node._pull_and_store_message = pull_pinned
    node._verify_fab = verify_pinned


def install_short_polls(poll_s: float) -> None:
    """Cap the SuperNode loop's sleeps: its idle wait between SuperLink polls
    (3 s) at ``poll_s``, its waits on this machine (0.5 s for the runner's
    reply or an object's content) at ``LOCAL_WAIT_S``.

    A message polled that promptly may arrive before the ServerApp has pushed
    all its objects, so its object pulls retry promptly too
    (:mod:`fedmed.wire.retries`).
    """
    from flwr.supernode import start_client_internal as node

    node.pull_objects = prompt_retries(node.pull_objects)
    node.time = SimpleNamespace(
        sleep=lambda seconds: time.sleep(
            min(seconds, poll_s if seconds >= 1.0 else LOCAL_WAIT_S)
        ),
        time=time.time,
        monotonic=time.monotonic,
        perf_counter=time.perf_counter,
    )


def split_arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """fedmed's options and the options left for ``flower-supernode``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--trusted-apps", type=Path)
    parser.add_argument("--poll-interval", type=float, default=POLL_S)
    ours, rest = parser.parse_known_args(list(argv))
    if ours.trusted_apps is None:
        raise SystemExit(
            "site_supernode: --trusted-apps FILE is required (the site's list of "
            "app hashes it runs; see 'fedmed site trust')"
        )
    return ours, rest


def runtime_address(flower_args: Sequence[str]) -> str:
    """Where the SuperNode serves its Runtime API (its ``--host``/``--port``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="9094")
    known, _ = parser.parse_known_args(list(flower_args))
    host = f"[{known.host}]" if ":" in known.host else known.host
    return f"{host}:{known.port}"


def runner_secret() -> Path:
    """A fresh random secret, owner-only, in a private folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="fedmed-warm-"))  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "runner.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
    return path


def supervise_warm_worker(
    command: Sequence[str], stop: threading.Event | None = None
) -> threading.Thread:
    """Keep one warm runner alive next to the SuperNode: restart it when it exits.

    Runs until ``stop`` is set (never, for the SuperNode: the thread ends with
    the process, and the runner follows its parent pid).
    """
    stop = stop or threading.Event()

    def keep_alive() -> None:
        while not stop.is_set():
            proc = subprocess.Popen(command)
            log.info("warm ClientApp runner started (pid %d)", proc.pid)
            code = proc.wait()
            if not stop.is_set():
                log.warning("warm ClientApp runner exited with %s: restarting", code)
                stop.wait(RESTART_S)

    thread = threading.Thread(target=keep_alive, name="warm-worker", daemon=True)
    thread.start()
    return thread


def warm_worker_command(
    address: str, secret: Path, pin_file: Path, poll_s: float
) -> list[str]:
    """The runner's command line, watching this process as its parent."""
    return [
        sys.executable,
        "-m",
        "clients.warm_worker",
        *("--runtime-api-address", address),
        *("--secret-file", str(secret)),
        *("--trusted-apps", str(pin_file)),
        *("--parent-pid", str(os.getpid())),
        *("--poll-interval", str(min(poll_s, RUNNER_POLL_S))),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Start Flower's SuperNode with the site's app pin and its warm runner."""
    ours, rest = split_arguments(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("fedmed", "clients"):  # Flower configures its own loggers
        ours_log = logging.getLogger(name)
        ours_log.addHandler(handler)
        ours_log.setLevel(logging.INFO)
        ours_log.propagate = False
    install_app_pin(ours.trusted_apps)
    install_short_polls(ours.poll_interval)
    if not any(a.split("=", 1)[0] == "--isolation" for a in rest):
        secret = runner_secret()
        rest += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
        supervise_warm_worker(
            warm_worker_command(
                runtime_address(rest), secret, ours.trusted_apps, ours.poll_interval
            )
        )
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
