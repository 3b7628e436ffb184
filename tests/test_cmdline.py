"""The command-line engine (qrscp.cli.cmdline) and the dcmqrscp/dcmqridx command lines (qrscp.cli.command_lines).

Expected texts were taken from DCMTK 3.6.7's ``/usr/bin/dcmqrscp`` and ``/usr/bin/dcmqridx``; the tests
marked ``needs_dcmtk`` check that DCMTK still prints exactly them, the others that we do.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import locale
import logging
import os
import platform
import ssl
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pydicom
import pytest
from conftest import ROOT, needs_dcmtk, run_dcmtk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrscp import __version__
from qrscp.cli.cmdline import (
    LONG_MAX,
    CommandLine,
    CommandLineError,
    ParamMode,
    ParseStatus,
    is_option,
    scan_signed,
    scan_unsigned,
    split_command_file,
)
from qrscp.cli.command_lines import DcmqridxOptions, parse_args, parse_dcmqridx_args
from qrscp.config.options import Options

LEE, BEE, LEI = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = [LEE, BEE, LEI]

#: DCMTK's help texts, as its programs print them (below their headers).
DATA = ROOT / "tests" / "data"
SCP_HEADER = "$dcmtk: dcmqrscp v3.6.7 2022-04-22 $\n\ndcmqrscp: DICOM image archive (central test node)\n"
IDX_HEADER = ("$dcmtk: dcmqridx v3.6.7 2022-04-22 $\n\n"
              "dcmqridx: Register a DICOM image file in an image database index file\n")


def banner(tool: str) -> str:
    """The line above DCMTK's header in our usage and version texts: which program this really is."""
    return (f"qrscp {__version__}: DCMTK's {tool} reimplemented in Python "
            "(emulates DCMTK 3.6.7, options up to 3.7.0)\n")


#: Prepended to every command line DCMTK runs, so that one it accepts stops at the configuration.
MISSING_CONFIG = ["-c", "/nonexistent/dcmqrscp.cfg"]

# Command files and log configurations the command lines below refer to (relative to the cwd).
FILES = {
    "args.txt": "-v\n  -XF   1234\t\n",
    "nested.txt": "@args.txt -pdu 5000",
    "quoted.txt": '"-c /nx"',
    "empty.txt": "",
    "comments.cfg": "# only a comment\n\n",
    "foreign.cfg": "foo=bar\n",
    "noroot.cfg": "log4cplus.logger.dcmtk = INFO\n",
    "root.cfg": "log4cplus.rootLogger = INFO, console\nlog4cplus.appender.console = log4cplus::NullAppender\n",
    "fatal.cfg": "  log4cplus.rootLogger  =  FATAL , console\r\n"
                 "log4cplus.appender.console = log4cplus::NullAppender\n",
    "include.cfg": "include root.cfg\n",
    "bang.cfg": "!log4cplus.rootLogger=INFO\n",
    "assoc.cfg": "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LocalEndianExplicit\n"
                 "[[PresentationContexts]]\n[Contexts]\nPresentationContext1 = VerificationSOPClass\\Uncompressed\n"
                 "[[Profiles]]\n[Incoming]\nPresentationContexts = Contexts\n"
                 "[Outgoing]\nPresentationContexts = Contexts\n",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory holding FILES; ``sys.argv[0]`` as DCMTK's program name."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dcmqrscp"])
    return tmp_path


@pytest.fixture
def restore_logging():
    """Undo the logging configuration ``--arguments`` makes."""
    logger = logging.getLogger("dcmtk")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def ours(parse, args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run our parser in-process: (exit status, stdout, stderr); status 10 stands for "accepted"."""
    try:
        parse(args)
        status = 10
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def dcmtk_run(tool: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    result = run_dcmtk(tool, *args, cwd=cwd, timeout=20)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# -- the engine ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argument, option", [
    ("-v", True), ("--verbose", True), ("+x=", True), ("--", True), ("-", False), ("+", False), ("", False),
    ("-5", False), ("+80", False), ("-9abc", False), ("@file", False), ("port", False)])
def test_option_or_parameter(argument: str, option: bool) -> None:
    assert is_option(argument) is option


def _libc_sscanf(text: str, conversion: bytes) -> int | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    value = ctypes.c_long() if conversion == b"%li" else ctypes.c_ulong()
    converted = libc.sscanf(text.encode(), conversion, ctypes.byref(value))
    return value.value if converted == 1 else None


@given(st.text(alphabet=" \t\v+-0123456789xXabcdefg8", max_size=25))
def test_integers_are_read_like_c_sscanf(text: str) -> None:
    assert scan_signed(text) == _libc_sscanf(text, b"%li")
    assert scan_unsigned(text) == _libc_sscanf(text, b"%lu")


@pytest.mark.parametrize("text, signed, unsigned", [
    ("0x10", 16, 0), ("010", 8, 10), ("0x", 0, 0), ("1x", 1, 1), (" +5", 5, 5), ("-5", -5, 2**64 - 5),
    ("99999999999999999999", LONG_MAX, 2**64 - 1), ("", None, None), ("-", None, None), ("abc", None, None)])
def test_integer_examples(text: str, signed: int | None, unsigned: int | None) -> None:
    assert (scan_signed(text), scan_unsigned(text)) == (signed, unsigned)


@pytest.mark.parametrize("content, words", [
    ("-v\n  -c   /nx\t\n", ["-v", "-c", "/nx"]),
    ("'a b'", ["a b"]),
    ('"a b"c', ["a b", "c"]),
    ('x"a b"d', ["xa b", "d"]),
    ('"a \\" b"', ["a \\", "b"]),
    ('"unterminated x y', ["unterminated x y"]),
    ('""', [""]),
    ('"', []),
    ('a"', ["a"]),
    ('" a  b "', [" a  b "]),
    ('"a\nb"', ["a\nb"]),
    ("\"a 'b\" c", ["a 'b", "c"]),
    ('x""y', ["x", "y"]),
    ('"a"b"c d"', ["a", "bc d"]),
    ("a\r\nb\r\n", ["a", "b"]),
    ("a\vb\fc", ["a\vb\fc"]),
])
def test_command_file_words(content: str, words: list[str]) -> None:
    """Observed with DCMTK 3.6.7 (``dcmqridx --arguments x @file``)."""
    assert split_command_file(content) == words


def _small_table() -> CommandLine:
    cmd = CommandLine(long_width=8, short_width=2, param_width=6)
    cmd.param("in", "input\nfile")
    cmd.param("out", "outputs", ParamMode.MULTI_OPTIONAL)
    cmd.group("general:", 8, 4)
    cmd.option("--help", "-h", "print help", exclusive=True)
    cmd.group("choices:")
    cmd.subgroup("pick one:")
    cmd.option("--alpha", "-a", "first")
    cmd.option("--beta", "+b", "second\nline two")
    cmd.option("--gamma-long-name", help="third")
    cmd.option("--value", "-val", "takes two", values=2, value_help="[x] [y]: integer")
    return cmd


def test_help_layout() -> None:
    cmd = _small_table()
    assert cmd.syntax() == " [options] in [out...]"
    assert cmd.param_help() == ("parameters:\n"
                                "  in      input\n"
                                "          file\n"
                                "  out     outputs\n")
    assert cmd.option_help() == (
        "general:\n"
        "  -h    --help    print help\n"
        "choices:\n"
        "  pick one:\n"
        "    -a    --alpha            first\n"
        "    +b    --beta             second\n"
        "                             line two\n"
        "          --gamma-long-name  third\n"
        "    -val  --value            [x] [y]: integer\n"
        "                             takes two\n")


def test_rightmost_occurrence_and_values() -> None:
    cmd = _small_table()
    assert cmd.parse(["-val", "1", "-h", "x", "--value", "3", "4"], "prog") is ParseStatus.NORMAL
    assert cmd.arguments == ["--value", "1", "-h", "x", "--value", "3", "4"]
    assert cmd.find("--value")
    assert (cmd.value(), cmd.unsigned_value()) == ("3", 4)
    assert cmd.param_count == 1 and cmd.param_value(1) == "x"   # "-h" was a value, not an option


def test_block_finds_only_right_of_the_previous_hit() -> None:
    cmd = _small_table()
    cmd.parse(["-a", "in", "+b", "-a"], "prog")
    with cmd.block():
        assert cmd.find("--beta")
        assert not cmd.find("--gamma-long-name")
        assert cmd.find("--alpha")          # the -a right of +b
    cmd.parse(["+b", "in", "-a"], "prog")
    with cmd.block():
        assert cmd.find("--alpha")
        assert not cmd.find("--beta")       # left of -a
    assert cmd.find("--beta")               # outside a block: anywhere


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "Unknown option --bogus"),
    (["x", "-val", "1"], "Missing value for option --value"),
    (["-a"], "Missing parameter in"),
    (["@no-such-file"], "Cannot open command file 'no-such-file'"),
])
def test_parse_errors(argv: list[str], message: str) -> None:
    with pytest.raises(CommandLineError, match=f"^{message}$"):
        _small_table().parse(argv, "prog")


def test_command_files_are_expanded_one_level(tmp_path: Path) -> None:
    (tmp_path / "inner.txt").write_text("-a")
    (tmp_path / "outer.txt").write_text(f"in @{tmp_path / 'inner.txt'} '+b'")
    cmd = _small_table()
    assert cmd.parse([f"@{tmp_path / 'outer.txt'}", f"@{tmp_path}"], "prog") is ParseStatus.NORMAL
    assert cmd.arguments == ["in", f"@{tmp_path / 'inner.txt'}", "--beta"]
    assert cmd.arguments_message() == (f"calling 'prog' with 3 arguments: 'in' '@{tmp_path / 'inner.txt'}'"
                                       " '--beta' \n")


def test_empty_command_line() -> None:
    assert _small_table().parse([], "prog") is ParseStatus.NO_ARGUMENTS


# -- dcmqrscp: bad command lines ----------------------------------------------------------------

_PREFERRED = [("+xe", "--prefer-little"), ("+xb", "--prefer-big"), ("+xs", "--prefer-lossless"),
              ("+xy", "--prefer-jpeg8"), ("+xx", "--prefer-jpeg12"), ("+xv", "--prefer-j2k-lossless"),
              ("+xw", "--prefer-j2k-lossy"), ("+xt", "--prefer-jls-lossless"), ("+xu", "--prefer-jls-lossy"),
              ("+xm", "--prefer-mpeg2"), ("+xh", "--prefer-mpeg2-high"), ("+xn", "--prefer-mpeg4"),
              ("+xl", "--prefer-mpeg4-bd"), ("+x2", "--prefer-mpeg4-2-2d"), ("+x3", "--prefer-mpeg4-2-3d"),
              ("+xo", "--prefer-mpeg4-2-st"), ("+x4", "--prefer-hevc"), ("+x5", "--prefer-hevc10"),
              ("+xr", "--prefer-rle"), ("+xd", "--prefer-deflated"), ("+xi", "--implicit")]
_PROPOSED = [("-xe", "--propose-little"), ("-xb", "--propose-big"), ("-xi", "--propose-implicit"),
             ("-xs", "--propose-lossless"), ("-xy", "--propose-jpeg8"), ("-xx", "--propose-jpeg12"),
             ("-xv", "--propose-j2k-lossless"), ("-xw", "--propose-j2k-lossy"),
             ("-xt", "--propose-jls-lossless"), ("-xu", "--propose-jls-lossy"), ("-xm", "--propose-mpeg2"),
             ("-xh", "--propose-mpeg2-high"), ("-xn", "--propose-mpeg4"), ("-xl", "--propose-mpeg4-bd"),
             ("-x2", "--propose-mpeg4-2-2d"), ("-x3", "--propose-mpeg4-2-3d"), ("-xo", "--propose-mpeg4-2-st"),
             ("-x4", "--propose-hevc"), ("-x5", "--propose-hevc10"), ("-xr", "--propose-rle"),
             ("-xd", "--propose-deflated")]
_COMPRESSED_PREFERRED = [(short, long) for short, long in _PREFERRED
                         if short not in ("+xe", "+xb", "+xd", "+xi")]
_WRITE_XFER = [("+te", "--write-xfer-little"), ("+tb", "--write-xfer-big"), ("+ti", "--write-xfer-implicit"),
               ("+td", "--write-xfer-deflated")]
_CL_DEPENDENCE = "--compression-level only allowed with --propose-deflated, --write-xfer-deflated or --write-xfer-same"

#: (command line, the message after "error: "); None: DCMTK exits 1 silently (quiet mode).
SCP_BAD = [
    (["--bogus"], "Unknown option --bogus"),
    (["--"], "Unknown option --"),
    (["-x"], "Unknown option -x"),
    (["-vvv"], "Unknown option -vvv"),
    (["-h", "--bogus"], "Unknown option --bogus"),
    (["--version", "--bogus"], "Unknown option --bogus"),
    (["-pdu"], "Missing value for option --max-pdu"),
    (["--version", "-pdu"], "Missing value for option --max-pdu"),
    (["+p", "1"], "Missing value for option --padding-create"),
    (["-xf", "a", "b"], "Missing value for option --assoc-config-file"),
    (["+C"], "Missing value for option --convert-to-charset"),
    (["-pdu", "100"], "Invalid value for option --max-pdu (underflow: 100)"),
    (["-pdu", "200000"], "Invalid value for option --max-pdu (overflow: 200000)"),
    (["-pdu", "abc"], "Invalid value for option --max-pdu (abc)"),
    (["-pdu", ""], "Invalid value for option --max-pdu"),
    (["-pdu", "-5000"], "Invalid value for option --max-pdu (-5000)"),
    (["-pdu", " -5000"], "Invalid value for option --max-pdu ( -5000)"),
    (["-pdu", "+-5"], "Invalid value for option --max-pdu (+-5)"),
    (["-pdu", "0x2000"], "Invalid value for option --max-pdu (underflow: 0x2000)"),
    (["-pdu", "0200000"], "Invalid value for option --max-pdu (overflow: 0200000)"),
    (["-pdu", "99999999999999999999"], "Invalid value for option --max-pdu (overflow: 99999999999999999999)"),
    (["-pdu", "-h"], "Invalid value for option --max-pdu (-h)"),
    (["-pdu", "5000", "-pdu", "100"], "Invalid value for option --max-pdu (underflow: 100)"),
    (["-to", "0"], "Invalid value for option --timeout (underflow: 0)"),
    (["-to", "-1"], "Invalid value for option --timeout (underflow: -1)"),
    (["-to", ""], "Invalid value for option --timeout"),
    (["-to", " "], "Invalid value for option --timeout ( )"),
    (["-ta", "0"], "Invalid value for option --acse-timeout (underflow: 0)"),
    (["-td", "x"], "Invalid value for option --dimse-timeout (x)"),
    (["1", "2"], "Too many parameters"),
    (["0"], "Invalid parameter value 0 (underflow)"),
    (["70000"], "Invalid parameter value 70000 (overflow)"),
    (["abc"], "Invalid parameter value abc"),
    ([""], "Invalid parameter value "),
    (["-5"], "Invalid parameter value -5 (overflow)"),
    ([" -5"], "Invalid parameter value  -5 (overflow)"),
    (["0x50"], "Invalid parameter value 0x50 (underflow)"),
    (["99999999999999999999"], "Invalid parameter value 99999999999999999999 (overflow)"),
    (["-"], "Invalid parameter value -"),
    (["+"], "Invalid parameter value +"),
    (["@"], "Invalid parameter value @"),
    (["@missing.txt"], "Cannot open command file 'missing.txt'"),
    (["--bogus", "@missing.txt"], "Cannot open command file 'missing.txt'"),
    (["@nested.txt"], "Invalid parameter value @args.txt"),
    (["@quoted.txt"], "Unknown option -c /nx"),
    (["-QP", "-QS", "-QO"], "cannot disable all Q/R models"),
    (["-ll", "bogus"], "Invalid log level for --log-level option"),
    (["-ll", ""], "Invalid log level for --log-level option"),
    (["-ll", "notset"], "Invalid log level for --log-level option"),
    (["-ll", "warning"], "Invalid log level for --log-level option"),
    (["-v", "-ll", "info"], "--log-level not allowed with --verbose, --debug or --quiet"),
    (["-ll", "trace", "-q"], "--log-level not allowed with --verbose, --debug or --quiet"),
    (["-lc", "missing.cfg"], "Specified --log-config file does not exist"),
    (["-lc", "."], "Specified --log-config file does not exist"),
    (["-lc", ""], "Specified --log-config file does not exist"),
    (["-lc", "comments.cfg"], "Specified --log-config file does not contain any settings"),
    (["-lc", "include.cfg"], "Specified --log-config file does not contain any settings"),
    (["-lc", "empty.txt"], "Specified --log-config file does not contain any settings"),
    (["-lc", "foreign.cfg"], "Specified --log-config file does not contain any valid settings"),
    (["-lc", "bang.cfg"], "Specified --log-config file does not contain any valid settings"),
    (["-lc", "noroot.cfg"], "Specified --log-config file does not set up log4cplus.rootLogger"),
    (["-lc", "root.cfg", "-v"], "--log-config not allowed with --verbose, --debug or --quiet"),
    (["-d", "-lc", "root.cfg"], "--log-config not allowed with --verbose, --debug or --quiet"),
    (["-lc", "root.cfg", "-ll", "info"], "--log-config not allowed with --log-level"),
    (["-lc", "missing.cfg", "-ll", "bogus"], "Invalid log level for --log-level option"),
    (["-q", "-ll", "info"], "--log-level not allowed with --verbose, --debug or --quiet"),
    (["0", "-ll", "bogus"], "Invalid parameter value 0 (underflow)"),
    (["-ll", "bogus", "-pdu", "100"], "Invalid log level for --log-level option"),
    (["-ll", "error", "-pdu", "100"], "Invalid value for option --max-pdu (underflow: 100)"),
    (["-q", "-pdu", "100"], None),
    (["-q", "-QP", "-QS", "-QO"], None),
    (["-ll", "fatal", "+B", "+te"], None),
    (["-ll", "off", "-pdu", "1"], None),
    (["-lc", "fatal.cfg", "-pdu", "1"], None),
    (["-q", "0"], "Invalid parameter value 0 (underflow)"),
    (["-xf", "f", "i", "o", "+x=", "+xe"], "--assoc-config-file not allowed with --prefer-little"),
    (["-xf", "f", "i", "o", "-xe", "+xe"], "--assoc-config-file not allowed with --prefer-little"),
    (["-xf", "f", "i", "o", "-xd", "+xd"], "--assoc-config-file not allowed with --prefer-deflated"),
    (["-xt", "-xf", "f", "i", "o"], "--assoc-config-file not allowed with --propose-jls-lossless"),
    (["-xf", "f", "i", "o", "+xe", "-to", "0"], "Invalid value for option --timeout (underflow: 0)"),
    (["-xf", "f", "i", "o", "+xe", "-pdu", "1"], "Invalid value for option --max-pdu (underflow: 1)"),
    (["-xf", "f", "i", "o", "+xe", "-QP", "-QS", "-QO"], "cannot disable all Q/R models"),
    (["-xf", "f", "i", "o", "+xe", "+B", "+te"], "--assoc-config-file not allowed with --prefer-little"),
    (["-xf", "f", "i", "-c", "x"], "Invalid parameter value x"),
    (["+te", "+B"], "--write-xfer-little not allowed with --bit-preserving"),
    (["-B", "+te", "+B"], "--write-xfer-little not allowed with --bit-preserving"),
    (["+te", "+tb", "+B"], "--write-xfer-little not allowed with --bit-preserving"),
    (["+tb", "+te", "+B"], "--write-xfer-little not allowed with --bit-preserving"),
    (["+xs", "+B", "+te"], "--write-xfer-little not allowed with --bit-preserving"),
    (["+B", "+g="], "--group-length-recalc not allowed with --bit-preserving"),
    (["+B", "+g"], "--group-length-create not allowed with --bit-preserving"),
    (["+B", "-g"], "--group-length-remove not allowed with --bit-preserving"),
    (["+B", "-e", "+g"], "--group-length-create not allowed with --bit-preserving"),
    (["+B", "+e"], "--length-explicit not allowed with --bit-preserving"),
    (["+B", "-e"], "--length-undefined not allowed with --bit-preserving"),
    (["+B", "+p", "1", "1"], "--padding-create not allowed with --bit-preserving"),
    (["-F", "+p", "1", "1"], "--padding-create not allowed with --write-dataset"),
    (["+p", "1", "1", "-F"], "--padding-create not allowed with --write-dataset"),
    (["-F", "+B", "+p", "1", "1"], "--padding-create not allowed with --write-dataset"),
    (["+p", "1", "-1"], "Invalid value for option --padding-create (-1)"),
    (["+p", "x", "1"], "Invalid value for option --padding-create (x)"),
    (["+cl", "5", "+te"], _CL_DEPENDENCE),
    (["+cl", "5", "-xe", "+tb"], _CL_DEPENDENCE),
    (["+cl", "12", "+ti"], _CL_DEPENDENCE),
    (["+cl", "12"], "Invalid value for option --compression-level (overflow: 12)"),
    (["+cl", "-0", "-xd"], "Invalid value for option --compression-level (-0)"),
    (["+cl", "x"], "Invalid value for option --compression-level (x)"),
]
SCP_BAD += [(["-xf", "f", "i", "o", short], f"--assoc-config-file not allowed with {long}")
            for short, long in _PREFERRED + _PROPOSED]
SCP_BAD += [(["+B", short], f"{long} not allowed with --bit-preserving") for short, long in _WRITE_XFER]
SCP_BAD += [([prefer, write], f"{write_long} not allowed with {prefer_long}")
            for prefer, prefer_long in _COMPRESSED_PREFERRED for write, write_long in _WRITE_XFER]


def _expected(header: str, message: str | None) -> tuple[int, str, str]:
    return 1, "", "" if message is None else f"{header}error: {message}\n"


def _ids(cases: list[tuple]) -> list[str]:
    return [" ".join(case[0]) or "(none)" for case in cases]


@pytest.mark.parametrize("args, message", SCP_BAD, ids=_ids(SCP_BAD))
def test_bad_command_line(args: list[str], message: str | None, workdir: Path,
                          capsys: pytest.CaptureFixture) -> None:
    assert ours(parse_args, MISSING_CONFIG + args, capsys) == _expected(SCP_HEADER, message)


@needs_dcmtk
@pytest.mark.parametrize("args, message", SCP_BAD, ids=_ids(SCP_BAD))
def test_bad_command_line_dcmtk(args: list[str], message: str | None, workdir: Path) -> None:
    assert dcmtk_run("dcmqrscp", MISSING_CONFIG + args, workdir) == _expected(SCP_HEADER, message)


# -- dcmqrscp: accepted command lines and the options they give ---------------------------------

#: (command line, the Options fields it sets, whether DCMTK 3.6.7 has the option too)
SCP_GOOD = [
    ([], {}, True),
    (["1234"], {"port": 1234}, True),
    (["+80"], {"port": 80}, True),
    ([" 80"], {"port": 80}, True),
    (["8x"], {"port": 8}, True),
    (["1.5"], {"port": 1}, True),
    (["65535"], {"port": 65535}, True),
    (["-pdu", "5000abc"], {"max_pdu": 5000}, True),
    (["-pdu", "010000"], {"max_pdu": 10000}, True),
    (["-pdu", " +4096"], {"max_pdu": 4096}, True),
    (["-pdu", "131072"], {"max_pdu": 131072}, True),
    (["-pdu", "100", "-pdu", "5000"], {"max_pdu": 5000}, True),
    (["-to", "0x10"], {"connect_timeout": 16}, True),
    (["-to", "010"], {"connect_timeout": 8}, True),
    (["-to", "1x"], {"connect_timeout": 1}, True),
    (["-to", "99999999999999999999"], {"connect_timeout": LONG_MAX}, True),
    (["-ta", "5", "-td", "7"], {"acse_timeout": 5, "dimse_timeout": 7}, True),
    (["-v"], {"log_level": "info"}, True),
    (["-d"], {"log_level": "debug"}, True),
    (["-q"], {"log_level": "fatal"}, True),
    (["-d", "-v"], {"log_level": "info"}, True),
    (["-v", "-d"], {"log_level": "debug"}, True),
    (["-d", "-q"], {"log_level": "fatal"}, True),
    (["-vv"], {"log_level": "debug"}, False),
    (["--very-verbose", "-v"], {"log_level": "info"}, False),
    (["-ll", "INFO"], {"log_level": "info"}, True),
    (["-ll", "Warn"], {"log_level": "warn"}, True),
    (["-ll", "all"], {"log_level": "trace"}, True),
    (["-ll", "off"], {"log_level": "off"}, True),
    (["-ll", "debug", "-ll", "error"], {"log_level": "error"}, True),
    (["-lc", "root.cfg"], {"log_config": "root.cfg"}, True),
    (["-c", "other.cfg"], {"config_file": "other.cfg"}, True),
    (["-c", ""], {"config_file": ""}, True),
    (["-s"], {"single_process": True}, True),
    (["-s", "--fork"], {"single_process": False}, True),
    (["--fork", "-s"], {"single_process": True}, True),
    (["--require-find", "--no-parallel-store", "--disable-get", "--allow-shutdown"],
     {"require_find": True, "no_parallel_store": True, "disable_get": True, "allow_shutdown": True}, True),
    (["-XF", "-XM"], {"check_find": True, "check_move": True}, True),
    (["-XF", "--no-check-find", "--no-check-move", "-XM"], {"check_find": False, "check_move": True}, True),
    (["-ZA"], {"move_aetitle": True}, True),
    (["-ZV", "-ZH"], {"move_host": True}, True),
    (["-ZH", "-ZV"], {"move_host": True, "move_vendor": True}, True),
    (["-ZA", "-ZH", "-ZV"], {"move_aetitle": True, "move_host": True, "move_vendor": True}, True),
    (["-ZV", "-ZH", "-ZA"], {"move_aetitle": True}, True),
    (["-ZA", "--move-unrestricted"], {}, True),
    (["-ZH", "--move-unrestricted", "-ZV"], {"move_vendor": True}, True),
    (["-QP", "-QS"], {"no_patient_root": True, "no_study_root": True}, True),
    (["-QO"], {"no_patient_study": True}, True),
    (["+ac"], {"access_control": True}, True),
    (["+ac", "-ac"], {}, True),
    (["-dhl", "--refuse", "--reject", "--ignore", "-up"],
     {"disable_host_lookup": True, "refuse": True, "reject": True, "ignore": True, "uid_padding": True}, True),
    (["-xf", "f", "in", "out"], {"assoc_config": ("f", "in", "out")}, False),
    (["-xf", "f", "in", "out", "+xe", "+x=", "-xb", "-x="], {"assoc_config": ("f", "in", "out")}, False),
    (["+Cr"], {"use_request_charset": True}, True),
    (["-Cr"], {"use_request_charset": False}, True),
    (["-Cr", "+Cr"], {"use_request_charset": True}, True),
    (["+A7"], {"convert_to": ""}, True),
    (["+U8"], {"convert_to": "ISO_IR 192"}, True),
    (["+L1"], {"convert_to": "ISO_IR 100"}, True),
    (["+C", "ISO_IR 144"], {"convert_to": "ISO_IR 144"}, True),
    (["+C", "ISO_IR 144", "+U8"], {"convert_to": "ISO_IR 192"}, True),
    (["+U8", "+A7"], {"convert_to": ""}, True),
    (["-Ct", "-Cd"], {"transliterate": True, "discard_illegal": True}, True),
    (["+B"], {"bit_preserving": True}, True),
    (["+B", "+t=", "-p"], {"bit_preserving": True}, True),
    (["+B", "-B", "+te"], {"write_xfer": LEE}, True),
    (["-F"], {"write_file": False}, True),
    (["+te"], {"write_xfer": LEE}, True),
    (["+tb"], {"write_xfer": BEE}, True),
    (["+ti"], {"write_xfer": LEI}, True),
    (["+td"], {"write_xfer": DEFLATED}, True),
    (["+te", "+t="], {}, True),
    (["+xd", "+te"], {"incoming_ts": [DEFLATED] + UNCOMPRESSED, "write_xfer": LEE}, True),
    (["-xs", "+ti"], {"outgoing_ts": ["1.2.840.10008.1.2.4.70"] + UNCOMPRESSED, "write_xfer": LEI}, True),
    (["-u"], {"enable_new_vr": False}, True),
    (["-u", "+u"], {}, True),
    (["+g"], {"group_length": "create"}, True),
    (["-g"], {"group_length": "remove"}, True),
    (["-g", "+g="], {}, True),
    (["-e"], {"length_explicit": False}, True),
    (["+p", "8", "16"], {"padding": (8, 16)}, True),
    (["+p", "8", "16", "-p"], {}, True),
    (["+cl", "5"], {"compression_level": 5}, True),
    (["+cl", "0", "+te", "-xd"], {"compression_level": 0, "write_xfer": LEE,
                                  "outgoing_ts": [DEFLATED] + UNCOMPRESSED}, True),
    (["+cl", "9", "+td"], {"compression_level": 9, "write_xfer": DEFLATED}, True),
    (["@args.txt"], {"log_level": "info", "check_find": True, "port": 1234}, True),
    (["@empty.txt"], {}, True),
]

#: The first transfer syntax of each compressed +x/-x option (docs/association.md §2, association.md §4).
_COMPRESSED_TS = {"s": "1.2.840.10008.1.2.4.70", "y": "1.2.840.10008.1.2.4.50", "x": "1.2.840.10008.1.2.4.51",
                  "v": "1.2.840.10008.1.2.4.90", "w": "1.2.840.10008.1.2.4.91", "t": "1.2.840.10008.1.2.4.80",
                  "u": "1.2.840.10008.1.2.4.81", "m": "1.2.840.10008.1.2.4.100",
                  "h": "1.2.840.10008.1.2.4.101", "n": "1.2.840.10008.1.2.4.102",
                  "l": "1.2.840.10008.1.2.4.103", "2": "1.2.840.10008.1.2.4.104",
                  "3": "1.2.840.10008.1.2.4.105", "o": "1.2.840.10008.1.2.4.106",
                  "4": "1.2.840.10008.1.2.4.107", "5": "1.2.840.10008.1.2.4.108", "r": "1.2.840.10008.1.2.5",
                  "d": DEFLATED}
#: -x options whose transfer syntax is proposed alone (video).
_PROPOSED_ALONE = "mhnl23o45"
for _letter, _uid in _COMPRESSED_TS.items():
    SCP_GOOD.append((["+x" + _letter], {"incoming_ts": [_uid] + UNCOMPRESSED}, True))
    SCP_GOOD.append((["-x" + _letter], {"outgoing_ts": [_uid] + ([] if _letter in _PROPOSED_ALONE
                                                                 else UNCOMPRESSED)}, True))
SCP_GOOD += [
    (["+x="], {}, True), (["+xe"], {}, True), (["+xb"], {"incoming_ts": [BEE, LEE, LEI]}, True),
    (["+xi"], {"incoming_ts": [LEI]}, True), (["+xs", "+xb"], {"incoming_ts": [BEE, LEE, LEI]}, True),
    (["-x="], {}, True), (["-xe"], {}, True), (["-xb"], {"outgoing_ts": [BEE, LEE, LEI]}, True),
    (["-xi"], {"outgoing_ts": [LEI]}, True), (["-xb", "-xr", "-xi"], {"outgoing_ts": [LEI]}, True),
]
SCP_GOOD_IN_DCMTK = [case for case in SCP_GOOD if case[2]]


@pytest.mark.parametrize("args, fields, in_dcmtk", SCP_GOOD, ids=_ids(SCP_GOOD))
def test_accepted_command_line(args: list[str], fields: dict, in_dcmtk: bool, workdir: Path,
                               capsys: pytest.CaptureFixture) -> None:
    assert parse_args(args) == Options(**fields)
    assert capsys.readouterr() == ("", "")


@needs_dcmtk
@pytest.mark.parametrize("args, fields, in_dcmtk", SCP_GOOD_IN_DCMTK, ids=_ids(SCP_GOOD_IN_DCMTK))
def test_accepted_command_line_dcmtk(args: list[str], fields: dict, in_dcmtk: bool, workdir: Path) -> None:
    """DCMTK accepts the same command lines: it goes on to its (missing) configuration file, exit 10."""
    status, _out, _err = dcmtk_run("dcmqrscp", MISSING_CONFIG + args, workdir)
    assert status == 10


#: Pieces random command lines are made of ("-xf ..." names a file DCMTK can load: we do not load it).
_PIECES = ["-pdu 100", "-pdu 5000", "+B", "-B", "+te", "+tb", "+td", "+t=", "-F", "+F", "+p 1 1", "+p x 1",
           "-xf assoc.cfg incoming outgoing", "+xe", "+x=", "-xd", "-xe", "+xs", "+xd", "+cl 12", "+cl 3", "-QP",
           "-QS", "-QO", "-ll bogus", "-ll info", "-ll fatal", "-v", "-q", "-d", "-lc root.cfg", "-lc fatal.cfg",
           "0", "1234", "--bogus", "-to 0", "-ta 1", "-ZA", "+g", "-g", "-e", "+e", "-s", "--fork", "@args.txt",
           "@missing.txt", "+C x", "-Cr", "-c x", "-p", "-", "--", "-5", "-pdu", "+p", "-ll", "1", "x"]


@pytest.fixture(scope="module")
def module_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cmdline")
    for name, text in FILES.items():
        (directory / name).write_text(text)
    return directory


@needs_dcmtk
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6))
def test_random_command_lines_dcmtk(pieces: list[str], module_workdir: Path) -> None:
    """Any mix of these options fails exactly as DCMTK's, or both accept it."""
    args = MISSING_CONFIG + " ".join(pieces).split()
    theirs = dcmtk_run("dcmqrscp", args, module_workdir)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(module_workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parse_args(args)
            status = 10
        except SystemExit as exit_:
            status = exit_.code
    assert (status, out.getvalue(), err.getvalue() if status != 10 else theirs[2]) == theirs


def test_defaults() -> None:
    options = Options()
    assert (options.config_file, options.acse_timeout, options.log_level) == ("dcmqrscp.cfg", 30, "warn")
    assert options.incoming_ts == options.outgoing_ts == UNCOMPRESSED
    assert (options.write_file, options.enable_new_vr, options.group_length, options.length_explicit) == \
        (True, True, "recalc", True)


# -- --arguments --------------------------------------------------------------------------------

#: (command line after MISSING_CONFIG, exit status (10: accepted), the arguments --arguments lists,
#: the message after "error: ").
ARGUMENTS_CASES = [
    (["--arguments", "-v", "1234"], 10,
     ["--config", "/nonexistent/dcmqrscp.cfg", "--arguments", "--verbose", "1234"], None),
    (["--arguments", "-q"], 10, ["--config", "/nonexistent/dcmqrscp.cfg", "--arguments", "--quiet"], None),
    (["-c", "@args.txt", "--arguments"], 10,
     ["--config", "/nonexistent/dcmqrscp.cfg", "--config", "-v", "--check-find", "1234", "--arguments"], None),
    (["--arguments", "-c", ""], 10, ["--config", "/nonexistent/dcmqrscp.cfg", "--arguments", "--config", ""],
     None),
    (["--arguments", ""], 1, None, "Invalid parameter value "),
    (["@args.txt", "--arguments", "-pdu", "100"], 1,
     ["--config", "/nonexistent/dcmqrscp.cfg", "--verbose", "--check-find", "1234", "--arguments",
      "--max-pdu", "100"], "Invalid value for option --max-pdu (underflow: 100)"),
    (["--arguments", "-ll", "off", "-pdu", "100"], 1,
     ["--config", "/nonexistent/dcmqrscp.cfg", "--arguments", "--log-level", "off", "--max-pdu", "100"], None),
]


def _arguments_expected(listed: list[str] | None, status: int, message: str | None) -> tuple[int, str, str]:
    err = ""
    if listed is not None:
        quoted = "".join(f"'{argument}' " for argument in listed if argument)
        err = f"I: calling 'dcmqrscp' with {len(listed)} arguments: {quoted}\nI: \n"
    if message is not None:
        err += f"{SCP_HEADER}error: {message}\n"
    return status, "", err


@pytest.mark.parametrize("args, status, listed, message", ARGUMENTS_CASES, ids=_ids(ARGUMENTS_CASES))
def test_arguments(args: list[str], status: int, listed: list[str] | None, message: str | None, workdir: Path,
                   restore_logging, capsys: pytest.CaptureFixture) -> None:
    assert ours(parse_args, MISSING_CONFIG + args, capsys) == _arguments_expected(listed, status, message)


@needs_dcmtk
@pytest.mark.parametrize("args, status, listed, message", ARGUMENTS_CASES, ids=_ids(ARGUMENTS_CASES))
def test_arguments_dcmtk(args: list[str], status: int, listed: list[str] | None, message: str | None,
                         workdir: Path) -> None:
    """DCMTK lists the same arguments (its program name is the path it was called by)."""
    result = dcmtk_run("dcmqrscp", MISSING_CONFIG + args, workdir)
    err = result[2].replace("calling '/usr/bin/dcmqrscp'", "calling 'dcmqrscp'")
    if result[0] == 10:
        err = err[:err.index("F: cannot access")]
    assert (result[0], result[1], err) == _arguments_expected(listed, status, message)


def test_arguments_through_log_config(workdir: Path, restore_logging, capsys: pytest.CaptureFixture) -> None:
    """With -lc the line goes where the properties file sends it (DCMTK: SimpleLayout on stdout)."""
    pytest.importorskip("qrscp.log.log4cplus")
    (workdir / "console.cfg").write_text("log4cplus.rootLogger = INFO, console\n"
                                         "log4cplus.appender.console = log4cplus::ConsoleAppender\n")
    parse_args(["-lc", "console.cfg", "--arguments", "-c", "x"])
    assert capsys.readouterr().out == ("INFO - calling 'dcmqrscp' with 5 arguments: '--log-config' "
                                       "'console.cfg' '--arguments' '--config' 'x' \n\n")


# -- help and version ---------------------------------------------------------------------------

#: ``/usr/bin/dcmqrscp --help`` of DCMTK 3.6.7 (Debian build).
DCMTK_SCP_HELP = SCP_HEADER + (DATA / "dcmqrscp-3.6.7-help.txt").read_text()

#: DCMTK 3.7.0's ``dcmqrscp --help`` (its option tables printed by DCMTK's layout rules; built with OpenSSL 3.0,
#: which has NULL ciphers but no 3DES, so ``+pn`` is offered and ``+pb`` is not).
DCMTK_370_SCP_HELP = ("$dcmtk: dcmqrscp v3.7.0 2025-12-15 $\n\ndcmqrscp: DICOM image archive (central test node)\n"
                      + (DATA / "dcmqrscp-3.7.0-help.txt").read_text())

#: Ours lists 3.7.0's options; where it differs, and why: our banner on top; -vv is the manual's; the default
#: configuration file is in the working directory (README differences #37); the header is that of the release
#: whose behaviour qrscp reproduces.
OUR_SCP_HELP = banner("dcmqrscp") + SCP_HEADER + DCMTK_370_SCP_HELP.split("\n", 3)[3].replace(
    "  -d      --debug",
    "  -vv     --very-verbose          print more processing details\n  -d      --debug").replace(
    "  -c      --config                [f]ilename: string\n"
    "                                  use specific configuration file\n"
    "                                  (default: /usr/local/etc/dcmtk/dcmqrscp.cfg)\n",
    "  -c      --config                [f]ilename: string (default: dcmqrscp.cfg)\n"
    "                                  use specific configuration file\n")

DCMTK_IDX_HELP = IDX_HEADER + """usage: dcmqridx [options] index-out [dcmfile-in...]

parameters:
  index-out          storage area for the index file (directory)
  dcmfile-in         DICOM image file to be registered in the index file

options:
  -h   --help        print this help text and exit
       --version     print version information and exit
       --arguments   print expanded command line arguments
  -q   --quiet       quiet mode, print no warnings and errors
  -v   --verbose     verbose mode, print processing details
  -d   --debug       debug mode, print debug information
  -ll  --log-level   [l]evel: string constant
                     (fatal, error, warn, info, debug, trace)
                     use level l for the logger
  -lc  --log-config  [f]ilename: string
                     use config file f for the logger
  -p   --print       list contents of database index file
  -n   --not-new     set instance reviewed status to 'not new'

"""

#: qrscp's dcmqridx has our banner and two more options (qrscp.cli.dcmqridx).
OUR_IDX_HELP = banner("dcmqridx") + DCMTK_IDX_HELP.replace("""  -n   --not-new     set instance reviewed status to 'not new'
""", """  -n   --not-new     set instance reviewed status to 'not new'
       --check       check the index: descriptors, records, files
                     (exit code 2 if something is wrong)
       --repair      drop records of missing or wrong files, rebuild
                     study descriptors (old index kept as index.dat.bak)
""")

HELP_CASES = [["--help"], ["-h", "1", "2"], ["-h", "--version"], ["--version", "-h"], ["-h", "-pdu", "100"],
              ["@empty.txt", "-h"]]


def test_help_differs_from_dcmtk_370_only_where_documented() -> None:
    ours_only = set(OUR_SCP_HELP.splitlines()) - set(DCMTK_370_SCP_HELP.splitlines())
    dcmtk_only = set(DCMTK_370_SCP_HELP.splitlines()) - set(OUR_SCP_HELP.splitlines())
    assert ours_only == {banner("dcmqrscp").rstrip("\n"),
                         "  -vv     --very-verbose          print more processing details",
                         "  -c      --config                [f]ilename: string (default: dcmqrscp.cfg)",
                         SCP_HEADER.splitlines()[0]}
    assert dcmtk_only == {"  -c      --config                [f]ilename: string",
                          "                                  (default: /usr/local/etc/dcmtk/dcmqrscp.cfg)",
                          "$dcmtk: dcmqrscp v3.7.0 2025-12-15 $"}


def test_help_lists_every_option_of_dcmtk_367() -> None:
    """3.7.0's option set is 3.6.7's plus the IP-version and TLS options: a 3.6.7 script's options all work."""
    def options(text: str) -> set[str]:
        return {word for line in text.splitlines() for word in line.split()[:2] if word[:1] in "+-" and len(word) > 1}

    assert options(DCMTK_SCP_HELP) <= options(OUR_SCP_HELP)


@pytest.mark.parametrize("args", HELP_CASES, ids=" ".join)
def test_help(args: list[str], workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert ours(parse_args, args, capsys) == (0, OUR_SCP_HELP, "")


@needs_dcmtk
@pytest.mark.parametrize("args", HELP_CASES, ids=" ".join)
def test_help_dcmtk(args: list[str], workdir: Path) -> None:
    assert dcmtk_run("dcmqrscp", args, workdir) == (0, DCMTK_SCP_HELP, "")


def _dcmtk_version_text(header: str, iconv: bool) -> str:
    """``--version`` of DCMTK 3.6.7's Debian build."""
    text = (header + "\nHost type: Debian\nCharacter encoding: system default (unknown)\n"
            "Build options: shared cxx11 threads lfs extern-dict dcmdictpath private-tags char-conv\n\n"
            "External libraries used:\n- ZLIB, Version 1.2.13\n- LIBWRAP\n")
    return text + ("- GNU C library (iconv), version 2.36\n" if iconv else "")


@pytest.mark.parametrize("tool, parse, header, options", [
    pytest.param(tool, parse, header, options, id=" ".join([tool, *options]))
    for tool, parse, header, options in [("dcmqrscp", parse_args, SCP_HEADER, ["--version"]),
                                         ("dcmqrscp", parse_args, SCP_HEADER, ["--version", "1", "2"]),
                                         ("dcmqrscp", parse_args, SCP_HEADER, ["--version", "-pdu", "1"]),
                                         ("dcmqridx", parse_dcmqridx_args, IDX_HEADER, ["--version"])]])
def test_version(tool: str, parse, header: str, options: list[str], workdir: Path,
                 capsys: pytest.CaptureFixture) -> None:
    """Our banner, then DCMTK's header and the lines of its text that hold here: the platform, the
    locale's encoding, the build options that apply, the libraries in use (no LIBWRAP: ``+ac`` is our own;
    no iconv: Python's codecs convert)."""
    assert ours(parse, options, capsys) == (0, (
        f"{banner(tool)}{header}\nHost type: {sysconfig.get_platform()}\n"
        f"Character encoding: {locale.getencoding()}\nBuild options: lfs builtin-dict private-tags char-conv\n\n"
        f"External libraries used:\n- ZLIB, Version {zlib.ZLIB_RUNTIME_VERSION}\n"
        + (f"- {ssl.OPENSSL_VERSION}\n" if tool == "dcmqrscp" else "")   # TLS: DCMTK 3.6.7's storescp order
        + f"- Python, Version {platform.python_version()}\n- pydicom, Version {pydicom.__version__}\n"), "")


@needs_dcmtk
@pytest.mark.parametrize("tool, parse", [("dcmqrscp", parse_args), ("dcmqridx", parse_dcmqridx_args)])
def test_version_keeps_dcmtk_lines_scripts_parse(tool: str, parse, workdir: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Below our banner, DCMTK's identifier and header lines as they are, its ``Build options:`` tokens
    where they hold, and its ZLIB line (what scripts grep for: ``$dcmtk:``, ``char-conv``, ``ZLIB``)."""
    status, theirs, _ = dcmtk_run(tool, ["--version"], workdir)
    assert theirs == _dcmtk_version_text(SCP_HEADER if tool == "dcmqrscp" else IDX_HEADER, iconv=tool == "dcmqrscp")
    ours_lines = ours(parse, ["--version"], capsys)[1].splitlines()
    theirs_lines = theirs.splitlines()
    assert ours_lines[0] == banner(tool).rstrip("\n")
    assert ours_lines[1:5] == theirs_lines[:4]

    def keys(lines: list[str]) -> list[str]:
        return [line.split(":")[0] for line in lines]
    # Host type, Character encoding, Build options, "", External libraries used, - ZLIB (this machine's)
    assert keys(ours_lines[5:11]) == keys(theirs_lines[4:10])
    build_options = [set(line.removeprefix("Build options:").split()) for line in (ours_lines[7], theirs_lines[6])]
    assert build_options[0] <= build_options[1] | {"builtin-dict"}


# -- dcmqridx -----------------------------------------------------------------------------------

IDX_BAD = [
    (["-v"], "Missing parameter index-out"),
    (["-p", "-n"], "Missing parameter index-out"),
    (["-ll", "bogus"], "Missing parameter index-out"),
    (["--bogus"], "Unknown option --bogus"),
    (["-vv", "x"], "Unknown option -vv"),
    (["-ll"], "Missing value for option --log-level"),
    (["-ll", "bogus", "x"], "Invalid log level for --log-level option"),
    (["-ll", "bogus", ""], "Invalid log level for --log-level option"),
    (["-lc", "missing.cfg", "x"], "Specified --log-config file does not exist"),
    (["-v", "-ll", "info", "x"], "--log-level not allowed with --verbose, --debug or --quiet"),
    (["-q", "-lc", "root.cfg", "x"], "--log-config not allowed with --verbose, --debug or --quiet"),
    (["@missing.txt"], "Cannot open command file 'missing.txt'"),
]


@pytest.mark.parametrize("args, message", IDX_BAD, ids=_ids(IDX_BAD))
def test_dcmqridx_bad_command_line(args: list[str], message: str, workdir: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert ours(parse_dcmqridx_args, args, capsys) == _expected(IDX_HEADER, message)


@needs_dcmtk
@pytest.mark.parametrize("args, message", IDX_BAD, ids=_ids(IDX_BAD))
def test_dcmqridx_bad_command_line_dcmtk(args: list[str], message: str, workdir: Path) -> None:
    assert dcmtk_run("dcmqridx", args, workdir) == _expected(IDX_HEADER, message)


@pytest.mark.parametrize("args", [[], ["@empty.txt"], ["-h", "x"], ["--help"]], ids=" ".join)
def test_dcmqridx_usage(args: list[str], workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert OUR_IDX_HELP != DCMTK_IDX_HELP
    assert ours(parse_dcmqridx_args, args, capsys) == (0, OUR_IDX_HELP, "")


@needs_dcmtk
@pytest.mark.parametrize("args", [[], ["@empty.txt"], ["-h", "x"], ["--help"]], ids=" ".join)
def test_dcmqridx_usage_dcmtk(args: list[str], workdir: Path) -> None:
    assert dcmtk_run("dcmqridx", args, workdir) == (0, DCMTK_IDX_HELP, "")


@pytest.mark.parametrize("args, expected", [
    (["area"], DcmqridxOptions("area")),
    ([""], DcmqridxOptions("")),
    (["-p", "area", "a.dcm", "-n", "b.dcm"], DcmqridxOptions("area", ["a.dcm", "b.dcm"], True, True)),
    (["--check", "area", "--repair"], DcmqridxOptions("area", check=True, repair=True)),
    (["-v", "area"], DcmqridxOptions("area", log_level="info")),
    (["-ll", "trace", "area"], DcmqridxOptions("area", log_level="trace")),
    (["-lc", "root.cfg", "area"], DcmqridxOptions("area", log_config="root.cfg")),
])
def test_dcmqridx_options(args: list[str], expected: DcmqridxOptions, workdir: Path) -> None:
    assert parse_dcmqridx_args(args) == expected


# -- as a real process --------------------------------------------------------------------------

_OUR_PROCESS = "import sys; from qrscp.cli.command_lines import parse_args; parse_args(sys.argv[1:])"


@pytest.mark.parametrize("args, expected", [
    (["--bogus"], (1, "", f"{SCP_HEADER}error: Unknown option --bogus\n")),
    (["-c", "x", "--arguments", "-v"],
     (0, "", "I: calling 'dcmqrscp' with 4 arguments: '--config' 'x' '--arguments' '--verbose' \nI: \n")),
    (["-h"], (0, OUR_SCP_HELP, "")),
])
def test_as_process(args: list[str], expected: tuple[int, str, str], tmp_path: Path) -> None:
    """``python -c`` runs our parser the way the lead's main does: streams and exit status."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", _OUR_PROCESS, *args], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == expected
