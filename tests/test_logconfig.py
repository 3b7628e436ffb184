"""``-lc``: log4cplus properties files, checked against DCMTK's dcmqrscp (the oracle) and on their own.

The oracle tests run DCMTK's ``dcmqrscp -lc FILE -c missing.cfg`` (it logs the DEBUG version banner and a
FATAL line, then exits) and a Python process that configures logging through ``qrscp.log.configure`` and
logs the same two lines on the same logger; stdout, stderr and the files written must be the same once
times, dates and thread ids are normalised.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dcmtk, dcmtk_env, free_port, needs_dcmtk, run_dcmtk, wait_for_port

from qrscp import log
from qrscp.log import log4cplus as logconfig

BANNER = "$dcmtk: dcmqrscp v3.6.7 2022-04-22 $\n"
MISSING = "missing.cfg"
#: What DCMTK's dcmqrscp logs when its configuration file is missing: (logger, level, message).
STARTUP_RECORDS = [
    (log.APP, logging.DEBUG, BANNER),
    (log.APP, logging.CRITICAL, f"cannot access {MISSING}: No such file or directory"),
]
#: DCMTK's header before ``error: ...`` on stderr.
ERROR_HEADER = "$dcmtk: dcmqrscp v3.6.7 2022-04-22 $\n\ndcmqrscp: DICOM image archive (central test node)\n"

OURS = """
import json, logging, sys
from qrscp import log
from qrscp.log import log4cplus as logconfig
try:
    log.configure(config_file=sys.argv[1], appname="dcmqrscp")
except logconfig.LogConfigError as error:
    sys.stderr.write(f"error: {error}\\n")
    sys.exit(1)
for name, level, message in json.loads(sys.argv[2]):
    logging.getLogger(name).log(level, message)
"""


def normalised(text: str) -> str:
    """Output with the things that differ between two runs replaced: dates, times, thread ids."""
    text = re.sub(r"\d{4}-\d\d-\d\d", "DATE", text)
    text = re.sub(r"\d\d:\d\d:\d\d", "TIME", text)
    text = re.sub(r"(TIME[.,])\d{3}", r"\1MS", text)
    return re.sub(r"\[\d{6,}\]", "[THREAD]", text)


def files_in(directory: Path) -> dict[str, str]:
    """Name and normalised content of every file in ``directory``."""
    return {path.name: normalised(path.read_text()) for path in sorted(directory.iterdir())}


def run_ours(config: Path, records: list, cwd: Path,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Configure logging from ``config`` in a fresh Python process in ``cwd`` and log ``records``."""
    return subprocess.run([sys.executable, "-c", OURS, str(config), json.dumps(records)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


#: Files in the working directory before each run (for the file appenders' ``Append``).
EXISTING_FILES = {"file.log": "line already there\n", "rolling.log": "line already there\n"}


def compare_startup(tmp_path: Path, config_text: str, env: dict[str, str] | None = None) -> tuple:
    """Run DCMTK and ours with ``config_text``, each in a directory holding :data:`EXISTING_FILES`;
    return (dcmtk, ours), each (stdout, stderr, files of the directory)."""
    config = tmp_path / "log.cfg"
    config.write_text(config_text)
    results = []
    for side in ("dcmtk", "ours"):
        cwd = tmp_path / side
        cwd.mkdir()
        for name, content in EXISTING_FILES.items():
            (cwd / name).write_text(content)
        if side == "dcmtk":
            proc = subprocess.run([dcmtk("dcmqrscp"), "-lc", str(config), "-c", MISSING, str(free_port())],
                                  cwd=cwd, env={**dcmtk_env(), **(env or {})}, capture_output=True,
                                  text=True, timeout=60)
            stderr = proc.stderr.replace(ERROR_HEADER, "")
        else:
            proc = run_ours(config, STARTUP_RECORDS, cwd, env={**os.environ, **(env or {})})
            stderr = proc.stderr
        results.append((normalised(proc.stdout), normalised(stderr), files_in(cwd)))
    return tuple(results)


CONSOLE = """
log4cplus.appender.A = log4cplus::ConsoleAppender
log4cplus.appender.A.layout = log4cplus::PatternLayout
"""

#: Configurations on which DCMTK and we must behave the same.
ORACLE_CONFIGS = {
    "widths, precision, truncation, literals": """
log4cplus.rootLogger = DEBUG, A
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = [%-6p|%6p|%P|%c|%c{1}|%c{2}|%c{0}|%.3c|%10.3m|%-8c{1}|%-12.5p|%%|%x|%d{}] %m%n
""",
    "conversion errors stay literal": """
log4cplus.rootLogger = FATAL, A
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = [%Y|%5]|%-]|%.x|%p{x}] %m%n
""",
    "unclosed option swallows the rest": """
log4cplus.rootLogger = FATAL, A
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = %m %c{1 %n
""",
    "trailing percent, empty pattern, deprecated Pattern, missing pattern": """
log4cplus.rootLogger = DEBUG, A, B, C, D
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = A %m%
log4cplus.appender.B = log4cplus::ConsoleAppender
log4cplus.appender.B.layout = log4cplus::PatternLayout
log4cplus.appender.B.layout.ConversionPattern =
log4cplus.appender.C = log4cplus::ConsoleAppender
log4cplus.appender.C.layout = log4cplus::PatternLayout
log4cplus.appender.C.layout.Pattern = C %p %m%n
log4cplus.appender.D = log4cplus::ConsoleAppender
log4cplus.appender.D.layout = log4cplus::PatternLayout
""",
    "SimpleLayout by default, TTCCLayout with DateFormat, unknown layout": """
log4cplus.rootLogger = DEBUG, A, B, C
log4cplus.appender.A = log4cplus::ConsoleAppender
log4cplus.appender.B = log4cplus::ConsoleAppender
log4cplus.appender.B.layout = log4cplus::TTCCLayout
log4cplus.appender.B.layout.DateFormat = %H:%M:%S.%q
log4cplus.appender.C = log4cplus::ConsoleAppender
log4cplus.appender.C.layout = log4cplus::XmlLayout
""",
    "levels, additivity, INHERITED, OFF, thresholds": """
log4cplus.rootLogger = info, A
log4cplus.logger.dcmtk.apps = Debug, B
log4cplus.additivity.dcmtk.apps = FALSE
log4cplus.logger.dcmtk.apps.dcmqrscp = INHERITED
log4cplus.logger.dcmtk.dcmnet = OFF
log4cplus.appender.A = log4cplus::ConsoleAppender
log4cplus.appender.B = log4cplus::ConsoleAppender
log4cplus.appender.B.Threshold = bogus
log4cplus.appender.B.layout = log4cplus::PatternLayout
log4cplus.appender.B.layout.ConversionPattern = B %p %m%n
""",
    "threshold and filters": """
log4cplus.rootLogger = TRACE, A, B
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = A %p %m%n
log4cplus.appender.A.Threshold = error
log4cplus.appender.B = log4cplus::ConsoleAppender
log4cplus.appender.B.layout = log4cplus::PatternLayout
log4cplus.appender.B.layout.ConversionPattern = B %p %m%n
log4cplus.appender.B.filters.1 = log4cplus::spi::StringMatchFilter
log4cplus.appender.B.filters.1.StringToMatch = dcmqrscp
log4cplus.appender.B.filters.1.AcceptOnMatch = true
log4cplus.appender.B.filters.2 = log4cplus::spi::NoSuchFilter
log4cplus.appender.B.filters.3 = log4cplus::spi::LogLevelRangeFilter
log4cplus.appender.B.filters.3.LogLevelMin = ERROR
log4cplus.appender.B.filters.4 = log4cplus::spi::DenyAllFilter
""",
    "variables: file settings first, then environment, recursively": """
log4cplus.rootLogger = DEBUG, F
log4cplus.appender.F = log4cplus::FileAppender
log4cplus.appender.F.File = ${QRSCP_TEST_DIR}/${appname}-${suffix}.log
log4cplus.appender.F.layout = log4cplus::PatternLayout
log4cplus.appender.F.layout.ConversionPattern = %p [${QRSCP_TEST_WORD}] [${no_such_variable}] %m%n
suffix = ${part}-${part}
part = x
QRSCP_TEST_DIR = .
""",
    "unclosed variable": """
log4cplus.rootLogger = FATAL, A
""" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = [${appname}] [${unclosed] %m%n
""",
    "appender errors": """
log4cplus.rootLogger = DEBUG, A,, missing ,
log4cplus.appender.A = log4cplus::ConsoleAppender
log4cplus.appender.B = log4cplus::NoSuchAppender
log4cplus.appender.C = log4cplus::FileAppender
log4cplus.appender.D = log4cplus::FileAppender
log4cplus.appender.D.File = no/such/directory.log
log4cplus.appender.N = log4cplus::NullAppender
log4cplus.logger.dcmtk.dcmnet =
log4cplus.logger.dcmtk.dcmdata = DEBUG, N
""",
    "no appender anywhere": """
log4cplus.rootLogger = DEBUG
log4cplus.appender.A = log4cplus::ConsoleAppender
""",
    "FileAppender empties its file, RollingFileAppender appends": """
log4cplus.rootLogger = DEBUG, F, R
log4cplus.appender.F = log4cplus::FileAppender
log4cplus.appender.F.File = file.log
log4cplus.appender.R = log4cplus::RollingFileAppender
log4cplus.appender.R.File = rolling.log
log4cplus.appender.R.MaxFileSize = 1KB
""",
    "DCMTK's usual file layout": """
log4cplus.rootLogger = DEBUG, logfile
log4cplus.appender.logfile = log4cplus::RollingFileAppender
log4cplus.appender.logfile.File = ${appname}.log
log4cplus.appender.logfile.Append = true
log4cplus.appender.logfile.MaxFileSize = 5MB
log4cplus.appender.logfile.MaxBackupIndex = 10
log4cplus.appender.logfile.layout = log4cplus::PatternLayout
log4cplus.appender.logfile.layout.ConversionPattern = %D{%Y-%m-%d %H:%M:%S.%q} %5p - %-8c{1} - %m%n
""",
    "file with no settings": "# only a comment\n\n",
    "file with no log4cplus settings": "foo = bar\n",
    "file without rootLogger": "log4cplus.logger.dcmtk = INFO\n",
}


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.parametrize("name", list(ORACLE_CONFIGS))
def test_same_output_as_dcmtk(tmp_path: Path, name: str) -> None:
    env = {"QRSCP_TEST_DIR": "/nonexistent", "QRSCP_TEST_WORD": "from the environment"}
    theirs, ours = compare_startup(tmp_path, ORACLE_CONFIGS[name], env)
    assert ours == theirs
    if name.startswith("FileAppender"):
        assert ours[2]["rolling.log"].startswith("line already there\nDEBUG - ")
        assert ours[2]["file.log"].startswith("DEBUG - ")


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.parametrize("directory", [False, True])
def test_missing_config_file_as_dcmtk(tmp_path: Path, directory: bool) -> None:
    config = tmp_path / "log.cfg"
    if directory:
        config.mkdir()
    theirs = run_dcmtk("dcmqrscp", "-lc", str(config), "-c", MISSING, str(free_port()), cwd=tmp_path)
    with pytest.raises(logconfig.LogConfigError) as raised:
        logconfig.apply(str(config), appname="dcmqrscp")
    assert theirs.returncode == 1
    assert theirs.stderr.decode() == f"{ERROR_HEADER}error: {raised.value}\n"


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.skipif(not Path("/etc/dcmtk/filelog.cfg").exists(), reason="DCMTK's filelog.cfg not installed")
def test_shipped_filelog_cfg(tmp_path: Path) -> None:
    """Same log file as DCMTK; the console line goes to stderr as the file asks (DCMTK: stdout)."""
    config_text = Path("/etc/dcmtk/filelog.cfg").read_text()
    theirs, ours = compare_startup(tmp_path, config_text)
    assert ours[2] == theirs[2]
    assert ours[2]["dcmqrscp.log"] == (
        "DATE TIME.MS DEBUG - dcmqrscp - $dcmtk: dcmqrscp v3.6.7 DATE $\n"
        "DATE TIME.MS DEBUG - dcmqrscp - \n"
        "DATE TIME.MS FATAL - dcmqrscp - cannot access missing.cfg: No such file or directory\n")
    console_line = "TIME FATAL: cannot access missing.cfg: No such file or directory\n"
    assert (theirs[0], theirs[1]) == (console_line, "")
    assert (ours[0], ours[1]) == ("", console_line)


# --- an association, as DCMTK's filelog.cfg logs it ---------------------------------------------------------------

DCMTK_LOGGERS = {"dcmqrscp": log.APP, "dcmqrdb": log.DB, "dcmnet": log.NET, "dcmdata": log.DATA}
FILELOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([ A-Z]{5}) - (\S+) *- (.*)")


def dcmtk_association_log(directory: Path) -> str:
    """Run DCMTK's dcmqrscp with filelog.cfg in ``directory``, send it a C-ECHO, return dcmqrscp.log."""
    (directory / "db").mkdir()
    (directory / "qr.cfg").write_text(
        "NetworkTCPPort = 104\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRT {directory / 'db'} RW (10, 1024mb) ANY\nAETable END\n")
    port = free_port()
    server = subprocess.Popen([dcmtk("dcmqrscp"), "-lc", "/etc/dcmtk/filelog.cfg", "-c", "qr.cfg", str(port)],
                              cwd=directory, env=dcmtk_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        echo = run_dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "QRT", "127.0.0.1", str(port))
        assert echo.returncode == 0, echo.stderr
        deadline = time.monotonic() + 10
        while "Cleaned up after child" not in (directory / "dcmqrscp.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.kill()
        server.wait()
    return (directory / "dcmqrscp.log").read_text()


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.skipif(not Path("/etc/dcmtk/filelog.cfg").exists(), reason="DCMTK's filelog.cfg not installed")
def test_association_lines_as_dcmtk(tmp_path: Path) -> None:
    """Our records, on DCMTK's logger names with DCMTK's messages, give DCMTK's lines in dcmqrscp.log."""
    (tmp_path / "dcmtk").mkdir()
    theirs = dcmtk_association_log(tmp_path / "dcmtk")
    assert " INFO - dcmqrdb  - Association Received (localhost:ECHOSCU -> QRT)\n" in theirs
    records = []
    for line in theirs.splitlines():
        match = FILELOG_LINE.fullmatch(line)
        assert match, line
        level = logconfig.LEVELS[match[2].strip()]
        records.append((DCMTK_LOGGERS[match[3]], level, match[4]))
    (tmp_path / "ours").mkdir()
    ours = run_ours(Path("/etc/dcmtk/filelog.cfg"), records, tmp_path / "ours")
    assert ours.returncode == 0, ours.stderr
    assert normalised((tmp_path / "ours" / "dcmqrscp.log").read_text()) == normalised(theirs)


# --- in-process tests ---------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_dcmtk_loggers() -> Iterator[None]:
    """Leave the ``dcmtk`` logger tree as a fresh process has it."""
    yield
    for name in ["dcmtk", *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        if name == "dcmtk" or name.startswith("dcmtk."):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(logging.NOTSET)
            logger.propagate = True


def configure(tmp_path: Path, text: str) -> None:
    """Apply the properties ``text`` (written to a file in ``tmp_path``)."""
    config = tmp_path / "log.cfg"
    config.write_text(text)
    log.configure(config_file=str(config), appname="dcmqrscp")


def test_filelog_levels_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configure(tmp_path, """
log4cplus.rootLogger = DEBUG, logfile
log4cplus.logger.dcmtk.dcmqrdb.progress = INFO
log4cplus.appender.logfile = log4cplus::RollingFileAppender
log4cplus.appender.logfile.File = ${appname}.log
log4cplus.appender.logfile.layout = log4cplus::PatternLayout
log4cplus.appender.logfile.layout.ConversionPattern = %D{%Y-%m-%d %H:%M:%S.%q} %5p - %-8c{1} - %m%n
""")
    assert logging.getLogger("dcmtk.dcmqrdb.progress").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("dcmtk.dcmnet").getEffectiveLevel() == logging.DEBUG
    assert not logging.getLogger("dcmtk.dcmnet").isEnabledFor(log.TRACE)
    log.get_logger(log.DB).info("Association Received (localhost:ECHOSCU -> QRT)")
    line = (tmp_path / "dcmqrscp.log").read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  INFO - dcmqrdb  - "
                        r"Association Received \(localhost:ECHOSCU -> QRT\)\n", line)


def test_time_conversions() -> None:
    created = 1_700_000_000.123456
    assert logconfig.format_time(created, "%Y-%m-%d %H:%M:%S.%q|%Q|%%q", utc=True) == \
        "2023-11-14 22:13:20.123|123.456|%q"
    local = time.strftime("%H:%M:%S", time.localtime(created))
    assert logconfig.format_time(created, "%H:%M:%S", utc=False) == local


def test_pattern_conversions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, "log4cplus.rootLogger = TRACE, A\n" + CONSOLE +
              "log4cplus.appender.A.layout.ConversionPattern = %P|%5p|%i|%t|%-10c{1}|%.5m|%m%n\n")
    log.get_logger(log.NET).log(log.TRACE, "first line\nsecond")
    expected = "".join(f"T|TRACE|{os.getpid()}|{threading.get_ident()}|dcmnet    |{text[-5:]}|{text}\n"
                       for text in ("first line", "second"))
    assert capsys.readouterr().out == expected


def test_exception_lines_are_formatted_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, "log4cplus.rootLogger = INFO, A\n" + CONSOLE +
              "log4cplus.appender.A.layout.ConversionPattern = %P: %m%n\n")
    try:
        raise ValueError("boom")
    except ValueError:
        log.get_logger(log.APP).exception("failed")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "E: failed"
    assert lines[-1] == "E: ValueError: boom"
    assert all(line.startswith("E: ") for line in lines)


def test_rolling_file_appender_rolls_after_exceeding(tmp_path: Path) -> None:
    configure(tmp_path, f"""
log4cplus.rootLogger = INFO, R
log4cplus.appender.R = log4cplus::RollingFileAppender
log4cplus.appender.R.File = {tmp_path}/roll.log
log4cplus.appender.R.MaxFileSize = 1
log4cplus.appender.R.MaxBackupIndex = 2
log4cplus.appender.R.layout = log4cplus::PatternLayout
log4cplus.appender.R.layout.ConversionPattern = %m%n
""")
    logger = log.get_logger(log.DB)
    line = "x" * 999  # 1000 bytes with the newline; MaxFileSize 1 means the minimum, 200 KB
    for number in range(3 * 205 + 7):
        logger.info(f"{number:03d}{line[3:]}")
    sizes = {path.name: path.stat().st_size for path in tmp_path.glob("roll.log*")}
    assert sizes == {"roll.log": 7 * 1000, "roll.log.1": 205 * 1000, "roll.log.2": 205 * 1000}
    assert (tmp_path / "roll.log.1").read_text().startswith("410")
    assert (tmp_path / "roll.log").read_text().startswith("615")


@pytest.mark.parametrize("size, expected", [
    (None, 10 * 1024 * 1024), ("5MB", 5 * 1024 * 1024), ("500KB", 500 * 1024), ("300000", 300000),
    ("1 mb", 1024 * 1024), ("10", 200 * 1024), ("junk", 200 * 1024)])
def test_max_file_size(size: str | None, expected: int) -> None:
    assert logconfig._max_file_size(size) == expected


def test_dcmtk_spellings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``logToStderr`` and the filter keys of DCMTK's sample logger.cfg work as that file describes."""
    configure(tmp_path, """
log4cplus.rootLogger = DEBUG, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStderr = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %P: %m%n
log4cplus.appender.console.filters.1 = log4cplus::spi::LogLevelRangeFilter
log4cplus.appender.console.filters.1.logLevelMin = warn
log4cplus.appender.console.filters.1.logLevelMax = fatal
log4cplus.appender.console.filters.1.acceptOnMatch = true
log4cplus.appender.console.filters.2 = log4cplus::spi::DenyAllFilter
""")
    logger = log.get_logger(log.NET)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logger.log(level, "message")
    assert capsys.readouterr() == ("", "W: message\nE: message\n")


def test_unknown_keys_are_ignored_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``log4cplus.`` key log4cplus does not read (misspelt properties, here) is reported and ignored; the
    rest of the file works; keys outside ``log4cplus.`` are variables, not reported."""
    configure(tmp_path, """
log4cplus.rootLogger = INFO, A
log4cplus.rootlogger = DEBUG
log4cplus.appender.A = log4cplus::ConsoleAppender
log4cplus.appender.A.Treshold = ERROR
log4cplus.appender.A.layout = log4cplus::PatternLayout
log4cplus.appender.A.layout.ConversionPattern = ${prefix} %p %m%n
log4cplus.appender.A.layout.ConversionPatern = %m%n
log4cplus.appender.A.filters.1 = log4cplus::spi::StringMatchFilter
log4cplus.appender.A.filters.1.StringToMatch = hidden
log4cplus.appender.A.filters.1.StringToMach = x
prefix = A
""")
    logger = log.get_logger(log.NET)
    logger.debug("debug")
    logger.info("shown")
    logger.info("hidden")
    assert capsys.readouterr() == ("A INFO shown\n", "".join(
        f"log4cplus:WARN Unknown setting ignored: log4cplus.{key}\n" for key in (
            "appender.A.Treshold", "appender.A.filters.1.StringToMach", "appender.A.layout.ConversionPatern",
            "rootlogger")))


@pytest.mark.parametrize("name", ["logger.cfg", "filelog.cfg"])
def test_dcmtk_sample_files_have_no_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = Path("/etc/dcmtk") / name
    if not path.exists():
        pytest.skip(f"DCMTK's {name} not installed")
    monkeypatch.chdir(tmp_path)   # filelog.cfg writes dcmqrscp.log here
    log.configure(config_file=str(path), appname="dcmqrscp")
    assert "log4cplus:" not in capsys.readouterr().err


def test_level_match_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, "log4cplus.rootLogger = ALL, A\n" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = %P%n
log4cplus.appender.A.filters.1 = log4cplus::spi::LogLevelMatchFilter
log4cplus.appender.A.filters.1.LogLevelToMatch = INFO
log4cplus.appender.A.filters.1.AcceptOnMatch = false
""")
    for level in (log.TRACE, logging.INFO, logging.CRITICAL):
        log.get_logger(log.DB).log(level, "x")
    assert capsys.readouterr().out == "T\nF\n"


def test_root_and_dcmtk_logger_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``log4cplus.logger.dcmtk`` sets the level of the whole tree; its appenders add to the root's."""
    configure(tmp_path, "log4cplus.rootLogger = ERROR, A\nlog4cplus.logger.dcmtk = INFO, B\n" + CONSOLE + """
log4cplus.appender.A.layout.ConversionPattern = A %m%n
log4cplus.appender.B = log4cplus::ConsoleAppender
log4cplus.appender.B.layout = log4cplus::PatternLayout
log4cplus.appender.B.layout.ConversionPattern = B %m%n
""")
    log.get_logger(log.DB).info("x")
    log.get_logger(log.DB).debug("y")
    assert capsys.readouterr().out == "B x\nA x\n"


def test_invalid_root_level_uses_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DCMTK aborts ("No valid LogLevel found"); we report it and log at INFO."""
    configure(tmp_path, "log4cplus.rootLogger = VERBOSE, A\n" + CONSOLE +
              "log4cplus.appender.A.layout.ConversionPattern = %m%n\n")
    log.get_logger(log.DB).info("shown")
    log.get_logger(log.DB).debug("hidden")
    out, err = capsys.readouterr()
    assert out == "shown\n"
    assert err == 'log4cplus:ERROR Invalid log level for the root logger: "VERBOSE, A", using INFO\n'


def test_no_appender_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, "log4cplus.rootLogger = INFO, A\nlog4cplus.logger.dcmtk.dcmnet = INFO\n"
                        "log4cplus.additivity.dcmtk.dcmnet = false\n" + CONSOLE +
                        "log4cplus.appender.A.layout.ConversionPattern = %m%n\n")
    log.get_logger(log.DB).info("to A")
    for _ in range(2):
        log.get_logger(log.NET + ".sub").warning("nowhere")
    assert capsys.readouterr() == ("to A\n", "log4cplus:ERROR No appenders could be found for logger "
                                   "(dcmtk.dcmnet.sub).\nlog4cplus:ERROR Please initialize the log4cplus "
                                   "system properly.\n")


def test_daily_rolling_file_appender_writes_without_rotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "daily.log").write_text("old\n")
    configure(tmp_path, f"""
log4cplus.rootLogger = INFO, D
log4cplus.appender.D = log4cplus::DailyRollingFileAppender
log4cplus.appender.D.File = {tmp_path}/daily.log
log4cplus.appender.D.Schedule = HOURLY
""")
    log.get_logger(log.DB).info("new")
    assert (tmp_path / "daily.log").read_text() == "old\nINFO - new\n"
    assert "DailyRollingFileAppender is not supported" in capsys.readouterr().err


def test_reconfiguring_replaces_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, "log4cplus.rootLogger = INFO, A\nlog4cplus.logger.dcmtk.dcmnet = DEBUG, A\n" +
              CONSOLE + "log4cplus.appender.A.layout.ConversionPattern = 1 %m%n\n")
    configure(tmp_path, "log4cplus.rootLogger = INFO, A\n" + CONSOLE +
              "log4cplus.appender.A.layout.ConversionPattern = 2 %m%n\n")
    log.get_logger(log.NET).debug("hidden")
    log.get_logger(log.NET).info("once")
    assert capsys.readouterr().out == "2 once\n"


@pytest.mark.parametrize("text, message", [
    ("", "does not contain any settings"),
    ("  # comment\n\n", "does not contain any settings"),
    ("something = else\n", "does not contain any valid settings"),
    ("log4cplus.logger.dcmtk = INFO\n", "does not set up log4cplus.rootLogger"),
])
def test_unusable_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "log.cfg"
    config.write_text(text)
    with pytest.raises(logconfig.LogConfigError, match=message):
        logconfig.apply(str(config), appname="dcmqrscp")


def test_properties_syntax(tmp_path: Path) -> None:
    config = tmp_path / "log.cfg"
    config.write_text("  # comment\n key with space = value = more \r\nno equals sign\nk=\\\nnext = 1\n"
                      "dup = 1\ndup = 2\n")
    assert logconfig.read_properties(str(config)) == {
        "key with space": "value = more", "k": "\\", "next": "1", "dup": "2"}
