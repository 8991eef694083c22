"""Talk to a SuperLink through the ``flwr`` CLI: connection file, site registration.

With ``--enable-supernode-auth`` the SuperLink admits only SuperNodes whose
public key was registered through its Control API (``flwr supernode
register``); registering the same key again is reported and ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tomli_w

from fedmed.commands import HERMETIC_ENV

CONNECTION = "fedmed"
ALREADY_REGISTERED = "already in use"
FlwrRunner = Callable[..., subprocess.CompletedProcess]


class RegistrationError(RuntimeError):
    """The SuperLink refused or never answered a site registration."""


def flower_bin(name: str) -> str:
    """A Flower console script next to this interpreter, else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.is_file() else name


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: hermetic, state under ``flwr_home``.

    Flower starts its helpers (``flower-superexec``, ``flwr-serverapp``, ...) by
    name, so this interpreter's script folder goes first on ``PATH``: a venv
    that was never activated still finds its own Flower.
    """
    scripts = str(Path(sys.executable).parent)
    path = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    return {**os.environ, **HERMETIC_ENV, "FLWR_HOME": str(flwr_home), "PATH": path}


def write_connection(flwr_home: Path, address: str, root_certificates: Path) -> Path:
    """``$FLWR_HOME/config.toml`` whose default connection is this SuperLink (TLS)."""
    config = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {
                "address": address,
                "root-certificates": str(Path(root_certificates).resolve()),
            },
        }
    }
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def flwr_runner(flwr_home: Path, timeout_s: float = 120.0) -> FlwrRunner:
    """A function running ``flwr <args>`` with ``FLWR_HOME=flwr_home``."""
    env = flower_env(flwr_home)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [flower_bin("flwr"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    return run


def json_reply(done: subprocess.CompletedProcess) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed."""
    text = done.stdout.strip()
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {"success": False, "error-message": text + done.stderr}


def register_key(flwr: FlwrRunner, public_key: Path) -> int:
    """Register one SuperNode public key; returns its node id, 0 if known before."""
    if not Path(public_key).is_file():
        raise FileNotFoundError(
            f"site public key {public_key} not found: write it with 'fedmed certs'"
        )
    reply = json_reply(
        flwr("supernode", "register", str(public_key), "--format", "json")
    )
    if reply.get("success"):
        return int(reply["node-id"])
    if ALREADY_REGISTERED in str(reply.get("error-message", "")):
        return 0
    raise RegistrationError(f"registering {public_key} failed: {reply}")


def register_with_retry(
    public_key: Path, address: str, root_certificates: Path, wait_s: float
) -> int:
    """Register a key at ``address``, retrying while the SuperLink starts up."""
    with tempfile.TemporaryDirectory(prefix="fedmed-flwr-") as home:
        write_connection(Path(home), address, root_certificates)
        flwr = flwr_runner(Path(home))
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return register_key(flwr, public_key)
            except RegistrationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3.0)
