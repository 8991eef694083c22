"""Which app code a site agrees to run: the SHA-256 of the Flower App Bundle.

Whoever reaches a SuperLink's Control API can ``flwr run`` any app, and every
SuperNode then executes that app's ClientApp next to the site's data. Flower
1.42's remedy, ``--trusted-entities``, accepts only FABs verified through Flower
Hub, so it refuses every locally built fedmed app. Instead each site keeps a
list of the FAB hashes it has reviewed and accepts (``trusted-apps.txt``, one
SHA-256 per line) and its SuperNode refuses any other app before a line of it
runs (``clients.site_supernode``).

A check inside the ClientApp would not help: the ClientApp is part of the FAB,
so a modified app simply leaves the check out. The check must run in code the
site installed itself, i.e. in the SuperNode process.

The FAB is built by Flower's own builder, the function ``flwr run`` calls
(fixed timestamps, sorted files), so the coordinator can publish the hash of a
release (``fedmed deploy app-hash``) and each site can rebuild it
from the same source and compare before trusting it.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

TRUSTED_APPS = "trusted-apps.txt"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUILD = (
    "import sys; from pathlib import Path; "
    "from flwr.cli.build import build_fab_from_disk; "
    "sys.stdout.buffer.write(build_fab_from_disk(Path(sys.argv[1])))"
)


class UntrustedApp(RuntimeError):
    """A Flower App Bundle whose hash the site has not pinned."""


def fab_sha256(fab: bytes) -> str:
    """The hash Flower names a FAB by: SHA-256 of its bytes, hex."""
    return hashlib.sha256(fab).hexdigest()


def build_fab(app_dir: Path) -> bytes:
    """The FAB ``flwr run app_dir`` would submit, by Flower's own builder.

    Built in a child interpreter (fedmed's library imports no Flower code),
    with the function ``flwr run`` calls, so the bytes and hash are the ones
    the SuperNodes receive.

    Raises:
        RuntimeError: Flower refused to build the app (its message included).
    """
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(Path(app_dir).resolve())],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"building the FAB of {app_dir} failed: "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return done.stdout


def fab_files(fab: bytes) -> list[str]:
    """File names inside a FAB, in archive order."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        return archive.namelist()


def read_trusted_apps(path: Path) -> frozenset[str]:
    """The FAB hashes a site accepts: one SHA-256 (hex) per line, ``#`` comments.

    Raises:
        FileNotFoundError: no pin file (a site must decide what it runs).
        ValueError: a line that is not a SHA-256 hex digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the site's list of trusted app hashes. Write it "
            f"with 'fedmed site trust <sha256>' (hash from 'fedmed deploy app-hash')"
        )
    hashes = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip().lower()
        if not text:
            continue
        if not _SHA256.fullmatch(text):
            raise ValueError(
                f"{path}:{number}: expected a 64-character SHA-256 hex digest, "
                f"found {text[:80]!r}"
            )
        hashes.add(text)
    return frozenset(hashes)


def add_trusted_apps(path: Path, hashes: Iterable[str], note: str = "") -> Path:
    """Append hashes to a site's pin file (created if missing), keeping old ones."""
    path = Path(path)
    known = read_trusted_apps(path) if path.is_file() else frozenset()
    lines = []
    for digest in hashes:
        digest = digest.strip().lower()
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"expected a SHA-256 hex digest, found {digest[:80]!r}")
        if digest not in known:
            lines.append(f"{digest}  # {note}" if note else digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.writelines(f"{line}\n" for line in lines)
    return path


def check_app(fab: bytes, trusted: frozenset[str]) -> str:
    """Return the FAB's hash if the site trusts it.

    The hash is computed from the bytes received, never taken from the
    SuperLink's claim about them.

    Raises:
        UntrustedApp: the hash is not in ``trusted``.
    """
    digest = fab_sha256(fab)
    if digest not in trusted:
        raise UntrustedApp(
            f"app {digest} is not among this site's {len(trusted)} trusted app "
            f"hash(es); it will not run here. If the coordinator released a new "
            f"version, review it and add its hash with 'fedmed site trust'"
        )
    return digest
