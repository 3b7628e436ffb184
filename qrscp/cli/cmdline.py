"""DCMTK's command-line engine (OFCommandLine and OFConsoleApplication), reimplemented.

An option table is built with :meth:`CommandLine.group`, :meth:`~CommandLine.subgroup`,
:meth:`~CommandLine.option` and :meth:`~CommandLine.param`; the same table renders the ``--help`` text in
DCMTK's layout and parses a command line with DCMTK's rules:

* ``@file`` arguments are replaced by the whitespace-separated words of the file (one level; ``"..."`` and
  ``'...'`` quote words), before anything else is looked at;
* an argument of two or more characters that starts with ``-`` or ``+`` not followed by a digit is an
  option, anything else a parameter; short names are stored as their long names;
* an option takes the next *n* arguments as its values, whatever they look like;
* :meth:`CommandLine.find` returns the right-most occurrence; inside :meth:`CommandLine.block` an option
  is only found to the right of the option found before it in the same block, so among mutually exclusive
  options the right-most one wins;
* integers are read like C's ``sscanf("%li")`` (signed: decimal, ``0x`` hex, ``0`` octal) and
  ``sscanf("%lu")`` (unsigned: decimal only), trailing garbage ignored.

Errors print DCMTK's three header lines and ``error: <message>`` on stderr and exit with status 1
(:class:`ConsoleApp`); ``--help`` prints the usage on stdout and exits with status 0.
"""
from __future__ import annotations

import enum
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, TextIO

LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)
ULONG_MAX = 2**64 - 1

#: C's isspace() in the "C" locale: what sscanf skips before a number.
_C_SPACE = " \t\n\v\f\r"
#: What separates the words of a command file (vertical tab and form feed do not).
_COMMAND_FILE_SPACE = " \t\r\n"


class CommandLineError(Exception):
    """A command line DCMTK refuses; the message is the text after ``error: ``."""


class ParamMode(enum.Enum):
    """How often a parameter may occur (OFCmdParam::E_ParamMode)."""

    MANDATORY = "mandatory"
    OPTIONAL = "optional"
    MULTI_MANDATORY = "multi-mandatory"
    MULTI_OPTIONAL = "multi-optional"


class ParseStatus(enum.Enum):
    """Outcome of a successful :meth:`CommandLine.parse`."""

    NORMAL = "normal"
    NO_ARGUMENTS = "no arguments"
    EXCLUSIVE = "exclusive option"


@dataclass(frozen=True)
class Option:
    """One option: long and short name, number of values, help texts."""

    long: str
    short: str = ""
    help: str = ""
    values: int = 0
    value_help: str = ""
    exclusive: bool = False


@dataclass(frozen=True)
class Heading:
    """A group (``subgroup=False``) or subgroup title in the help text, with its column widths."""

    title: str
    subgroup: bool
    long_width: int = 0
    short_width: int = 0


@dataclass(frozen=True)
class Param:
    """A positional parameter."""

    name: str
    help: str
    mode: ParamMode


def scan_signed(text: str) -> int | None:
    """``sscanf(text, "%li")``: the leading integer of ``text`` (base from its prefix), or None."""
    match = re.match(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text.lstrip(_C_SPACE))
    if match is None:
        return None
    number = match.group(0)
    negative = number.startswith("-")
    digits = number.lstrip("+-")
    if digits[:2] in ("0x", "0X"):
        magnitude = int(digits[2:], 16)
    elif digits.startswith("0"):
        magnitude = int(digits, 8)
    else:
        magnitude = int(digits)
    return max(-magnitude, LONG_MIN) if negative else min(magnitude, LONG_MAX)


def scan_unsigned(text: str) -> int | None:
    """``sscanf(text, "%lu")``: the leading decimal integer of ``text`` (negatives wrap), or None."""
    match = re.match(r"([+-]?)([0-9]+)", text.lstrip(_C_SPACE))
    if match is None:
        return None
    magnitude = int(match.group(2))
    if magnitude > ULONG_MAX:
        return ULONG_MAX
    return (-magnitude) % 2**64 if match.group(1) == "-" else magnitude


def split_command_file(text: str) -> list[str]:
    """The words of a command file: separated by blanks, ``"..."``/``'...'`` quote (and end) a word.

    A quote opened inside a word continues it and its closing quote ends it; ``""`` is an empty word;
    an unterminated quote runs to the end of the file.
    """
    words: list[str] = []
    word = ""
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                words.append(word)
                word, quote = "", ""
            else:
                word += char
        elif char in "\"'":
            quote = char
        elif char in _COMMAND_FILE_SPACE:
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    if word:
        words.append(word)
    return words


def is_option(argument: str) -> bool:
    """True for an option: two or more characters, a leading ``-``/``+`` and no digit after it."""
    return len(argument) >= 2 and argument[0] in "+-" and argument[1] not in "0123456789"


class CommandLine:
    """An option table and one command line parsed against it (OFCommandLine)."""

    def __init__(self, *, long_width: int = 0, short_width: int = 0, param_width: int = 0) -> None:
        self._entries: list[Option | Heading] = []
        self._options: dict[str, Option] = {}
        self._params: list[Param] = []
        self._long_width = long_width
        self._short_width = short_width
        self._param_width = param_width
        self.program = ""
        #: The expanded command line: options by their long names, their values, parameters.
        self.arguments: list[str] = []
        self._option_positions: list[int] = []
        self._param_positions: list[int] = []
        self._found = -1
        self._current = -1
        self._block_bound: int | None = None

    # -- the table ------------------------------------------------------------------------------

    def group(self, title: str, long_width: int = 0, short_width: int = 0) -> None:
        """Start a group of options (``title`` ends with a colon); widths 0 take the table's."""
        self._entries.append(Heading(title, False, long_width, short_width))

    def subgroup(self, title: str, long_width: int = 0, short_width: int = 0) -> None:
        """Start a subgroup of options (indented by two more columns)."""
        self._entries.append(Heading(title, True, long_width, short_width))

    def option(self, long: str, short: str = "", help: str = "", *, values: int = 0,
               value_help: str = "", exclusive: bool = False) -> None:
        """Add an option; ``help`` and ``value_help`` may span lines (``\\n``)."""
        option = Option(long, short, help, values, value_help, exclusive)
        for name in (long, short):
            if name:
                if not is_option(name) or name in self._options:
                    raise ValueError(f"bad or duplicate option name {name!r}")
                self._options[name] = option
        self._entries.append(option)

    def param(self, name: str, help: str, mode: ParamMode = ParamMode.MANDATORY) -> None:
        """Add a positional parameter."""
        self._params.append(Param(name, help, mode))

    def defines(self, long: str) -> bool:
        """Whether the table has option ``long``."""
        return long in self._options

    @property
    def min_params(self) -> int:
        """How many parameters must be given."""
        return sum(p.mode in (ParamMode.MANDATORY, ParamMode.MULTI_MANDATORY) for p in self._params)

    @property
    def max_params(self) -> int | None:
        """How many parameters may be given (None: no limit)."""
        if any(p.mode in (ParamMode.MULTI_MANDATORY, ParamMode.MULTI_OPTIONAL) for p in self._params):
            return None
        return len(self._params)

    # -- help text ------------------------------------------------------------------------------

    def syntax(self) -> str:
        """The part of the usage line after the program name, e.g. `` [options] [port]``."""
        text = " [options]" if self._options else ""
        shapes = {ParamMode.MANDATORY: " {}", ParamMode.OPTIONAL: " [{}]",
                  ParamMode.MULTI_MANDATORY: " {}...", ParamMode.MULTI_OPTIONAL: " [{}...]"}
        return text + "".join(shapes[p.mode].format(p.name) for p in self._params)

    def param_help(self) -> str:
        """The ``parameters:`` section (empty if there are no parameters)."""
        if not self._params:
            return ""
        width = max([self._param_width] + [len(p.name) for p in self._params])
        indent = "\n" + " " * (2 + width + 2)
        lines = ["parameters:\n"]
        for param in self._params:
            lines.append(f"  {param.name.ljust(width)}  {param.help.replace(chr(10), indent)}\n")
        return "".join(lines)

    def option_help(self) -> str:
        """The option groups with their options, in DCMTK's columns."""
        text = []
        indent = 0
        short_width, long_width = self._column_widths(None, 0)
        for index, entry in enumerate(self._entries):
            if isinstance(entry, Heading):
                short_width, long_width = self._column_widths(entry, index + 1)
                indent = 4 if entry.subgroup else 2
                text.append(" " * (indent - 2) + entry.title + "\n")
                continue
            line = " " * indent
            if short_width:
                line += entry.short.ljust(short_width) + "  "
            line += entry.long.ljust(long_width) + "  "
            column = " " * (indent + (short_width + 2 if short_width else 0) + long_width + 2)
            if entry.value_help:
                line += entry.value_help + "\n" + column
            text.append(line + entry.help.replace("\n", "\n" + column) + "\n")
        return "".join(text)

    def _column_widths(self, heading: Heading | None, start: int) -> tuple[int, int]:
        """(short, long) name widths of the options from entry ``start`` up to the next heading: the
        heading's widths (the table's if it gives none), widened to fit the longest names."""
        if heading is not None and (heading.short_width or heading.long_width):
            short_width, long_width = heading.short_width, heading.long_width
        else:
            short_width, long_width = self._short_width, self._long_width
        for entry in self._entries[start:]:
            if isinstance(entry, Heading):
                break
            short_width = max(short_width, len(entry.short))
            long_width = max(long_width, len(entry.long))
        return short_width, long_width

    # -- parsing --------------------------------------------------------------------------------

    def parse(self, argv: Sequence[str], program: str) -> ParseStatus:
        """Parse ``argv`` (without the program name); raise :class:`CommandLineError` if it is bad."""
        self.program = program
        self.arguments, self._option_positions, self._param_positions = [], [], []
        expanded = expand_command_files(argv)
        exclusive = False
        position = 0
        while position < len(expanded):
            argument = expanded[position]
            if not is_option(argument):
                self._param_positions.append(len(self.arguments))
                self.arguments.append(argument)
            else:
                option = self._options.get(argument)
                if option is None:
                    raise CommandLineError(f"Unknown option {argument}")
                self._option_positions.append(len(self.arguments))
                self.arguments.append(option.long)
                exclusive = exclusive or option.exclusive
                values = expanded[position + 1:position + 1 + option.values]
                if len(values) < option.values:
                    raise CommandLineError(f"Missing value for option {option.long}")
                self.arguments.extend(values)
                position += option.values
            position += 1
        if not self.arguments:
            return ParseStatus.NO_ARGUMENTS
        if exclusive:
            return ParseStatus.EXCLUSIVE
        count = len(self._param_positions)
        if count < self.min_params:
            raise CommandLineError(f"Missing parameter {self._params[count].name}")
        if self.max_params is not None and count > self.max_params:
            raise CommandLineError("Too many parameters")
        return ParseStatus.NORMAL

    @property
    def param_count(self) -> int:
        """How many parameters the command line has."""
        return len(self._param_positions)

    def find(self, long: str) -> bool:
        """Whether option ``long`` was given (right-most occurrence; see :meth:`block`).

        On success the option becomes the current one: its values follow with :meth:`value` etc.
        """
        if long not in self._options:
            raise KeyError(long)
        for position in reversed(self._option_positions):
            if self._block_bound is not None and position <= self._block_bound:
                return False
            if self.arguments[position] == long:
                self._found = self._current = position
                if self._block_bound is not None:
                    self._block_bound = position
                return True
        return False

    def find_all(self, long: str) -> Iterator[None]:
        """Each occurrence of option ``long``, first to last (DCMTK's ``FOM_First``/``FOM_Next``); the option
        is the current one at each step."""
        if long not in self._options:
            raise KeyError(long)
        for position in self._option_positions:
            if self.arguments[position] == long:
                self._found = self._current = position
                yield

    @contextmanager
    def block(self) -> Iterator[None]:
        """Mutually exclusive options: each :meth:`find` only looks right of the previous hit."""
        self._block_bound = -1
        try:
            yield
        finally:
            self._block_bound = None

    def value(self) -> str:
        """The next value of the current option (may be empty)."""
        self._current += 1
        return self.arguments[self._current]

    def signed_value(self, minimum: int | None = None) -> int:
        """The next value as a signed integer (``%li``), at least ``minimum``."""
        return self._checked_value(scan_signed, minimum, None)

    def unsigned_value(self, minimum: int | None = None, maximum: int | None = None) -> int:
        """The next value as an unsigned decimal integer within ``minimum``..``maximum``.

        Unlike C's ``%lu`` a value starting with a minus sign is invalid, as in DCMTK 3.6.7.
        """
        def scan(text: str) -> int | None:
            return None if text.lstrip(_C_SPACE).startswith("-") else scan_unsigned(text)

        return self._checked_value(scan, minimum, maximum)

    def _checked_value(self, scan: Callable[[str], int | None], minimum: int | None,
                       maximum: int | None) -> int:
        option = self.arguments[self._found]
        text = self.value()
        number = scan(text)
        if number is None:
            raise CommandLineError(f"Invalid value for option {option}" + (f" ({text})" if text else ""))
        if minimum is not None and number < minimum:
            raise CommandLineError(f"Invalid value for option {option} (underflow: {text})")
        if maximum is not None and number > maximum:
            raise CommandLineError(f"Invalid value for option {option} (overflow: {text})")
        return number

    def param_value(self, index: int) -> str:
        """Parameter ``index`` (1-based) as given."""
        return self.arguments[self._param_positions[index - 1]]

    def unsigned_param(self, index: int, minimum: int, maximum: int) -> int:
        """Parameter ``index`` (1-based) as an unsigned integer (``%lu``) in ``minimum``..``maximum``."""
        text = self.param_value(index)
        number = scan_unsigned(text)
        if number is None:
            raise CommandLineError(f"Invalid parameter value {text}")
        if number < minimum:
            raise CommandLineError(f"Invalid parameter value {text} (underflow)")
        if number > maximum:
            raise CommandLineError(f"Invalid parameter value {text} (overflow)")
        return number

    def arguments_message(self) -> str:
        """What ``--arguments`` logs: the program and the expanded arguments (empty ones unquoted)."""
        quoted = "".join(f"'{argument}' " for argument in self.arguments if argument)
        return f"calling '{self.program}' with {len(self.arguments)} arguments: {quoted}\n"


def expand_command_files(argv: Sequence[str]) -> list[str]:
    """Replace every ``@file`` argument by the words of that file (a directory has none)."""
    expanded: list[str] = []
    for argument in argv:
        if len(argument) < 2 or not argument.startswith("@"):
            expanded.append(argument)
            continue
        try:
            with open(argument[1:], "rb") as stream:
                content = stream.read()
        except IsADirectoryError:
            content = b""
        except (OSError, ValueError):  # ValueError: a name holding a NUL byte
            raise CommandLineError(f"Cannot open command file '{argument[1:]}'") from None
        expanded.extend(split_command_file(content.decode(sys.getfilesystemencoding(), "surrogateescape")))
    return expanded


class ConsoleApp:
    """A DCMTK console application's identity and its ways to end (OFConsoleApplication)."""

    def __init__(self, name: str, description: str, identifier: str, banner: str = "") -> None:
        self.name = name
        self.description = description
        #: The resource identifier, e.g. ``$dcmtk: dcmqrscp v3.6.7 2022-04-22 $``.
        self.identifier = identifier
        #: A line printed above the header of the usage and version texts (not of errors): which program
        #: this really is.
        self.banner = banner
        #: Set after ``-q`` (or a log level above ERROR): errors then exit silently.
        self.quiet = False

    def header(self) -> str:
        """The three header lines of every usage, version and error output."""
        return f"{self.identifier}\n\n{self.name}: {self.description}\n"

    def parse(self, cmd: CommandLine, argv: Sequence[str], program: str) -> None:
        """Parse ``argv`` into ``cmd``; print the usage for ``--help`` (or no arguments when parameters
        are mandatory) and exit 0; print the error and exit 1 if the command line is bad."""
        try:
            status = cmd.parse(argv, program)
        except CommandLineError as error:
            self.error(str(error))
        if status is ParseStatus.NO_ARGUMENTS and cmd.min_params > 0:
            self.usage(cmd)
        if status is ParseStatus.EXCLUSIVE and cmd.find("--help"):
            self.usage(cmd)

    def usage(self, cmd: CommandLine) -> NoReturn:
        """Print the help text on stdout and exit 0."""
        text = self.banner + self.header() + f"usage: {self.name}{cmd.syntax()}\n"
        for section in (cmd.param_help(), cmd.option_help()):
            if section:
                text += "\n" + section
        self.exit_with(text + "\n", 0, sys.stdout)

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` after the header on stderr (nothing in quiet mode) and exit 1."""
        self.exit_with("" if self.quiet else f"{self.header()}error: {message}\n", 1, sys.stderr)

    def check_conflict(self, option: str, other: str, conflicting: bool) -> None:
        """Exit with ``<option> not allowed with <other>`` if ``conflicting``."""
        if conflicting:
            self.error(f"{option} not allowed with {other}")

    def check_dependence(self, option: str, required: str, satisfied: bool) -> None:
        """Exit with ``<option> only allowed with <required>`` unless ``satisfied``."""
        if not satisfied:
            self.error(f"{option} only allowed with {required}")

    @staticmethod
    def exit_with(text: str, status: int, stream: TextIO | None = None) -> NoReturn:
        """Write ``text`` to ``stream`` (stdout by default) and raise ``SystemExit(status)``."""
        stream = stream or sys.stdout
        stream.write(text)
        stream.flush()
        raise SystemExit(status)
