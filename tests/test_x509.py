"""The certificate reader (qrscp/net/x509.py) against certificates made by the cryptography package, and
against any bytes at all: a peer's certificate is read before it is verified."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pki import PKI

from qrscp.net.x509 import Certificate


@pytest.fixture(scope="module")
def der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A certificate issued by a test CA, in DER."""
    identity = PKI(tmp_path_factory.mktemp("x509")).issue("reader")
    return identity.certificate.public_bytes(serialization.Encoding.DER)


def test_reads_what_dcmtk_logs(der: bytes) -> None:
    certificate = Certificate.parse(der)
    assert certificate.subject == "/O=qrscp tests/CN=reader"
    assert certificate.issuer == "/O=qrscp tests/CN=qrscp test CA"
    assert (certificate.version, certificate.key_type, certificate.key_bits) == (3, "RSA", 2048)
    assert certificate.details()[2] == "Serial no.  : -1"   # a 20-byte random serial: ASN1_INTEGER_get's -1


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_bytes_give_a_certificate_or_a_value_error(der: bytes, data: st.DataObject) -> None:
    """Truncated, mutated or random bytes: a certificate or ValueError, never another exception."""
    mutant = bytearray(der)
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        mutant = mutant[:data.draw(st.integers(0, len(mutant)))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            mutant[data.draw(st.integers(0, len(mutant) - 1))] = data.draw(st.integers(0, 255))
    else:
        mutant = bytearray(data.draw(st.binary(max_size=600)))
    try:
        Certificate.parse(bytes(mutant))
    except ValueError:
        pass
