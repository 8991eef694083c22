"""The coordinator's certificates and secrets for a TLS deployment.

One private CA signs the SuperLink's TLS certificate (presented by the SuperLink
and by the Fleet gate the sites dial). Site keys are not made here: each site
makes its own key pair (``fedmed.deploy.site_keys``) and only its public key
travels to the coordinator, so the coordinator can never act as a site.

Layout (``CertLayout``), the paths docker-compose.yml mounts::

    certs/ca.crt              trust anchor, given to every site and to flwr
    certs/ca.key              CA signing key: keep offline, never mounted
    certs/superlink.crt/.key  SuperLink TLS certificate (SANs: compose hostnames,
                              localhost, 127.0.0.1, any extra names)
    certs/superexec.secret    shared secret of the SuperLink and its SuperExec

Existing files are kept; ``renew_superlink_cert`` re-issues the TLS
certificate from the same CA (same names), so sites need nothing new.
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
GATE_HOSTNAME = "fleet-gate"
DEFAULT_SANS = (SUPERLINK_HOSTNAME, GATE_HOSTNAME, "localhost", "127.0.0.1")
SECRET_BYTES = 32
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

    @property
    def superexec_secret(self) -> Path:
        return self.root / "superexec.secret"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (mode 0600), replacing ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with a wider mode
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
    write_private(layout.ca_key, _pem_key(key))
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
    write_private(layout.superlink_key, _pem_key(key))
    layout.superlink_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_superexec_secret(layout: CertLayout) -> None:
    """Random bytes the SuperLink and its SuperExec both hold (raw, owner-only)."""
    write_private(layout.superexec_secret, os.urandom(SECRET_BYTES))


def superlink_cert_names(layout: CertLayout) -> list[str]:
    """The DNS names and IP addresses the SuperLink certificate is valid for."""
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def ensure_certificates(
    root: Path,
    *,
    extra_names: Sequence[str] = (),
    force: bool = False,
    days: int = VALID_DAYS,
) -> CertLayout:
    """Write whatever of CA, SuperLink certificate and SuperExec secret is missing.

    With ``force`` everything is regenerated (every site then needs the new
    ``ca.crt``). A SuperLink certificate whose names do not cover
    ``DEFAULT_SANS + extra_names`` is reissued from the existing CA.
    """
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
    if force or not layout.superexec_secret.is_file():
        write_superexec_secret(layout)
    return layout


def renew_superlink_cert(
    layout: CertLayout, days: int = VALID_DAYS
) -> datetime.datetime:
    """Re-issue the SuperLink certificate (same names, new key) from the same CA.

    Sites keep their ``ca.crt``; restart the SuperLink and the gate to load it.
    Returns the new expiry date.
    """
    if not layout.ca_key.is_file():
        raise FileNotFoundError(
            f"{layout.ca_key} not found: renewal needs the CA key (kept offline); "
            f"run this where the CA key is"
        )
    write_superlink_cert(layout, superlink_cert_names(layout), days)
    return superlink_cert_expiry(layout)


def superlink_cert_expiry(layout: CertLayout) -> datetime.datetime:
    """When the SuperLink certificate stops being valid (UTC)."""
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    return cert.not_valid_after_utc
