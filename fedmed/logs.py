"""Logging of the ``fedmed`` command: every line once, the chatter kept down.

Flower's ``flwr`` logger prints through its own handler; a handler on the
root logger as well would print each of its lines twice. So the root handler
serves fedmed's own packages (INFO) and third-party libraries at WARNING,
and ``flwr`` keeps its handler but stops propagating to the root.
"""

from __future__ import annotations

import logging
import os
import sys

OWN_PACKAGES = ("fedmed", "server", "clients", "strategies")
QUIET = (
    "alembic",
    "mlflow",
    "ray",
    "urllib3",
    "databricks",
    "git",
    "matplotlib",
    "PIL",
    "filelock",
    "httpx",
    "huggingface_hub",
    "numexpr",
)
"""Libraries that log at INFO by default; here at WARNING."""

FORMAT = "%(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (redirected, captured...)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the process's logging once (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_fedmed", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._fedmed = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # mlflow installs its own handler at import, at this level (INFO otherwise)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    flower = logging.getLogger("flwr")
    flower.propagate = False  # it prints through its own handler
