"""Certificates and keys for a TLS deployment with SuperNode authentication.

One private CA signs the SuperLink's TLS certificate; every site gets its own
ECDSA P-384 key pair in OpenSSH format, the format ``flower-supernode
--auth-supernode-private-key`` reads and ``flwr supernode register`` accepts.
The SuperLink only admits SuperNodes whose public key was registered.

Layout (``CertLayout``), the paths docker-compose.yml mounts::

    certs/ca.crt              trust anchor, given to every SuperNode and to flwr
    certs/ca.key              CA signing key: keep offline, never mounted
    certs/superlink.crt/.key  SuperLink TLS certificate (SANs: compose hostname,
                              localhost, 127.0.0.1, any extra names)
    certs/sites/site_<k>.key  site k's authentication private key (site only)
    certs/sites/site_<k>.pub  its public key, registered at the SuperLink

Existing files are kept, so adding a site never invalidates the others.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

SUPERLINK_HOSTNAME = "superlink"
DEFAULT_SANS = (SUPERLINK_HOSTNAME, "localhost", "127.0.0.1")
VALID_DAYS = 365
_CURVE = ec.SECP384R1


@dataclass(frozen=True)
class CertLayout:
    """Where each certificate and key of a deployment lives under ``root``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.root / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.root / "superlink.key"

    def site_key(self, site_id: int) -> Path:
        """Site ``site_id``'s authentication private key (OpenSSH)."""
        return self.root / "sites" / f"site_{site_id}.key"

    def site_public_key(self, site_id: int) -> Path:
        """Site ``site_id``'s authentication public key (OpenSSH)."""
        return self.root / "sites" / f"site_{site_id}.pub"

    def site_ids(self) -> list[int]:
        """Sites that have a public key, in order."""
        found = (self.root / "sites").glob("site_*.pub")
        return sorted(int(p.stem.removeprefix("site_")) for p in found)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedmed deployment"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return builder.not_valid_before(start).not_valid_after(
        start + datetime.timedelta(days=days)
    )


def _subject_alt_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def write_ca(layout: CertLayout, days: int = VALID_DAYS) -> None:
    """Self-signed CA certificate + key: the deployment's only trust anchor."""
    key = ec.generate_private_key(_CURVE())
    name = _name("fedmed CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    cert = _validity(builder, days).sign(key, hashes.SHA384())
    _write_private(layout.ca_key, _pem_key(key))
    layout.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_superlink_cert(
    layout: CertLayout, names: Sequence[str] = DEFAULT_SANS, days: int = VALID_DAYS
) -> None:
    """SuperLink TLS certificate signed by the CA, valid for every name in ``names``."""
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(
            f"{layout.ca_key}: expected an EC CA key, found {type(ca_key)}"
        )
    key = ec.generate_private_key(_CURVE())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    cert = _validity(builder, days).sign(ca_key, hashes.SHA384())
    _write_private(layout.superlink_key, _pem_key(key))
    layout.superlink_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_site_keys(layout: CertLayout, site_id: int) -> None:
    """Site ``site_id``'s P-384 authentication key pair, both in OpenSSH format."""
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_private(layout.site_key(site_id), private)
    layout.site_public_key(site_id).write_bytes(public + f" site_{site_id}\n".encode())


def superlink_cert_names(layout: CertLayout) -> list[str]:
    """The DNS names and IP addresses the SuperLink certificate is valid for."""
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def ensure_certificates(
    root: Path,
    num_sites: int,
    *,
    extra_names: Sequence[str] = (),
    force: bool = False,
    days: int = VALID_DAYS,
) -> CertLayout:
    """Write whatever of CA, SuperLink certificate and site keys is missing.

    With ``force`` everything is regenerated (every site must then be
    re-registered). A SuperLink certificate whose names do not cover
    ``DEFAULT_SANS + extra_names`` is reissued from the existing CA.
    """
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, found {num_sites}")
    layout = CertLayout(Path(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    names = [*DEFAULT_SANS, *extra_names]
    if force or not (layout.ca_cert.is_file() and layout.ca_key.is_file()):
        log.info("writing CA to %s", layout.ca_cert)
        write_ca(layout, days)
        force = True
    stale = layout.superlink_cert.is_file() and not set(names) <= set(
        superlink_cert_names(layout)
    )
    if force or stale or not layout.superlink_key.is_file():
        log.info("writing SuperLink certificate for %s", ", ".join(names))
        write_superlink_cert(layout, names, days)
    for site_id in range(num_sites):
        if force or not layout.site_key(site_id).is_file():
            log.info("writing authentication keys of site %d", site_id)
            write_site_keys(layout, site_id)
    return layout
