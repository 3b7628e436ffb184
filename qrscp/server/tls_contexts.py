"""The TLS contexts of a server started with ``+tls``: built once at start-up from the command line's
:class:`~qrscp.config.options.TLSSettings`, in DCMTK 3.7.0's order and with its messages.

One set of credentials and trust serves both directions, as DCMTK's single ``SSL_CTX`` does: the server
context for incoming associations, the client context for C-MOVE sub-associations (our certificate is
then the client certificate, and the destination's certificate is verified unless ``-ic``). A problem
that DCMTK treats as fatal raises :class:`TLSSetupError` (logged ``F:``, exit code 10); what it only
warns about is logged here (docs/command-line.md §2).
"""
from __future__ import annotations

import base64
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
    with tempfile.TemporaryDirectory(prefix="qrscp-tls-") as scratch:   # DER files as PEM for OpenSSL's loaders
        trust, crl_mode = _trust_files(settings, scratch)
        cert_file, key_file = _credential_files(settings, profile, scratch)
        for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
            context = ssl.SSLContext(purpose)
            context.check_hostname = False
            context.set_ciphers(ciphers)            # first: it sets the security level keys are loaded under
            context.minimum_version, context.maximum_version = profile.minimum, profile.maximum
            for kind, path in trust:
                context.load_verify_locations(**{kind: path})
            context.verify_flags |= _CRL_FLAGS[crl_mode]
            _load_credentials(context, settings, cert_file, key_file)
            context.set_alpn_protocols([tls.ALPN_PROTOCOL])
            if purpose == ssl.PROTOCOL_TLS_SERVER:
                _serve_settings(context, settings)
            else:
                context.verify_mode = ssl.CERT_NONE if settings.peer_certificate == "ignore" else ssl.CERT_REQUIRED
            contexts.append(context)
    _seed(settings)
    return TLSContexts(contexts[0], contexts[1], settings.request_sni)


#: ``+crv``/``+cra`` (or a loaded ``+crl``) -> OpenSSL's verification flags.
_CRL_FLAGS = {"none": ssl.VerifyFlags(0), "leaf": ssl.VERIFY_CRL_CHECK_LEAF, "chain": ssl.VERIFY_CRL_CHECK_CHAIN}


def _serve_settings(context: ssl.SSLContext, settings: TLSSettings) -> None:
    """What only the server context has: ``-rc``/``-vc``/``-ic``, ``+dp``, ``--expect-sni``, the hook that
    names a refused peer's certificate."""
    context.verify_mode = {"require": ssl.CERT_REQUIRED, "verify": ssl.CERT_OPTIONAL,
                           "ignore": ssl.CERT_NONE}[settings.peer_certificate]
    if settings.dh_params:
        try:
            context.load_dh_params(settings.dh_params)
        except (OSError, ssl.SSLError):
            LOG.warning("unable to load temporary DH parameter file '%s', ignoring", settings.dh_params)
    if settings.expect_sni:
        context.sni_callback = _sni_check(settings.expect_sni)
    if log.get_logger(log.DB).isEnabledFor(logging.INFO):   # the failure lines are logged at INFO;
        tls.PEER_CERTIFICATES.install(context)                # the hook costs on every TLS record


def _trust_files(settings: TLSSettings, scratch: str) -> tuple[list[tuple[str, str]], str]:
    """``+cf`` files, ``+cd`` directories and ``+crl`` lists that OpenSSL can load, as (``cafile``/``capath``,
    path) (DER ones converted to PEM in ``scratch``), each that it cannot named in a warning; and the CRL
    mode (a loaded CRL turns leaf checking on)."""
    trust: list[tuple[str, str]] = []
    crl_mode = settings.crl_mode
    for kind, paths, label in (("CERTIFICATE", settings.ca_files, "certificate file"),
                               ("X509 CRL", settings.crl_files, "CRL file")):
        for path in paths:
            pem = _as_pem(path, kind, settings.der, scratch)
            if pem is None:
                LOG.warning("unable to load %s '%s', ignoring", label, path)
                continue
            trust.append(("cafile", pem))
            if kind == "X509 CRL" and crl_mode == "none":
                crl_mode = "leaf"
    for path in settings.ca_dirs:
        if os.path.isdir(path):
            trust.append(("capath", path))
        else:
            LOG.warning("unable to load certificates from directory '%s', ignoring", path)
    return trust, crl_mode


def _as_pem(path: str, kind: str, der: bool, scratch: str) -> str | None:
    """A PEM file of the certificate or CRL in ``path`` that OpenSSL loads (``path`` itself unless ``der``),
    or None if there is none."""
    try:
        with open(path, "rb") as file:
            data = file.read()
        if der:
            path = _write(scratch, f"{len(os.listdir(scratch))}.pem", _pem(kind, data))
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)   # loads, or says why not
    except (OSError, ssl.SSLError, ValueError):
        return None
    return path


def _pem(label: str, der: bytes) -> bytes:
    return f"-----BEGIN {label}-----\n{base64.encodebytes(der).decode()}-----END {label}-----\n".encode()


def _credential_files(settings: TLSSettings, profile: tls.Profile, scratch: str) -> tuple[str, str]:
    """Our certificate file (a chain file is fine: the first certificate is ours) and key file, as PEM
    files OpenSSL's loader reads, the certificate checked against the profile as DCMTK checks it."""
    cert_file, key_file = settings.cert_file, settings.key_file
    try:
        with open(cert_file, "rb") as file:
            data = file.read()
        if settings.der:
            der = data
        else:
            block = _FIRST_CERTIFICATE.search(data.decode("ascii", "replace"))
            if block is None:
                raise ValueError("no PEM certificate in the file")
            der = ssl.PEM_cert_to_DER_cert(block.group(0))
        certificate = Certificate.parse(der)
    except (OSError, ValueError) as error:
        raise TLSSetupError(_BAD_CERTIFICATE.format(cert_file), detail=f"OpenSSL error: {error}") from error
    _check_own_certificate(certificate, cert_file, profile)
    if not settings.der:
        return cert_file, key_file
    try:
        with open(key_file, "rb") as file:
            key = file.read()
    except OSError:
        return _write(scratch, "cert.pem", _pem("CERTIFICATE", der)), key_file   # the loader reports it
    label = "ENCRYPTED PRIVATE KEY" if _PBES2_OID in key[:40] else "PRIVATE KEY"
    return _write(scratch, "cert.pem", _pem("CERTIFICATE", der)), _write(scratch, "key.pem", _pem(label, key))


#: The first PEM certificate of a file (ours; any that follow are its chain).
_FIRST_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
#: The DER encoding of PKCS#5's PBES2 OID (1.2.840.113549.1.5.13): an encrypted PKCS#8 key starts with it.
_PBES2_OID = bytes.fromhex("06092a864886f70d01050d")


def _load_credentials(context: ssl.SSLContext, settings: TLSSettings, cert_file: str, key_file: str) -> None:
    """Load our certificate (chain) and key into ``context``, with DCMTK's messages when they do not load."""
    try:
        context.load_cert_chain(cert_file, key_file, password=settings.password)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            raise TLSSetupError(_MISMATCH.format(settings.key_file, settings.cert_file)) from error
        detail = f"TLS error: {reason.lower().replace('_', ' ')}" if reason else f"OpenSSL error: {error}"
        raise TLSSetupError(_BAD_KEY.format(settings.key_file), detail=detail) from error


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
