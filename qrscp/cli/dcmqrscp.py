"""The ``dcmqrscp`` program: command line, logging, configuration, network, privileges, then serve.

Exit codes are the reference's (docs/process.md §4): 0 after a shutdown request, 1 for command-line errors,
10 for configuration, network and privilege errors.
"""
from __future__ import annotations

import codecs
import errno
import grp
import os
import pwd
import socket
import sys

from qrscp import DCMTK_VERSION, log
from qrscp.cli.command_lines import DCMTK_RELEASE_DATE, parse_args
from qrscp.config import association_profiles as assocconfig
from qrscp.config import config_file as config_module
from qrscp.config.options import Options
from qrscp.dicom import charset, transcoding
from qrscp.server import tls_contexts
from qrscp.server.supervisor import Supervisor, make_context

EXIT_COMMAND_LINE = 1
EXIT_CONFIG = 10
LOG = log.get_logger(log.APP)


class StartupError(Exception):
    """A fatal start-up problem: logged as ``F: <message>``, exit code 10."""


def listen(port: int, ip_family: str = "ipv4") -> socket.socket:
    """The listening socket on all interfaces, as DCMTK 3.7.0's: IPv4 (``-i4``, the default), IPv6 only
    (``-i6``) or both (``-i0``, IPv4 peers then arrive as IPv4-mapped IPv6 addresses).

    Unlike the reference, a port below 1024 is not refused up front for a non-root user: the bind
    decides, so ``CAP_NET_BIND_SERVICE`` (e.g. systemd's ``AmbientCapabilities``) is enough.
    """
    try:
        sock = socket.socket(socket.AF_INET if ip_family == "ipv4" else socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as error:
        raise StartupError(f"cannot initialize network: 0006:031c TCP Initialization Error: {error.strerror}") from error
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if ip_family != "ipv4":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(ip_family == "ipv6"))
        sock.bind(("", port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno in (errno.EACCES, errno.EPERM):
            raise StartupError(f"cannot listen on port {port}, insufficient privileges") from error
        raise StartupError(f"cannot initialize network: 0006:031c TCP Initialization Error: {error.strerror}") from error
    return sock


def preload() -> None:
    """Load now what the workers would load on first use: Python imports a codec when it is first looked
    up, so look up those of the character sets and idna, through which ``socket`` passes every host name,
    and the pixel codecs of the ``codecs`` extra with numpy (when installed). Once the user has changed, a
    Python installed where that user cannot read (pyenv, a virtual environment under /root or a home
    directory) can load nothing more (docs/process.md §1). qrscp's modules are all imported by now
    (tests/test_privileges.py checks that no import is left for later)."""
    for name in (*charset.CODECS, "idna"):
        codecs.lookup(name)
    transcoding.preload()


def drop_privileges(user_name: str, group_name: str) -> None:
    """setgid/setuid to the configured GroupName/UserName when running as root (docs/process.md §1),
    after loading everything the workers need."""
    if os.geteuid() != 0 or not (user_name or group_name):
        return
    preload()
    if group_name:
        try:
            gid = grp.getgrnam(group_name).gr_gid
        except KeyError:
            raise StartupError(f"bad group name {group_name}") from None
        try:
            os.setgroups([gid])
            os.setgid(gid)
        except OSError as error:
            raise StartupError(f"setgid: Unable to set group id to group {gid}: {error.strerror}") from error
    if user_name:
        try:
            uid = pwd.getpwnam(user_name).pw_uid
        except KeyError:
            raise StartupError(f"bad user name {user_name}") from None
        try:
            os.setuid(uid)
        except OSError as error:
            raise StartupError(f"setuid: Unable to set user id to user {uid}: {error.strerror}") from error


def start(options: Options) -> int:
    """Everything after the command line; the exit code."""
    profiles = None
    if options.assoc_config is not None:  # DCMTK reads it with the options: its errors exit 1
        try:
            profiles = assocconfig.load_profiles(*options.assoc_config)
        except assocconfig.AssocConfigError as error:
            LOG.critical("%s", error)
            return EXIT_COMMAND_LINE
    try:
        config = config_module.load(options.config_file)
    except config_module.ConfigFileError as error:
        LOG.critical("%s", error)
        return EXIT_CONFIG
    if not 4096 <= config.max_pdu <= 131072:
        LOG.critical("invalid MaxPDUSize in config file")
        return EXIT_CONFIG
    try:
        listener = listen(options.port or config.port, options.ip_family)
        drop_privileges(config.user_name, config.group_name)
    except StartupError as error:
        LOG.critical("%s", error)
        return EXIT_CONFIG
    contexts = None
    if options.tls is not None:   # as DCMTK, after the privileges are dropped
        try:
            contexts = tls_contexts.build(options.tls)
        except tls_contexts.TLSSetupError as error:
            if error.detail:
                LOG.error("%s", error.detail)
            for line in error.lines:
                LOG.critical("%s", line)
            listener.close()
            return EXIT_CONFIG
    return Supervisor(make_context(options, config, profiles, contexts), listener).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dcmqrscp`` console script and of ``python -m qrscp``."""
    transcoding.keep_numpy_out()
    options = parse_args(sys.argv[1:] if argv is None else argv)
    if not log.configured():
        log.configure(options.log_level, options.log_config)
    LOG.debug("$dcmtk: dcmqrscp v%s %s $\n", DCMTK_VERSION, DCMTK_RELEASE_DATE)  # as DCMTK's -d begins
    return start(options)
