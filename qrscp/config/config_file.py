"""The CTN configuration file of dcmqrscp (docs/configuration.md): our parser of its grammar and the lookups on it.

The file is read the way DCMTK 3.6.7 reads it, byte for byte, so that a file DCMTK accepts means the same
here and a file it rejects is rejected with its ``CONFIG Error: ...!`` lines (checked against the real
program in tests/test_config.py):

* lines are what ``fgets`` returns into a 512-byte buffer: at most 511 bytes, so a longer line is read as
  several lines (each counted in the line numbers); a NUL byte ends the text of its line;
* a line whose first byte is ``#``, CR or LF is skipped, and so is a blank line outside the tables;
* a keyword is the first whitespace-delimited word; after it, whitespace, ``=`` and ``,`` separate values
  ("gaps"); a value starting with one of the four quote characters ``" ' ( )`` ends at the next quote
  character of any kind; a value not followed by a gap or a closing quote is no value at all;
* table lines are split into values from their first byte, so a leading blank gives an empty first value;
* a word that ``sscanf`` would not find leaves the previous line's word in place, even from one table to
  the next: a bare ``AETable`` line after ``HostTable BEGIN`` opens the AETable, and after a
  ``HostTable END`` a blank line inside a later HostTable ends it, as in DCMTK;
* a second AETable section replaces the first; HostTable and VendorTable sections add up.

Where DCMTK flags an entry as bad without saying why (an empty peer list, a quota of 0, a blank line
inside a table) or would read uninitialised memory or crash (an unparsable quota, a peer triple without
a host, ``UserName`` without a value), we reject the file too and add a ``CONFIG Error`` line that says
why; the lines DCMTK prints are always printed as well, in the same order.
"""
from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

_INT32 = 1 << 32
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_ULONG_MAX = (1 << 64) - 1

#: ``fgets`` buffer size of DCMTK's reader: a line holds at most 511 bytes.
_LINE_BUFFER = 512
#: Characters that end an unquoted value: C ``isspace``, ``=`` and ``,``.
_GAPS = rb"\s=,"
_QUOTES = b"\"'()"
_QUOTED_VALUE = re.compile(rb"[\"'()]([^\"'()]*)[\"'()][" + _GAPS + rb"]*")
_UNQUOTED_VALUE = re.compile(rb"([^" + _GAPS + rb"]*)[" + _GAPS + rb"]+")
_KEYWORD_AND_GAPS = re.compile(rb"[" + _GAPS + rb"]*\S*[" + _GAPS + rb"]*")
_C_INTEGER = re.compile(rb"\s*([+-]?)(\d+)")
_QUOTA = re.compile(rb"\s*([+-]?\d+)\s*,\s*(\S+)")

DEFAULT_PORT = 104
DEFAULT_MAX_PDU = 16384

_IGNORED_KEYWORDS = frozenset({
    b"ApplicationTitle", b"ApplicationContext", b"ImplementationClass", b"ImplementationVersion",
    b"NetworkType", b"Display", b"DisplayPort",
})
_TABLES = (b"HostTable", b"VendorTable", b"AETable")
_WRITABLE_ACCESS = frozenset({"RW", "WR", "W"})
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)    # C strcasecmp


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network: ``(AETitle, HostName, Port)``."""

    ae_title: str
    host: str
    port: int


@dataclass
class AEEntry:
    """One row of the AETable: an AE title of this server and its storage area."""

    ae_title: str
    storage_area: str
    access: str                 # as written: 'RW', 'R', 'W', ...
    max_studies: int            # as parsed (clamping to 500 happens when the area is opened)
    max_bytes_per_study: int    # as parsed, -1 when the size had no unit (docs/quota.md)
    peers: list[Peer] | None    # None means ANY

    @property
    def writable(self) -> bool:
        """True for access ``RW``, ``WR`` or ``W`` (DCMTK's ``writableStorageArea``)."""
        return self.access in _WRITABLE_ACCESS


@dataclass
class Config:
    """The contents of a configuration file, with DCMTK's lookups on it (docs/configuration.md §4).

    ``port`` and ``max_pdu`` are as DCMTK parses them (``%d``; ``%lu`` kept to 32 bits), a 0 in the file
    meaning the default as in DCMTK's program; ``max_pdu`` is range-checked by the caller.
    """

    port: int = DEFAULT_PORT
    max_pdu: int = DEFAULT_MAX_PDU
    max_associations: int = 16
    user_name: str = ""
    group_name: str = ""
    charset_line: list[str] | None = None   # the values of a SpecificCharacterSet line, None if absent
    host_table: dict[str, list[Peer]] = field(default_factory=dict)    # symbolic name -> peers
    vendor_table: dict[str, list[Peer]] = field(default_factory=dict)  # vendor name -> peers
    ae_table: list[AEEntry] = field(default_factory=list)
    path: str = ""                          # the file it was read from
    #: Later definitions of an already defined symbolic (vendor) name, in file order. References by
    #: name see only the first definition, but DCMTK's scans of the tables (move destinations,
    #: vendors) see every entry, so these are scanned too, after the tables above.
    shadowed_hosts: list[tuple[str, list[Peer]]] = field(default_factory=list)
    shadowed_vendors: list[tuple[str, list[Peer]]] = field(default_factory=list)

    def ae_entry(self, called_ae: str) -> AEEntry | None:
        """The first AETable entry titled exactly ``called_ae``."""
        return next((entry for entry in self.ae_table if entry.ae_title == called_ae), None)

    def peer_in_ae_title(self, called_ae: str, calling_ae: str, host: str) -> bool:
        """May ``calling_ae`` at ``host`` talk to ``called_ae``?

        Every entry titled ``called_ae`` counts: one with ANY admits everybody, otherwise a peer must have
        exactly the calling AE title and the host name (compared ignoring ASCII case, like DNS names).
        """
        folded_host = host.translate(_ASCII_LOWER)
        for entry in self.ae_table:
            if entry.ae_title != called_ae:
                continue
            if entry.peers is None:
                return True
            if any(peer.ae_title == calling_ae and peer.host.translate(_ASCII_LOWER) == folded_host
                   for peer in entry.peers):
                return True
        return False

    def peer_for_ae_title(self, ae_title: str) -> Peer | None:
        """Where to reach ``ae_title`` (a C-MOVE destination): the first peer with exactly this title
        among the AETable's peers, then among the HostTable's."""
        host_peers = [*self.host_table.values(), *(peers for _, peers in self.shadowed_hosts)]
        ae_peers = [entry.peers for entry in self.ae_table if entry.peers is not None]
        for peers in (*ae_peers, *host_peers):
            for peer in peers:
                if peer.ae_title == ae_title:
                    return peer
        return None

    def same_vendor(self, ae_a: str, ae_b: str) -> bool:
        """True if one VendorTable entry lists both AE titles."""
        for peers in (*self.vendor_table.values(), *(peers for _, peers in self.shadowed_vendors)):
            titles = {peer.ae_title for peer in peers}
            if ae_a in titles and ae_b in titles:
                return True
        return False


class ConfigFileError(Exception):
    """str(error) is the fatal message without the 'F: ' prefix, e.g. 'bad config file: x.cfg'."""


def load(path: str) -> Config:
    """Read the configuration file ``path``.

    Problems are printed to stderr as DCMTK prints them (``CONFIG Error: ...!``, no level prefix), then
    ``ConfigFileError("bad config file: <path>")`` is raised; a file that cannot be read raises
    ``ConfigFileError("cannot access <path>: <OS error text>")``.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigFileError(f"cannot access {path}: {error.strerror}") from None
    config, errors = parse(data, path)
    if errors:
        errors.append(f'Reading configuration file "{path}" with errors')
        text = "".join(f"CONFIG Error: {message}!\n" for message in errors)
        _write_stderr(text)
        raise ConfigFileError(f"bad config file: {path}")
    return config


def _write_stderr(text: str) -> None:
    """Write ``text`` to stderr, non-UTF-8 bytes of the file as they were."""
    sys.stderr.flush()
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is None:
        sys.stderr.write(text)
    else:
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()


def parse(data: bytes, path: str = "") -> tuple[Config, list[str]]:
    """Parse the bytes of a configuration file: the configuration and the error messages (without the
    ``CONFIG Error:`` prefix and the final ``Reading configuration file ... with errors``).

    The configuration is only meaningful when there are no errors.
    """
    parser = _Parser(data, path)
    parser.read_config_lines()
    return parser.config, parser.errors


# --- lexical level: DCMTK's fgets lines, values, C number conversions ---------------------------------

def _fgets_lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """The lines as ``fgets`` reads them into DCMTK's 512-byte buffer, each cut at its first NUL, with
    a flag telling whether it is a piece of a line longer than 511 bytes."""
    pos = 0
    split = False
    while pos < len(data):
        newline = data.find(b"\n", pos, pos + _LINE_BUFFER - 1)
        end = newline + 1 if newline >= 0 else pos + _LINE_BUFFER - 1
        piece = data[pos:end]
        cut = not piece.endswith(b"\n") and len(piece) == _LINE_BUFFER - 1
        yield piece.split(b"\0", 1)[0], split or cut
        split = cut
        pos = end


def _after_keyword(line: bytes) -> int:
    """DCMTK's ``skipmnemonic``: where the values of a line start, past its keyword and the gaps."""
    match = _KEYWORD_AND_GAPS.match(line)    # always matches: every part is optional
    return match.end() if match else 0


def _next_value(line: bytes, pos: int) -> tuple[bytes | None, int]:
    """DCMTK's ``parsevalues``: the value starting at ``pos`` and the position after it and its gaps.

    None (and ``pos`` unchanged) when the line ends before the value is terminated.
    """
    pattern = _QUOTED_VALUE if line[pos:pos + 1] and line[pos] in _QUOTES else _UNQUOTED_VALUE
    match = pattern.match(line, pos)
    if match is None:
        return None, pos
    return match.group(1), match.end()


def _c_long(text: bytes) -> int | None:
    """``strtol`` base 10 of a leading integer (clamped to a 64-bit long), None without digits."""
    match = _C_INTEGER.match(text)
    if match is None:
        return None
    value = int(match.group(2)) * (-1 if match.group(1) == b"-" else 1)
    return min(max(value, _LONG_MIN), _LONG_MAX)


def _c_int(text: bytes) -> int | None:
    """``sscanf("%d")`` with glibc: the long value truncated to a 32-bit int, None without digits."""
    value = _c_long(text)
    if value is None:
        return None
    return (value + _INT32 // 2) % _INT32 - _INT32 // 2


def _atoi(text: bytes) -> int:
    """``atoi``: as ``%d``, 0 without digits."""
    return _c_int(text) or 0


def _max_pdu(text: bytes) -> int:
    """``sscanf("%lu")`` into an unsigned long preset to 0, stored as DCMTK's Uint32."""
    match = _C_INTEGER.match(text)
    if match is None:
        return 0
    value = int(match.group(2))
    if value > _ULONG_MAX:
        value = _ULONG_MAX
    elif match.group(1) == b"-":
        value = -value % (_ULONG_MAX + 1)
    return value % _INT32


def _quota(text: bytes) -> tuple[int, int] | None:
    """The ``(maxStudies, maxBytesPerStudy)`` of a quota value such as ``10, 1024mb`` (docs/quota.md).

    The size is the number times the factor of the letter before a final ``b``/``B`` (``k``, ``m``,
    ``g``, else 1), or -1 when there is no final ``b``. None when the value does not match
    ``%d , %s`` (DCMTK would go on with uninitialised values).
    """
    match = _QUOTA.match(text)
    if match is None:
        return None
    studies, size = match.groups()
    if size[-1:] not in (b"b", b"B"):
        return _atoi(studies), -1
    factor = {b"k": 1 << 10, b"m": 1 << 20, b"g": 1 << 30}.get(size[-2:-1].lower(), 1)
    return _atoi(studies), _atoi(size) * factor


def _peer(triple: bytes) -> tuple[Peer, bool]:
    """A peer ``AETitle, HostName, Port`` (the port as ``atoi``), and whether it has a host name:
    DCMTK keeps a null pointer instead and crashes when it compares it."""
    title, pos = _next_value(triple, 0)
    host, pos = _next_value(triple, pos)
    return Peer(_text(title or b""), _text(host or b""), _atoi(triple[pos:])), host is not None


def _unterminated(line: bytes) -> bytes:
    """The text a line ends with that is no value: an unclosed quote, or a value without a gap after
    it (a last line without a newline, a line longer than 511 bytes)."""
    pos = 0
    while True:
        value, pos_after = _next_value(line, pos)
        if value is None:
            return line[pos:]
        pos = pos_after


def _incomplete_peers(triples: list[bytes]) -> list[str]:
    """The messages for peer triples without a host name."""
    return [f'Peer "{_text(triple)}" needs an AE title, a host name and a port' for triple in triples]


def _text(value: bytes) -> str:
    """A value as text: UTF-8, other bytes kept as surrogates (so paths round-trip to the OS)."""
    return value.decode("utf-8", "surrogateescape")


# --- grammar level ------------------------------------------------------------------------------------

class _Parser:
    """DCMTK's ``readConfigLines`` and its table readers, collecting error messages."""

    def __init__(self, data: bytes, path: str) -> None:
        self.config = Config(path=path)
        self.errors: list[str] = []
        self.lines = _fgets_lines(data)
        self.lineno = 0
        # The first two words of the last table line that had them: DCMTK's table readers scan them with
        # sscanf("%s %s") into buffers that keep their contents when a line has fewer words, even from
        # one table to the next (so after "HostTable END", a blank line in a later HostTable ends it).
        # None: never set (DCMTK would print uninitialised memory).
        self.table_words: list[bytes | None] = [None, None]
        # Table entries in file order, as (name, peers); a name is None when the line had no value.
        self.hosts: list[tuple[bytes | None, list[Peer]]] = []
        self.vendors: list[tuple[bytes | None, list[Peer]]] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def at_line(self, message: str) -> None:
        self.error(f"{message} in configuration file, line {self.lineno}")

    def read_config_lines(self) -> None:
        """The top level: global keywords and the BEGIN lines of the tables."""
        status: bytes | None = None    # the word after a table keyword; stays when a line has none
        for line, _split in self.lines:
            self.lineno += 1
            if line[:1] in (b"#", b"\n", b"\r"):
                continue
            words = line.split(None, 1)
            if not words:
                continue
            keyword = words[0]
            pos = _after_keyword(line)
            if keyword in _IGNORED_KEYWORDS:
                continue
            if keyword in (b"UserName", b"GroupName"):
                self.read_name(keyword, line, pos)
            elif keyword == b"NetworkTCPPort":
                port = _c_int(line[pos:])
                self.config.port = self.config.port if port is None else port or DEFAULT_PORT
            elif keyword == b"MaxPDUSize":
                self.config.max_pdu = _max_pdu(line[pos:]) or DEFAULT_MAX_PDU
            elif keyword == b"MaxAssociations":
                count = _c_int(line[pos:])
                self.config.max_associations = self.config.max_associations if count is None else count
            elif keyword == b"SpecificCharacterSet":
                self.config.charset_line = [_text(value) for value in self.values(line, pos)]
            elif keyword in _TABLES:
                status = next(iter(line[pos:].split(None, 1)), status)
                self.open_table(keyword, status)
            else:
                self.at_line(f'Unknown mnemonic "{_text(keyword)}"')
        self.finish()

    def read_name(self, keyword: bytes, line: bytes, pos: int) -> None:
        """``UserName`` / ``GroupName``: the first value (DCMTK crashes on a line without one)."""
        value, _ = _next_value(line, pos)
        if value is None:
            self.at_line(f"No value for {_text(keyword)}")
        elif keyword == b"UserName":
            self.config.user_name = _text(value)
        else:
            self.config.group_name = _text(value)

    @staticmethod
    def values(line: bytes, pos: int) -> Iterator[bytes]:
        """Every value from ``pos`` on."""
        while True:
            value, pos = _next_value(line, pos)
            if value is None:
                return
            yield value

    def open_table(self, table: bytes, status: bytes | None) -> None:
        """A ``<table> BEGIN`` line (any other status word is an error)."""
        name = _text(table)
        if status == b"BEGIN":
            self.read_table(table)
        elif status == b"END":
            self.at_line(f'No "{name} BEGIN" before END')
        else:
            self.at_line(f'Unknown {name} status "{_text(status or b"")}"')

    def read_table(self, table: bytes) -> None:
        """The lines of one table up to its ``<table> END`` line."""
        name = _text(table)
        if table == b"AETable":
            self.config.ae_table = []
        for line, split in self.lines:
            self.lineno += 1
            if line[:1] in (b"#", b"\n", b"\r"):
                continue
            words = line.split(None, 2)
            scanned = min(len(words), 2)
            self.table_words[:scanned] = words[:scanned]
            if self.table_words[0] == table:
                status = self.table_words[1]
                if status == b"END":
                    return
                self.at_line(f'Illegal {name} status "{_text(status or b"")}"')
                if not words:
                    self.at_line(f"Blank line inside {name}")
                break
            if table == b"AETable":
                self.read_ae_entry(line, split)
            else:
                self.read_host_entry(table, line, split)
        self.at_line(f'No "{name} END"')

    def read_host_entry(self, table: bytes, line: bytes, split: bool) -> None:
        """``Name = peer, peer, ...`` of the HostTable or VendorTable."""
        name, pos = _next_value(line, 0)
        entry: tuple[bytes | None, list[Peer]] = (name, [])
        (self.hosts if table == b"HostTable" else self.vendors).append(entry)
        result = self.peer_list(line, pos)
        if result is None:
            self.explain(table, line, split, [])
            return
        peers, incomplete = result
        entry[1].extend(peers)
        if peers and not incomplete:
            return
        problems = [] if peers else [f'Entry "{_text(name or b"")}" of {_text(table)} has no peers']
        self.explain(table, line, split, problems + _incomplete_peers(incomplete))

    def read_ae_entry(self, line: bytes, split: bool) -> None:
        """``AETitle StorageArea Access (maxStudies, maxBytesPerStudy) Peers`` of the AETable."""
        title, pos = _next_value(line, 0)
        area, pos = _next_value(line, pos)
        access, pos = _next_value(line, pos)
        quota_text, pos = _next_value(line, pos)
        quota = None if quota_text is None else _quota(quota_text)
        first_peer, _ = _next_value(line, pos)
        any_peer = first_peer == b"ANY"     # anything after ANY is ignored
        result = None if any_peer else self.peer_list(line, pos)
        peers, incomplete = ([], []) if result is None else result
        peers_ok = any_peer or bool(peers and not incomplete)
        if (quota is not None and 0 not in quota and peers_ok
                and title is not None and area is not None and access is not None):
            self.config.ae_table.append(
                AEEntry(_text(title), _text(area), _text(access), *quota, None if any_peer else peers))
            return
        label = f'Entry "{_text(title or b"")}" of AETable'
        problems = []
        if quota_text is None:
            problems.append(f"{label} has no quota")
        elif quota is None or 0 in quota:
            problems.append(f'{label} has an invalid quota "{_text(quota_text)}"')
        if result is not None and not peers:
            problems.append(f"{label} has no peers")
        self.explain(b"AETable", line, split, problems + _incomplete_peers(incomplete))

    def explain(self, table: bytes, line: bytes, split: bool, problems: list[str]) -> None:
        """Say why a table entry is bad, where DCMTK says nothing or blames a value the real mistake
        shifted: ``problems`` are those DCMTK does not report itself."""
        name = _text(table)
        rest = _unterminated(line).rstrip()
        if not line.strip():
            self.at_line(f"Blank line inside {name}")
        elif split:
            self.at_line(f"Line longer than {_LINE_BUFFER - 1} characters inside {name}")
        elif line[:1].isspace():
            self.at_line(f"Line starting with a blank inside {name} (table lines start in column 1)")
        elif rest:
            self.at_line(f'Value "{_text(rest)}" without closing quote or line end inside {name}')
        else:
            for problem in problems:
                self.at_line(problem)

    def peer_list(self, line: bytes, pos: int) -> tuple[list[Peer], list[bytes]] | None:
        """DCMTK's ``readPeerList``: peer triples and HostTable symbolic names from ``pos`` on, and the
        triples among them that lack a host name. None when DCMTK reports an error (the list is void).
        """
        peers: list[Peer] = []
        incomplete: list[bytes] = []
        for value in self.values(line, pos):
            if b"," in value:
                peer, complete = _peer(value)
                peers.append(peer)
                if not complete:
                    incomplete.append(value)
                continue
            if not self.hosts:
                self.error("No symbolic names defined")
                return None
            defined = next((entry for entry in self.hosts if entry[0] == value), None)
            if defined is None:
                self.error(f'Symbolic name "{_text(value)}" not defined')
                return None
            if not defined[1]:
                self.error(f'No peers for symbolic name "{_text(value)}" defined')
                return None
            peers.extend(defined[1])
        return peers, incomplete

    def finish(self) -> None:
        """Turn the HostTable and VendorTable entries into the name -> peers tables."""
        for entries, table, shadowed in ((self.hosts, self.config.host_table, self.config.shadowed_hosts),
                                         (self.vendors, self.config.vendor_table, self.config.shadowed_vendors)):
            for name, peers in entries:
                if name is None:
                    continue
                if _text(name) in table:
                    shadowed.append((_text(name), peers))
                else:
                    table[_text(name)] = peers
