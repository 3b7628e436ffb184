"""The configuration file parser (qrscp.config.config_file) and the shipped dcmqrscp.cfg, checked against DCMTK.

Expected texts are pinned here, so the tests stand without DCMTK; where DCMTK is installed the same files
are also fed to its dcmqrscp, whose verdict and messages must agree (see ``Case.dcmtk``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    dcmtk,
    dcmtk_env,
    free_port,
    needs_dcmtk,
    run_qrscp,
    wait_for_port,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qrscp.config.config_file import AEEntry, Config, ConfigFileError, Peer, load, parse

SHIPPED = ROOT / "dcmqrscp.cfg"
AE_BEGIN, AE_END = b"AETable BEGIN\n", b"AETable END\n"
ACME = b"HostTable BEGIN\nacme = (ACME, localhost, 1234)\nHostTable END\n"

# DCMTK's verdicts other than a list of messages (see Case.dcmtk).
ACCEPTS, CRASHES, UNDEFINED, BAD_MAX_PDU = "accepts", "crashes", "undefined", "invalid MaxPDUSize"


@dataclass
class Case:
    """A configuration file and the CONFIG Error messages we print for it (line prefix, "!" and the
    final "Reading configuration file ... with errors" left out).

    ``dcmtk`` is DCMTK's outcome where it differs: None when it prints exactly our messages, a list of
    its messages when we add explanations of our own, ACCEPTS / CRASHES where it takes the file or
    crashes (we reject), UNDEFINED where it reads uninitialised memory (so its output varies).
    """

    id: str
    text: bytes
    errors: list[str]
    dcmtk: list[str] | str | None = None


def at(message: str, line: int) -> str:
    return f"{message} in configuration file, line {line}"


CASES = [
    Case("unknown-mnemonic", b"Foo = 1\n", [at('Unknown mnemonic "Foo"', 1)]),
    Case("keyword-needs-gap", b"NetworkTCPPort=104\n", [at('Unknown mnemonic "NetworkTCPPort=104"', 1)]),
    Case("keyword-case", b"\n# x\nnetworktcpport 104\n", [at('Unknown mnemonic "networktcpport"', 3)]),
    Case("indented-comment", b"   \n  # foo\n", [at('Unknown mnemonic "#"', 2)]),
    Case("missing-end", AE_BEGIN + b"X /tmp/x RW (10, 10mb) ANY\n", [at('No "AETable END"', 2)]),
    Case("end-without-begin", b"HostTable END\nVendorTable END\nAETable END\n",
         [at('No "HostTable BEGIN" before END', 1), at('No "VendorTable BEGIN" before END', 2),
          at('No "AETable BEGIN" before END', 3)]),
    Case("unknown-status", b"VendorTable FOO\nHostTable BEGIN,\n",
         [at('Unknown VendorTable status "FOO"', 1), at('Unknown HostTable status "BEGIN,"', 2)]),
    Case("missing-status", b"AETable\n", [at('Unknown AETable status ""', 1)], UNDEFINED),
    Case("illegal-status", AE_BEGIN + b"AETable FOO\n",
         [at('Illegal AETable status "FOO"', 2), at('No "AETable END"', 2)]),
    Case("illegal-status-stale", AE_BEGIN + b"X /tmp/x RW (10, 10mb) ANY\nAETable\n",
         [at('Illegal AETable status "/tmp/x"', 3), at('No "AETable END"', 3)]),
    Case("stale-status-reopens", b"VendorTable BEGIN\nVendorTable END\nVendorTable\n",
         [at('No "VendorTable END"', 3)]),
    Case("words-outlive-tables", b"VendorTable BEGIN\nVendorTable END\nHostTable BEGIN\nHostTable\n", []),
    Case("blank-line-ends-later-table", AE_BEGIN + b"X /x R (1, 1mb) ANY\n" + AE_END + AE_BEGIN + b"\t\n" + AE_END,
         [at('No "AETable BEGIN" before END', 6)]),
    Case("errors-go-on", AE_BEGIN + b"X /x RW (1, 1mb) ANY\nAETable END\nAETable FOO\nAETable BEGIN\n"
         b"AETable FOO\nAETable END\nFoo\n",
         [at('Unknown AETable status "FOO"', 4), at('Illegal AETable status "FOO"', 6),
          at('No "AETable END"', 6), at('No "AETable BEGIN" before END', 7), at('Unknown mnemonic "Foo"', 8)]),
    Case("no-symbolic-names", AE_BEGIN + b"X /tmp/x RW (10, 10mb) foo\n" + AE_END, ["No symbolic names defined"]),
    Case("symbolic-name-undefined", ACME + AE_BEGIN + b"X /tmp/x RW (10, 10mb) acme, foo\n" + AE_END,
         ['Symbolic name "foo" not defined']),
    Case("symbolic-name-later", b"HostTable BEGIN\nb = a\na = (A, h, 1)\nHostTable END\n",
         ['Symbolic name "a" not defined']),
    Case("vendor-without-hosttable", b'VendorTable BEGIN\n"V" = a\nVendorTable END\n',
         ["No symbolic names defined"]),
    Case("symbolic-name-without-peers", b"HostTable BEGIN\na =\nb = a\nHostTable END\n",
         [at('Entry "a" of HostTable has no peers', 2), 'No peers for symbolic name "a" defined'],
         ['No peers for symbolic name "a" defined']),
    Case("symbolic-name-itself", b"HostTable BEGIN\na = a\nHostTable END\n",
         ['No peers for symbolic name "a" defined']),
    Case("comment-after-values", b"HostTable BEGIN\na = (A, h, 1) # c\nHostTable END\n",
         ['Symbolic name "#" not defined']),
    Case("ae-without-peers", AE_BEGIN + b"X /tmp/x RW (10, 10mb)\n" + AE_END,
         [at('Entry "X" of AETable has no peers', 2)], []),
    Case("vendor-without-peers", ACME + b'VendorTable BEGIN\n"Acme" =\nVendorTable END\n',
         [at('Entry "Acme" of VendorTable has no peers', 5)], []),
    Case("quota-no-studies", AE_BEGIN + b"X /tmp/x RW (0, 10mb) ANY\n" + AE_END,
         [at('Entry "X" of AETable has an invalid quota "0, 10mb"', 2)], []),
    Case("quota-no-bytes", AE_BEGIN + b"X /tmp/x RW (10, 0kb) ANY\nY /y R (1, mb) ANY\n" + AE_END,
         [at('Entry "X" of AETable has an invalid quota "10, 0kb"', 2),
          at('Entry "Y" of AETable has an invalid quota "1, mb"', 3)], []),
    Case("quota-and-peers", AE_BEGIN + b"X /tmp/x RW (0, 10mb) foo\n" + AE_END,
         ["No symbolic names defined", at('Entry "X" of AETable has an invalid quota "0, 10mb"', 2)],
         ["No symbolic names defined"]),
    Case("quota-missing", AE_BEGIN + b"X /x R\n" + AE_END,
         [at('Entry "X" of AETable has no quota', 2), at('Entry "X" of AETable has no peers', 2)], []),
    Case("quota-unclosed", AE_BEGIN + b"X /x R (10, 10kb\n" + AE_END,
         [at('Value "(10, 10kb" without closing quote or line end inside AETable', 2)], []),
    Case("quota-unparsable", AE_BEGIN + b"X /x R (10) ANY\n" + AE_END,
         [at('Entry "X" of AETable has an invalid quota "10"', 2)], UNDEFINED),
    Case("blank-line-in-table", AE_BEGIN + b"   \n" + AE_END + b"HostTable BEGIN\n\t\nHostTable END\n",
         [at("Blank line inside AETable", 2), at("Blank line inside HostTable", 5)], []),
    Case("nul-line-in-table", AE_BEGIN + b"\0X /x R (1, 1mb) ANY\n" + AE_END,
         [at("Blank line inside AETable", 2)], []),
    Case("leading-blank-ae", AE_BEGIN + b" X /tmp/x RW (10, 10mb) ANY\n" + AE_END,
         ["No symbolic names defined",
          at("Line starting with a blank inside AETable (table lines start in column 1)", 2)],
         ["No symbolic names defined"]),
    Case("leading-blank-host", b"HostTable BEGIN\n a = (A, h, 1)\n  # comment\nHostTable END\n",
         ['Symbolic name "a" not defined',
          at("Line starting with a blank inside HostTable (table lines start in column 1)", 2),
          'Symbolic name "#" not defined',
          at("Line starting with a blank inside HostTable (table lines start in column 1)", 3)],
         ['Symbolic name "a" not defined', 'Symbolic name "#" not defined']),
    Case("long-comment", b"#" + b"x" * 600 + b"\nFoo\n",
         [at(f'Unknown mnemonic "{"x" * 90}"', 2), at('Unknown mnemonic "Foo"', 3)]),
    Case("line-of-511", b"#" + b"x" * 510 + b"\nFoo\n", [at('Unknown mnemonic "Foo"', 3)]),
    Case("line-of-510", b"#" + b"x" * 509 + b"\nFoo\n", [at('Unknown mnemonic "Foo"', 2)]),
    Case("long-table-line", AE_BEGIN + b"X /x R (1, 1mb) " + b"(A, h, 1), " * 60 + b"\n" + AE_END,
         [at("Line longer than 511 characters inside AETable", 3)], UNDEFINED),
    Case("nul-ends-line", b"NetworkTCPPort 1\0junk\n\0Foo\nBar\n", [at('Unknown mnemonic "Bar"', 3)]),
    Case("non-utf8", AE_BEGIN + b"\xc3\xa9 /x\xff R (1, 1mb) ANY\n" + AE_END + b"F\xc3\xa9\xff\n",
         [at('Unknown mnemonic "F\xe9\udcff"', 4)]),
    Case("user-name-missing", b"UserName\n", [at("No value for UserName", 1)], CRASHES),
    Case("group-name-missing", b"GroupName =\n", [at("No value for GroupName", 1)], CRASHES),
    Case("peer-without-host", AE_BEGIN + b"X /x R (5, 1gb) (A, h, 1), (B, h)\n" + AE_END,
         [at('Peer "B, h" needs an AE title, a host name and a port', 2)], ACCEPTS),
    Case("accepted", ACME + AE_BEGIN + b"X /x R (5, 1gb) acme\n" + AE_END, []),
]


def test_cases_have_unique_ids():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_error_messages(case: Case):
    _, errors = parse(case.text, "x.cfg")
    assert errors == case.errors


# --- DCMTK as the oracle ------------------------------------------------------------------------------------------

def dcmtk_verdict(path: Path, busy_port: int) -> list[str] | str:
    """DCMTK's verdict on a configuration file: its CONFIG Error messages, ACCEPTS, CRASHES or BAD_MAX_PDU.

    DCMTK gets a port that is taken, so a file it accepts ends in "cannot initialize network".
    """
    result = subprocess.run([dcmtk("dcmqrscp"), "-c", path.name, str(busy_port)], cwd=path.parent,
                            env=dcmtk_env(), capture_output=True, timeout=30)
    if result.returncode < 0:
        return CRASHES
    assert result.returncode == 10
    lines = result.stderr.decode("utf-8", "surrogateescape").splitlines()
    if lines[-1].startswith("F: cannot initialize network"):
        return ACCEPTS
    if lines == ["F: invalid MaxPDUSize in config file"]:
        return BAD_MAX_PDU
    assert lines[-2:] == [f'CONFIG Error: Reading configuration file "{path.name}" with errors!',
                          f"F: bad config file: {path.name}"]
    return [line.removeprefix("CONFIG Error: ").removesuffix("!") for line in lines[:-2]]


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture(scope="module")
def dcmtk_verdicts(tmp_path_factory, busy_port) -> dict[str, list[str] | str]:
    """DCMTK's verdict on every case, run in parallel."""
    directory = tmp_path_factory.mktemp("cases")
    paths = []
    for case in CASES:
        paths.append(directory / f"{case.id}.cfg")
        paths[-1].write_bytes(case.text)
    with ThreadPoolExecutor(8) as pool:
        verdicts = pool.map(lambda path: dcmtk_verdict(path, busy_port), paths)
        return {case.id: verdict for case, verdict in zip(CASES, verdicts)}


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.parametrize("case", [case for case in CASES if case.dcmtk != UNDEFINED], ids=lambda case: case.id)
def test_dcmtk_agrees(case: Case, dcmtk_verdicts):
    expected = (case.errors or ACCEPTS) if case.dcmtk is None else case.dcmtk
    assert dcmtk_verdicts[case.id] == expected


def our_run(path: Path, busy_port: int) -> subprocess.CompletedProcess:
    """Our dcmqrscp with the configuration file ``path`` (and a port that is taken, should it start)."""
    return run_qrscp("-c", path.name, str(busy_port), cwd=path.parent, timeout=30)


BAD_FILE = AE_BEGIN + b"X /tmp/x RW (10, 10mb) foo\n\xc3\xa9 /x R (1, 1mb) ANY\nAETable F\xffO\n"
BAD_FILE_STDERR = (b'CONFIG Error: No symbolic names defined!\n'
                   b'CONFIG Error: Illegal AETable status "F\xffO" in configuration file, line 4!\n'
                   b'CONFIG Error: No "AETable END" in configuration file, line 4!\n'
                   b'CONFIG Error: Reading configuration file "bad.cfg" with errors!\n'
                   b'F: bad config file: bad.cfg\n')


def test_bad_file_output(tmp_path, busy_port):
    (tmp_path / "bad.cfg").write_bytes(BAD_FILE)
    result = our_run(tmp_path / "bad.cfg", busy_port)
    assert (result.returncode, result.stderr) == (10, BAD_FILE_STDERR)


def test_missing_file_output(tmp_path, busy_port):
    result = our_run(tmp_path / "missing.cfg", busy_port)
    assert (result.returncode, result.stderr) == (10, b"F: cannot access missing.cfg: No such file or directory\n")


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.parametrize("name, text", [("bad.cfg", BAD_FILE), ("missing.cfg", None)], ids=["bad", "missing"])
def test_dcmtk_prints_the_same(tmp_path, busy_port, name, text):
    if text is not None:
        (tmp_path / name).write_bytes(text)
    ours = our_run(tmp_path / name, busy_port)
    theirs = subprocess.run([dcmtk("dcmqrscp"), "-c", name, str(busy_port)], cwd=tmp_path, env=dcmtk_env(),
                            capture_output=True, timeout=30)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)


def test_load_prints_and_raises(tmp_path, capsys):
    path = tmp_path / "bad.cfg"
    path.write_bytes(b"Foo\n")
    with pytest.raises(ConfigFileError) as raised:
        load(str(path))
    assert str(raised.value) == f"bad config file: {path}"
    assert capsys.readouterr().err == (f'CONFIG Error: Unknown mnemonic "Foo" in configuration file, line 1!\n'
                                       f'CONFIG Error: Reading configuration file "{path}" with errors!\n')


def test_unreadable_paths(tmp_path):
    with pytest.raises(ConfigFileError, match=f"^{re.escape(f'cannot access {tmp_path}: Is a directory')}$"):
        load(str(tmp_path))    # DCMTK reads a directory as an empty file
    with pytest.raises(ConfigFileError, match="^cannot access /nonexistent/x.cfg: No such file or directory$"):
        load("/nonexistent/x.cfg")


# --- values -------------------------------------------------------------------------------------------------------

def config(text: bytes) -> Config:
    parsed, errors = parse(text, "x.cfg")
    assert errors == []
    return parsed


def ae_row(row: bytes) -> AEEntry:
    (entry,) = config(ACME + AE_BEGIN + row + b"\n" + AE_END).ae_table
    return entry


def test_defaults():
    assert config(b"# nothing\n") == Config(path="x.cfg")
    assert Config() == Config(port=104, max_pdu=16384, max_associations=16, user_name="", group_name="",
                              charset_line=None, host_table={}, vendor_table={}, ae_table=[], path="")


@pytest.mark.parametrize("size, expected", [
    ("24mb", 25165824), ("10kb", 10240), ("10", -1), ("1000b", 1000), ("1gb", 1 << 30), ("2GB", 2 << 30),
    ("10mB", 10 << 20), ("5xb", 5), ("-5mb", -5 << 20), ("99999999999gb", 1215752191 << 30), ("7k", -1),
])
def test_quota_sizes(size, expected):
    assert ae_row(f"X /x RW (3, {size}) ANY".encode()).max_bytes_per_study == expected


@pytest.mark.parametrize("quota, studies", [("(3, 1mb)", 3), ("(-1,1mb)", -1), ("'+7 ,1mb'", 7),
                                            ('"99999999999, 1mb"', 1215752191)])
def test_quota_studies(quota, studies):
    assert ae_row(f"X /x RW {quota} ANY".encode()).max_studies == studies


@pytest.mark.parametrize("value, port", [("11112", 11112), ("= -5", -5), ("0x10", 104), ("abc", 104),
                                         ("99999999999", 1215752191), ("+8 9", 8)])
def test_network_tcp_port(value, port):
    assert config(f"NetworkTCPPort {value}\n".encode()).port == port


@pytest.mark.parametrize("value, max_pdu", [("8192", 8192), ("abc", 16384), ("0", 16384), ("-1", 0xFFFFFFFF),
                                            ("4294971392", 4096), ("-4294963200", 4096),
                                            ("99999999999999999999999", 0xFFFFFFFF), ("131073", 131073)])
def test_max_pdu_size(value, max_pdu):
    # As DCMTK's "invalid MaxPDUSize in config file" (4096..131072) shows: 4294971392 and "abc" pass.
    assert config(f"MaxPDUSize = {value}\n".encode()).max_pdu == max_pdu


LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
NUMBER_TEXT = st.text(st.sampled_from("0123456789+- \tx"), max_size=25).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(NUMBER_TEXT)
def test_numbers_convert_as_glibc_sscanf(text):
    """NetworkTCPPort is read with %d, MaxPDUSize with %lu into an unsigned long preset to 0 then kept to
    32 bits; 0 means the default."""
    port, unsigned = ctypes.c_int(104), ctypes.c_ulong(0)
    LIBC.sscanf(text, b"%d", ctypes.byref(port))
    LIBC.sscanf(text, b"%lu", ctypes.byref(unsigned))
    parsed = config(b"NetworkTCPPort " + text + b"\nMaxPDUSize " + text + b"\n")
    assert (parsed.port, parsed.max_pdu) == (port.value or 104, unsigned.value % (1 << 32) or 16384)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])  # most texts
@given(NUMBER_TEXT, st.sampled_from(["b", "B", "kb", "KB", "mb", "Mb", "gb", "gB", "xb", "", "k"]))  # are no quota
def test_quotas_convert_as_glibc(number, unit):
    """maxStudies: sscanf("%d , %s"); maxBytesPerStudy: atoi of the size times the unit's factor."""
    size = number.strip() + unit.encode()
    studies, size_word = ctypes.c_int(0), ctypes.create_string_buffer(512)
    assume(LIBC.sscanf(number + b", " + size, b"%d , %s", ctypes.byref(studies), size_word) == 2)
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit[:-1].lower(), 1) if unit.endswith(("b", "B")) else 0
    expected = LIBC.atoi(size_word.value) * factor if factor else -1
    assume(studies.value != 0 and expected != 0)    # a quota of 0 is an error
    entry = ae_row(b"X /x RW (" + number + b", " + size + b") ANY")
    assert (entry.max_studies, entry.max_bytes_per_study) == (studies.value, expected)


@needs_dcmtk
@pytest.mark.dcmtk
def test_max_pdu_size_range_like_dcmtk(tmp_path, busy_port):
    for value in ("4095", "4096", "131072", "131073", "abc", "-1", "4294971392", "-4294963200"):
        path = tmp_path / "pdu.cfg"
        path.write_text(f"MaxPDUSize {value}\n")
        in_range = 4096 <= load(str(path)).max_pdu <= 131072
        assert dcmtk_verdict(path, busy_port) == (ACCEPTS if in_range else BAD_MAX_PDU), value


def test_globals():
    parsed = config(b"MaxAssociations 3\nMaxAssociations x\nUserName = 'u v'\nGroupName\t\"g\" h\n"
                    b"ApplicationTitle A\nApplicationContext\nImplementationClass 1\nImplementationVersion\n"
                    b"NetworkType x\nDisplay y\nDisplayPort 3\n\r\n\tNetworkTCPPort 5\n")
    assert (parsed.max_associations, parsed.user_name, parsed.group_name, parsed.port) == (3, "u v", "g", 5)


@pytest.mark.parametrize("text, values", [
    (b'SpecificCharacterSet = "ISO_IR 192", override, discard\n', ["ISO_IR 192", "override", "discard"]),
    (b"SpecificCharacterSet\n", []),
    (b"SpecificCharacterSet = fallback\nSpecificCharacterSet = abort\n", ["abort"]),
    (b"SpecificCharacterSet = fallback", []),    # a value without a gap after it is no value
])
def test_specific_character_set(text, values):
    assert config(text).charset_line == values


def test_crlf_and_last_line_without_newline():
    parsed = config(b"NetworkTCPPort = 7\r\n\r\nAETable BEGIN\r\nX /x RW (1, 10mb) ANY\r\nAETable END")
    assert (parsed.port, [entry.ae_title for entry in parsed.ae_table]) == (7, ["X"])


def test_ae_rows():
    assert ae_row(b'"MY AE" \'/tmp/x y\' RW (1, 10mb) ANY') == AEEntry("MY AE", "/tmp/x y", "RW", 1, 10 << 20, None)
    assert ae_row(b"\xc3\xa9 /x\xff R (1, 1mb)ANY, junk").storage_area == "/x\udcff"   # bytes survive
    for peers in (b"ANY", b'"ANY"', b"ANY, junk", b"(ANY) acme"):
        assert ae_row(b"X /x R (1, 1mb) " + peers).peers is None
    assert ae_row(b"X /x R (1, 1mb) ( A, h, 1), (B,h,2) (C, h, )").peers == [
        Peer("", "A", 0), Peer("B", "h", 2), Peer("C", "h", 0)]
    assert ae_row(b"X /x R (1, 1mb) (A, h, 99999999999 x)").peers == [Peer("A", "h", 1215752191)]


@pytest.mark.parametrize("access, writable", [("RW", True), ("WR", True), ("W", True), ("R", False),
                                              ("rw", False), ("RWX", False)])
def test_writable(access, writable):
    assert ae_row(f"X /x {access} (1, 1mb) ANY".encode()).writable is writable


LOOKUPS = (b"HostTable BEGIN\n"
           b"acme = (ACME1, acmehost, 5678), (ACME2, acmehost, 5679)\n"
           b"beta = acme, (BETA, LocalHost, 2)\n"
           b"store = (STORE, hostB, 3)\n"
           b"acme = (SHADOW, hostS, 4)\n"
           b"HostTable END\n"
           b"VendorTable BEGIN\n"
           b'"Acme" = acme\n'
           b'"Beta" = beta, (OTHER, h, 1)\n'
           b'"Acme" = (SHADOW, h, 1), store\n'
           b"VendorTable END\n"
           b"AETable BEGIN\n"
           b"GONE /gone RW (1, 1mb) ANY\n"
           b"AETable END\n"
           b"AETable BEGIN\n"
           b"ACME_STORE /a RW (9, 1024mb) beta, (STORE, hostA, 9)\n"
           b"ACME_STORE /second R (9, 1024mb) (LATE, h, 1)\n"
           b"OPEN /o R (9, 1024mb) ANY\n"
           b"AETable END\n")


def test_tables():
    parsed = config(LOOKUPS)
    acme = [Peer("ACME1", "acmehost", 5678), Peer("ACME2", "acmehost", 5679)]
    assert parsed.host_table == {"acme": acme, "beta": [*acme, Peer("BETA", "LocalHost", 2)],
                                 "store": [Peer("STORE", "hostB", 3)]}
    assert parsed.shadowed_hosts == [("acme", [Peer("SHADOW", "hostS", 4)])]
    assert parsed.vendor_table == {"Acme": acme, "Beta": [*acme, Peer("BETA", "LocalHost", 2), Peer("OTHER", "h", 1)]}
    assert parsed.shadowed_vendors == [("Acme", [Peer("SHADOW", "h", 1), Peer("STORE", "hostB", 3)])]
    # The second AETable section replaced the first.
    assert [(entry.ae_title, entry.storage_area) for entry in parsed.ae_table] == [
        ("ACME_STORE", "/a"), ("ACME_STORE", "/second"), ("OPEN", "/o")]


def test_lookups():
    parsed = config(LOOKUPS)
    assert parsed.ae_entry("ACME_STORE").storage_area == "/a"
    assert parsed.ae_entry("acme_store") is None and parsed.ae_entry("GONE") is None
    assert parsed.peer_in_ae_title("ACME_STORE", "BETA", "localhost")            # host: any case
    assert parsed.peer_in_ae_title("ACME_STORE", "LATE", "H")                    # second entry counts
    assert not parsed.peer_in_ae_title("ACME_STORE", "beta", "localhost")        # AE title: exact
    assert not parsed.peer_in_ae_title("ACME_STORE", "BETA", "127.0.0.1")
    assert parsed.peer_in_ae_title("OPEN", "ANYBODY", "anywhere")
    assert not parsed.peer_in_ae_title("GONE", "ANYBODY", "anywhere")
    assert parsed.peer_for_ae_title("STORE") == Peer("STORE", "hostA", 9)       # AETable before HostTable
    assert parsed.peer_for_ae_title("ACME2") == Peer("ACME2", "acmehost", 5679)
    assert parsed.peer_for_ae_title("SHADOW") == Peer("SHADOW", "hostS", 4)
    assert parsed.peer_for_ae_title("OTHER") is None                            # VendorTable only
    assert parsed.same_vendor("ACME1", "ACME2") and parsed.same_vendor("BETA", "OTHER")
    assert parsed.same_vendor("SHADOW", "STORE")
    assert not parsed.same_vendor("ACME1", "STORE") and not parsed.same_vendor("X", "X")


def test_stale_status_opens_a_table():
    parsed = config(b"HostTable BEGIN\nHostTable END\nAETable\nX /x RW (1, 10mb) ANY\nAETable END\n")
    assert [entry.ae_title for entry in parsed.ae_table] == ["X"]


def test_long_lines_are_read_in_pieces():
    assert config(b"NetworkTCPPort 104" + b" " * 600 + b"\n").port == 104    # the rest is a blank line
    row = b"X /x R (1, 1mb) " + b"(A, h, 1), " * 45
    assert len(row) == 511    # a whole read: its newline is read as an empty line of its own
    parsed, errors = parse(AE_BEGIN + row + b"\n" + AE_END + b"Foo\n", "x.cfg")
    assert parsed.ae_table[0].peers == [Peer("A", "h", 1)] * 45
    assert errors == [at('Unknown mnemonic "Foo"', 5)]


# --- robustness and differential fuzzing --------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1500))
def test_parse_never_raises_on_bytes(data):
    parsed, errors = parse(data, "x.cfg")
    assert isinstance(parsed, Config) and all(isinstance(error, str) for error in errors)


# Lines that, in any context, give DCMTK no uninitialised quota or host name (its crashes are skipped).
FUZZ_LINES = [
    b"HostTable BEGIN", b"HostTable END", b"VendorTable BEGIN", b"VendorTable END", b"AETable BEGIN",
    b"AETable END", b"AETable", b"HostTable", b"VendorTable", b"AETable FOO", b"HostTable END x",
    b"acme = (A, h, 1)", b"beta = acme, (B, LocalHost, 2)", b"gamma = beta acme", b"empty =",
    b"q = 'C, h, 3' \"D,h,4\"", b"X /tmp/x RW (10, 10mb) ANY", b"Y /tmp/y R (1, 1gb) acme, beta",
    b"Z /z W (0, 1mb) acme", b"W /w RW (2, 0kb) ANY", b"V /v RW (2, 10) (E, h, 5)", b"U /u RW (2, 10) nope",
    b"\"T T\" '/t t' RW (-1, -1b) gamma", b"S /s R (9, 9gb)", b'"Acme" = acme', b'"Beta" = beta, (F, g, 7)',
    b"Vend = nope", b"NetworkTCPPort = 104", b"MaxPDUSize = 4096", b"MaxAssociations 3", b"UserName = me",
    b"SpecificCharacterSet = fallback", b"# comment", b"", b"   ", b" acme = (A, h, 1)", b"Foo",
]
STATUS = re.compile(r'(status ").*?(" in configuration file, line)', re.DOTALL)


def comparable(verdict: list[str] | str) -> list[str] | str:
    """Messages with the table status words blanked: DCMTK may print uninitialised memory there."""
    if isinstance(verdict, str) or not verdict:
        return verdict
    return STATUS.sub(r"\1\2", "\n".join(verdict)).split("\n")


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    rest = iter(whole)
    return all(line in rest for line in part)


@needs_dcmtk
@pytest.mark.dcmtk
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from(FUZZ_LINES), min_size=1, max_size=12),
       newline=st.sampled_from([b"\n", b"\r\n"]), final_newline=st.booleans())
def test_dcmtk_differential(tmp_path, busy_port, lines, newline, final_newline):
    text = newline.join(lines) + (newline if final_newline else b"")
    path = tmp_path / "fuzz.cfg"
    path.write_bytes(text)
    theirs = comparable(dcmtk_verdict(path, busy_port))
    assume(theirs != CRASHES)
    _, errors = parse(text, path.name)
    ours = comparable(errors) if errors else ACCEPTS
    if ACCEPTS in (theirs, ours):
        assert theirs == ours
    else:
        assert is_subsequence(theirs, ours), (theirs, ours)


# --- the shipped dcmqrscp.cfg -------------------------------------------------------------------------------------

def test_shipped_config():
    parsed = load(str(SHIPPED))
    assert (parsed.port, parsed.max_pdu, parsed.max_associations) == (11112, 16384, 16)
    assert (parsed.user_name, parsed.group_name, parsed.charset_line) == ("", "", None)
    assert [(entry.ae_title, entry.storage_area, entry.writable, entry.peers is None) for entry in parsed.ae_table] == [
        ("COMMON", "storage/COMMON", True, True), ("ACME_STORE", "storage/ACME_STORE", True, False),
        ("READONLY", "storage/READONLY", False, True)]
    assert parsed.peer_for_ae_title("STORESCP") == Peer("STORESCP", "localhost", 11113)
    for host in ("localhost", "127.0.0.1"):
        assert parsed.peer_in_ae_title("ACME_STORE", "WORKSTATION", host)
        assert parsed.peer_in_ae_title("ACME_STORE", "STORESCP", host)
    assert not parsed.peer_in_ae_title("ACME_STORE", "OTHER", "localhost")
    assert parsed.same_vendor("STORESCP", "WORKSTATION")


def test_shipped_config_documents_every_key():
    text = SHIPPED.read_text()
    for key in ("NetworkTCPPort", "MaxPDUSize", "MaxAssociations", "UserName", "GroupName",
                "SpecificCharacterSet", "HostTable", "VendorTable", "AETable", "ApplicationTitle",
                "ApplicationContext", "ImplementationClass", "ImplementationVersion", "NetworkType",
                "Display", "DisplayPort", "ANY", "Quota", "Access"):
        assert re.search(rf"^#.*\b{key}\b", text, re.MULTILINE), key


def dcmtk_echo_outcomes(config_path: Path, probes: list[tuple[str, str]]) -> list[bool]:
    """Start DCMTK's dcmqrscp with ``config_path`` (in its directory) and C-ECHO it as each
    ``(called AE, calling AE)``: whether the association was accepted."""
    port = free_port()
    server = subprocess.Popen([dcmtk("dcmqrscp"), "-c", config_path.name, str(port)], cwd=config_path.parent,
                              env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=10, process=server)
        outcomes = []
        for called, calling in probes:
            echo = subprocess.run([dcmtk("echoscu"), "-aec", called, "-aet", calling, "127.0.0.1", str(port)],
                                  env=dcmtk_env(), capture_output=True, timeout=30)
            outcomes.append(echo.returncode == 0)
        return outcomes
    finally:
        server.kill()
        server.wait()
        server.stderr.close()


@needs_dcmtk
@pytest.mark.dcmtk
def test_dcmtk_serves_the_shipped_config(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "dcmqrscp.cfg")
    for area in ("COMMON", "ACME_STORE", "READONLY"):
        (tmp_path / "storage" / area).mkdir(parents=True)    # DCMTK does not create them
    probes = [("COMMON", "ANYONE"), ("ACME_STORE", "WORKSTATION"), ("ACME_STORE", "STORESCP"),
              ("ACME_STORE", "OTHER"), ("READONLY", "ANYONE"), ("common", "ANYONE")]
    parsed = load(str(SHIPPED))
    expected = [parsed.peer_in_ae_title(called, calling, "localhost") for called, calling in probes]
    assert expected == [True, True, True, False, True, False]
    assert dcmtk_echo_outcomes(tmp_path / "dcmqrscp.cfg", probes) == expected


@needs_dcmtk
@pytest.mark.dcmtk
def test_dcmtk_lookups_agree(tmp_path):
    """Second AETable section, duplicate AE titles, host names in another case: as DCMTK sees them."""
    (tmp_path / "area").mkdir()
    path = tmp_path / "lookups.cfg"
    path.write_bytes(b"AETable BEGIN\nFIRST area RW (1, 10mb) ANY\nAETable END\n"
                     b"AETable BEGIN\nDUP area RW (1, 10mb) (A, nohost, 1)\nDUP area RW (1, 10mb) (B, LOCALHOST, 1)\n"
                     b"OPEN area R (1, 10mb) ANY\nAETable END\n")
    probes = [("FIRST", "X"), ("DUP", "B"), ("DUP", "A"), ("DUP", "b"), ("OPEN", "X"), ("open", "X")]
    parsed = load(str(path))
    expected = [parsed.peer_in_ae_title(called, calling, "localhost") for called, calling in probes]
    assert expected == [False, True, False, False, True, False]
    assert dcmtk_echo_outcomes(path, probes) == expected
