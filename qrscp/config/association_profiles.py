"""``-xf``: DCMTK's association negotiation profiles, read and applied as ``dcmqrscp`` 3.6.7 does
(docs/association.md §2, command-line.md §1).

The file is an association configuration file in DCMTK's format (``dcmnet/docs/asconfig.txt``; Debian's
``/etc/dcmtk/storescp.cfg`` and ``storescu.cfg`` are examples)::

    [[TransferSyntaxes]]
    [Uncompressed]
    TransferSyntax1 = LocalEndianExplicit
    TransferSyntax2 = LittleEndianImplicit
    [[PresentationContexts]]
    [StorageSCP]
    PresentationContext1 = CTImageStorage\\Uncompressed
    [[Profiles]]
    [Default]
    PresentationContexts = StorageSCP

plus the optional ``[[SCPSCURoleSelection]]`` (``Role1 = CTImageStorage\\SCP``, ``SCU``/``SCP``/``BOTH``) and
``[[ExtendedNegotiation]]`` (``ExtendedNegotiation1 = CTImageStorage\\020003000000``, hex), referenced from a
profile by the keys ``SCPSCURoleSelection`` and ``ExtendedNegotiation`` (a ``RoleSelection`` key is ignored).

Reading follows DCMTK's generic config-file reader (``OFConfigFile``) character by character: ``#`` starts a
comment only in column one, keys and section names are upper-cased and keep only ``A-Z 0-9 - _``, a line
that starts with white space continues the value before it, the first of two equal keys (or supersections)
wins, and sections of the same name within a supersection are merged. Values are taken verbatim: UIDs or
DCMTK's symbolic names (``uids.UID_BY_DCMTK_NAME``, case-sensitive, no trimming); references to other sections
and profile names have white space removed and are upper-cased. Every error message is DCMTK's.

How ``dcmqrscp -xf FILE IN OUT`` negotiates (observed, see ``tests/test_assocconfig.py``):

* every proposed context is first answered from profile ``IN``: an abstract syntax not in it is refused
  with reason 3; otherwise the first transfer syntax *of the profile's list* that the peer proposed is
  accepted (:func:`accepted_transfer_syntax`), none gives reason 4; the role follows :func:`accepted_role`
  (a role failure refuses the context with reason 1), and the profile's extended negotiation items are
  returned for every accepted abstract syntax;
* then the usual non-storage pass runs over all contexts (Verification, the Q/R models, shutdown; default
  transfer syntax preference, default role): it re-accepts those abstract syntaxes whatever the profile
  said, and turns every context still refused with reason 1 or 3 into reason 3 (abstract syntax not
  supported), or reason 4 for its own abstract syntaxes; reason 4 from the profile stays 4;
* profile contexts outside that list (for example Modality Worklist FIND) stay accepted.

The outgoing profile lists the contexts a C-MOVE sub-association proposes, in order (ids 1, 3, 5, ...),
with one role selection item per context whose abstract syntax has a role, and its extended negotiation.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from qrscp.dicom.uids import EXPLICIT_VR_BE, EXPLICIT_VR_LE, UID_BY_DCMTK_NAME

#: DCMTK's limit on the presentation contexts of one list (the PDU allows 128 per association).
MAX_CONTEXTS = 128
#: Extended negotiation data longer than this many hex digits are refused.
MAX_EXTENDED_NEGOTIATION_HEX = 2047

_C_WHITESPACE = " \t\n\v\f\r"
_HEX_DIGITS = "0123456789abcdefABCDEF"
_ILLEGAL_CALL = "Illegal call, perhaps wrong parameters"
_ROLES = {"SCU": (True, False), "SCP": (False, True), "BOTH": (True, True)}


class AssocConfigError(Exception):
    """``-xf`` cannot be used; ``str()`` is DCMTK's message after ``F: `` (dcmqrscp then exits with 1)."""


@dataclass(frozen=True)
class Profile:
    """One association negotiation profile, UIDs resolved."""

    #: (abstract syntax UID, transfer syntax UIDs in order of preference), in the order of the file
    contexts: list[tuple[str, list[str]]]
    #: abstract syntax -> (SCU, SCP) from the profile's role selection list
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    #: abstract syntax -> service-class application information (SOP Class Extended Negotiation)
    extended_negotiation: dict[str, bytes] = field(default_factory=dict)

    def transfer_syntaxes(self, abstract_syntax: str) -> list[str] | None:
        """The transfer syntaxes of the first context for ``abstract_syntax``; None if it has none."""
        return next((syntaxes for syntax, syntaxes in self.contexts if syntax == abstract_syntax), None)


class RoleAnswer(NamedTuple):
    """How DCMTK's acceptor answers the SCP/SCU role selection of one context."""

    #: False: the context is refused (reason 1): the requestor kept the default role (SCU), the profile
    #: allows it the SCP role only
    acceptable: bool
    #: the (SCU, SCP) role selection item of the A-ASSOCIATE-AC; None for none (default roles)
    item: tuple[bool, bool] | None


def accepted_transfer_syntax(profile: Profile, abstract_syntax: str, proposed: list[str]) -> str | None:
    """The transfer syntax DCMTK's acceptor picks for a proposed context from an incoming profile.

    The profile's order is the preference; None if the abstract syntax is not in the profile (reason 3)
    or none of its transfer syntaxes was proposed (reason 4).
    """
    return next((ts for ts in profile.transfer_syntaxes(abstract_syntax) or () if ts in proposed), None)


def accepted_role(profile: Profile, abstract_syntax: str, proposed: tuple[bool, bool] | None) -> RoleAnswer:
    """The answer to the requestor's role selection (``proposed`` = (SCU, SCP), None if it sent none).

    Without a role in the profile DCMTK returns no item (default roles). Otherwise the item is the
    proposal intersected with the profile's role, possibly (False, False) with the context still accepted;
    a proposal of (False, False) counts as both roles.
    """
    configured = profile.roles.get(abstract_syntax)
    if configured is None:
        return RoleAnswer(True, None)
    if proposed is None:
        return RoleAnswer(configured[0], None)
    scu, scp = proposed if any(proposed) else (True, True)
    return RoleAnswer(True, (scu and configured[0], scp and configured[1]))


def load_profiles(path: str, in_profile: str, out_profile: str) -> tuple[Profile, Profile]:
    """The incoming and outgoing profiles of ``-xf path in_profile out_profile``.

    Raises :class:`AssocConfigError` when the file cannot be read or parsed, a profile is unknown, or the
    incoming profile names an abstract syntax twice.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except IsADirectoryError:
        data = b""  # DCMTK opens a directory and reads nothing from it
    except OSError:
        raise AssocConfigError("cannot read association config file: "
                               f"unable to open configuration file: {path}") from None
    try:
        config = _AssociationConfig(_read_config(data.decode("latin-1")))
    except AssocConfigError as error:
        raise AssocConfigError(f"cannot read association config file: {error}") from None
    for name in (in_profile, out_profile):
        if _mangle(name) not in config.profiles:
            raise AssocConfigError(f"unknown configuration profile name: {name}")
    incoming, outgoing = config.profile(_mangle(in_profile)), config.profile(_mangle(out_profile))
    syntaxes = [syntax for syntax, _ in incoming.contexts]
    if len(set(syntaxes)) != len(syntaxes):
        raise AssocConfigError(f"profile '{in_profile}' is not valid for incoming use, "
                               "duplicate abstract syntaxes found")
    return incoming, outgoing


def _ascii_upper(text: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


def _mangle(name: str) -> str:
    """A section reference or profile name as DCMTK looks it up: C white space removed, upper-cased."""
    return _ascii_upper("".join(c for c in name if c not in _C_WHITESPACE))


def resolve_uid(value: str) -> str | None:
    """The UID that ``value`` (a UID or one of DCMTK's names) stands for; None if it is not valid.

    A name may start with ``=`` (as in ``dump2dcm``); ``LocalEndianExplicit``/``OppositeEndianExplicit``
    follow the byte order of this machine. DCMTK only checks that the result is non-empty and made of
    digits and dots.
    """
    name = value[1:] if value.startswith("=") else value
    if name in ("LocalEndianExplicit", "OppositeEndianExplicit"):
        local_first = (EXPLICIT_VR_LE, EXPLICIT_VR_BE) if sys.byteorder == "little" else (EXPLICIT_VR_BE,
                                                                                        EXPLICIT_VR_LE)
        return local_first[name.startswith("Opposite")]
    uid = UID_BY_DCMTK_NAME.get(name, value)
    return uid if uid and all(c in "0123456789." for c in uid) else None


# --- DCMTK's configuration file reader (OFConfigFile, two levels, '#' comments, unordered mode) -----------

#: supersection -> its sections in file order -> their entries in file order (names upper-cased)
_Section = tuple[str, list[tuple[str, str]]]
_Tree = list[tuple[str, list[_Section]]]


class _Reader:
    """The character stream of ``OFConfigFile``: comments dropped, CR/CRLF/LF as LF, NUL as space."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.pushed: str | None = None
        self.eof = False
        self.at_line_start = True
        self.after_cr = False

    def unread(self, char: str) -> None:
        self.pushed = char
        self.eof = False

    def _next_raw(self) -> str | None:
        if self.pushed is not None:
            char, self.pushed = self.pushed, None
            return char
        if self.position < len(self.text):
            self.position += 1
            return self.text[self.position - 1]
        self.eof = True
        return None

    def char(self) -> str | None:
        """The next significant character, None at the end."""
        in_comment = False
        while True:
            char = self._next_raw()
            if char is None:
                return None
            if char == "\n" and self.after_cr and self.at_line_start:
                self.after_cr = False
            elif char in "\r\n":
                self.at_line_start = True
                self.after_cr = char == "\r"
                if not in_comment:
                    return "\n"
                in_comment = False  # the line end of a comment line is dropped with it
            elif char == "#" and self.at_line_start:
                in_comment = True
                self.at_line_start = False
            elif not in_comment:
                self.at_line_start = False
                return " " if char == "\0" else char

    def keyword_char(self) -> str | None:
        """The next character that is not a space, tab or line end, ASCII letters upper-cased."""
        char = None
        while not self.eof:
            char = self.char()
            if char not in (" ", "\t", "\n"):
                break
        return _ascii_upper(char) if char else char


def _is_keyword_char(char: str | None) -> bool:
    return char is not None and ("A" <= char <= "Z" or "0" <= char <= "9" or char in "-_")


def _read_config(text: str) -> _Tree:
    """The tree of ``[[supersections]]``, ``[sections]`` and ``KEY = value`` entries of ``text``.

    Sections before any supersection, and entries before any section, are dropped.
    """
    reader = _Reader(text)
    tree: _Tree = []
    section: list[tuple[str, str]] | None = None
    while not reader.eof:
        char = reader.keyword_char()
        if reader.eof:
            break
        if char == "[":
            level, name = _read_heading(reader)
            if level == 2:
                tree.append((name, []))
                section = None
            elif tree:
                section = []
                tree[-1][1].append((name, section))
        else:
            reader.unread(char)
            name = _read_name(reader, "=")
            value = _read_value(reader)
            if section is not None:
                section.append((name, value))
    return tree


def _read_name(reader: _Reader, end: str) -> str:
    """Keyword characters up to ``end`` (other characters are dropped)."""
    name = ""
    while (char := reader.keyword_char()) != end and not reader.eof:
        name += char if _is_keyword_char(char) else ""
    return name


def _read_heading(reader: _Reader) -> tuple[int, str]:
    """(level, name) of a ``[section]`` (1) or ``[[supersection]]`` (2, also for deeper brackets)."""
    level = 1
    while (char := reader.keyword_char()) == "[" and not reader.eof:
        level += 1
    name = ""
    if not reader.eof:
        reader.unread(char)
        name = _read_name(reader, "]")
    missing = level - 1  # closing brackets after the first
    while missing and not reader.eof:
        if reader.keyword_char() == "]" and not reader.eof:
            missing -= 1
    return min(level, 2), name


def _read_value(reader: _Reader) -> str:
    """A value: leading white space skipped, continued by lines that start with white space."""
    value = ""
    skip_white = True
    after_newline = False
    while (char := reader.char()) is not None:
        if char == "\n":
            value += "" if skip_white else char
            skip_white = after_newline = True
        elif char in " \t":
            after_newline = False
            value += "" if skip_white else char
        elif after_newline:
            reader.unread(char)
            break
        else:
            value += char
            skip_white = False
    return value.rstrip("\n")


def _numbered_entries(tree: _Tree, supersection: str, prefix: str) -> list[tuple[str, str, str]] | None:
    """(section, entry key, value) of ``PREFIX1``, ``PREFIX2``, ... (up to the first gap) of each section.

    None when the supersection is missing.
    """
    sections = next((sections for name, sections in tree if name == supersection), None)
    if sections is None:
        return None
    return [(name, f"{prefix}{number}", value)
            for name, entries in sections
            for number, value in _numbered_values(entries, prefix)]


def _numbered_values(entries: list[tuple[str, str]], prefix: str) -> Iterator[tuple[int, str]]:
    values = dict(reversed(entries))  # the first of equal keys wins
    number = 1
    while f"{prefix}{number}" in values:
        yield number, values[f"{prefix}{number}"]
        number += 1


# --- DCMTK's association configuration (DcmAssociationConfigurationFile and its maps) -------------------

class _AssociationConfig:
    """The lists and profiles of one file, with DCMTK's checks in DCMTK's order."""

    def __init__(self, tree: _Tree) -> None:
        self.transfer_syntaxes: dict[str, list[str]] = {}
        self.contexts: dict[str, list[tuple[str, str]]] = {}  # key -> (abstract syntax, transfer syntax key)
        self.roles: dict[str, list[tuple[str, tuple[bool, bool]]]] = {}
        self.extended_negotiation: dict[str, list[tuple[str, bytes]]] = {}
        self.profiles: dict[str, tuple[str, str | None, str | None]] = {}
        for section, _, value in _required(tree, "TRANSFERSYNTAXES", "TRANSFERSYNTAX"):
            self.transfer_syntaxes.setdefault(section, []).append(_uid(value, "transfer syntax"))
        for section, entry, value in _required(tree, "PRESENTATIONCONTEXTS", "PRESENTATIONCONTEXT"):
            self._add_context(section, entry, value)
        for section, entry, value in _numbered_entries(tree, "SCPSCUROLESELECTION", "ROLE") or ():
            self._add_role(section, entry, value)
        for section, entry, value in _numbered_entries(tree, "EXTENDEDNEGOTIATION", "EXTENDEDNEGOTIATION") or ():
            self._add_extended_negotiation(section, entry, value)
        sections = next((sections for name, sections in tree if name == "PROFILES"), None)
        if sections is None:
            raise AssocConfigError("cannot find section [[PROFILES]] in config file")
        for name, entries in sections:
            self._add_profile(name, dict(reversed(entries)))

    def _add_context(self, section: str, entry: str, value: str) -> None:
        abstract_syntax, transfer_syntax_key = _split(value, entry)
        transfer_syntax_key = _mangle(transfer_syntax_key)
        if transfer_syntax_key not in self.transfer_syntaxes:
            raise AssocConfigError(f"transfer syntax key undefined: {transfer_syntax_key}")
        if not (section and abstract_syntax and transfer_syntax_key):
            raise AssocConfigError(_ILLEGAL_CALL)
        uid = _uid(abstract_syntax)
        contexts = self.contexts.setdefault(section, [])
        if len(contexts) >= MAX_CONTEXTS:
            raise AssocConfigError(f"presentation context list too long (> {MAX_CONTEXTS} entries): {section}")
        contexts.append((uid, transfer_syntax_key))

    def _add_role(self, section: str, entry: str, value: str) -> None:
        abstract_syntax, role_key = _split(value, entry)
        role = _ROLES.get(_ascii_upper(role_key))
        if role is None:
            raise AssocConfigError(f"syntax error: unknown role key in entry {entry} in config file")
        uid = _uid(abstract_syntax)
        roles = self.roles.setdefault(section, [])
        if any(uid == known for known, _ in roles):
            raise AssocConfigError(f"role selection defined twice for abstract syntax UID: {abstract_syntax}")
        roles.append((uid, role))

    def _add_extended_negotiation(self, section: str, entry: str, value: str) -> None:
        abstract_syntax, hex_data = _split(value, entry)
        if len(hex_data) > MAX_EXTENDED_NEGOTIATION_HEX:
            raise AssocConfigError("extended negotiation data too long, cannot handle > 1024 bytes "
                                   f"in entry {entry} in config file")
        pairs = [hex_data[i:i + 2] for i in range(0, len(hex_data), 2)]
        if any(len(pair) != 2 or pair[0] not in _HEX_DIGITS or pair[1] not in _HEX_DIGITS for pair in pairs):
            raise AssocConfigError(f"parse error in extended negotiation data in entry {entry} in config file")
        if not pairs:
            raise AssocConfigError(_ILLEGAL_CALL)
        uid = _uid(abstract_syntax)
        items = self.extended_negotiation.setdefault(section, [])
        if any(uid == known for known, _ in items):
            raise AssocConfigError("extended negotiation defined twice for abstract syntax UID: "
                                   f"{abstract_syntax}")
        items.append((uid, bytes.fromhex(hex_data)))

    def _add_profile(self, name: str, entries: dict[str, str]) -> None:
        if "PRESENTATIONCONTEXTS" not in entries:
            raise AssocConfigError(f"no PRESENTATIONCONTEXTS  entry in section {name} in config file")
        contexts_key = _mangle(entries["PRESENTATIONCONTEXTS"])
        roles_key, extended_key = (_mangle(entries[key]) if key in entries else None
                                   for key in ("SCPSCUROLESELECTION", "EXTENDEDNEGOTIATION"))
        if contexts_key not in self.contexts:
            raise AssocConfigError(f"presentation context key undefined: {contexts_key}")
        syntaxes = {syntax for syntax, _ in self.contexts[contexts_key]}
        for key, lists, kind in ((roles_key, self.roles, "role selection"),
                                 (extended_key, self.extended_negotiation, "extended negotiation")):
            if key is None:
                continue
            if key not in lists:
                raise AssocConfigError(f"{kind} key undefined: {key}")
            missing = next((syntax for syntax, _ in lists[key] if syntax not in syntaxes), None)
            if missing is not None:  # DCMTK says "role selection list" for both kinds
                raise AssocConfigError(f"abstract syntax defined in role selection list '{key}' but not in "
                                       f"presentation context list '{contexts_key}': {missing}")
        if name in self.profiles:
            raise AssocConfigError(f"two profiles defined for key: {contexts_key}")
        self.profiles[name] = (contexts_key, roles_key, extended_key)

    def profile(self, name: str) -> Profile:
        contexts_key, roles_key, extended_key = self.profiles[name]
        return Profile([(syntax, list(self.transfer_syntaxes[key])) for syntax, key in self.contexts[contexts_key]],
                       dict(self.roles[roles_key]) if roles_key is not None else {},
                       dict(self.extended_negotiation[extended_key]) if extended_key is not None else {})


def _required(tree: _Tree, supersection: str, prefix: str) -> list[tuple[str, str, str]]:
    entries = _numbered_entries(tree, supersection, prefix)
    if entries is None:
        raise AssocConfigError(f"cannot find section [[{supersection}]] in config file")
    return entries


def _split(value: str, entry: str) -> tuple[str, str]:
    """``abstract syntax\\rest`` at the first backslash."""
    abstract_syntax, separator, rest = value.partition("\\")
    if not separator:
        raise AssocConfigError(f"syntax error: missing '\\' in entry {entry} in config file")
    return abstract_syntax, rest


def _uid(value: str, kind: str = "abstract syntax") -> str:
    uid = resolve_uid(value)
    if uid is None:
        raise AssocConfigError(f"not a valid {kind} UID: {value}")
    return uid


