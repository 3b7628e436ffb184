"""The command lines of ``dcmqrscp`` and ``dcmqridx``: option tables, evaluation, the options they yield.

The tables are DCMTK 3.6.7's (``dcmqrscp --help``, ``dcmqridx --help``) plus what only the manual has
(``-vv/--very-verbose``, treated as ``--debug``) and qrscp's ``dcmqridx --check/--repair``; the help
default of ``--config`` is ``dcmqrscp.cfg`` in the working directory (docs/differences.md #37). Options
are evaluated in DCMTK's order with DCMTK's checks and messages (docs/command-line.md §1), so a bad command
line fails the same way, with the first error DCMTK would report.

Not done here: loading the ``-xf`` association configuration file. DCMTK does it right after the
network options (before the output options are checked) and ends with ``F: cannot read association
config file: ...`` and exit code 1; the caller of :func:`parse_args` has to do it before anything else.
"""
from __future__ import annotations

import locale
import logging
import os
import platform
import ssl
import sys
import sysconfig
import zlib
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar


from qrscp import DCMTK_VERSION, __version__, log
from qrscp.cli.cmdline import CommandLine, CommandLineError, ConsoleApp, ParamMode
from qrscp.config.options import DEFAULT_CONFIG_FILE, LOCAL_FIRST, Options, TLSSettings
from qrscp.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)
from qrscp.log import log4cplus as logconfig
from qrscp.net import tls

DCMTK_RELEASE_DATE = "2022-04-22"
#: The newest DCMTK release whose options qrscp takes (docs/command-line.md §2).
DCMTK_OPTIONS_VERSION = "3.7.0"

LITTLE_FIRST = (EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE)
BIG_FIRST = (EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE)

# The transfer syntax behind each compressed +x/-x option: (letter, long-name suffix, UID, help text).
_COMPRESSED = (
    ("s", "lossless", "1.2.840.10008.1.2.4.70", "default JPEG lossless TS"),
    ("y", "jpeg8", "1.2.840.10008.1.2.4.50", "default JPEG lossy TS for 8 bit data"),
    ("x", "jpeg12", "1.2.840.10008.1.2.4.51", "default JPEG lossy TS for 12 bit data"),
    ("v", "j2k-lossless", "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless TS"),
    ("w", "j2k-lossy", "1.2.840.10008.1.2.4.91", "JPEG 2000 lossy TS"),
    ("t", "jls-lossless", "1.2.840.10008.1.2.4.80", "JPEG-LS lossless TS"),
    ("u", "jls-lossy", "1.2.840.10008.1.2.4.81", "JPEG-LS lossy TS"),
    ("m", "mpeg2", "1.2.840.10008.1.2.4.100", "MPEG2 Main Profile @ Main Level TS"),
    ("h", "mpeg2-high", "1.2.840.10008.1.2.4.101", "MPEG2 Main Profile @ High Level TS"),
    ("n", "mpeg4", "1.2.840.10008.1.2.4.102", "MPEG4 AVC/H.264 HP / Level 4.1 TS"),
    ("l", "mpeg4-bd", "1.2.840.10008.1.2.4.103", "MPEG4 AVC/H.264 BD-compatible TS"),
    ("2", "mpeg4-2-2d", "1.2.840.10008.1.2.4.104", "MPEG4 AVC/H.264 HP / Level 4.2 TS (2D)"),
    ("3", "mpeg4-2-3d", "1.2.840.10008.1.2.4.105", "MPEG4 AVC/H.264 HP / Level 4.2 TS (3D)"),
    ("o", "mpeg4-2-st", "1.2.840.10008.1.2.4.106", "MPEG4 AVC/H.264 Stereo / Level 4.2 TS"),
    ("4", "hevc", "1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1 TS"),
    ("5", "hevc10", "1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / L5.1 TS"),
    ("r", "rle", "1.2.840.10008.1.2.5", "RLE lossless TS"),
    ("d", "deflated", DEFLATED_EXPLICIT_VR_LE, "deflated expl. VR little endian TS"),
)
#: Video transfer syntaxes are proposed alone on sub-associations (association.md §4); the others with LEE/BEE/LEI.
_PROPOSED_ALONE = frozenset("mhnl23o45")


@dataclass(frozen=True)
class Preference:
    """A ``+x…``/``-x…`` option and the transfer syntaxes it yields, most wanted first."""

    short: str
    long: str
    help: str
    syntaxes: tuple[str, ...]


def _preferences() -> tuple[tuple[Preference, ...], tuple[Preference, ...]]:
    """The ``+x…`` (incoming) and ``-x…`` (outgoing) options in DCMTK's order."""
    incoming = [Preference("+x=", "--prefer-uncompr", "prefer explicit VR local byte order (default)",
                           LOCAL_FIRST),
                Preference("+xe", "--prefer-little", "prefer explicit VR little endian TS", LITTLE_FIRST),
                Preference("+xb", "--prefer-big", "prefer explicit VR big endian TS", BIG_FIRST)]
    incoming += [Preference("+x" + letter, "--prefer-" + name, "prefer " + text, (uid,) + LITTLE_FIRST)
                 for letter, name, uid, text in _COMPRESSED]
    incoming.append(Preference("+xi", "--implicit", "accept implicit VR little endian TS only",
                               (IMPLICIT_VR_LE,)))
    outgoing = [
        Preference("-x=", "--propose-uncompr",
                   "propose all uncompressed TS, explicit VR\nwith local byte ordering first (default)",
                   LOCAL_FIRST),
        Preference("-xe", "--propose-little",
                   "propose all uncompressed TS, explicit VR\nlittle endian first", LITTLE_FIRST),
        Preference("-xb", "--propose-big", "propose all uncompressed TS, explicit VR\nbig endian first",
                   BIG_FIRST),
        Preference("-xi", "--propose-implicit", "propose implicit VR little endian TS only",
                   (IMPLICIT_VR_LE,)),
    ]
    for letter, name, uid, text in _COMPRESSED:
        if letter in _PROPOSED_ALONE:
            outgoing.append(Preference("-x" + letter, "--propose-" + name, "propose " + text, (uid,)))
        else:
            outgoing.append(Preference("-x" + letter, "--propose-" + name,
                                       f"propose {text}\nand all uncompressed transfer syntaxes",
                                       (uid,) + LITTLE_FIRST))
    return tuple(incoming), tuple(outgoing)


INCOMING_PREFERENCES, OUTGOING_PREFERENCES = _preferences()
#: ``+x…`` options that accept a compressed transfer syntax (deflated can always be decompressed).
_COMPRESSED_INCOMING = frozenset(p.long for p in INCOMING_PREFERENCES
                                 if p.syntaxes[0] not in LITTLE_FIRST + (DEFLATED_EXPLICIT_VR_LE,))

#: ``+t…`` options: the transfer syntax files are written with (None: as received).
WRITE_XFER = (("+t=", "--write-xfer-same", "write with same TS as input (default)", None),
              ("+te", "--write-xfer-little", "write with explicit VR little endian TS", EXPLICIT_VR_LE),
              ("+tb", "--write-xfer-big", "write with explicit VR big endian TS", EXPLICIT_VR_BE),
              ("+ti", "--write-xfer-implicit", "write with implicit VR little endian TS", IMPLICIT_VR_LE),
              ("+td", "--write-xfer-deflated", "write with deflated expl. VR little endian TS",
               DEFLATED_EXPLICIT_VR_LE))

#: ``-i4/-i6/-i0``: (long option, short option, help); the value each sets is the long option's tail.
IP_FAMILIES = (("--ipv4", "-i4", "use IPv4 only (default)"), ("--ipv6", "-i6", "use IPv6 only"),
               ("--ip-auto", "-i0", "use IPv6/IPv4 dual stack"))

#: The security profile options in DCMTK 3.7.0's order, with its help texts.
TLS_PROFILE_OPTIONS = (
    ("--profile-8996", "+pg", "BCP 195 RFC 8996 TLS Profile (default)"),
    ("--profile-8996-mod", "+pm", "Modified BCP 195 RFC 8996 TLS Profile"),
    ("--profile-bcp195-nd", "+py", "Non-downgrading BCP 195 TLS Profile (retired)"),
    ("--profile-bcp195", "+px", "BCP 195 TLS Profile (retired)"),
    ("--profile-bcp195-ex", "+pz", "Extended BCP 195 TLS Profile (retired)"),
    ("--profile-basic", "+pb", "Basic TLS Secure Transport Connection Profile\n(retired)"),
    ("--profile-aes", "+pa", "AES TLS Secure Transport Connection Profile\n(retired)"),
    ("--profile-null", "+pn", "Authenticated unencrypted communication\n(retired, was used in IHE ATNA)"),
)

#: ``-ll`` values (log4cplus names, any case) and the level each one means for qrscp.log.
LOG_LEVELS = {"off": "off", "fatal": "fatal", "error": "error", "warn": "warn", "info": "info",
              "debug": "debug", "trace": "trace", "all": "trace"}
#: Levels at which DCMTK's console application turns quiet (no error output, ``-q``).
_QUIET_LEVELS = ("off", "fatal")

#: DCMTK's build options that hold for qrscp: large files, a built-in data dictionary (pydicom's;
#: ``DCMDICTPATH`` is not read) with private tags, character set conversion.
_BUILD_OPTIONS = "lfs builtin-dict private-tags char-conv"


T = TypeVar("T")


@dataclass
class DcmqridxOptions:
    """What a ``dcmqridx`` command line asks for."""

    index_out: str
    files: list[str] = field(default_factory=list)
    print_index: bool = False
    not_new: bool = False
    log_level: str = "warn"
    log_config: str | None = None
    #: ``--check`` and ``--repair``: qrscp's additions (see qrscp.cli.dcmqridx).
    check: bool = False
    repair: bool = False


# -- the tables ----------------------------------------------------------------------------------

def _add_log_options(cmd: CommandLine, *, very_verbose: bool) -> None:
    """The logging options every DCMTK tool has (OFLog::addOptions), ``-vv`` for dcmqrscp."""
    cmd.option("--arguments", help="print expanded command line arguments")
    cmd.option("--quiet", "-q", "quiet mode, print no warnings and errors")
    cmd.option("--verbose", "-v", "verbose mode, print processing details")
    if very_verbose:
        cmd.option("--very-verbose", "-vv", "print more processing details")
    cmd.option("--debug", "-d", "debug mode, print debug information")
    cmd.option("--log-level", "-ll", "(fatal, error, warn, info, debug, trace)\nuse level l for the logger",
               values=1, value_help="[l]evel: string constant")
    cmd.option("--log-config", "-lc", "use config file f for the logger",
               values=1, value_help="[f]ilename: string")


def dcmqrscp_command_line() -> CommandLine:
    """The option table of ``dcmqrscp``."""
    long_width, short_width = 22, 4
    cmd = CommandLine(long_width=long_width, short_width=short_width, param_width=long_width + short_width + 4)
    cmd.param("port", "tcp/ip port number to listen on\n(default: in config file)", ParamMode.OPTIONAL)

    cmd.group("general options:", long_width, short_width + 2)
    cmd.option("--help", "-h", "print this help text and exit", exclusive=True)
    cmd.option("--version", help="print version information and exit", exclusive=True)
    _add_log_options(cmd, very_verbose=True)
    cmd.option("--config", "-c", "use specific configuration file", values=1,
               value_help=f"[f]ilename: string (default: {DEFAULT_CONFIG_FILE})")
    cmd.group("multi-process options:", long_width, short_width + 2)
    cmd.option("--single-process", "-s", "single process mode")
    cmd.option("--fork", help="fork child process for each assoc. (default)")

    cmd.group("database options:")
    cmd.subgroup("association negotiation:")
    cmd.option("--require-find", help="reject all MOVE/GET presentation contexts for\n"
                                      "which no correspond. FIND context is proposed")
    cmd.option("--no-parallel-store", help="reject multiple simultaneous STORE presentat.\n"
                                           "contexts for one application entity title")
    cmd.option("--disable-get", help="disable C-GET support")
    cmd.option("--allow-shutdown", help="allow external shutdown via private SOP class")
    cmd.subgroup("checking identifier validity:")
    cmd.option("--check-find", "-XF", "check C-FIND identifier validity")
    cmd.option("--no-check-find", help="do not check C-FIND identifier validity (def.)")
    cmd.option("--check-move", "-XM", "check C-MOVE identifier validity")
    cmd.option("--no-check-move", help="do not check C-MOVE identifier validity (def.)")
    cmd.subgroup("restriction of move targets:")
    cmd.option("--move-unrestricted", help="do not restrict move destination (default)")
    cmd.option("--move-aetitle", "-ZA", "restrict move dest. to requesting AE title")
    cmd.option("--move-host", "-ZH", "restrict move destination to requesting host")
    cmd.option("--move-vendor", "-ZV", "restrict move destination to requesting vendor")
    cmd.subgroup("restriction of query/retrieve models:")
    cmd.option("--no-patient-root", "-QP", "do not support Patient Root Q/R models")
    cmd.option("--no-study-root", "-QS", "do not support Study Root Q/R models")
    cmd.option("--no-patient-study", "-QO", "do not support Patient/Study Only Q/R models")

    cmd.group("network options:")
    cmd.subgroup("IP protocol version:")
    for long, short, text in IP_FAMILIES:
        cmd.option(long, short, text)
    cmd.subgroup("association negotiation profiles from configuration file:")
    cmd.option("--assoc-config-file", "-xf", "use profile i from f for incoming,\n"
                                             "and profile o from f for outgoing associations",
               values=3, value_help="[f]ilename, [i]n-prof, [o]ut-prof: string")
    cmd.subgroup("preferred network transfer syntaxes (incoming associations):")
    for preference in INCOMING_PREFERENCES:
        cmd.option(preference.long, preference.short, preference.help)
    cmd.subgroup("proposed transmission transfer syntaxes (outgoing associations):")
    for preference in OUTGOING_PREFERENCES:
        cmd.option(preference.long, preference.short, preference.help)
    cmd.subgroup("network host access control (tcp wrapper):")
    cmd.option("--access-full", "-ac", "accept connections from any host (default)")
    cmd.option("--access-control", "+ac", "enforce host access control rules")
    cmd.subgroup("other network options:")
    cmd.option("--timeout", "-to", "timeout for connection requests", values=1,
               value_help="[s]econds: integer (default: unlimited)")
    cmd.option("--acse-timeout", "-ta", "timeout for ACSE messages", values=1,
               value_help="[s]econds: integer (default: 30)")
    cmd.option("--dimse-timeout", "-td", "timeout for DIMSE messages", values=1,
               value_help="[s]econds: integer (default: unlimited)")
    cmd.option("--max-pdu", "-pdu", "set max receive pdu to n bytes\n(default: use value from configuration file)",
               values=1, value_help="[n]umber of bytes: integer (4096..131072)")
    cmd.option("--disable-host-lookup", "-dhl", "disable hostname lookup")
    cmd.option("--refuse", help="refuse association")
    cmd.option("--reject", help="reject association if no implement. class UID")
    cmd.option("--ignore", help="ignore store data, receive but do not store")
    cmd.option("--uid-padding", "-up", "silently correct space-padded UIDs")

    cmd.group("processing options:")
    cmd.subgroup("specific character set:")
    cmd.option("--use-request-charset", "+Cr",
               "try to convert all element values that are\n"
               "affected by Specific Character Set (0008,0005)\n"
               "to the one specified in the request data set,\n"
               "fall back to the one specified via\n"
               "--convert-to-xxx if that is not possible\n"
               "(default, unless overridden by config file)")
    cmd.option("--override-charset", "-Cr", "convert affected element values to the\n"
                                            "character set specified via --convert-to-xxx,\n"
                                            "ignoring the one specified in the request")
    cmd.option("--convert-to-ascii", "+A7", "convert affected element values to 7-bit ASCII\n"
                                            "(default, unless overridden by config file)")
    cmd.option("--convert-to-utf8", "+U8", "convert affected element values to UTF-8")
    cmd.option("--convert-to-latin1", "+L1", "convert affected element values to ISO 8859-1")
    cmd.option("--convert-to-charset", "+C", "convert affected element values to the char.\n"
                                             "set specified by the DICOM defined term c",
               values=1, value_help="[c]harset: string")
    cmd.option("--transliterate", "-Ct", "try to approximate characters that cannot be\n"
                                         "represented through similar looking characters")
    cmd.option("--discard-illegal", "-Cd", "discard characters that cannot be represented\n"
                                           "in destination character set")

    _add_tls_options(cmd)

    cmd.group("output options:")
    cmd.subgroup("bit preserving mode:")
    cmd.option("--normal", "-B", "allow implicit format conversions (default)")
    cmd.option("--bit-preserving", "+B", "write data exactly as read")
    cmd.subgroup("output file format:")
    cmd.option("--write-file", "+F", "write file format (default)")
    cmd.option("--write-dataset", "-F", "write data set without file meta information")
    cmd.subgroup("output transfer syntax (not with --bit-preserving or compressed transmission):")
    for short, long, text, _syntax in WRITE_XFER:
        cmd.option(long, short, text)
    cmd.subgroup("post-1993 value representations:")
    cmd.option("--enable-new-vr", "+u", "enable support for new VRs (UN/UT) (default)")
    cmd.option("--disable-new-vr", "-u", "disable support for new VRs, convert to OB")
    cmd.subgroup("group length encoding (not with --bit-preserving):")
    cmd.option("--group-length-recalc", "+g=", "recalculate group lengths if present (default)")
    cmd.option("--group-length-create", "+g", "always write with group length elements")
    cmd.option("--group-length-remove", "-g", "always write without group length elements")
    cmd.subgroup("length encoding in sequences and items (not with --bit-preserving):")
    cmd.option("--length-explicit", "+e", "write with explicit lengths (default)")
    cmd.option("--length-undefined", "-e", "write with undefined lengths")
    cmd.subgroup("data set trailing padding (not with --write-dataset or --bit-preserving):")
    cmd.option("--padding-off", "-p", "no padding (default)")
    cmd.option("--padding-create", "+p", "align file on multiple of f bytes\nand items on multiple of i bytes",
               values=2, value_help="[f]ile-pad [i]tem-pad: integer")
    cmd.subgroup("deflate compression level (only with -xd or --write-xfer-deflated/same):")
    cmd.option("--compression-level", "+cl", "0=uncompressed, 1=fastest, 9=best compression",
               values=1, value_help="[l]evel: integer (default: 6)")
    return cmd


def _add_tls_options(cmd: CommandLine) -> None:
    """DCMTK 3.7.0's TLS options (``DcmTLSOptions::addTLSCommandlineOptions`` for an acceptor and requestor);
    the Basic and NULL profiles only where the linked OpenSSL has their ciphers, as DCMTK offers them."""
    cmd.group("transport layer security (TLS) options:")
    cmd.subgroup("transport protocol stack:")
    cmd.option("--disable-tls", "-tls", "use normal TCP/IP connection (default)")
    cmd.option("--enable-tls", "+tls", "use authenticated secure TLS connection", values=2,
               value_help="[p]rivate key file, [c]ertificate file: string")
    cmd.subgroup("private key password (only with --enable-tls):")
    cmd.option("--std-passwd", "+ps", "prompt user to type password on stdin (default)")
    cmd.option("--use-passwd", "+pw", "use specified password", values=1, value_help="[p]assword: string ")
    cmd.option("--null-passwd", "-pw", "use empty string as password")
    cmd.subgroup("key and certificate file format:")
    cmd.option("--pem-keys", "-pem", "read keys and certs as PEM file (default)")
    cmd.option("--der-keys", "-der", "read keys and certificates as DER file")
    cmd.subgroup("certification authority:")
    cmd.option("--add-cert-file", "+cf", "add certificate file to list of certificates", values=1,
               value_help="[f]ilename: string")
    cmd.option("--add-cert-dir", "+cd", "add certificates in d to list of certificates", values=1,
               value_help="[d]irectory: string")
    cmd.option("--add-crl-file", "+crl", "add certificate revocation list file\n(implies --enable-crl-vfy)",
               values=1, value_help="[f]ilename: string")
    cmd.option("--enable-crl-vfy", "+crv", "enable leaf CRL verification")
    cmd.option("--enable-crl-all", "+cra", "enable full chain CRL verification")
    cmd.subgroup("security profile:")
    cmd.option("--list-profiles", "+ph", "list supported TLS profiles and exit", exclusive=True)
    offered = {profile.option for profile in tls.available_profiles()}
    for long, short, text in TLS_PROFILE_OPTIONS:
        if long in offered:
            cmd.option(long, short, text)
    cmd.subgroup("ciphersuite:")
    cmd.option("--list-ciphers", "+cc", "list supported TLS ciphersuites and exit", exclusive=True)
    cmd.option("--cipher", "+cs", "add ciphersuite to list of negotiated suites\n(not with --profile-bcp195-ex)",
               values=1, value_help="[c]iphersuite name: string")
    cmd.option("--dhparam", "+dp", "read DH parameters for DH/DSS ciphersuites", values=1,
               value_help="[f]ilename: string")
    cmd.subgroup("server name indication:")
    cmd.option("--no-sni", help="do not use SNI (default)")
    cmd.option("--request-sni", help="request server name s", values=1, value_help="[s]erver name: string")
    cmd.option("--expect-sni", help="expect requests for server name s", values=1, value_help="[s]erver name: string")
    cmd.subgroup("pseudo random generator:")
    cmd.option("--seed", "+rs", "seed random generator with contents of f", values=1, value_help="[f]ilename: string")
    cmd.option("--write-seed", "+ws", "write back modified seed (only with --seed)")
    cmd.option("--write-seed-file", "+wf", "write modified seed to file f", values=1,
               value_help="[f]ilename: string (only with --seed)")
    cmd.subgroup("peer authentication:")
    cmd.option("--require-peer-cert", "-rc", "verify peer cert, fail if absent (default)")
    cmd.option("--verify-peer-cert", "-vc", "verify peer certificate if present")
    cmd.option("--ignore-peer-cert", "-ic", "don't verify peer certificate")


def dcmqridx_command_line() -> CommandLine:
    """The option table of ``dcmqridx``."""
    cmd = CommandLine(long_width=10, short_width=3, param_width=17)
    cmd.param("index-out", "storage area for the index file (directory)")
    cmd.param("dcmfile-in", "DICOM image file to be registered in the index file", ParamMode.MULTI_OPTIONAL)
    cmd.group("options:")
    cmd.option("--help", "-h", "print this help text and exit", exclusive=True)
    cmd.option("--version", help="print version information and exit", exclusive=True)
    _add_log_options(cmd, very_verbose=False)
    cmd.option("--print", "-p", "list contents of database index file")
    cmd.option("--not-new", "-n", "set instance reviewed status to 'not new'")
    cmd.option("--check", help="check the index: descriptors, records, files\n(exit code 2 if something is wrong)")
    cmd.option("--repair", help="drop records of missing or wrong files, rebuild\n"
                                "study descriptors (old index kept as index.dat.bak)")
    return cmd


def _console_app(name: str, description: str) -> ConsoleApp:
    """The application identity DCMTK 3.6.7 prints in every header, below a line naming qrscp in the usage
    and version texts (docs/command-line.md §1)."""
    banner = (f"qrscp {__version__}: DCMTK's {name} reimplemented in Python "
              f"(emulates DCMTK {DCMTK_VERSION}, options up to {DCMTK_OPTIONS_VERSION})\n")
    return ConsoleApp(name, description, f"$dcmtk: {name} v{DCMTK_VERSION} {DCMTK_RELEASE_DATE} $", banner)


# -- evaluation ----------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> Options:
    """Evaluate a ``dcmqrscp`` command line (``argv`` without the program name) as DCMTK 3.6.7 does.

    ``-h`` and ``--version`` print and raise ``SystemExit(0)``; a bad command line prints DCMTK's error
    and raises ``SystemExit(1)``. ``--arguments`` logs the expanded arguments through the logging
    configured from the command line (it calls :func:`qrscp.log.configure`) and parsing continues.
    """
    app = _console_app("dcmqrscp", "DICOM image archive (central test node)")
    cmd = dcmqrscp_command_line()
    app.parse(cmd, argv, _program_name("dcmqrscp"))
    if cmd.find("--version"):
        _print_version(app, tls_library=True)
    if cmd.find("--list-ciphers"):
        suites = "".join(f"  {suite.iana_name}\n" for suite in tls.supported_ciphersuites())
        app.exit_with(f"{app.banner}{app.header()}\n{_host_info()}\nSupported TLS ciphersuites are:\n{suites}", 0)
    if cmd.find("--list-profiles"):
        profiles = "".join(f"- {profile.listed_name}{' (default)' if profile is tls.DEFAULT_PROFILE else ''}\n"
                           for profile in tls.available_profiles())
        app.exit_with(f"{app.banner}{app.header()}\n{_host_info()}Cryptographic algorithms implemented by: "
                      f"{ssl.OPENSSL_VERSION}\n\nSupported TLS Secure Transport Connection Profiles are:\n{profiles}", 0)
    options = Options()
    try:
        if cmd.param_count > 0:
            options.port = cmd.unsigned_param(1, 1, 65535)
        options.log_level, options.log_config = _evaluate_log_options(cmd, app)
        _evaluate_database_options(cmd, app, options)
        incoming, outgoing = _evaluate_network_options(cmd, app, options)
        _evaluate_output_options(cmd, app, options, incoming, outgoing)
        options.tls = _evaluate_tls_options(cmd, app)
    except CommandLineError as error:
        app.error(str(error))
    return options


def parse_dcmqridx_args(argv: list[str]) -> DcmqridxOptions:
    """Evaluate a ``dcmqridx`` command line (``argv`` without the program name) as DCMTK 3.6.7 does."""
    app = _console_app("dcmqridx", "Register a DICOM image file in an image database index file")
    cmd = dcmqridx_command_line()
    app.parse(cmd, argv, _program_name("dcmqridx"))
    if cmd.find("--version"):
        _print_version(app, tls_library=False)
    options = DcmqridxOptions(cmd.param_value(1))
    try:
        options.log_level, options.log_config = _evaluate_log_options(cmd, app)
    except CommandLineError as error:
        app.error(str(error))
    options.print_index = cmd.find("--print")
    options.not_new = cmd.find("--not-new")
    options.check = cmd.find("--check")
    options.repair = cmd.find("--repair")
    options.files = [cmd.param_value(index) for index in range(2, cmd.param_count + 1)]
    return options


def _program_name(default: str) -> str:
    """How the program was called, for ``--arguments`` (the tool's name under ``python -c/-m``)."""
    called = sys.argv[0] if sys.argv else ""
    if called in ("", "-c") or os.path.basename(called) == "__main__.py":
        return default
    return called


def _host_info() -> str:
    """DCMTK's host lines, with what holds here: the platform, the locale's encoding, the build options."""
    return (f"Host type: {sysconfig.get_platform()}\nCharacter encoding: {locale.getencoding()}\n"
            f"Build options: {_BUILD_OPTIONS}\n")


def _print_version(app: ConsoleApp, tls_library: bool) -> NoReturn:
    """``--version``: qrscp's line, then DCMTK's text with what holds here: the host lines and the libraries
    in use, OpenSSL after ZLIB as DCMTK 3.6.7's TLS-enabled tools list it (docs/command-line.md §1)."""
    from importlib.metadata import version   # pydicom's version without importing pydicom

    openssl = f"- {ssl.OPENSSL_VERSION}\n" if tls_library else ""
    text = (f"{app.banner}{app.header()}\n{_host_info()}\n"
            f"External libraries used:\n- ZLIB, Version {zlib.ZLIB_RUNTIME_VERSION}\n{openssl}"
            f"- Python, Version {platform.python_version()}\n- pydicom, Version {version('pydicom')}\n")
    app.exit_with(text, 0)


def _evaluate_log_options(cmd: CommandLine, app: ConsoleApp) -> tuple[str, str | None]:
    """``-q -v -vv -d -ll -lc --arguments`` as OFLog::configureFromCommandLine: (level, config file).

    Leaves ``app`` quiet when the level is above ERROR, as DCMTK does.
    """
    level = None
    with cmd.block():
        for long, verbosity in (("--debug", "debug"), ("--very-verbose", "debug"), ("--verbose", "info"),
                                ("--quiet", "fatal")):
            if cmd.defines(long) and cmd.find(long):
                level = verbosity
    level_given = cmd.find("--log-level")
    if level_given:
        app.check_conflict("--log-level", "--verbose, --debug or --quiet", level is not None)
        level = LOG_LEVELS.get(cmd.value().lower())
        if level is None:
            app.error("Invalid log level for --log-level option")
    config = None
    if cmd.find("--log-config"):
        app.check_conflict("--log-config", "--log-level", level_given)
        app.check_conflict("--log-config", "--verbose, --debug or --quiet", level is not None)
        config = cmd.value()
        app.quiet = _log_config_root_level(app, config) in _QUIET_LEVELS
    level = level or "warn"
    if config is None:
        app.quiet = level in _QUIET_LEVELS
    if cmd.find("--arguments"):
        _log_forced(cmd.arguments_message(), level, config, app.name)
    return level, config


def _log_config_root_level(app: ConsoleApp, path: str) -> str:
    """Check a ``-lc`` file as DCMTK does; return the level of its ``log4cplus.rootLogger`` (lower case)."""
    try:
        properties = logconfig.read_properties(path)
    except logconfig.LogConfigError as error:
        app.error(str(error))
    if not properties:
        app.error("Specified --log-config file does not contain any settings")
    if not any(key.startswith("log4cplus.") for key in properties):
        app.error("Specified --log-config file does not contain any valid settings")
    if "log4cplus.rootLogger" not in properties:
        app.error("Specified --log-config file does not set up log4cplus.rootLogger")
    return properties["log4cplus.rootLogger"].split(",")[0].strip().lower()


def _log_forced(message: str, level: str, config: str | None, appname: str) -> None:
    """Log ``message`` at INFO whatever the level (log4cplus forcedLog), through the logging that
    the command line configures."""
    log.configure(level if level in log.LEVELS else "fatal", config, appname=appname)
    logger = logging.getLogger("dcmtk")
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None))


def _rightmost(cmd: CommandLine, choices: dict[str, T], default: T) -> T:
    """The value of the right-most of the mutually exclusive ``choices`` given, else ``default``."""
    value = default
    with cmd.block():
        for option, choice in choices.items():
            if cmd.find(option):
                value = choice
    return value


def _evaluate_database_options(cmd: CommandLine, app: ConsoleApp, options: Options) -> None:
    """``-c``, ``-s/--fork`` and the database options."""
    if cmd.find("--config"):
        options.config_file = cmd.value()
    options.single_process = _rightmost(cmd, {"--single-process": True, "--fork": False}, options.single_process)
    options.require_find = cmd.find("--require-find")
    options.no_parallel_store = cmd.find("--no-parallel-store")
    options.disable_get = cmd.find("--disable-get")
    options.allow_shutdown = cmd.find("--allow-shutdown")
    options.check_find = _rightmost(cmd, {"--check-find": True, "--no-check-find": False}, options.check_find)
    options.check_move = _rightmost(cmd, {"--check-move": True, "--no-check-move": False}, options.check_move)
    # Not mutually exclusive: each option counts only right of the one found before (docs/process.md §2).
    with cmd.block():
        if cmd.find("--move-unrestricted"):
            options.move_aetitle = options.move_host = options.move_vendor = False
        if cmd.find("--move-aetitle"):
            options.move_aetitle = True
        if cmd.find("--move-host"):
            options.move_host = True
        if cmd.find("--move-vendor"):
            options.move_vendor = True
    options.no_patient_root = cmd.find("--no-patient-root")
    options.no_study_root = cmd.find("--no-study-root")
    options.no_patient_study = cmd.find("--no-patient-study")
    if options.no_patient_root and options.no_study_root and options.no_patient_study:
        app.error("cannot disable all Q/R models")


def _evaluate_network_options(cmd: CommandLine, app: ConsoleApp,
                              options: Options) -> tuple[Preference, Preference]:
    """Transfer syntax preferences, host access control, timeouts, ``-xf`` and character sets.

    Returns the chosen incoming (``+x…``) and outgoing (``-x…``) preference.
    """
    options.ip_family = _rightmost(cmd, {long: long[2:].replace("ip-auto", "auto") for long, _, _ in IP_FAMILIES},
                                   options.ip_family)
    incoming = _chosen_preference(cmd, INCOMING_PREFERENCES)
    outgoing = _chosen_preference(cmd, OUTGOING_PREFERENCES)
    options.incoming_ts = list(incoming.syntaxes)
    options.outgoing_ts = list(outgoing.syntaxes)
    options.access_control = _rightmost(cmd, {"--access-full": False, "--access-control": True}, options.access_control)
    if cmd.find("--timeout"):
        options.connect_timeout = cmd.signed_value(minimum=1)
    if cmd.find("--acse-timeout"):
        options.acse_timeout = cmd.signed_value(minimum=1)
    if cmd.find("--dimse-timeout"):
        options.dimse_timeout = cmd.signed_value(minimum=1)
    if cmd.find("--max-pdu"):
        options.max_pdu = cmd.unsigned_value(4096, 131072)
    options.disable_host_lookup = cmd.find("--disable-host-lookup")
    options.refuse = cmd.find("--refuse")
    options.reject = cmd.find("--reject")
    options.ignore = cmd.find("--ignore")
    options.uid_padding = cmd.find("--uid-padding")
    if cmd.find("--assoc-config-file"):
        for chosen, default in ((incoming, INCOMING_PREFERENCES[0]), (outgoing, OUTGOING_PREFERENCES[0])):
            app.check_conflict("--assoc-config-file", chosen.long, chosen is not default)
        options.assoc_config = (cmd.value(), cmd.value(), cmd.value())
    options.use_request_charset = _rightmost(cmd, {"--use-request-charset": True, "--override-charset": False}, options.use_request_charset)
    with cmd.block():
        for long, charset in (("--convert-to-ascii", ""), ("--convert-to-utf8", "ISO_IR 192"),
                              ("--convert-to-latin1", "ISO_IR 100")):
            if cmd.find(long):
                options.convert_to = charset
        if cmd.find("--convert-to-charset"):
            options.convert_to = cmd.value()
    options.transliterate = cmd.find("--transliterate")
    options.discard_illegal = cmd.find("--discard-illegal")
    return incoming, outgoing


def _chosen_preference(cmd: CommandLine, preferences: tuple[Preference, ...]) -> Preference:
    """The right-most of ``preferences`` on the command line (the first, the default, if none)."""
    chosen = preferences[0]
    with cmd.block():
        for preference in preferences:
            if cmd.find(preference.long):
                chosen = preference
    return chosen


def _evaluate_output_options(cmd: CommandLine, app: ConsoleApp, options: Options,
                             incoming: Preference, outgoing: Preference) -> None:
    """``+u/-u``, ``-B/+B``, ``+F/-F``, ``+t…``, ``+g…``, ``+e/-e``, ``-p/+p``, ``+cl`` and their conflicts."""
    options.enable_new_vr = _rightmost(cmd, {"--enable-new-vr": True, "--disable-new-vr": False}, options.enable_new_vr)
    options.bit_preserving = _rightmost(cmd, {"--normal": False, "--bit-preserving": True}, options.bit_preserving)
    options.write_file = _rightmost(cmd, {"--write-file": True, "--write-dataset": False}, options.write_file)
    with cmd.block():
        for _short, long, _text, syntax in WRITE_XFER:
            if cmd.find(long):
                if syntax is not None:
                    app.check_conflict(long, "--bit-preserving", options.bit_preserving)
                    app.check_conflict(long, incoming.long, incoming.long in _COMPRESSED_INCOMING)
                options.write_xfer = syntax
    with cmd.block():
        for long, mode in (("--group-length-recalc", "recalc"), ("--group-length-create", "create"),
                           ("--group-length-remove", "remove")):
            if cmd.find(long):
                app.check_conflict(long, "--bit-preserving", options.bit_preserving)
                options.group_length = mode
    with cmd.block():
        for long, explicit in (("--length-explicit", True), ("--length-undefined", False)):
            if cmd.find(long):
                app.check_conflict(long, "--bit-preserving", options.bit_preserving)
                options.length_explicit = explicit
    with cmd.block():
        if cmd.find("--padding-off"):
            options.padding = None
        if cmd.find("--padding-create"):
            app.check_conflict("--padding-create", "--write-dataset", not options.write_file)
            app.check_conflict("--padding-create", "--bit-preserving", options.bit_preserving)
            options.padding = (cmd.unsigned_value(minimum=0), cmd.unsigned_value(minimum=0))
    if cmd.find("--compression-level"):
        app.check_dependence("--compression-level", "--propose-deflated, --write-xfer-deflated or --write-xfer-same",
                             outgoing.long == "--propose-deflated"
                             or options.write_xfer in (None, DEFLATED_EXPLICIT_VR_LE))
        options.compression_level = cmd.unsigned_value(0, 9)


def _evaluate_tls_options(cmd: CommandLine, app: ConsoleApp) -> TLSSettings | None:
    """The TLS options as ``DcmTLSOptions::parseArguments`` evaluates them, last of all the options: the
    settings of ``+tls``, or None; each option that needs ``+tls`` says so when it comes without."""
    settings = TLSSettings("", "")
    secure = _rightmost(cmd, {"--disable-tls": False, "--enable-tls": True}, False)
    if secure:
        with cmd.block():
            cmd.find("--enable-tls")
            settings.key_file, settings.cert_file = cmd.value(), cmd.value()

    def needs_tls(option: str) -> None:
        app.check_dependence(option, "--enable-tls", secure)

    with cmd.block():
        if cmd.find("--std-passwd"):
            needs_tls("--std-passwd")
            settings.password = None
        if cmd.find("--use-passwd"):
            needs_tls("--use-passwd")
            settings.password = cmd.value()
        if cmd.find("--null-passwd"):
            needs_tls("--null-passwd")
            settings.password = ""
    with cmd.block():
        for long, der in (("--pem-keys", False), ("--der-keys", True)):
            if cmd.find(long):
                needs_tls(long)
                settings.der = der
    with cmd.block():
        for long, mode in (("--enable-crl-vfy", "leaf"), ("--enable-crl-all", "chain")):
            if cmd.find(long):
                needs_tls(long)
                settings.crl_mode = mode
    if cmd.find("--dhparam"):
        needs_tls("--dhparam")
        settings.dh_params = cmd.value()
    if cmd.find("--request-sni"):
        settings.request_sni = cmd.value()
    if cmd.find("--expect-sni"):
        settings.expect_sni = cmd.value()
    if cmd.find("--no-sni"):
        app.check_conflict("--no-sni", "--request-sni", settings.request_sni is not None)
        app.check_conflict("--no-sni", "--expect-sni", settings.expect_sni is not None)
        settings.request_sni = settings.expect_sni = None
    if cmd.find("--seed"):
        needs_tls("--seed")
        settings.seed_file = cmd.value()
    with cmd.block():
        if cmd.find("--write-seed"):
            needs_tls("--write-seed")
            app.check_dependence("--write-seed", "--seed", settings.seed_file is not None)
            settings.write_seed_file = settings.seed_file
        if cmd.find("--write-seed-file"):
            needs_tls("--write-seed-file")
            app.check_dependence("--write-seed-file", "--seed", settings.seed_file is not None)
            settings.write_seed_file = cmd.value()
    with cmd.block():
        for long, mode in (("--require-peer-cert", "require"), ("--ignore-peer-cert", "ignore"),
                           ("--verify-peer-cert", "verify")):
            if cmd.find(long):
                needs_tls(long)
                settings.peer_certificate = mode
    with cmd.block():
        for long, _short, _text in TLS_PROFILE_OPTIONS:
            if cmd.defines(long) and cmd.find(long):
                # DCMTK's check of --profile-aes names --profile-basic (tlsopt.cc)
                needs_tls("--profile-basic" if long == "--profile-aes" else long)
                settings.profile = long
    for long in ("--add-cert-file", "--add-cert-dir", "--add-crl-file"):
        if cmd.find(long):
            needs_tls(long)
    if cmd.find("--cipher"):
        needs_tls("--cipher")
        app.check_conflict("--cipher", "--profile-bcp195-ex", settings.profile == "--profile-bcp195-ex")
    for long, values in (("--add-cert-file", settings.ca_files), ("--add-cert-dir", settings.ca_dirs),
                         ("--add-crl-file", settings.crl_files), ("--cipher", settings.ciphersuites)):
        for _ in cmd.find_all(long):
            values.append(cmd.value())
    return settings if secure else None
