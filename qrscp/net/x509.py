"""The few facts of an X.509 certificate DCMTK logs and checks, read from its DER bytes.

Python's ``ssl`` hands over a peer's certificate as DER (or as a dict only once verified); DCMTK logs the
subject and issuer in OpenSSL's one-line form, the serial number, the validity and the public key's type
and size, and refuses its own RSA keys under 2048 bits in the RFC 8996 profiles. This reader walks the
DER structure far enough for those, no further, and raises :class:`ValueError` for anything malformed.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

_SEQUENCE, _SET, _INTEGER, _BIT_STRING, _OID = 0x30, 0x31, 0x02, 0x03, 0x06
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_EXPLICIT_0 = 0xA0

#: Attribute types by OID, with OpenSSL's short names (``X509_NAME_oneline``).
_NAME_TYPES = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
    "2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
#: Public key algorithms by OID, as DCMTK names them (everything else is "unknown").
_KEY_TYPES = {"1.2.840.113549.1.1.1": "RSA", "1.2.840.10040.4.1": "DSA", "1.2.840.10046.2.1": "DH"}
_EC_KEY = "1.2.840.10045.2.1"
#: Bits of the named curves' keys (EVP_PKEY_bits).
_CURVE_BITS = {"1.2.840.10045.3.1.7": 256, "1.3.132.0.34": 384, "1.3.132.0.35": 521, "1.3.132.0.10": 256,
               "1.2.840.10045.3.1.1": 192, "1.3.132.0.33": 224}


def _read(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[offset], data[offset + 1]
    offset += 2
    if first & 0x80:
        count = first & 0x7F
        if not 0 < count <= 4 or offset + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    else:
        length = first
    if offset + length > len(data):
        raise ValueError("DER element runs past its container")
    return tag, data[offset:offset + length], offset + length


def _children(content: bytes) -> list[tuple[int, bytes]]:
    children, offset = [], 0
    while offset < len(content):
        tag, value, offset = _read(content, offset)
        children.append((tag, value))
    return children


def _oid(content: bytes) -> str:
    if not content:
        raise ValueError("empty OID")
    parts = [content[0] // 40 if content[0] < 80 else 2, content[0] % 40 if content[0] < 80 else content[0] - 80]
    value = 0
    for byte in content[1:]:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _name(content: bytes) -> str:
    """OpenSSL's one-line form of a Name: ``/C=DE/O=OFFIS/CN=client``."""
    out = []
    for tag, relative in _children(content):
        if tag != _SET:
            raise ValueError("bad RelativeDistinguishedName")
        for _tag, attribute in _children(relative):
            (oid_tag, oid), (_value_tag, value) = _children(attribute)[:2]
            if oid_tag != _OID:
                raise ValueError("bad attribute type")
            key = _oid(oid)
            out.append(f"/{_NAME_TYPES.get(key, key)}={value.decode('utf-8', 'backslashreplace')}")
    return "".join(out)


def _time(tag: int, content: bytes) -> str:
    """ASN1_TIME_print's form: ``Dec  6 04:25:13 2026 GMT``."""
    text = content.decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    moment = datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {moment.year} GMT"


@dataclass(frozen=True)
class Certificate:
    """What DCMTK shows of a certificate."""

    version: int
    serial: int
    issuer: str
    subject: str
    not_before: str
    not_after: str
    key_type: str
    key_bits: int

    @classmethod
    def parse(cls, der: bytes) -> Certificate:
        """The certificate in ``der``; :class:`ValueError` for anything that is not one (the bytes may be a
        peer's, unverified)."""
        try:
            return cls._parse(der)
        except (IndexError, ValueError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError(f"not a certificate: {error}") from None

    @classmethod
    def _parse(cls, der: bytes) -> Certificate:
        tag, certificate, _ = _read(der, 0)
        if tag != _SEQUENCE:
            raise ValueError("not a certificate")
        tbs_tag, tbs = _children(certificate)[0]
        if tbs_tag != _SEQUENCE:
            raise ValueError("not a TBSCertificate")
        fields = _children(tbs)
        version = 1
        if fields and fields[0][0] == _EXPLICIT_0:
            version = int.from_bytes(_children(fields[0][1])[0][1], "big") + 1
            fields = fields[1:]
        (_, serial), _algorithm, (_, issuer), (_, validity), (_, subject), (_, key_info) = fields[:6]
        (before_tag, before), (after_tag, after) = _children(validity)[:2]
        key_type, key_bits = _public_key(key_info)
        return cls(version, int.from_bytes(serial, "big", signed=True), _name(issuer), _name(subject),
                   _time(before_tag, before), _time(after_tag, after), key_type, key_bits)

    def details(self) -> list[str]:
        """The lines of DCMTK's ``dumpX509Certificate`` after its first."""
        serial = self.serial if -(1 << 63) <= self.serial < 1 << 63 else -1    # ASN1_INTEGER_get
        return [f"Subject     : {self.subject}", f"Issued by   : {self.issuer}", f"Serial no.  : {serial}",
                f"Validity    : not before {self.not_before}, not after {self.not_after}",
                f"Public key  : {self.key_type}, {self.key_bits} bits"]


def _public_key(key_info: bytes) -> tuple[str, int]:
    (_, algorithm), (_, bits) = _children(key_info)[:2]
    parts = _children(algorithm)
    oid = _oid(parts[0][1])
    key = bits[1:]                                   # a BIT STRING: unused-bits count first
    if oid == "1.2.840.113549.1.1.1":                # RSAPublicKey ::= SEQUENCE { modulus, exponent }
        _, public, _ = _read(key, 0)
        modulus = _children(public)[0][1].lstrip(b"\0")
        return "RSA", len(modulus) * 8 - (8 - modulus[0].bit_length()) if modulus else 0
    if oid == _EC_KEY:
        curve = _oid(parts[1][1]) if len(parts) > 1 and parts[1][0] == _OID else ""
        return "unknown", _CURVE_BITS.get(curve, 0)
    if oid in _KEY_TYPES and len(parts) > 1:         # DSA/DH: the size of the prime p
        prime = _children(parts[1][1])[0][1].lstrip(b"\0")
        return _KEY_TYPES[oid], len(prime) * 8 - (8 - prime[0].bit_length()) if prime else 0
    return _KEY_TYPES.get(oid, "unknown"), 0
