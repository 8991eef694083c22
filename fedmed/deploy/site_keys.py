"""A site's own key pair: made on the site, only the public half ever leaves.

``fedmed site init`` runs on the hospital's machine and writes, in the site's
folder (``SiteFolder``)::

    site.key            ECDSA P-384 private key (OpenSSH, mode 0600): stays here
    site.pub            its public key: send it to the coordinator
    ca.crt              the coordinator's CA certificate (copied in by the site)
    trusted-apps.txt    FAB hashes this site runs (``fedmed.deploy.app_pin``)

The coordinator registers ``site.pub`` (``fedmed.deploy.registry``) and never
holds a private key of a site, so it cannot impersonate one. Rotation writes a
new pair in place; the old private key is overwritten before it is unlinked.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedmed.deploy.app_pin import TRUSTED_APPS
from fedmed.deploy.certs import write_private

log = logging.getLogger(__name__)

CURVE = ec.SECP384R1
SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class SiteKeyError(ValueError):
    """A site key file is missing, malformed, or a private key in the wrong place."""


@dataclass(frozen=True)
class SiteFolder:
    """Where one site keeps its key pair, CA certificate and app pins."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "site.key"

    @property
    def public_key(self) -> Path:
        return self.root / "site.pub"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def trusted_apps(self) -> Path:
        return self.root / TRUSTED_APPS


def check_site_name(name: str) -> str:
    """Site names are DNS-label-like: lower-case letters, digits and dashes."""
    if not SITE_NAME.fullmatch(name):
        raise SiteKeyError(
            f"site name {name!r}: use 1-63 lower-case letters, digits or dashes, "
            f"starting with a letter or digit (e.g. 'hospital-a')"
        )
    return name


def _write_pair(folder: SiteFolder, name: str) -> None:
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_private(folder.key, private)
    folder.public_key.write_bytes(public + f" {name}\n".encode())


def init_site(root: Path, name: str) -> SiteFolder:
    """Make the site's key pair in ``root``; an existing key is never replaced.

    Raises:
        SiteKeyError: ``root`` already holds a key (use ``rotate_site_key``).
    """
    folder = SiteFolder(Path(root).resolve())
    check_site_name(name)
    if folder.key.exists():
        raise SiteKeyError(
            f"{folder.key} exists: this site already has a key. To replace it, "
            f"rotate it ('fedmed site rotate-key') and have the coordinator "
            f"register the new public key"
        )
    folder.root.mkdir(parents=True, exist_ok=True)
    os.chmod(folder.root, 0o700)
    _write_pair(folder, name)
    log.info("site %s: key pair written to %s", name, folder.root)
    return folder


def rotate_site_key(root: Path) -> SiteFolder:
    """Replace the site's key pair in place; the old private key is destroyed."""
    folder = SiteFolder(Path(root).resolve())
    name = site_name_of(read_public_key(folder.public_key))
    if folder.key.is_file():
        size = folder.key.stat().st_size
        with folder.key.open("r+b") as fh:  # overwrite before unlinking
            fh.write(os.urandom(size))
            fh.flush()
            os.fsync(fh.fileno())
        folder.key.unlink()
    _write_pair(folder, name)
    return folder


def read_public_key(path: Path) -> str:
    """A site's OpenSSH ECDSA P-384 public key line, checked.

    Raises:
        SiteKeyError: missing file, a private key (it must not travel), or not
            a P-384 public key.
    """
    path = Path(path)
    if not path.is_file():
        raise SiteKeyError(f"public key {path} not found")
    text = path.read_text().strip()
    if "PRIVATE KEY" in text:
        raise SiteKeyError(
            f"{path} holds a PRIVATE key. A site's private key never leaves the "
            f"site: send only site.pub (written by 'fedmed site init')"
        )
    try:
        key = serialization.load_ssh_public_key(text.encode())
    except (ValueError, TypeError) as exc:
        raise SiteKeyError(f"{path}: not an OpenSSH public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise SiteKeyError(f"{path}: expected an ECDSA P-384 key, found {type(key)}")
    return text


def site_name_of(public_key: str) -> str:
    """The site name written as the comment of its public key line."""
    parts = public_key.split()
    if len(parts) < 3:
        raise SiteKeyError("public key line has no site name comment")
    return check_site_name(parts[2])


def key_fingerprint(public_key: str) -> str:
    """OpenSSH's fingerprint (``ssh-keygen -lf site.pub``): what operators compare."""
    blob = base64.b64decode(public_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")
