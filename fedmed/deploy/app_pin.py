"""Which app code a site agrees to run: the SHA-256 of the Flower App Bundle.

Whoever reaches a SuperLink's Control API can ``flwr run`` any app, and every
SuperNode then executes that app's ClientApp next to the site's data. Flower
1.42's remedy, ``--trusted-entities``, accepts only FABs verified through Flower
Hub, so it refuses every locally built fedmed app. Instead each site keeps a
list of the FAB hashes it has reviewed and accepts (``trusted-apps.txt``, one
SHA-256 per line) and its SuperNode refuses any other app before a line of it
runs (``fedmed.deploy.site_supernode``).

A check inside the ClientApp would not help: the ClientApp is part of the FAB,
so a modified app simply leaves the check out. The check must run in code the
site installed itself, i.e. in the SuperNode process.

The FAB is built by Flower itself (``flwr build``, the same builder ``flwr
run`` uses: fixed timestamps, sorted files), so the coordinator can publish the
hash of a release (``fedmed deploy app-hash``) and each site can rebuild it
from the same source and compare before trusting it.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

TRUSTED_APPS = "trusted-apps.txt"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class UntrustedApp(RuntimeError):
    """A Flower App Bundle whose hash the site has not pinned."""


def fab_sha256(fab: bytes) -> str:
    """The hash Flower names a FAB by: SHA-256 of its bytes, hex."""
    return hashlib.sha256(fab).hexdigest()


def build_fab(app_dir: Path) -> bytes:
    """The FAB ``flwr run app_dir`` would submit, built by ``flwr build``.

    Raises:
        RuntimeError: Flower refused to build the app (its message included).
    """
    from fedmed.deploy.registration import flower_bin, flower_env

    with tempfile.TemporaryDirectory(prefix="fedmed-fab-") as out:
        done = subprocess.run(
            [flower_bin("flwr"), "build", "--app", str(Path(app_dir).resolve())],
            cwd=out,
            env=flower_env(Path(out) / "flwr-home"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        fabs = list(Path(out).glob("*.fab"))
        if done.returncode != 0 or len(fabs) != 1:
            raise RuntimeError(
                f"'flwr build --app {app_dir}' failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-2000:]}"
            )
        return fabs[0].read_bytes()


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
