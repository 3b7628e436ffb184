"""The settings a ``dcmqrscp`` command line yields (:class:`Options`), read by the layers above.

The command line itself (option tables, DCMTK's parsing rules and checks) is :mod:`qrscp.cli.command_lines`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from qrscp.dicom.uids import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE

DEFAULT_CONFIG_FILE = "dcmqrscp.cfg"

#: Explicit VR in the host's byte order first (``+x=``/``-x=``), then the other, then implicit VR.
LOCAL_FIRST = ((EXPLICIT_VR_LE, EXPLICIT_VR_BE) if sys.byteorder == "little"
               else (EXPLICIT_VR_BE, EXPLICIT_VR_LE)) + (IMPLICIT_VR_LE,)


@dataclass
class TLSSettings:
    """What the TLS options of a command line ask for (``+tls`` and the options that go with it)."""

    key_file: str
    cert_file: str
    #: ``+pw`` (the password), ``-pw`` (""), or None for ``+ps``: OpenSSL asks on the terminal.
    password: str | None = None
    der: bool = False                                        # ``-der``: keys and certificates in DER
    ca_files: list[str] = field(default_factory=list)        # ``+cf``
    ca_dirs: list[str] = field(default_factory=list)         # ``+cd``
    crl_files: list[str] = field(default_factory=list)       # ``+crl``
    crl_mode: str = "none"                                   # "leaf" (``+crv``) or "chain" (``+cra``)
    profile: str = "--profile-8996"                          # the long option of the security profile
    ciphersuites: list[str] = field(default_factory=list)    # ``+cs``, IANA names
    dh_params: str | None = None                             # ``+dp``
    request_sni: str | None = None                           # ``--request-sni`` (sub-associations)
    expect_sni: str | None = None                            # ``--expect-sni``
    seed_file: str | None = None                             # ``+rs``
    write_seed_file: str | None = None                       # ``+ws`` (the seed file) or ``+wf``
    #: ``-rc`` "require", ``-vc`` "verify" (if a certificate is sent), ``-ic`` "ignore".
    peer_certificate: str = "require"


@dataclass
class Options:
    """What a ``dcmqrscp`` command line asks for (defaults = no option given)."""

    port: int | None = None
    log_level: str = "warn"
    log_config: str | None = None
    config_file: str = DEFAULT_CONFIG_FILE
    single_process: bool = False
    require_find: bool = False
    no_parallel_store: bool = False
    disable_get: bool = False
    allow_shutdown: bool = False
    check_find: bool = False
    check_move: bool = False
    move_aetitle: bool = False
    move_host: bool = False
    move_vendor: bool = False
    no_patient_root: bool = False
    no_study_root: bool = False
    no_patient_study: bool = False
    #: Transfer syntaxes accepted on incoming presentation contexts, most preferred first (docs/association.md §2).
    incoming_ts: list[str] = field(default_factory=lambda: list(LOCAL_FIRST))
    #: Transfer syntaxes proposed on C-MOVE sub-associations, in proposal order (docs/association.md §4).
    outgoing_ts: list[str] = field(default_factory=lambda: list(LOCAL_FIRST))
    #: ``-xf``: (association configuration file, incoming profile, outgoing profile), names as given.
    assoc_config: tuple[str, str, str] | None = None
    access_control: bool = False
    connect_timeout: int | None = None
    acse_timeout: int = 30
    dimse_timeout: int | None = None
    max_pdu: int | None = None
    disable_host_lookup: bool = False
    refuse: bool = False
    reject: bool = False
    ignore: bool = False
    uid_padding: bool = False
    use_request_charset: bool | None = None
    #: Target character set of ``+A7`` (""), ``+U8``, ``+L1`` or ``+C``; None if none was given.
    convert_to: str | None = None
    transliterate: bool = False
    discard_illegal: bool = False
    bit_preserving: bool = False
    write_file: bool = True
    write_xfer: str | None = None
    enable_new_vr: bool = True
    group_length: str = "recalc"
    length_explicit: bool = True
    padding: tuple[int, int] | None = None
    compression_level: int | None = None
    #: ``-i4`` "ipv4" (default), ``-i6`` "ipv6", ``-i0`` "auto" (dual stack).
    ip_family: str = "ipv4"
    #: ``+tls`` and its options; None for plain TCP (``-tls``).
    tls: TLSSettings | None = None
