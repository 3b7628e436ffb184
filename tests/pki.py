"""Certificates made at test time: a CA, certificates it signs, and the ones a server must refuse
(self-signed, expired, revoked, too short a key), written as PEM (and DER) files into a directory."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@dataclass
class Identity:
    """A key and its certificate, as files."""

    key: Path
    cert: Path
    certificate: x509.Certificate = field(repr=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qrscp tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class PKI:
    """A certification authority in ``directory`` and the identities it issues."""

    def __init__(self, directory: Path, name: str = "qrscp test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                   .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True))
        self.certificate = builder.sign(self._key, hashes.SHA256())
        self.cert = directory / f"{name.replace(' ', '-')}.pem"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.cert_der = directory / f"{name.replace(' ', '-')}.der"
        self.cert_der.write_bytes(self.certificate.public_bytes(serialization.Encoding.DER))

    def issue(self, common_name: str, *, self_signed: bool = False, expired: bool = False, key_size: int = 2048,
              elliptic: bool = False, password: bytes | None = None, der: bool = False) -> Identity:
        """A key and certificate for ``common_name`` (signed by this CA unless ``self_signed``)."""
        key = ec.generate_private_key(ec.SECP256R1()) if elliptic else \
            rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        start, end = (NOW - 10 * DAY, NOW - 5 * DAY) if expired else (NOW - DAY, NOW + 30 * DAY)
        issuer, signer = (_name(common_name), key) if self_signed else (self.certificate.subject, self._key)
        certificate = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(issuer)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(start).not_valid_after(end)
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                       .sign(signer, hashes.SHA256()))
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        suffix = "der" if der else "pem"
        key_path = self.directory / f"{common_name}-key.{suffix}"
        cert_path = self.directory / f"{common_name}-cert.{suffix}"
        key_path.write_bytes(key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encryption))
        cert_path.write_bytes(certificate.public_bytes(encoding))
        return Identity(key_path, cert_path, certificate)

    def revocation_list(self, *revoked: Identity) -> Path:
        """A CRL of this CA revoking ``revoked``."""
        builder = x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject) \
            .last_update(NOW - DAY).next_update(NOW + 30 * DAY)
        for identity in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(identity.certificate.serial_number)
                .revocation_date(NOW - DAY).build())
        path = self.directory / "revoked.crl.pem"
        path.write_bytes(builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path
