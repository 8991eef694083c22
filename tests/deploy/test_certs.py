"""Certificates and site keys: formats Flower accepts, SANs, keep-existing rules."""

import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from typer.testing import CliRunner

from fedmed.cli.deploy import certs, deploy_app
from fedmed.deploy.certs import CertLayout, ensure_certificates, superlink_cert_names


def test_superlink_cert_is_signed_by_ca_and_names_compose_host_and_loopback(tmp_path):
    # Execute
    layout = ensure_certificates(tmp_path, 2, extra_names=["link.example.org"])
    # Assert
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(layout.superlink_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = superlink_cert_names(layout)
    assert {"superlink", "localhost", "127.0.0.1", "link.example.org"} <= set(names)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = load_pem_private_key(layout.superlink_key.read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_site_keys_are_p384_openssh_pairs_readable_by_owner_only(tmp_path):
    # Execute
    layout = ensure_certificates(tmp_path, 3)
    # Assert
    assert layout.site_ids() == [0, 1, 2]
    for site in range(3):
        private = load_ssh_private_key(layout.site_key(site).read_bytes(), None)
        public = load_ssh_public_key(layout.site_public_key(site).read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(private.curve, ec.SECP384R1)
        assert private.public_key() == public
        assert stat.S_IMODE(layout.site_key(site).stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.ca_key.stat().st_mode) == 0o600
    keys = {layout.site_public_key(s).read_bytes() for s in range(3)}
    assert len(keys) == 3


def test_adding_a_site_keeps_existing_keys_and_force_replaces_them(tmp_path):
    # Prepare
    layout = ensure_certificates(tmp_path, 2)
    before = [layout.site_key(s).read_bytes() for s in range(2)]
    ca_before = layout.ca_cert.read_bytes()
    # Execute
    ensure_certificates(tmp_path, 3)
    kept = [layout.site_key(s).read_bytes() for s in range(2)]
    ensure_certificates(tmp_path, 3, force=True)
    # Assert
    assert kept == before and layout.site_key(2).is_file()
    assert layout.ca_cert.read_bytes() != ca_before
    assert layout.site_key(0).read_bytes() != before[0]


def test_certs_command_writes_the_layout(tmp_path):
    # Prepare
    deploy_app.command("certs")(certs)
    out = tmp_path / "certs"
    # Execute
    result = CliRunner().invoke(
        deploy_app, ["certs", "--out", str(out), "--sites", "2"]
    )
    # Assert
    assert result.exit_code == 0, result.output
    layout = CertLayout(out)
    assert layout.site_ids() == [0, 1] and layout.superlink_cert.is_file()
    assert "site 1" in result.output
