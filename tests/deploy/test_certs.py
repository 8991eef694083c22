"""Coordinator certificates: formats Flower accepts, SANs, renewal, no site keys."""

import datetime
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from typer.testing import CliRunner

from fedmed.cli.deploy import certs, deploy_app
from fedmed.deploy.certs import (
    CertLayout,
    ensure_certificates,
    renew_superlink_cert,
    superlink_cert_expiry,
    superlink_cert_names,
)


def test_superlink_cert_is_signed_by_ca_and_names_compose_hosts_and_loopback(tmp_path):
    # Execute
    layout = ensure_certificates(tmp_path, extra_names=["link.example.org"])
    # Assert
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = set(superlink_cert_names(layout))
    assert {"superlink", "fleet-gate", "localhost", "127.0.0.1"} <= names
    assert "link.example.org" in names
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = load_pem_private_key(layout.superlink_key.read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_secrets_are_owner_only_and_no_site_key_is_made(tmp_path):
    # Execute
    layout = ensure_certificates(tmp_path)
    # Assert
    for secret in (layout.ca_key, layout.superlink_key, layout.superexec_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert len(layout.superexec_secret.read_bytes()) == 32
    made = sorted(p.name for p in tmp_path.rglob("*"))
    assert made == [
        "ca.crt",
        "ca.key",
        "superexec.secret",
        "superlink.crt",
        "superlink.key",
    ]


def test_existing_files_are_kept_and_force_replaces_them(tmp_path):
    # Prepare
    layout = ensure_certificates(tmp_path)
    before = [p.read_bytes() for p in (layout.ca_cert, layout.superexec_secret)]
    # Execute
    ensure_certificates(tmp_path)
    kept = [p.read_bytes() for p in (layout.ca_cert, layout.superexec_secret)]
    ensure_certificates(tmp_path, force=True)
    # Assert
    assert kept == before
    assert layout.ca_cert.read_bytes() != before[0]
    assert layout.superexec_secret.read_bytes() != before[1]


def test_renewal_reissues_the_same_names_from_the_same_ca(tmp_path):
    # Prepare
    layout = ensure_certificates(tmp_path, extra_names=["gate.example.org"], days=2)
    old_cert = layout.superlink_cert.read_bytes()
    old_expiry = superlink_cert_expiry(layout)
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    # Execute
    expiry = renew_superlink_cert(layout, days=30)
    # Assert
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert layout.superlink_cert.read_bytes() != old_cert
    assert "gate.example.org" in superlink_cert_names(layout)
    assert expiry - old_expiry > datetime.timedelta(days=27)


def test_renewal_without_the_ca_key_says_where_to_run_it(tmp_path):
    # Prepare
    layout = ensure_certificates(tmp_path)
    layout.ca_key.unlink()
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="needs the CA key"):
        renew_superlink_cert(layout)


def test_certs_command_writes_the_layout(tmp_path):
    # Prepare
    deploy_app.command("certs")(certs)
    out = tmp_path / "certs"
    # Execute
    result = CliRunner().invoke(
        deploy_app, ["certs", "--out", str(out), "--san", "hub.example.org"]
    )
    # Assert
    assert result.exit_code == 0, result.output
    layout = CertLayout(out)
    assert layout.superlink_cert.is_file() and layout.superexec_secret.is_file()
    assert "hub.example.org" in result.output
