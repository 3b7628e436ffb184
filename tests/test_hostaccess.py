"""``+ac``: hosts.allow / hosts.deny rules, on temporary rule files and against DCMTK's libwrap check.

The oracle test runs DCMTK's ``dcmqrscp +ac`` in a private mount namespace where /etc/hosts.allow and
/etc/hosts.deny are bind mounts of temporary files (libwrap reads them for every connection), rewrites
them case by case, and compares whether a C-ECHO gets through with :func:`host_allowed`'s verdict.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dcmtk, dcmtk_env, free_port, needs_dcmtk, run_dcmtk, wait_for_port
from hypothesis import given, settings
from hypothesis import strategies as st

from qrscp import log
from qrscp.net.hostaccess import host_allowed

ADDRESS = "127.0.0.1"


class Recorder(logging.Handler):
    """Collects the messages logged on a logger."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The warnings logged on ``dcmtk.dcmnet`` during the test."""
    logger = log.get_logger(log.NET)
    recorder = Recorder()
    logger.addHandler(recorder)
    saved_level = logger.level
    logger.setLevel(logging.WARNING)
    yield recorder.messages
    logger.removeHandler(recorder)
    logger.setLevel(saved_level)


def allowed(tmp_path: Path, allow: str, deny: str, address: str = ADDRESS,
            name: str | None = "localhost", daemon: str = "dcmqrscp") -> bool:
    """:func:`host_allowed` with the given contents of hosts.allow and hosts.deny."""
    (tmp_path / "hosts.allow").write_text(allow)
    (tmp_path / "hosts.deny").write_text(deny)
    return host_allowed(daemon, address, name, str(tmp_path / "hosts.allow"), str(tmp_path / "hosts.deny"))


#: Client patterns in ``hosts.deny`` ("dcmqrscp: <pattern>") and whether localhost/127.0.0.1 is denied.
CLIENT_PATTERNS = {
    "ALL": True, "127.0.0.1": True, "127.0.0.2": False,
    "127.0.0.0/255.0.0.0": True, "127.0.0.1/255.0.0.0": False, "128.0.0.0/8": False, "127.0.0.0/8": True,
    "127.0.0.1/32": True, "127.0.0.0/33": False, "127.0.0.0/255.0.0": False,
    "127.": True, "127.0.": True, "127.0.0.1.": False, "12.": False,
    "LOCAL": True, "KNOWN": True, "UNKNOWN": False, "PARANOID": False,
    "localhost": True, "LOCALHOST": True, ".localhost": False, "otherhost": False,
    "127.0.0.*": True, "127.0.0.?": True, "127.*": True, "local*": True, "l?calhost": True, "x*": False,
    "[::1]": False, "[::ffff:127.0.0.1]": False,
    "ALL@127.0.0.1": True, "KNOWN@127.0.0.1": False, "UNKNOWN@localhost": True, "root@127.0.0.1": False,
    "@netgroup": False,
    "10.0.0.1, 127.0.0.1": True, "10.0.0.1 127.0.0.1": True,
    "127.0.0.1 EXCEPT 127.0.0.1": False, "ALL EXCEPT 10.0.0.1": True,
    "ALL EXCEPT 127.0.0.0/8 EXCEPT 127.0.0.1": True, "ALL EXCEPT 127.0.0.0/8 EXCEPT 10.0.0.1": False,
    "EXCEPT 127.0.0.1": False,
}

#: Whole rule files: (hosts.allow, hosts.deny, access granted?).
RULE_FILES = [
    ("", "", True),
    ("", "dcmqrscp: ALL\n", False),
    ("", "dcmqrscp: ALL", False),  # no newline at the end
    ("dcmqrscp: 127.0.0.1\n", "ALL: ALL\n", True),
    ("sshd: ALL\n", "ALL: ALL\n", False),
    ("", "DCMQRSCP: 127.0.0.1\n", False),
    ("", "sshd, dcmqrscp: 127.0.0.1\n", False),
    ("", "sshd,dcmqrscp:127.0.0.1\n", False),
    ("", "ALL EXCEPT dcmqrscp: ALL\n", True),
    ("", "ALL EXCEPT sshd: ALL\n", False),
    ("", "dcmqrscp@ALL: ALL\n", False),
    ("", "dcmqrscp@127.0.0.1: ALL\n", True),
    ("", "dcmqrscp: \\\n  127.0.0.1\n", False),
    ("", "dcmqrscp: 10.0.0.1 \\\n  127.0.0.1\n", False),
    ("", "# dcmqrscp: ALL\n", True),
    ("", "  # dcmqrscp: ALL\n", False),  # not a comment: '#' is not in the first column
    ("", "dcmqrscp: 10.0.0.1 # 127.0.0.1\n", False),  # nor is this
    ("", "# comment \\\ndcmqrscp: ALL\n", True),  # continued comment
    ("", "\n   \n\tdcmqrscp: ALL\n", False),
    ("", "dcmqrscp: : ALL\n", True),
    ("", ": ALL\n", True),
    ("", "dcmqrscp:\n", True),
    ("dcmqrscp 127.0.0.1\n", "dcmqrscp: ALL\n", False),  # missing ":" separator: rule skipped
    ("", "sshd: ALL\ndcmqrscp: 10.0.0.1\ndcmqrscp: 127.0.0.1\n", False),
    # options
    ("", "dcmqrscp: ALL: allow\n", True),
    ("", "dcmqrscp: ALL: ALLOW\n", True),
    ("", "dcmqrscp: ALL: deny\n", False),
    ("dcmqrscp: ALL: deny\n", "", False),
    ("dcmqrscp: 127.0.0.1 : allow\n", "ALL: ALL\n", True),
    ("", "dcmqrscp: ALL: severity auth.info: allow\n", True),
    ("", "dcmqrscp: ALL: spawn /bin/echo a\\: b: allow\n", True),
    ("dcmqrscp: ALL: spawn /bin/true\n", "ALL: ALL\n", True),
    ("dcmqrscp: ALL: severity=auth.info\n", "ALL: ALL\n", True),
    ("dcmqrscp: ALL: keepalive: allow\n", "ALL: ALL\n", True),
    ("dcmqrscp: ALL: rfc931 1\n", "ALL: ALL\n", True),
    ("dcmqrscp: ALL:\n", "", False),  # missing option name
    ("dcmqrscp: ALL: allow: severity auth.info\n", "", False),  # allow not at the end
    ("dcmqrscp: ALL: allow extra\n", "", False),
    ("dcmqrscp: ALL: twist /bin/true\n", "", False),
    ("dcmqrscp: ALL: frob: allow\n", "", False),
    ("dcmqrscp: ALL: spawn\n", "", False),  # spawn needs a command
]


@pytest.mark.parametrize("pattern", list(CLIENT_PATTERNS))
def test_client_patterns(tmp_path: Path, pattern: str) -> None:
    assert allowed(tmp_path, "", f"dcmqrscp: {pattern}\n") is not CLIENT_PATTERNS[pattern]


@pytest.mark.parametrize("allow, deny, expected", RULE_FILES)
def test_rule_files(tmp_path: Path, allow: str, deny: str, expected: bool) -> None:
    assert allowed(tmp_path, allow, deny) is expected


@pytest.mark.parametrize("name, address, pattern, matches", [
    (None, "10.1.2.3", "UNKNOWN", True),
    (None, "10.1.2.3", "KNOWN", False),
    (None, "10.1.2.3", "LOCAL", False),
    ("ws1.example.org", "10.1.2.3", "LOCAL", False),
    ("ws1.example.org", "10.1.2.3", ".example.org", True),
    ("ws1.example.org", "10.1.2.3", ".EXAMPLE.ORG", True),
    ("ws1.example.org", "10.1.2.3", ".ample.org", False),
    ("ws1.example.org", "10.1.2.3", "ws1.example.org", True),
    ("ws1.example.org", "10.1.2.3", "*.example.org", True),
    ("ws1.example.org", "10.1.2.3", "ws1.", True),  # documented for addresses, libwrap does names too
    ("ws1.example.org", "10.1.2.3", "10.1.", True),
    ("ws1.example.org", "10.1.2.3", "ALL EXCEPT .example.org", False),
    ("10.1.2.3", "10.1.2.3", "10.1.2.", True),
    ("ws1", "::ffff:10.1.2.3", "10.1.2.3", True),  # an IPv4-mapped address is its IPv4 address
    ("ws1", "::ffff:10.1.2.3", "10.0.0.0/8", True),
    ("ws1", "2001:db8::5", "[2001:db8::5]", True),
    ("ws1", "2001:db8::5", "[2001:DB8::0:5]", True),
    ("ws1", "2001:db8::5", "[2001:db8::]/32", True),
    ("ws1", "2001:db8::5", "[2001:db9::]/32", False),
    ("ws1", "2001:db8::5", "[2001:db8::5]/129", False),
    ("ws1", "2001:db8::5", "10.0.0.0/8", False),
])
def test_names_and_addresses(tmp_path: Path, name: str | None, address: str, pattern: str,
                             matches: bool) -> None:
    assert allowed(tmp_path, "", f"dcmqrscp: {pattern}\n", address=address, name=name) is not matches


def test_pattern_file(tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("10.9.9.9\n  .example.org 127.0.0.0/8\n")
    deny = f"dcmqrscp: {tmp_path / 'clients'}\n"
    assert not allowed(tmp_path, "", deny)
    assert not allowed(tmp_path, "", deny, address="10.9.9.9", name=None)
    assert allowed(tmp_path, "", deny, address="10.9.9.8", name="ws1.example.com")
    assert allowed(tmp_path, "", f"dcmqrscp: {tmp_path / 'none'}\n")


def test_missing_rule_files_grant(tmp_path: Path) -> None:
    assert host_allowed("dcmqrscp", ADDRESS, None, str(tmp_path / "a"), str(tmp_path / "d"))
    assert host_allowed("dcmqrscp", ADDRESS, None, str(tmp_path), str(tmp_path))  # directories


def test_unreadable_rule_file_denies(tmp_path: Path, warnings: list[str]) -> None:
    (tmp_path / "file").write_text("")
    unreadable = str(tmp_path / "file" / "hosts.allow")  # ENOTDIR: exists in no readable way
    assert not host_allowed("dcmqrscp", ADDRESS, "localhost", unreadable, str(tmp_path / "none"))
    assert warnings == [f"cannot open {unreadable}: Not a directory"]


def test_rules_are_read_for_every_call(tmp_path: Path) -> None:
    assert not allowed(tmp_path, "", "dcmqrscp: ALL\n")
    assert allowed(tmp_path, "", "sshd: ALL\n")


def test_malformed_rules_warn(tmp_path: Path, warnings: list[str]) -> None:
    deny = "dcmqrscp 127.0.0.1\n# fine\ndcmqrscp: 127.0.0.0/99\ndcmqrscp: [zz]\ndcmqrscp: ALL: frob\n"
    assert not allowed(tmp_path, "", deny)
    path = tmp_path / "hosts.deny"
    assert warnings == [f'{path}, line 1: missing ":" separator',
                        "bad net/mask expression: 127.0.0.0/99",
                        "bad IPv6 address or network: [zz]",
                        f'{path}, line 5: bad option name: "frob": access denied']


def test_unsupported_option_warns(tmp_path: Path, warnings: list[str]) -> None:
    assert allowed(tmp_path, "dcmqrscp: ALL: spawn /bin/false\n", "")
    assert warnings == [f'{tmp_path / "hosts.allow"}, line 1: option "spawn" is not supported, ignored']


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("dcmqrsALLEXCPTknow@:.,/[]*?#\\ \n\t=1279f")), max_size=120),
       st.sampled_from([None, "localhost", "a.b"]))
def test_never_raises(tmp_path_factory: pytest.TempPathFactory, rules: str, name: str | None) -> None:
    directory = tmp_path_factory.mktemp("rules")
    for address in (ADDRESS, "::1", "not an address"):
        assert isinstance(allowed(directory, rules, rules, address=address, name=name), bool)


# --- DCMTK's own check --------------------------------------------------------------------------------------------

@pytest.fixture
def dcmtk_with_rules(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """DCMTK's dcmqrscp +ac whose /etc/hosts.allow and /etc/hosts.deny are the returned files."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not Path("/etc/hosts.deny").exists() \
            or not Path("/etc/hosts.allow").exists():
        pytest.skip("needs root, unshare and /etc/hosts.{allow,deny} for a private mount namespace")
    allow, deny = tmp_path / "hosts.allow", tmp_path / "hosts.deny"
    allow.write_text("")
    deny.write_text("")
    (tmp_path / "db").mkdir()
    (tmp_path / "qr.cfg").write_text(
        "NetworkTCPPort = 104\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRT {tmp_path / 'db'} RW (10, 1024mb) ANY\nAETable END\n")
    port = free_port()
    script = (f'mount --bind "{allow}" /etc/hosts.allow && mount --bind "{deny}" /etc/hosts.deny && '
              f'exec "{dcmtk("dcmqrscp")}" +ac -c "{tmp_path / "qr.cfg"}" {port}')
    server = subprocess.Popen(["unshare", "-m", "sh", "-c", script], env=dcmtk_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_for_port(port, timeout=10, process=server)
        except (RuntimeError, TimeoutError):
            pytest.skip("cannot run dcmqrscp in a private mount namespace here")
        yield port, allow, deny
    finally:
        server.kill()
        server.wait()


ORACLE_CASES = [
    ("", "dcmqrscp: ALL\n"),
    ("dcmqrscp: 127.0.0.1\n", "ALL: ALL\n"),
    ("", "ALL EXCEPT dcmqrscp: ALL\n"),
    ("", "dcmqrscp: ALL EXCEPT 127.0.0.0/8 EXCEPT 127.0.0.1\n"),
    ("", "dcmqrscp: 127.0.0.1/255.0.0.0\n"),
    ("", "dcmqrscp: 127.0.0.0/8\n"),
    ("", "dcmqrscp: 127.\n"),
    ("", "dcmqrscp: LOCAL\n"),
    ("", "dcmqrscp: UNKNOWN\n"),
    ("", "dcmqrscp: UNKNOWN@127.0.0.1\n"),
    ("", "dcmqrscp: KNOWN@127.0.0.1\n"),
    ("", "dcmqrscp: local*\n"),
    ("", "dcmqrscp: .localhost\n"),
    ("", "  # dcmqrscp: ALL\n"),
    ("", "dcmqrscp: 10.0.0.1 \\\n  127.0.0.1\n"),
    ("dcmqrscp 127.0.0.1\n", "dcmqrscp: ALL\n"),
    ("", "dcmqrscp: ALL: severity auth.info: allow\n"),
    ("dcmqrscp: ALL:\n", ""),
    ("dcmqrscp: ALL: allow: severity auth.info\n", ""),
    ("dcmqrscp: ALL: spawn /bin/true\n", "ALL: ALL\n"),
    ("dcmqrscp: ALL: frob: allow\n", ""),
]


@needs_dcmtk
@pytest.mark.dcmtk
def test_same_verdicts_as_dcmtk(dcmtk_with_rules: tuple[int, Path, Path]) -> None:
    port, allow, deny = dcmtk_with_rules
    client_name = socket.gethostbyaddr(ADDRESS)[0]  # what libwrap finds for 127.0.0.1
    verdicts = []
    for allow_text, deny_text in ORACLE_CASES:
        allow.write_text(allow_text)  # same inode: the bind mounts see the new rules
        deny.write_text(deny_text)
        echo = run_dcmtk("echoscu", "-to", "5", "-aet", "ECHOSCU", "-aec", "QRT", ADDRESS, str(port))
        ours = host_allowed("dcmqrscp", ADDRESS, client_name, str(allow), str(deny))
        verdicts.append((allow_text, deny_text, echo.returncode == 0, ours))
    assert any(theirs for _, _, theirs, _ in verdicts) and not all(theirs for _, _, theirs, _ in verdicts)
    assert [case for case in verdicts if case[2] != case[3]] == []
