"""A site's warm ClientApp runner: one process that serves message after message.

Flower 1.42 runs every train and evaluate message in a fresh ``flwr-clientapp``
process that imports torch and the task libraries again (~6.4 s here) before
doing a second of work. With ``--isolation process`` the SuperNode instead
waits for an outside runner to claim each message on its Runtime API; this
module is that runner. It claims tasks with the site's runner secret
(``SuperExecAuthHttpInterceptor``: only a process holding the owner-only
secret file in the site folder gets a task, and only its own SuperNode on
loopback is asked), then does what ``flwr-clientapp`` does for that task's
token (pull message, context and FAB; run the ClientApp; push the reply and
the final status), in this process, so imports and anything the app keeps
in module state stay warm for the next message.

* Messages arrive and leave as Flower's own protobuf records over the
  SuperNode's Runtime API: nothing is pickled.
* An exception in the app becomes the error reply of that message, as in
  ``flwr-clientapp``; the runner goes on with the next one. A process that
  dies (killed, out of memory) is started again by its supervisor
  (:mod:`clients.site_supernode`); the message it held fails like a crashed
  ``flwr-clientapp`` would.
* One process serves one app (FAB hash): Python caches modules by name, so a
  different app must not run on top of another's. A task of a new app makes
  the process replace itself (``exec``) and handle that task fresh.
* The FAB's hash is checked against the site's pins once more before its code
  is imported, so only an app the site reviewed ever runs here.
* The app's own packages come from the FAB, as in ``flwr-clientapp``: this
  runner is itself part of the site's installed ``clients`` package and uses
  ``fedmed``'s pin check, so those site copies are dropped from
  ``sys.modules`` before the FAB's packages of the same names are imported.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from flwr.app import Error, Message
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime import run_clientapp
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from fedmed.deploy.app_pin import check_app, read_trusted_apps
from fedmed.wire.retries import prompt_retries

log = logging.getLogger("clients.warm_worker")  # also when run as __main__

#: Third-party libraries the fedmed app imports, loaded before the first task.
PRELOAD = ("torch", "timm", "peft", "transformers", "sklearn.metrics")
TOKEN_ENV = "FEDMED_WARM_TOKEN"  # a claimed task handed over an exec
FAB_ENV = "FEDMED_WARM_FAB"
ACQUIRE = "/flwr.proto.Runtime/AcquireTask"


class WarmApps:
    """The one app (FAB hash) this process runs, installed and imported once."""

    def __init__(self, trusted_apps: Path) -> None:
        self.trusted_apps = trusted_apps
        self.fab_hash: str | None = None
        self._app: ClientApp | None = None

    def serves(self, fab_hash: str) -> bool:
        """Whether a task of ``fab_hash`` may run in this process."""
        return self.fab_hash in (None, fab_hash)

    def load(self, run, fab) -> ClientApp:
        """The ClientApp of ``fab``: checked against the pins, then imported once."""
        if self._app is not None and fab.hash_str == self.fab_hash:
            return self._app
        if not self.serves(fab.hash_str):
            raise LoadClientAppError(
                f"this runner serves app {self.fab_hash}, not {fab.hash_str}"
            )
        check_app(fab.content, read_trusted_apps(self.trusted_apps))
        install_from_fab(fab.content, skip_prompt=True)
        forget_modules(fab_packages(fab.content))
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        self._app = load(run.fab_id, run.fab_version, fab.hash_str)
        self.fab_hash = fab.hash_str
        log.info("app %s loaded; it stays warm for the next messages", fab.hash_str)
        return self._app


def fab_packages(fab: bytes) -> set[str]:
    """Top-level module and package names a FAB ships (``fedmed``, ``clients``)."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        names = archive.namelist()
    found = set()
    for name in names:
        head, sep, _ = name.partition("/")
        if sep and not head.startswith("."):
            found.add(head)
        elif name.endswith(".py"):
            found.add(name.removesuffix(".py"))
    return found


def forget_modules(packages: Iterable[str]) -> list[str]:
    """Drop ``packages`` and their submodules from ``sys.modules``; returns them."""
    tops = set(packages)
    gone = [name for name in sys.modules if name.split(".", 1)[0] in tops]
    for name in gone:
        del sys.modules[name]
    return gone


def _token_client(address: str, token: str) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def run_task(address: str, token: str, apps: WarmApps) -> bool:
    """Do one task as ``flwr-clientapp`` would, in this process; True if it ran."""
    client = _token_client(address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    started = time.perf_counter()
    try:
        message, context, run, fab = pull_task_input(client)
        app = apps.load(run, fab)
        pulled = time.perf_counter()
        reply = app(message=message, context=context)
        ran = time.perf_counter()
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # noqa: BLE001 - the error is the message's reply
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        if isinstance(exc, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        details = f"{type(exc)}:<'{exc}'>"
        log.exception("task failed; its error goes back as the reply")
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client, context, status, details)
            heartbeat.stop()
            client.close()
    if status == SubStatus.COMPLETED:
        log.info(
            "%s done in %.2f s (pull %.2f s, app %.2f s, push %.2f s)",
            message.metadata.message_type,
            time.perf_counter() - started,
            pulled - started,
            ran - pulled,
            time.perf_counter() - ran,
        )
    return status == SubStatus.COMPLETED


def _replace_self(argv: Sequence[str], token: str, fab_hash: str) -> None:
    """A fresh interpreter for a task of another app; it handles ``token`` first."""
    log.info("a task of app %s arrived: restarting fresh for it", fab_hash)
    os.environ[TOKEN_ENV] = token
    os.environ[FAB_ENV] = fab_hash
    os.execv(sys.executable, [sys.executable, "-m", "clients.warm_worker", *argv])


def retry_objects_promptly() -> None:
    """Pull a message's objects with prompt retries (this process only): a
    claimed message's objects may still be arriving from the SuperLink."""
    run_clientapp.pull_and_inflate_object_from_tree = prompt_retries(
        run_clientapp.pull_and_inflate_object_from_tree
    )


def serve(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Claim and run this SuperNode's ClientApp tasks until the SuperNode goes."""
    retry_objects_promptly()
    apps = WarmApps(Path(args.trusted_apps))
    if token := os.environ.pop(TOKEN_ENV, ""):
        apps.fab_hash = os.environ.pop(FAB_ENV, None)
        run_task(args.runtime_api_address, token, apps)
    _preload(args.preload)
    claim = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="SuperExec"),
            SuperExecAuthHttpInterceptor(
                master_secret=Path(args.secret_file).read_bytes(),
                protected_methods=frozenset({ACQUIRE}),
            ),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
    while True:
        claimed = claim.AcquireTask(request)
        if not (claimed.HasField("task") and claimed.token):
            time.sleep(args.poll_interval)
            continue
        if not apps.serves(claimed.task.fab_hash):
            claim.close()
            _replace_self(argv, claimed.token, claimed.task.fab_hash)
        run_task(args.runtime_api_address, claimed.token, apps)


def _preload(names: str) -> None:
    """Import the libraries every message needs once, before the first task."""
    started = time.perf_counter()
    for name in filter(None, names.split(",")):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.info("preload: %s is not installed here (%s); skipped", name, exc)
    log.info("preloaded %s in %.1f s", names, time.perf_counter() - started)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.warm_worker")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--trusted-apps", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--preload", default=",".join(PRELOAD))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    serve(args, argv)


if __name__ == "__main__":
    main()
