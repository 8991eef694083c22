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
from collections.abc import Callable, Mapping, Sequence
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


def flwr_runner(
    flwr_home: Path,
    timeout_s: float = 120.0,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> FlwrRunner:
    """A function running ``flwr <args>`` with ``FLWR_HOME=flwr_home``.

    ``prefix`` runs it elsewhere (e.g. ``ip netns exec coord``); ``env``
    replaces the default hermetic environment.
    """
    env = dict(env) if env is not None else flower_env(flwr_home)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, flower_bin("flwr"), *args],
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


def register_key(flwr: FlwrRunner, public_key: Path, name: str = "") -> int:
    """Register one SuperNode public key; returns its node id, 0 if known before."""
    if not Path(public_key).is_file():
        raise FileNotFoundError(
            f"site public key {public_key} not found: the site writes it with "
            f"'fedmed site init' and sends it to the coordinator"
        )
    named = ["--name", name] if name else []
    reply = json_reply(
        flwr("supernode", "register", str(public_key), *named, "--format", "json")
    )
    if reply.get("success"):
        return int(reply["node-id"])
    if ALREADY_REGISTERED in str(reply.get("error-message", "")):
        return 0
    raise RegistrationError(f"registering {public_key} failed: {reply}")
