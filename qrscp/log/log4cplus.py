"""``-lc``: configure the ``dcmtk`` logger tree from a log4cplus properties file, as DCMTK's OFLog does.

DCMTK 3.6.7 embeds log4cplus 1.1 with a few OFFIS additions (``%P``, every line of a multi-line message
formatted with the whole pattern, the variables ``${appname}``, ``${hostname}``, ``${pid}``, ``${date}``,
``${time}``). This module reads the same files and gives the same output through Python's ``logging``:

* the properties file: ``key = value`` lines, ``#`` comments, no line continuation; ``${name}`` expands to
  another setting of the file, else to the environment variable (recursively);
* ``log4cplus.rootLogger`` configures the logger ``dcmtk`` (every logger of ours is below it), merged with
  ``log4cplus.logger.dcmtk`` if the file also sets that one; ``log4cplus.logger.dcmtk.<name>`` and
  ``log4cplus.additivity.dcmtk.<name>`` configure ``dcmtk.<name>``; other loggers receive nothing of ours;
* appenders: ConsoleAppender, FileAppender, RollingFileAppender, NullAppender (DailyRollingFileAppender
  writes its file without rotation); ``Threshold`` and ``filters.<n>``;
* layouts: PatternLayout, SimpleLayout, TTCCLayout.

Problems are reported on stderr in log4cplus's words (``log4cplus:ERROR ...``) and the setting at fault
is skipped. Differences from DCMTK: a ``log4cplus.`` key that log4cplus does not read (a misspelt
property, say) is ignored with a warning, where log4cplus ignores it silently; the property
names as DCMTK's sample files spell them also work (:data:`DCMTK_SPELLINGS`); an invalid root level, on
which DCMTK aborts, means INFO; lines are always flushed; DailyRollingFileAppender does not rotate; the
network appenders (SysLog, Socket, Log4jUdp) and AsyncAppender are unknown classes.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from qrscp import log

#: The logger that log4cplus's root logger configures: every logger of ours is below it.
ROOT = "dcmtk"

#: Python level used for log4cplus's OFF: above FATAL, so nothing passes.
OFF = logging.CRITICAL + 10

#: log4cplus level names (case-insensitive) and the Python levels they select. ALL is TRACE in
#: log4cplus; NOTSET (and any unknown name) means "inherit from the parent logger".
LEVELS: dict[str, int] = {
    "OFF": OFF,
    "FATAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": log.TRACE,
    "ALL": log.TRACE,
    "NOTSET": logging.NOTSET,
}

#: Level names as log4cplus prints them (``%p``), lowest first.
_LEVEL_NAMES = ((log.TRACE, "TRACE"), (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"),
                (logging.WARNING, "WARN"), (logging.ERROR, "ERROR"), (logging.CRITICAL, "FATAL"))

#: Property names as DCMTK's own sample files (``logger.cfg``, ``filelog.cfg``) spell them, and the
#: names log4cplus reads. log4cplus compares names exactly, so with DCMTK a ConsoleAppender configured
#: with ``logToStderr = true`` writes to stdout; we honour both spellings.
DCMTK_SPELLINGS = {
    "logToStdErr": "logToStderr",
    "LogLevelMin": "logLevelMin",
    "LogLevelMax": "logLevelMax",
    "AcceptOnMatch": "acceptOnMatch",
}

#: What log4cplus 1.1 reads below ``log4cplus.``: keys, key prefixes, and the properties of an appender,
#: of its layout and of its filters. Another key is reported by :func:`_warn_unknown_keys`.
_TOP_LEVEL_KEYS = {"rootLogger", "configDebug", "quietMode", "disableOverride"}
_TOP_LEVEL_PREFIXES = ("logger.", "additivity.", "appender.")
_APPENDER_PROPERTIES = {"layout", "Threshold", "ImmediateFlush", "File", "Append", "MaxFileSize", "MaxBackupIndex",
                        "Schedule", "DatePattern", "BufferSize", "ReopenDelay", "UseLockFile", "LockFile", "Locale",
                        "CreateDirs", "logToStdErr", "logToStderr"}
_LAYOUT_PROPERTIES = {"ConversionPattern", "Pattern", "DateFormat", "Use_gmtime", "ThreadPrinting",
                      "CategoryPrefixing", "ContextPrinting"}
_FILTER_PROPERTIES = {"LogLevelToMatch", "LogLevelMin", "LogLevelMax", "StringToMatch", "AcceptOnMatch",
                      "logLevelMin", "logLevelMax", "acceptOnMatch"}

#: RollingFileAppender: default and smallest ``MaxFileSize`` (log4cplus's values).
DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
MINIMUM_MAX_FILE_SIZE = 200 * 1024

#: Bounds on ``${...}`` expansion, where log4cplus loops forever on a self-reference.
_MAX_EXPANSIONS = 100
_MAX_EXPANSION_PASSES = 20

Properties = dict[str, str]


class LogConfigError(Exception):
    """The ``-lc`` file cannot be used at all; ``str()`` is DCMTK's message (printed as ``error: ...``)."""


def apply(path: str, appname: str) -> None:
    """Configure the ``dcmtk`` logger tree from the log4cplus properties file ``path``.

    ``appname`` is the value of ``${appname}``. Raises :class:`LogConfigError` for the files DCMTK
    rejects before configuring anything (missing, unreadable, no settings, no ``log4cplus.rootLogger``);
    everything else is reported on stderr and skipped. An invalid root level, which makes DCMTK abort,
    is reported and replaced by INFO (OFLog's initial root level).
    """
    props = read_properties(path)
    if not props:
        raise LogConfigError("Specified --log-config file does not contain any settings")
    if not any(key.startswith("log4cplus.") for key in props):
        raise LogConfigError("Specified --log-config file does not contain any valid settings")
    if "log4cplus.rootLogger" not in props:
        raise LogConfigError("Specified --log-config file does not set up log4cplus.rootLogger")
    now = time.localtime()
    props.update(appname=appname, hostname=socket.gethostname(), pid=str(os.getpid()),
                 date=time.strftime("%Y%m%d", now), time=time.strftime("%H%M%S", now))
    _expand_all(props)
    settings = _subset(props, "log4cplus.")
    _warn_unknown_keys(settings)
    _configure(settings)


def read_properties(path: str) -> Properties:
    """Read a log4cplus properties file; raise :class:`LogConfigError` as DCMTK's checks do."""
    if not os.path.exists(path) or os.path.isdir(path):
        raise LogConfigError("Specified --log-config file does not exist")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            lines = file.read().split("\n")
    except OSError:
        raise LogConfigError("Specified --log-config file cannot be read") from None
    props: Properties = {}
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.removesuffix("\r").partition("=")
        if equals:
            props[key.rstrip()] = value.strip()
    return props


# --- variables ---------------------------------------------------------------------------------

def _expand(text: str, props: Properties) -> tuple[str, bool]:
    """Expand ``${name}`` in ``text`` (setting of the file, else environment); return (text, changed).

    A name without a value stays as written. A missing ``}`` leaves the whole text as written.
    """
    result, start, changed = text, 0, False
    for _ in range(_MAX_EXPANSIONS):
        opening = result.find("${", start)
        if opening < 0:
            break
        closing = result.find("}", opening)
        if closing < 0:
            _loglog("ERROR", f'"{result}" has no closing brace. Opening brace at position {opening}.')
            return text, False
        name = result[opening + 2:closing]
        value = props.get(name) or os.environ.get(name, "")
        if value:
            result = result[:opening] + value + result[closing + 1:]  # expanded again from here
            changed = True
        else:
            start = closing + 1
    return result, changed


def _expand_all(props: Properties) -> None:
    """Expand the variables in every key and value until nothing changes, as log4cplus does."""
    for _ in range(_MAX_EXPANSION_PASSES):
        changed = False
        for key in sorted(props):
            value = props.pop(key)
            new_key, key_changed = _expand(key, props)
            new_value, value_changed = _expand(value, props)
            props[new_key] = new_value
            changed = changed or key_changed or value_changed
        if not changed:
            return


# --- small parsers -----------------------------------------------------------------------------

def _subset(props: Properties, prefix: str) -> Properties:
    """The settings whose key starts with ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in props.items() if key.startswith(prefix)}


def _get(props: Properties, key: str) -> str | None:
    """The setting ``key``, or its spelling in DCMTK's sample files."""
    value = props.get(key)
    if value is None and key in DCMTK_SPELLINGS:
        value = props.get(DCMTK_SPELLINGS[key])
    return value


def _parse_bool(text: str) -> bool | None:
    """A boolean as log4cplus reads it: ``true``/``false`` (any case) or an integer; None if neither."""
    text = text.strip().lower()
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text) != 0
    except ValueError:
        return None


def _get_bool(props: Properties, key: str, default: bool) -> bool:
    """The boolean setting ``key``; ``default`` if it is missing or not a boolean."""
    value = _parse_bool(_get(props, key) or "")
    return default if value is None else value


def _level(name: str) -> int:
    """The Python level for a log4cplus level name; NOTSET for unknown names (as log4cplus)."""
    return LEVELS.get(name.strip().upper(), logging.NOTSET)


def _level_name(levelno: int) -> str:
    """log4cplus's name of a record's level."""
    name = "TRACE"
    for value, level_name in _LEVEL_NAMES:
        if levelno >= value:
            name = level_name
    return name


def _leading_int(text: str) -> int:
    """C's ``atoi``: the integer at the start of ``text`` (after blanks), 0 if there is none."""
    text = text.lstrip()
    end = 1 if text[:1] in ("+", "-") else 0
    while end < len(text) and text[end].isdigit():
        end += 1
    try:
        return int(text[:end])
    except ValueError:
        return 0


def _max_file_size(value: str | None) -> int:
    """RollingFileAppender's ``MaxFileSize``: bytes, or a number ending in ``KB``/``MB``; >= 200 KB."""
    if not value:
        return DEFAULT_MAX_FILE_SIZE
    size = _leading_int(value)
    suffix = value.upper()[-2:] if len(value) > 2 else ""
    size *= {"MB": 1024 * 1024, "KB": 1024}.get(suffix, 1)
    return max(size, MINIMUM_MAX_FILE_SIZE)


def _loglog(severity: str, text: str) -> None:
    """Report a configuration problem the way log4cplus's LogLog does: ``log4cplus:ERROR text``."""
    sys.stderr.write(f"log4cplus:{severity} {text}\n")
    sys.stderr.flush()


# --- layouts -----------------------------------------------------------------------------------

def _message(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's message, followed by its traceback if it carries one."""
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + formatter.formatException(record.exc_info)
    return message


def format_time(created: float, fmt: str, utc: bool) -> str:
    """log4cplus's time format: ``strftime`` plus ``%q`` (milliseconds) and ``%Q`` (``ms.fraction``)."""
    seconds, micros = divmod(round(created * 1_000_000), 1_000_000)
    out, i = [], 0
    while i < len(fmt):
        pair = fmt[i:i + 2]
        if pair == "%q":
            out.append(f"{micros // 1000:03d}")
        elif pair == "%Q":
            out.append(f"{micros // 1000:03d}.{micros % 1000:03d}")
        elif pair.startswith("%"):
            out.append(pair)
        else:
            out.append(fmt[i])
            i += 1
            continue
        i += 2
    return time.strftime("".join(out), time.gmtime(seconds) if utc else time.localtime(seconds))


class SimpleLayout(logging.Formatter):
    """log4cplus's SimpleLayout: ``LEVEL - message``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_level_name(record.levelno)} - {_message(self, record)}\n"


class TTCCLayout(logging.Formatter):
    """log4cplus's TTCCLayout: ``time [thread] LEVEL logger <NDC> - message``.

    The time is ``DateFormat`` (local time, UTC with ``Use_gmtime``), or without it the milliseconds
    since the program started.
    """

    def __init__(self, props: Properties) -> None:
        super().__init__()
        self.date_format = props.get("DateFormat", "")
        self.utc = _get_bool(props, "Use_gmtime", False)

    def format(self, record: logging.LogRecord) -> str:
        if self.date_format:
            stamp = format_time(record.created, self.date_format, self.utc)
        else:
            stamp = str(int(record.relativeCreated))
        return (f"{stamp} [{record.thread}] {_level_name(record.levelno)} {record.name} <> - "
                f"{_message(self, record)}\n")


@dataclass(frozen=True)
class _Converter:
    """One piece of a conversion pattern: literal ``text`` (``char`` empty) or a ``%`` conversion."""

    char: str = ""
    text: str = ""  # the literal, or the conversion's ``{option}``
    min_len: int = -1
    max_len: int = sys.maxsize
    left_align: bool = False


@functools.cache
def _canonical_hostname() -> str:
    """``%H``: the canonical name of this host (looked up once), as log4cplus's ``getHostname(true)``."""
    hostname = socket.gethostname()
    try:
        return socket.gethostbyname_ex(hostname)[0]
    except OSError:
        return hostname


def _logger_name(name: str, option: str) -> str:
    """``%c{n}``: the last ``n`` components of the logger name (all of it for n <= 0 or too few)."""
    precision = _leading_int(option)
    parts = name.split(".")
    return ".".join(parts[-precision:]) if 0 < precision < len(parts) else name


#: The conversions of PatternLayout: character -> function of (record, message line, option).
_CONVERSIONS: dict[str, Callable[[logging.LogRecord, str, str], str]] = {
    "b": lambda record, _, __: os.path.basename(record.pathname),
    "c": lambda record, _, option: _logger_name(record.name, option),
    "d": lambda record, _, option: format_time(record.created, option or "%Y-%m-%d %H:%M:%S", True),
    "D": lambda record, _, option: format_time(record.created, option or "%Y-%m-%d %H:%M:%S", False),
    "F": lambda record, _, __: record.pathname,
    "h": lambda _, __, ___: socket.gethostname(),
    "H": lambda _, __, ___: _canonical_hostname(),
    "i": lambda record, _, __: str(record.process),
    "l": lambda record, _, __: f"{record.pathname}:{record.lineno}",
    "L": lambda record, _, __: str(record.lineno),
    "m": lambda _, line, __: line,
    "M": lambda record, _, __: record.funcName or "",
    "n": lambda _, __, ___: "\n",
    "p": lambda record, _, __: _level_name(record.levelno),
    "P": lambda record, _, __: _level_name(record.levelno)[0],
    "r": lambda record, _, __: str(int(record.relativeCreated)),
    "t": lambda record, _, __: str(record.thread),
    "T": lambda _, __, ___: str(threading.get_native_id()),
    "x": lambda _, __, ___: "",  # NDC: not used by DCMTK
    "X": lambda _, __, ___: "",  # MDC: not used by DCMTK
}

#: Conversions that take a ``{option}``.
_WITH_OPTION = frozenset("cdDX")


def parse_pattern(pattern: str) -> list[_Converter]:
    """Split a ConversionPattern into converters, reporting errors as log4cplus's PatternParser.

    ``%[-][min][.max]X``: ``-`` aligns left in ``min`` columns; a value longer than ``max`` keeps its
    last ``max`` characters. ``%%`` is a percent sign; a ``%`` ending the pattern is literal; an
    unknown conversion stays in the output as written.
    """
    converters: list[_Converter] = []
    literal = ""
    i, end = 0, len(pattern)

    def flush_literal() -> None:
        nonlocal literal
        if literal:
            converters.append(_Converter(text=literal))
        literal = ""

    while i < end:
        char = pattern[i]
        i += 1
        if char != "%" or i == end:
            literal += char
            continue
        if pattern[i] == "%":
            literal += "%"
            i += 1
            continue
        flush_literal()
        spec, state = "%", "converter"
        left_align, min_len, max_len = False, -1, sys.maxsize
        while i < end:
            char = pattern[i]
            i += 1
            spec += char
            digit = "0" <= char <= "9"
            if state == "converter" and char == "-":
                left_align = True
            elif state in ("converter", "min") and char == ".":
                state = "dot"
            elif state in ("converter", "min") and digit:
                min_len = max(min_len, 0) * 10 + int(char)
                state = "min"
            elif state == "dot" and not digit:
                _loglog("ERROR", f'Error occurred in position {i}.\n Was expecting digit, instead got '
                                 f'char "{char}".')
                literal = spec
                break
            elif state in ("dot", "max") and digit:
                max_len = (max_len if state == "max" else 0) * 10 + int(char)
                state = "max"
            elif char in _CONVERSIONS:
                option = ""
                if char in _WITH_OPTION and pattern[i:i + 1] == "{":
                    closing = pattern.find("}", i)
                    if closing < 0:
                        _loglog("ERROR", f"No matching '}}' found in conversion pattern string \"{pattern}\"")
                        i = end
                    else:
                        option, i = pattern[i + 1:closing], closing + 1
                converters.append(_Converter(char, option, min_len, max_len, left_align))
                break
            else:
                _loglog("ERROR", f"Unexpected char [{char}] at position {i} in conversion pattern.")
                converters.append(_Converter(text=spec))
                break
        else:
            literal = spec  # the pattern ended inside a conversion
    flush_literal()
    return converters


class PatternLayout(logging.Formatter):
    """log4cplus's PatternLayout, with DCMTK's addition: each line of a message gets the whole pattern."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.converters = parse_pattern(pattern)
        if not self.converters:
            _loglog("WARN", "PatternLayout pattern is empty.  Using default...")
            self.converters = [_Converter("m")]

    def format(self, record: logging.LogRecord) -> str:
        return "".join(self._format_line(record, line) for line in _message(self, record).split("\n"))

    def _format_line(self, record: logging.LogRecord, line: str) -> str:
        out = []
        for converter in self.converters:
            if not converter.char:
                out.append(converter.text)
                continue
            value = _CONVERSIONS[converter.char](record, line, converter.text)
            if len(value) > converter.max_len:
                value = value[len(value) - converter.max_len:]
            elif converter.left_align:
                value = value.ljust(converter.min_len)
            else:
                value = value.rjust(converter.min_len)
            out.append(value)
        return "".join(out)


def _pattern_layout(props: Properties) -> logging.Formatter | None:
    """PatternLayout from ``ConversionPattern`` (or the deprecated ``Pattern``); None if neither is set."""
    if "Pattern" in props:
        _loglog("WARN", 'PatternLayout- the "Pattern" property has been deprecated.  '
                        'Use "ConversionPattern" instead.')
    pattern = props.get("ConversionPattern", props.get("Pattern"))
    if pattern is None:
        error = "ConversionPattern not specified in properties"
        _loglog("ERROR", error)
        _loglog("ERROR", f"Error while creating Layout: {error}")
        return None
    return PatternLayout(pattern)


_LAYOUTS: dict[str, Callable[[Properties], logging.Formatter | None]] = {
    "log4cplus::PatternLayout": _pattern_layout,
    "log4cplus::SimpleLayout": lambda _: SimpleLayout(),
    "log4cplus::TTCCLayout": TTCCLayout,
}


def _layout(props: Properties) -> logging.Formatter:
    """The appender's ``layout`` (SimpleLayout when missing or unusable, as log4cplus)."""
    name = props.get("layout")
    if name is None:
        return SimpleLayout()
    factory = _LAYOUTS.get(name)
    if factory is None:
        _loglog("ERROR", f'Cannot find LayoutFactory: "{name}"')
        return SimpleLayout()
    return factory(_subset(props, "layout.")) or SimpleLayout()


# --- filters -----------------------------------------------------------------------------------

ACCEPT, NEUTRAL, DENY = 1, 0, -1
Decision = Callable[[logging.LogRecord], int]


def _level_match_filter(props: Properties) -> Decision:
    """LogLevelMatchFilter: a record of exactly ``LogLevelToMatch`` is accepted/denied (``AcceptOnMatch``)."""
    level = _level(props.get("LogLevelToMatch", ""))
    on_match = ACCEPT if _get_bool(props, "AcceptOnMatch", False) else DENY
    return lambda record: on_match if level != logging.NOTSET and record.levelno == level else NEUTRAL


def _level_range_filter(props: Properties) -> Decision:
    """LogLevelRangeFilter: records outside [``LogLevelMin``, ``LogLevelMax``] are denied."""
    low = _level(_get(props, "LogLevelMin") or "")
    high = _level(_get(props, "LogLevelMax") or "")
    in_range = ACCEPT if _get_bool(props, "AcceptOnMatch", False) else NEUTRAL

    def decide(record: logging.LogRecord) -> int:
        if (low != logging.NOTSET and record.levelno < low) or (high != logging.NOTSET and record.levelno > high):
            return DENY
        return in_range
    return decide


def _string_match_filter(props: Properties) -> Decision:
    """StringMatchFilter: a message containing ``StringToMatch`` is accepted/denied (``AcceptOnMatch``)."""
    text = props.get("StringToMatch", "")
    on_match = ACCEPT if _get_bool(props, "AcceptOnMatch", False) else DENY
    return lambda record: on_match if text and text in record.getMessage() else NEUTRAL


_FILTERS: dict[str, Callable[[Properties], Decision]] = {
    "log4cplus::spi::DenyAllFilter": lambda _: lambda record: DENY,
    "log4cplus::spi::LogLevelMatchFilter": _level_match_filter,
    "log4cplus::spi::LogLevelRangeFilter": _level_range_filter,
    "log4cplus::spi::StringMatchFilter": _string_match_filter,
}


class FilterChain(logging.Filter):
    """An appender's ``filters.1``, ``filters.2``, ...: the first decision other than NEUTRAL wins."""

    def __init__(self, decisions: list[Decision]) -> None:
        super().__init__()
        self.decisions = decisions

    def filter(self, record: logging.LogRecord) -> bool:
        for decide in self.decisions:
            decision = decide(record)
            if decision != NEUTRAL:
                return decision == ACCEPT
        return True


def _filter_chain(props: Properties) -> FilterChain | None:
    """The filters numbered from 1 without a gap (an unknown class is reported and skipped)."""
    decisions = []
    number = 1
    while f"filters.{number}" in props:
        name = props[f"filters.{number}"]
        factory = _FILTERS.get(name)
        if factory is None:
            _loglog("ERROR", f"Appender::ctor()- Cannot find FilterFactory: {name}")
        else:
            decisions.append(factory(_subset(props, f"filters.{number}.")))
        number += 1
    return FilterChain(decisions) if decisions else None


# --- appenders ---------------------------------------------------------------------------------

def _open_log_file(filename: str, append: bool) -> TextIO | None:
    """Open a log file for appending (emptied first unless ``append``); report failure, return None."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
    try:
        return open(os.open(filename, flags, 0o666), "a", encoding="utf-8", errors="surrogateescape")
    except OSError:
        _loglog("ERROR", f"Unable to open file: {filename}")
        return None


class FileAppender(logging.StreamHandler):
    """log4cplus's FileAppender. Lines are always flushed: forked workers must not inherit unwritten
    lines, so ``ImmediateFlush = false`` changes nothing. A file that cannot be opened drops the lines."""

    terminator = ""

    def __init__(self, filename: str, append: bool) -> None:
        super().__init__()
        self.filename = os.path.abspath(filename)
        self.stream = _open_log_file(filename, append)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None:
            super().emit(record)

    def close(self) -> None:
        with self.lock:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
        super().close()


class RollingFileAppender(FileAppender):
    """log4cplus's RollingFileAppender: once the file exceeds ``max_file_size`` after a line, it becomes
    ``File.1`` (``File.1`` becomes ``File.2``, ... up to ``File.<max_backup_index>``) and a new file starts."""

    def __init__(self, filename: str, append: bool, max_file_size: int, max_backup_index: int) -> None:
        super().__init__(filename, append)
        self.max_file_size = max_file_size
        self.max_backup_index = max(max_backup_index, 1)

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.stream is not None and os.fstat(self.stream.fileno()).st_size > self.max_file_size:
            self._roll_over()

    def _roll_over(self) -> None:
        assert self.stream is not None
        self.stream.close()
        renames = [(f"{self.filename}.{index}", f"{self.filename}.{index + 1}")
                   for index in range(self.max_backup_index - 1, 0, -1)]
        renames.append((self.filename, f"{self.filename}.1"))
        for source, target in renames:
            try:
                os.replace(source, target)
            except FileNotFoundError:
                pass
            except OSError:
                _loglog("ERROR", f"Failed to rename file from {source} to {target}")
        self.stream = _open_log_file(self.filename, append=False)


def _log_file(props: Properties) -> str | None:
    """A file appender's ``File``; None (reported as log4cplus does) if it is empty."""
    filename = props.get("File", "")
    if not filename:
        _loglog("ERROR", "Invalid filename")
        return None
    return filename


def _file_appender(props: Properties, append_default: bool) -> logging.Handler:
    """FileAppender: ``File``, ``Append`` (and ``ImmediateFlush``, without effect: lines are always flushed)."""
    filename = _log_file(props)
    if filename is None:
        return logging.NullHandler()
    return FileAppender(filename, _get_bool(props, "Append", append_default))


def _rolling_file_appender(props: Properties) -> logging.Handler:
    """RollingFileAppender: the settings of FileAppender (appending by default), ``MaxFileSize``,
    ``MaxBackupIndex`` (default 1)."""
    filename = _log_file(props)
    if filename is None:
        return logging.NullHandler()
    try:
        max_backup_index = int(props.get("MaxBackupIndex", "1"))
    except ValueError:
        max_backup_index = 1
    return RollingFileAppender(filename, _get_bool(props, "Append", True),
                               _max_file_size(props.get("MaxFileSize")), max_backup_index)


def _daily_rolling_file_appender(props: Properties) -> logging.Handler:
    """DailyRollingFileAppender: its file is written (appended to) but never rotated."""
    _loglog("WARN", f"DailyRollingFileAppender is not supported: writing to {props.get('File', '')} "
                    "without rotation")
    return _file_appender(props, append_default=True)


def _console_appender(props: Properties) -> logging.Handler:
    """ConsoleAppender: stdout, or stderr with ``logToStdErr`` (DCMTK's files spell it ``logToStderr``)."""
    stream = sys.stderr if _get_bool(props, "logToStdErr", False) else sys.stdout
    handler = logging.StreamHandler(stream)
    handler.terminator = ""
    return handler


_APPENDERS: dict[str, Callable[[Properties], logging.Handler]] = {
    "log4cplus::ConsoleAppender": _console_appender,
    "log4cplus::DailyRollingFileAppender": _daily_rolling_file_appender,
    "log4cplus::FileAppender": lambda props: _file_appender(props, append_default=False),
    "log4cplus::NullAppender": lambda _: logging.NullHandler(),
    "log4cplus::RollingFileAppender": _rolling_file_appender,
}


def _appender(name: str, class_name: str, props: Properties) -> logging.Handler | None:
    """Create the appender ``name`` of class ``class_name``; None (reported) if the class is unknown."""
    factory = _APPENDERS.get(class_name)
    if factory is None:
        _loglog("ERROR", f"PropertyConfigurator::configureAppenders()- Cannot find AppenderFactory: {class_name}")
        return None
    layout = _layout(props)
    threshold = _level(props.get("Threshold", ""))
    filters = _filter_chain(props)
    handler = factory(props)
    handler.name = name
    handler.setFormatter(layout)
    handler.setLevel(threshold)
    if filters is not None:
        handler.addFilter(filters)
    return handler


# --- loggers -----------------------------------------------------------------------------------

@dataclass
class _LoggerSettings:
    """``LEVEL, appender, ...`` of one logger, and its additivity."""

    level: int = logging.NOTSET
    handlers: list[logging.Handler] = field(default_factory=list)
    additive: bool = True


def _logger_settings(name: str, value: str, appenders: dict[str, logging.Handler]) -> _LoggerSettings:
    """Parse ``LEVEL, appender, ...`` (``INHERITED`` or an unknown level: the parent's level)."""
    tokens = "".join(value.split()).split(",")
    tokens = [tokens[0], *filter(None, tokens[1:])] if tokens != [""] else []
    settings = _LoggerSettings()
    if not tokens:
        _loglog("ERROR", f'PropertyConfigurator::configureLogger()- Invalid config string(Logger = {name}): "{value}"')
        return settings
    settings.level = _level(tokens[0])
    for appender_name in tokens[1:]:
        if appender_name in appenders:
            settings.handlers.append(appenders[appender_name])
        else:
            _loglog("ERROR", f"PropertyConfigurator::configureLogger()- Invalid appender: {appender_name}")
    return settings


class _NoAppenderWarning(logging.Handler):
    """Placed where a chain of additive loggers ends without any appender: reports, once, a line that
    reached no appender, as log4cplus does (and keeps Python's last-resort handler from printing it)."""

    reported = False

    def __init__(self, chain_end: logging.Logger) -> None:
        super().__init__()
        self.chain_end = chain_end

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return  # an appender below the chain end received it
            if logger is self.chain_end:
                break
            logger = logger.parent
        if not _NoAppenderWarning.reported:
            _NoAppenderWarning.reported = True
            _loglog("ERROR", f"No appenders could be found for logger ({record.name}).")
            _loglog("ERROR", "Please initialize the log4cplus system properly.")


def _reset(root: logging.Logger) -> None:
    """Remove what an earlier configuration left on ``root`` and the loggers below it."""
    prefix = root.name + "."
    loggers = [root] + [logger for name, logger in logging.root.manager.loggerDict.items()
                        if name.startswith(prefix) and isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    root.propagate = False


def _is_known_key(key: str) -> bool:
    """Whether log4cplus reads the setting ``log4cplus.<key>``."""
    if key in _TOP_LEVEL_KEYS:
        return True
    if not key.startswith(_TOP_LEVEL_PREFIXES):
        return False
    if not key.startswith("appender."):
        return True
    _name, _, prop = key[len("appender."):].partition(".")
    head, _, rest = prop.partition(".")
    if not prop:
        return True  # the appender's class
    if head == "layout":
        return not rest or rest in _LAYOUT_PROPERTIES
    if head == "filters":
        number, _, filter_prop = rest.partition(".")
        return number.isdigit() and (not filter_prop or filter_prop in _FILTER_PROPERTIES)
    return prop in _APPENDER_PROPERTIES


def _warn_unknown_keys(props: Properties) -> None:
    """Report the ``log4cplus.`` settings log4cplus would ignore without a word (typically misspelt)."""
    for key in sorted(props):
        if not _is_known_key(key):
            _loglog("WARN", f"Unknown setting ignored: log4cplus.{key}")


def _configure(props: Properties) -> None:
    """Apply the ``log4cplus.`` settings (prefix removed) to the ``dcmtk`` logger tree."""
    appender_props = _subset(props, "appender.")
    appenders = {}
    for name in sorted(key for key in appender_props if "." not in key):
        handler = _appender(name, appender_props[name], _subset(appender_props, name + "."))
        if handler is not None:
            appenders[name] = handler

    settings = {"": _logger_settings("root", props["rootLogger"], appenders)}
    logger_props = _subset(props, "logger.")
    for name in sorted(logger_props):
        settings[name] = _logger_settings(name, logger_props[name], appenders)
    for name, value in _subset(props, "additivity.").items():
        additive = _parse_bool(value)
        if additive is not None:
            settings.setdefault(name, _LoggerSettings()).additive = additive

    root = logging.getLogger(ROOT)
    _reset(root)
    _NoAppenderWarning.reported = False
    log4cplus_root = settings.pop("")
    top = settings.pop(ROOT, _LoggerSettings())
    level = top.level or log4cplus_root.level
    if level == logging.NOTSET:
        _loglog("ERROR", f'Invalid log level for the root logger: "{props["rootLogger"]}", using INFO')
        level = logging.INFO
    root.setLevel(level)
    for handler in top.handlers + (log4cplus_root.handlers if top.additive else []):
        root.addHandler(handler)
    chain_ends = [root]
    for name, logger_settings in settings.items():
        if not name.startswith(ROOT + "."):
            continue  # no line of ours is logged outside the dcmtk tree
        logger = logging.getLogger(name)
        logger.setLevel(logger_settings.level)
        for handler in logger_settings.handlers:
            logger.addHandler(handler)
        logger.propagate = logger_settings.additive
        if not logger.propagate:
            chain_ends.append(logger)
    quiet = not root.isEnabledFor(logging.ERROR)  # log4cplus's own messages are off then
    for logger in chain_ends:
        if not logger.handlers:
            logger.addHandler(logging.NullHandler() if quiet else _NoAppenderWarning(logger))
