"""TLS for associations and sub-associations, as DCMTK 3.7.0's ``dcmtls`` does it, on Python's ``ssl``.

What lives here is TLS knowledge that does not depend on the configuration: DCMTK's table of ciphersuites
(IANA names, weakest first) and its security profiles, the handshake of an accepted connection, the words
DCMTK logs for a failed one (``000b:090b TLS error: wrong version number``) and the connection details it
logs at debug level. Contexts are built from the command line's settings by :mod:`qrscp.server.tls_contexts`
(docs/tls.md, docs/command-line.md §2).
"""
from __future__ import annotations

import functools
import select
import socket
import ssl
import time
from dataclasses import dataclass

from qrscp.net.x509 import Certificate

#: DCMTK's condition module number of dcmtls (``000b:...``) and the offset of OpenSSL's reason codes.
_MODULE = 0x000B
_SSL_REASON_OFFSET = 0x800
#: ALPN protocol identifier DCMTK offers and expects (PS3.15 B.1).
ALPN_PROTOCOL = "dicom"


@dataclass(frozen=True)
class CipherSuite:
    """A row of DCMTK's ciphersuite table (``tlsciphr.cc``)."""

    iana_name: str
    openssl_name: str
    key_exchange: str      # RSA, ECDH_ECDSA, ECDH_RSA (static), DH, ECDH (ephemeral)
    mac: str               # SHA1, SHA256, SHA384, AEAD, CBC_MAC

    @property
    def null_cipher(self) -> bool:
        return "_NULL_" in self.iana_name

    @property
    def cbc(self) -> bool:
        return "_CBC_" in self.iana_name


#: DCMTK 3.7.0's ciphersuites (TLS 1.2 and earlier), weakest first; the Camellia-GCM rows DCMTK compiles
#: only against an OpenSSL that defines them are left out, as a build against OpenSSL 3 leaves them out.
CIPHERSUITES = tuple(CipherSuite(*row) for row in (
    ("TLS_RSA_WITH_NULL_SHA", "NULL-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", "CAMELLIA128-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256", "RSA", "SHA256"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256", "RSA", "AEAD"),
    ("TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA", "ECDH-ECDSA-AES128-SHA", "ECDH_ECDSA", "SHA1"),
    ("TLS_ECDH_RSA_WITH_AES_128_CBC_SHA", "ECDH-RSA-AES128-SHA", "ECDH_RSA", "SHA1"),
    ("TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256", "ECDH-ECDSA-AES128-SHA256", "ECDH_ECDSA", "SHA256"),
    ("TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256", "ECDH-RSA-AES128-SHA256", "ECDH_RSA", "SHA256"),
    ("TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256", "ECDH-ECDSA-AES128-GCM-SHA256", "ECDH_ECDSA", "AEAD"),
    ("TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256", "ECDH-RSA-AES128-GCM-SHA256", "ECDH_RSA", "AEAD"),
    ("TLS_RSA_WITH_CAMELLIA_256_CBC_SHA", "CAMELLIA256-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA", "RSA", "SHA1"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256", "RSA", "SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384", "RSA", "AEAD"),
    ("TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA", "ECDH-ECDSA-AES256-SHA", "ECDH_ECDSA", "SHA1"),
    ("TLS_ECDH_RSA_WITH_AES_256_CBC_SHA", "ECDH-RSA-AES256-SHA", "ECDH_RSA", "SHA1"),
    ("TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384", "ECDH-ECDSA-AES256-SHA384", "ECDH_ECDSA", "SHA384"),
    ("TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384", "ECDH-RSA-AES256-SHA384", "ECDH_RSA", "SHA384"),
    ("TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384", "ECDH-ECDSA-AES256-GCM-SHA384", "ECDH_ECDSA", "AEAD"),
    ("TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384", "ECDH-RSA-AES256-GCM-SHA384", "ECDH_RSA", "AEAD"),
    ("TLS_DHE_DSS_WITH_AES_128_CBC_SHA", "DHE-DSS-AES128-SHA", "DH", "SHA1"),
    ("TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA", "DHE-DSS-CAMELLIA128-SHA", "DH", "SHA1"),
    ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA", "DH", "SHA1"),
    ("TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA", "DHE-RSA-CAMELLIA128-SHA", "DH", "SHA1"),
    ("TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", "DHE-DSS-AES128-SHA256", "DH", "SHA256"),
    ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", "DHE-RSA-AES128-SHA256", "DH", "SHA256"),
    ("TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", "DHE-DSS-AES128-GCM-SHA256", "DH", "AEAD"),
    ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256", "DH", "AEAD"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA", "ECDH", "SHA1"),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA", "ECDH", "SHA1"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256", "ECDH", "SHA256"),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256", "ECDH", "SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "ECDHE-ECDSA-AES128-CCM", "ECDH", "CBC_MAC"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "ECDHE-ECDSA-AES128-CCM8", "ECDH", "CBC_MAC"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDH", "AEAD"),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDH", "AEAD"),
    ("TLS_DHE_DSS_WITH_AES_256_CBC_SHA", "DHE-DSS-AES256-SHA", "DH", "SHA1"),
    ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "DHE-RSA-AES256-SHA", "DH", "SHA1"),
    ("TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA", "DHE-DSS-CAMELLIA256-SHA", "DH", "SHA1"),
    ("TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA", "DHE-RSA-CAMELLIA256-SHA", "DH", "SHA1"),
    ("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-CHACHA20-POLY1305", "DH", "AEAD"),
    ("TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", "DHE-DSS-AES256-SHA256", "DH", "SHA256"),
    ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "DHE-RSA-AES256-SHA256", "DH", "SHA256"),
    ("TLS_DHE_DSS_WITH_AES_256_GCM_SHA384", "DHE-DSS-AES256-GCM-SHA384", "DH", "AEAD"),
    ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384", "DH", "AEAD"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA", "ECDH", "SHA1"),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA", "ECDH", "SHA1"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384", "ECDH", "SHA384"),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384", "ECDH", "SHA384"),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDH", "AEAD"),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "ECDH", "AEAD"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "ECDHE-ECDSA-AES256-CCM", "ECDH", "CBC_MAC"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8", "ECDHE-ECDSA-AES256-CCM8", "ECDH", "CBC_MAC"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDH", "AEAD"),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDH", "AEAD"),
))
CIPHERSUITE_BY_NAME = {suite.iana_name: suite for suite in CIPHERSUITES}


@dataclass(frozen=True)
class Profile:
    """A DICOM TLS security profile as DCMTK 3.7.0 configures it (``tlsciphr.cc``)."""

    option: str                       # the long option that selects it
    name: str                         # as ``+ph`` lists it and messages name it
    ciphersuites: tuple[str, ...]     # IANA names, as DCMTK adds them
    minimum: ssl.TLSVersion           # the oldest protocol version it negotiates
    maximum: ssl.TLSVersion           # the newest
    retired: bool = False
    extra_ciphersuites: bool = True   # whether ``+cs`` may add to the list

    @property
    def listed_name(self) -> str:
        """The name with DCMTK's remark, as ``+ph`` lists it."""
        return self.name + (" (retired)" if self.retired else "")


_ECDHE_GCM_RSA = ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
                  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384")
TLS1_2, TLS1_3 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3

#: The profiles in the order ``+ph`` lists them; the first is the default (``+pg``).
PROFILES = (
    Profile("--profile-8996", "BCP 195 RFC 8996 TLS Profile",
            ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
             "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"), TLS1_2, TLS1_3),
    Profile("--profile-8996-mod", "Modified BCP 195 RFC 8996 TLS Profile",
            ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
             "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
             "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
             "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
             "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
            TLS1_2, TLS1_3, extra_ciphersuites=False),
    Profile("--profile-bcp195-nd", "Non-downgrading BCP 195 TLS Profile", _ECDHE_GCM_RSA, TLS1_2, TLS1_3,
            retired=True),
    Profile("--profile-bcp195", "BCP 195 TLS Profile",
            _ECDHE_GCM_RSA + ("TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
            ssl.TLSVersion.TLSv1, TLS1_3, retired=True),
    Profile("--profile-bcp195-ex", "Extended BCP 195 TLS Profile",
            _ECDHE_GCM_RSA + ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
            TLS1_2, TLS1_2, retired=True, extra_ciphersuites=False),
    Profile("--profile-basic", "Basic TLS Secure Transport Connection Profile",
            ("TLS_RSA_WITH_3DES_EDE_CBC_SHA",), ssl.TLSVersion.TLSv1, TLS1_2, retired=True),
    Profile("--profile-aes", "AES TLS Secure Transport Connection Profile",
            ("TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"), ssl.TLSVersion.TLSv1, TLS1_2,
            retired=True),
    Profile("--profile-null", "Authenticated unencrypted communication", ("TLS_RSA_WITH_NULL_SHA",),
            ssl.TLSVersion.TLSv1, TLS1_2, retired=True),
)
PROFILE_BY_OPTION = {profile.option: profile for profile in PROFILES}
DEFAULT_PROFILE = PROFILES[0]


@functools.cache
def supported_openssl_names() -> frozenset[str]:
    """The TLS 1.2 ciphersuites the linked OpenSSL offers at all (DCMTK asks for ``ALL:eNULL``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.set_ciphers("ALL:eNULL:@SECLEVEL=0")
    except ssl.SSLError:
        return frozenset()
    return frozenset(cipher["name"] for cipher in context.get_ciphers() if cipher["protocol"] != "TLSv1.3")


def supported_ciphersuites() -> list[CipherSuite]:
    """DCMTK's ciphersuites this OpenSSL supports, in table order (``+cc``)."""
    names = supported_openssl_names()
    return [suite for suite in CIPHERSUITES if suite.openssl_name in names]


def available_profiles() -> list[Profile]:
    """The profiles this OpenSSL can provide: DCMTK offers Basic only with 3DES, the NULL profile only with
    NULL ciphers."""
    names = supported_openssl_names()
    needs = {"--profile-basic": "DES-CBC3-SHA", "--profile-null": "NULL-SHA"}
    return [profile for profile in PROFILES if needs.get(profile.option, "") in names or profile.option not in needs]


class TLSFailure(Exception):
    """A TLS handshake that failed; ``str()`` is DCMTK's condition text (``000b:090b TLS error: ...``).
    ``vanished``: the peer closed the connection before finishing it (a port probe, say)."""

    def __init__(self, text: str, vanished: bool = False) -> None:
        super().__init__(text)
        self.vanished = vanished


def condition(error: BaseException) -> str:
    """DCMTK's condition text for an OpenSSL error: ``000b:<0x800 + reason> TLS error: <reason>`` for the SSL
    library's errors, ``000b:0017 OpenSSL I/O error (SSL_ERROR_SYSCALL)`` when the peer vanished."""
    if isinstance(error, ssl.SSLZeroReturnError):
        return f"{_MODULE:04x}:000e TLS connection closed by peer (SSL_ERROR_ZERO_RETURN)"
    if isinstance(error, ssl.SSLError) and error.reason and not isinstance(error, ssl.SSLEOFError):
        codes = getattr(ssl._ssl, "err_names_to_codes", {})   # type: ignore[attr-defined]
        reason = error.reason
        text = reason.lower().replace("_", " ")
        if isinstance(error, ssl.SSLCertVerificationError):
            text = f"certificate verify failed ({error.verify_message})" if error.verify_message else text
        code = codes.get(reason)                     # (library, reason number)
        number = _SSL_REASON_OFFSET + code[1] if code else _SSL_REASON_OFFSET
        return f"{_MODULE:04x}:{number:04x} TLS error: {text}"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"{_MODULE:04x}:0017 OpenSSL I/O error (SSL_ERROR_SYSCALL): the TLS handshake timed out"
    return f"{_MODULE:04x}:0017 OpenSSL I/O error (SSL_ERROR_SYSCALL)"


def accept(sock: socket.socket, context: ssl.SSLContext, timeout: float | None) -> ssl.SSLSocket:
    """The server side of the handshake on an accepted connection, all of it within ``timeout`` seconds
    (a peer that trickles its bytes gains nothing).

    Raises :class:`TLSFailure` with DCMTK's condition text (and the peer certificate's subject when the
    failure concerns a certificate the peer sent)."""
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    tls_sock.setblocking(False)
    PEER_CERTIFICATES.der = None
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                tls_sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                wanted = ([tls_sock], [])
            except ssl.SSLWantWriteError:
                wanted = ([], [tls_sock])
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and (left <= 0 or not any(select.select(*wanted, [], left))):
                raise TimeoutError("the TLS handshake timed out")
    except (OSError, ValueError) as error:
        subject = PEER_CERTIFICATES.subject()
        tls_sock.close()
        vanished = isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError))
        raise TLSFailure(condition(error) + (f" (peer certificate: {subject})" if subject else ""), vanished) from error
    tls_sock.setblocking(True)
    return tls_sock


def connect(sock: socket.socket, context: ssl.SSLContext, server_name: str | None,
            timeout: float | None) -> ssl.SSLSocket:
    """The client side of the handshake on a connected socket (a C-MOVE sub-association)."""
    sock.settimeout(timeout)
    try:
        tls_sock = context.wrap_socket(sock, server_side=False, server_hostname=server_name)
    except (OSError, ValueError) as error:
        sock.close()
        raise TLSFailure(condition(error)) from error
    tls_sock.settimeout(None)
    return tls_sock


class _PeerCertificates:
    """Keeps the first certificate a peer sent during the handshake in progress, so that a failed
    verification can still name its subject (``ssl`` shows a certificate only once it is verified). It
    listens through ``SSLContext._msg_callback``, CPython's message hook, which is called for every record
    of the connection: installed only where the failures are logged (``-v``, ``-d``). Where the hook is
    missing, failures are logged without the subject. A worker runs one handshake at a time, so one slot is
    enough."""

    def __init__(self) -> None:
        self.der: bytes | None = None

    def install(self, context: ssl.SSLContext) -> None:
        if hasattr(context, "_msg_callback"):
            context._msg_callback = self._message      # type: ignore[attr-defined]

    def _message(self, _conn: object, direction: str, version: object, content_type: object, message_type: object,
                 data: bytes) -> None:
        if (self.der is None and direction == "read" and message_type == _CERTIFICATE_MESSAGE
                and content_type == _HANDSHAKE and len(data) > 10):
            body = data[4:]
            if version == ssl.TLSVersion.TLSv1_3:   # a certificate_request_context comes first
                body = body[1 + body[0]:]
            length = int.from_bytes(body[3:6], "big")
            self.der = bytes(body[6:6 + length])

    def subject(self) -> str | None:
        return subject_line(self.der) if self.der else None


_HANDSHAKE = getattr(ssl, "_TLSContentType", None) and ssl._TLSContentType.HANDSHAKE   # type: ignore[attr-defined]
_CERTIFICATE_MESSAGE = getattr(ssl, "_TLSMessageType", None) and ssl._TLSMessageType.CERTIFICATE  # type: ignore
PEER_CERTIFICATES = _PeerCertificates()


def subject_line(der: bytes) -> str | None:
    """The subject of a DER certificate in OpenSSL's one-line form (``/CN=client``), or None."""
    try:
        return Certificate.parse(der).subject
    except ValueError:
        return None


def connection_details(tls_sock: ssl.SSLSocket) -> list[str]:
    """DCMTK's ``TLS CONNECTION DETAILS`` block (logged at debug level after a handshake)."""
    cipher_name, _protocol, bits = tls_sock.cipher() or ("", "", 0)
    lines = ["================== BEGIN TLS CONNECTION DETAILS =================",
             "Transport connection: TLS over TCP/IP",
             f"  Protocol    : {tls_sock.version()}",
             f"  Ciphersuite : {cipher_name}, encryption: {bits} bits"]
    der = tls_sock.getpeercert(binary_form=True)
    if der:
        try:
            certificate = Certificate.parse(der)
            lines += [f"Peer X.509v{certificate.version} Certificate", *("  " + line for line in certificate.details())]
        except ValueError as error:
            lines.append(f"Peer X.509 Certificate (does not parse: {error})")
    else:
        lines.append("Peer did not provide a certificate or certificate verification is disabled.")
    lines.append("=================== END TLS CONNECTION DETAILS ==================")
    return lines


def peer_subject(tls_sock: ssl.SSLSocket) -> str | None:
    """The subject of the peer's (verified) certificate, or None."""
    der = tls_sock.getpeercert(binary_form=True)
    return subject_line(der) if der else None
