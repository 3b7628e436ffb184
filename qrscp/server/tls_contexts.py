"""The TLS contexts of a server started with ``+tls``: built once at start-up from the command line's
:class:`~qrscp.config.options.TLSSettings`, in DCMTK 3.7.0's order and with its messages.

One set of credentials and trust serves both directions, as DCMTK's single ``SSL_CTX`` does: the server
context for incoming associations, the client context for C-MOVE sub-associations (our certificate is
then the client certificate, and the destination's certificate is verified unless ``-ic``). A problem
that DCMTK treats as fatal raises :class:`TLSSetupError` (logged ``F:``, exit code 10); what it only
warns about is logged here (docs/command-line.md §2).
"""
from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass

from qrscp import log
from qrscp.config.options import TLSSettings
from qrscp.net import tls
from qrscp.net.x509 import Certificate

LOG = log.get_logger(log.TLS)

#: DCMTK's condition texts (``tlscond.cc``).
_UNKNOWN_CIPHERSUITE = "000b:0003 Unknown or invalid ciphersuite: {}"
_BAD_KEY = "000b:0004 Unable to load private TLS key from '{}'"
_BAD_CERTIFICATE = "000b:0005 Unable to load certificate from '{}'"
_MISMATCH = "000b:0006 Private key '{}' and certificate '{}' do not match"
_NOT_IN_PROFILE = "000b:000a Ciphersuite not allowed in current DICOM security profile"


class TLSSetupError(Exception):
    """A fatal TLS set-up problem: ``detail`` (OpenSSL's words) is logged at error level, then each of
    ``lines`` at fatal level."""

    def __init__(self, *lines: str, detail: str | None = None) -> None:
        super().__init__(lines[-1])
        self.lines = lines
        self.detail = detail


@dataclass(frozen=True)
class TLSContexts:
    """The server context (incoming associations) and the client context (sub-associations)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    #: The server name sub-associations ask for (``--request-sni``).
    request_sni: str | None


def build(settings: TLSSettings) -> TLSContexts:
    """Both contexts, or :class:`TLSSetupError` with DCMTK's fatal messages."""
    profile = tls.PROFILE_BY_OPTION[settings.profile]
    ciphers = _cipher_list(profile, settings.ciphersuites)
    contexts = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(purpose)
        context.check_hostname = False
        context.set_ciphers(ciphers)            # first: it sets the security level keys are loaded under
        context.minimum_version, context.maximum_version = profile.minimum, profile.maximum
        _load_trust(context, settings, warn=purpose == ssl.PROTOCOL_TLS_SERVER)
        _load_credentials(context, settings, profile)
        context.set_alpn_protocols([tls.ALPN_PROTOCOL])
        if settings.dh_params and purpose == ssl.PROTOCOL_TLS_SERVER:
            try:
                context.load_dh_params(settings.dh_params)
            except (OSError, ssl.SSLError):
                LOG.warning("unable to load temporary DH parameter file '%s', ignoring", settings.dh_params)
        if purpose == ssl.PROTOCOL_TLS_SERVER:
            context.verify_mode = {"require": ssl.CERT_REQUIRED, "verify": ssl.CERT_OPTIONAL,
                                   "ignore": ssl.CERT_NONE}[settings.peer_certificate]
            if settings.expect_sni:
                context.sni_callback = _sni_check(settings.expect_sni)
            if log.get_logger(log.DB).isEnabledFor(logging.INFO):   # the failure lines are logged at INFO;
                tls.PEER_CERTIFICATES.install(context)                # the hook costs on every TLS record
        else:
            context.verify_mode = ssl.CERT_NONE if settings.peer_certificate == "ignore" else ssl.CERT_REQUIRED
        contexts.append(context)
    _seed(settings)
    return TLSContexts(contexts[0], contexts[1], settings.request_sni)


def _load_trust(context: ssl.SSLContext, settings: TLSSettings, warn: bool) -> None:
    """``+cf`` files, ``+cd`` directories, ``+crl`` lists (a loaded CRL turns leaf checking on)."""
    for path in settings.ca_files:
        if not _load_verify(context, cafile=path, der=settings.der) and warn:
            LOG.warning("unable to load certificate file '%s', ignoring", path)
    for path in settings.ca_dirs:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        elif warn:
            LOG.warning("unable to load certificates from directory '%s', ignoring", path)
    crl_mode = settings.crl_mode
    for path in settings.crl_files:
        if _load_verify(context, cafile=path, der=settings.der):
            crl_mode = "leaf" if crl_mode == "none" else crl_mode
        elif warn:
            LOG.warning("unable to load CRL file '%s', ignoring", path)
    if crl_mode == "leaf":
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    elif crl_mode == "chain":
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN


def _load_verify(context: ssl.SSLContext, cafile: str, der: bool) -> bool:
    try:
        if der:
            with open(cafile, "rb") as file:
                data = file.read()
            if b"-----BEGIN X509 CRL" not in data:
                context.load_verify_locations(cadata=data)
                return True
        context.load_verify_locations(cafile=cafile)
    except (OSError, ssl.SSLError, ValueError):
        return False
    return True


def _load_credentials(context: ssl.SSLContext, settings: TLSSettings, profile: tls.Profile) -> None:
    """Our certificate and private key, checked against the profile as DCMTK checks them."""
    cert_file, key_file = settings.cert_file, settings.key_file
    try:
        with open(cert_file, "rb") as file:
            data = file.read()
        der = data if settings.der else ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
        certificate = Certificate.parse(der)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise TLSSetupError(_BAD_CERTIFICATE.format(cert_file), detail=f"OpenSSL error: {error}") from error
    _check_own_certificate(certificate, cert_file, profile)
    with tempfile.TemporaryDirectory(prefix="qrscp-tls-") as scratch:
        pem_cert, pem_key = cert_file, key_file
        if settings.der:
            pem_cert = _write(scratch, "cert.pem", ssl.DER_cert_to_PEM_cert(der).encode())
            pem_key = _der_key_as_pem(scratch, key_file)
        try:
            context.load_cert_chain(pem_cert, pem_key, password=settings.password)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "reason", None)
            if reason == "KEY_VALUES_MISMATCH":
                raise TLSSetupError(_MISMATCH.format(key_file, cert_file)) from error
            detail = f"TLS error: {reason.lower().replace('_', ' ')}" if reason else f"OpenSSL error: {error}"
            raise TLSSetupError(_BAD_KEY.format(key_file), detail=detail) from error


def _check_own_certificate(certificate: Certificate, path: str, profile: tls.Profile) -> None:
    """DCMTK's checks of our own certificate: the RFC 8996 profiles refuse RSA keys under 2048 bits and DSA
    keys; the others warn about short keys."""
    if profile.option in ("--profile-8996", "--profile-8996-mod"):
        if certificate.key_type == "RSA" and certificate.key_bits < 2048:
            raise TLSSetupError(
                "Key length of RSA public key too short: RFC 9325 requires at least 2048 bits for server RSA keys, "
                f"but the key in certificate file '{path}' is only {certificate.key_bits} bits.",
                _BAD_CERTIFICATE.format(path))
        if certificate.key_type == "DSA":
            raise TLSSetupError(f"DSA certificate '{path}' not permitted in the selected TLS profile because it "
                                "prevents the use of TLS 1.3.", _BAD_CERTIFICATE.format(path))
    elif certificate.key_type == "RSA" and certificate.key_bits < 2048:
        LOG.warning("Key length of RSA public key too short: RFC 9325 recommends at least 2048 bits for RSA keys, "
                    "but the key in certificate file '%s' is only %d bits.", path, certificate.key_bits)


def _der_key_as_pem(scratch: str, key_file: str) -> str:
    """A DER private key (PKCS#8, or PKCS#1 RSA / SEC1 EC) as a PEM file OpenSSL's loader reads."""
    try:
        with open(key_file, "rb") as file:
            der = file.read()
    except OSError:
        return key_file          # the loader reports it as DCMTK does
    import base64

    body = base64.encodebytes(der).decode()
    label = "ENCRYPTED PRIVATE KEY" if b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0d" in der[:40] else "PRIVATE KEY"
    return _write(scratch, "key.pem", f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode())


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(data)
    return path


def _cipher_list(profile: tls.Profile, extra: list[str]) -> str:
    """OpenSSL's cipher string for ``profile`` plus the ``+cs`` ciphersuites, strongest first (the server
    order DCMTK sorts into), security level 0 as DCMTK sets it."""
    names = list(profile.ciphersuites)
    for name in extra:
        names.append(_check_ciphersuite(name, profile))
    supported = tls.supported_openssl_names()
    order = {suite.iana_name: index for index, suite in enumerate(tls.CIPHERSUITES)}
    chosen = sorted(dict.fromkeys(names), key=order.__getitem__, reverse=True)
    openssl_names = [tls.CIPHERSUITE_BY_NAME[name].openssl_name for name in chosen
                     if tls.CIPHERSUITE_BY_NAME[name].openssl_name in supported]
    return ":".join(openssl_names + ["@SECLEVEL=0"])


def _check_ciphersuite(name: str, profile: tls.Profile) -> str:
    """A ``+cs`` ciphersuite, or :class:`TLSSetupError` as DCMTK's ``addCipherSuite`` words it."""
    suite = tls.CIPHERSUITE_BY_NAME.get(name)
    if suite is None:
        raise TLSSetupError(_UNKNOWN_CIPHERSUITE.format(name))
    if suite.openssl_name not in tls.supported_openssl_names():
        raise TLSSetupError(f"Ciphersuite '{name}' not supported by the OpenSSL library used to compile this "
                            "application.", _UNKNOWN_CIPHERSUITE.format(name))
    if not profile.extra_ciphersuites:
        raise TLSSetupError(f"Additional ciphersuites not permitted with security profile '{profile.name}'",
                            _NOT_IN_PROFILE)
    if profile.option == "--profile-null":
        return name
    if suite.null_cipher:
        raise TLSSetupError(f"Unencrypted ciphersuite '{name}' not permitted with security profile '{profile.name}'",
                            _NOT_IN_PROFILE)
    if profile.option == "--profile-8996":
        if suite.mac == "SHA1":
            raise TLSSetupError(f"Ciphersuite '{name}' using SHA-1 MAC not permitted with security profile "
                                f"'{profile.name}'", _NOT_IN_PROFILE)
        rfc = "RFC 9325"
        if suite.key_exchange == "DH":
            LOG.warning("Ciphersuite '%s' uses ephemeral finite-field Diffie-Hellman key agreement. RFC 9325 "
                        "recommends that such cipher suites should not be used.", name)
        if suite.cbc:
            LOG.warning("Ciphersuite '%s' uses CBC mode of operation. RFC 9325 recommends that such cipher suites "
                        "should not be used, unless both sides support the encrypt_then_mac extension (we do).", name)
    else:
        rfc = "RFC 7525"
    if suite.key_exchange == "RSA":
        LOG.warning("Ciphersuite '%s' uses RSA key transport. %s recommends that such cipher suites should not be "
                    "used.", name, rfc)
    return name


def _sni_check(expected: str):
    """The server's SNI callback of ``--expect-sni``: a client asking for another name is refused; one that
    asks for none is served."""
    def check(tls_sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        if server_name is not None and server_name != expected:
            LOG.error("SNI failure: client requested server '%s', my name is '%s'.", server_name, expected)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None
    return check


def _seed(settings: TLSSettings) -> None:
    """``+rs``: mix the file into OpenSSL's random pool (which seeds itself from the system anyway);
    ``+ws``/``+wf``: write fresh random bytes back for the next start."""
    if settings.seed_file:
        try:
            with open(settings.seed_file, "rb") as file:
                data = file.read(1 << 20)
            ssl.RAND_add(data, len(data))
        except OSError:
            LOG.warning("PRNG for TLS not seeded with sufficient random data.")
    if settings.write_seed_file:
        write_seed(settings.write_seed_file)


def write_seed(path: str) -> None:
    """Write 1024 random bytes to the seed file, as ``RAND_write_file`` does."""
    try:
        with open(path, "wb") as file:
            file.write(ssl.RAND_bytes(1024))
    except OSError:
        LOG.warning("000b:0007 Cannot write random seed '%s'", path)


def openssl_version() -> str:
    """The linked OpenSSL, as DCMTK prints ``OPENSSL_VERSION_TEXT``."""
    return re.sub(r"\s+", " ", ssl.OPENSSL_VERSION)
