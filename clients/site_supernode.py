"""``flower-supernode`` that runs only the apps its site pinned.

``python -m clients.site_supernode --trusted-apps FILE <flower-supernode
options>`` starts Flower's own SuperNode after hooking two functions of
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
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedmed.deploy.app_pin import (
    UntrustedApp,
    check_app,
    fab_sha256,
    read_trusted_apps,
)

log = logging.getLogger("clients.site_supernode")  # also when run as __main__

PIN_ENTITY = "fedmed-site-pin"
SUPPORTED_FLOWER = "1.42."


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


def split_arguments(argv: Sequence[str]) -> tuple[Path, list[str]]:
    """``--trusted-apps FILE`` and the options left for ``flower-supernode``."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--trusted-apps" and i + 1 < len(args):
            return Path(args[i + 1]), args[:i] + args[i + 2 :]
        if arg.startswith("--trusted-apps="):
            return Path(arg.split("=", 1)[1]), args[:i] + args[i + 1 :]
    raise SystemExit(
        "site_supernode: --trusted-apps FILE is required (the site's list of "
        "app hashes it runs; see 'fedmed site trust')"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Start Flower's SuperNode with the site's app pin installed."""
    pin_file, rest = split_arguments(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    pin_log = logging.getLogger("fedmed")  # Flower configures its own loggers
    pin_log.addHandler(handler)
    pin_log.setLevel(logging.INFO)
    pin_log.propagate = False
    install_app_pin(pin_file)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
