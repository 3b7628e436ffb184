"""``-xf``: DCMTK's association negotiation profiles, read and applied as ``dcmqrscp`` 3.6.7 does (ref §6.2, §10).

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
DCMTK's symbolic names (``_DCMTK_UID_NAMES``, case-sensitive, no trimming); references to other sections
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

from qrscp.uids import EXPLICIT_VR_BE, EXPLICIT_VR_LE

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
    uid = _UID_BY_NAME.get(name, value)
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


#: DCMTK 3.6.7's UID names (``dcmdata/libsrc/dcuid.cc``, read from ``libdcmdata.so.17.3.6.7`` with
#: ``dcmFindNameOfUID``): "name UID" per line. The spelling is DCMTK's, typos included.
_DCMTK_UID_NAMES = """
AbstractMultiDimensionalImageModel 1.2.840.10008.7.1.2
AcquisitionContextSRStorage 1.2.840.10008.5.1.4.1.1.88.71
AdvancedBlendingPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.8
AmbulatoryECGWaveformStorage 1.2.840.10008.5.1.4.1.1.9.1.3
ArterialPulseWaveformStorage 1.2.840.10008.5.1.4.1.1.9.5.1
AudioWaveformRealTimeCommunication 1.2.840.10008.10.3
AutorefractionMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.2
BasicAnnotationBoxSOPClass 1.2.840.10008.5.1.1.15
BasicColorImageBoxSOPClass 1.2.840.10008.5.1.1.4.1
BasicColorPrintManagementMetaSOPClass 1.2.840.10008.5.1.1.18
BasicFilmBoxSOPClass 1.2.840.10008.5.1.1.2
BasicFilmSessionSOPClass 1.2.840.10008.5.1.1.1
BasicGrayscaleImageBoxSOPClass 1.2.840.10008.5.1.1.4
BasicGrayscalePrintManagementMetaSOPClass 1.2.840.10008.5.1.1.9
BasicStructuredDisplayStorage 1.2.840.10008.5.1.4.1.1.131
BasicTextSRStorage 1.2.840.10008.5.1.4.1.1.88.11
BasicVoiceAudioWaveformStorage 1.2.840.10008.5.1.4.1.1.9.4.1
BigEndianExplicit 1.2.840.10008.1.2.2
BlendingSoftcopyPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.4
BodyPositionWaveformStorage 1.2.840.10008.5.1.4.1.1.9.8.1
BreastImagingRelevantPatientInformationQuery 1.2.840.10008.5.1.4.37.2
BreastProjectionXRayImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.13.1.4
BreastProjectionXRayImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.13.1.5
BreastTomosynthesisImageStorage 1.2.840.10008.5.1.4.1.1.13.1.3
CArmPhotonElectronRadiationRecordStorage 1.2.840.10008.5.1.4.1.1.481.19
CArmPhotonElectronRadiationStorage 1.2.840.10008.5.1.4.1.1.481.13
CTDefinedProcedureProtocolStorage 1.2.840.10008.5.1.4.1.1.200.1
CTImageStorage 1.2.840.10008.5.1.4.1.1.2
CTPerformedProcedureProtocolStorage 1.2.840.10008.5.1.4.1.1.200.2
CardiacElectrophysiologyWaveformStorage 1.2.840.10008.5.1.4.1.1.9.3.1
CardiacRelevantPatientInformationQuery 1.2.840.10008.5.1.4.37.3
ChestCADSRStorage 1.2.840.10008.5.1.4.1.1.88.65
Colin27FrameOfReference 1.2.840.10008.1.4.5.1
ColonCADSRStorage 1.2.840.10008.5.1.4.1.1.88.69
ColorPaletteStorage 1.2.840.10008.5.1.4.39.1
ColorSoftcopyPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.2
CompositingPlanarMPRVolumetricPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.7
Comprehensive3DSRStorage 1.2.840.10008.5.1.4.1.1.88.34
ComprehensiveSRStorage 1.2.840.10008.5.1.4.1.1.88.33
ComputedRadiographyImageStorage 1.2.840.10008.5.1.4.1.1.1
ContentAssessmentResultsStorage 1.2.840.10008.5.1.4.1.1.90.1
CornealTopographyMapStorage 1.2.840.10008.5.1.4.1.1.82.1
DICOMContentMappingResource 1.2.840.10008.8.1.1
DICOMControlledTerminologyCodingScheme 1.2.840.10008.2.16.4
DICOMUIDRegistryCodingScheme 1.2.840.10008.2.6.1
DICONDE_EddyCurrentImageStorage 1.2.840.10008.5.1.4.1.1.601.1
DICONDE_EddyCurrentMultiframeImageStorage 1.2.840.10008.5.1.4.1.1.601.2
DICOS_2DAITStorage 1.2.840.10008.5.1.4.1.1.501.4
DICOS_3DAITStorage 1.2.840.10008.5.1.4.1.1.501.5
DICOS_CTImageStorage 1.2.840.10008.5.1.4.1.1.501.1
DICOS_DigitalXRayImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.501.2.1
DICOS_DigitalXRayImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.501.2.2
DICOS_QuadrupoleResonanceStorage 1.2.840.10008.5.1.4.1.1.501.6
DICOS_ThreatDetectionReportStorage 1.2.840.10008.5.1.4.1.1.501.3
DRAFT_RTBeamsDeliveryInstructionStorage 1.2.840.10008.5.1.4.34.1
DRAFT_RTConventionalMachineVerification 1.2.840.10008.5.1.4.34.2
DRAFT_RTIonMachineVerification 1.2.840.10008.5.1.4.34.3
DRAFT_SRAudioStorage 1.2.840.10008.5.1.4.1.1.88.2
DRAFT_SRComprehensiveStorage 1.2.840.10008.5.1.4.1.1.88.4
DRAFT_SRDetailStorage 1.2.840.10008.5.1.4.1.1.88.3
DRAFT_SRTextStorage 1.2.840.10008.5.1.4.1.1.88.1
DRAFT_UnifiedProcedureStepEventSOPClass 1.2.840.10008.5.1.4.34.4.4
DRAFT_UnifiedProcedureStepPullSOPClass 1.2.840.10008.5.1.4.34.4.3
DRAFT_UnifiedProcedureStepPushSOPClass 1.2.840.10008.5.1.4.34.4.1
DRAFT_UnifiedProcedureStepWatchSOPClass 1.2.840.10008.5.1.4.34.4.2
DRAFT_UnifiedWorklistAndProcedureStepServiceClass 1.2.840.10008.5.1.4.34.4
DRAFT_WaveformStorage 1.2.840.10008.5.1.4.1.1.9.1
DeflatedLittleEndianExplicit 1.2.840.10008.1.2.1.99
DeformableSpatialRegistrationStorage 1.2.840.10008.5.1.4.1.1.66.3
DermoscopicPhotographyImageStorage 1.2.840.10008.5.1.4.1.1.77.1.7
DigitalIntraOralXRayImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.1.3
DigitalIntraOralXRayImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.1.3.1
DigitalMammographyXRayImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.1.2
DigitalMammographyXRayImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.1.2.1
DigitalXRayImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.1.1
DigitalXRayImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.1.1.1
DisplaySystemSOPClass 1.2.840.10008.5.1.1.40
DisplaySystemSOPInstance 1.2.840.10008.5.1.1.40.1
ElectromyogramWaveformStorage 1.2.840.10008.5.1.4.1.1.9.7.2
ElectrooculogramWaveformStorage 1.2.840.10008.5.1.4.1.1.9.7.3
EncapsulatedCDAStorage 1.2.840.10008.5.1.4.1.1.104.2
EncapsulatedMTLStorage 1.2.840.10008.5.1.4.1.1.104.5
EncapsulatedOBJStorage 1.2.840.10008.5.1.4.1.1.104.4
EncapsulatedPDFStorage 1.2.840.10008.5.1.4.1.1.104.1
EncapsulatedSTLStorage 1.2.840.10008.5.1.4.1.1.104.3
EnhancedCTImageStorage 1.2.840.10008.5.1.4.1.1.2.1
EnhancedMRColorImageStorage 1.2.840.10008.5.1.4.1.1.4.3
EnhancedMRImageStorage 1.2.840.10008.5.1.4.1.1.4.1
EnhancedPETImageStorage 1.2.840.10008.5.1.4.1.1.130
EnhancedSRStorage 1.2.840.10008.5.1.4.1.1.88.22
EnhancedUSVolumeStorage 1.2.840.10008.5.1.4.1.1.6.2
EnhancedXAImageStorage 1.2.840.10008.5.1.4.1.1.12.1.1
EnhancedXRFImageStorage 1.2.840.10008.5.1.4.1.1.12.2.1
EnhancedXRayRadiationDoseSRStorage 1.2.840.10008.5.1.4.1.1.88.76
ExtensibleSRStorage 1.2.840.10008.5.1.4.1.1.88.35
FINDColorPaletteInformationModel 1.2.840.10008.5.1.4.39.2
FINDDefinedProcedureProtocolInformationModel 1.2.840.10008.5.1.4.20.1
FINDGenericImplantTemplateInformationModel 1.2.840.10008.5.1.4.43.2
FINDHangingProtocolInformationModel 1.2.840.10008.5.1.4.38.2
FINDImplantAssemblyTemplateInformationModel 1.2.840.10008.5.1.4.44.2
FINDImplantTemplateGroupInformationModel 1.2.840.10008.5.1.4.45.2
FINDModalityWorklistInformationModel 1.2.840.10008.5.1.4.31
FINDPatientRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.1.1
FINDProtocolApprovalInformationModel 1.2.840.10008.5.1.4.1.1.200.4
FINDStudyRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.2.1
FallColorPaletteSOPInstance 1.2.840.10008.1.5.7
GETColorPaletteInformationModel 1.2.840.10008.5.1.4.39.4
GETCompositeInstanceRetrieveWithoutBulkData 1.2.840.10008.5.1.4.1.2.5.3
GETCompositeInstanceRootRetrieve 1.2.840.10008.5.1.4.1.2.4.3
GETDefinedProcedureProtocolInformationModel 1.2.840.10008.5.1.4.20.3
GETGenericImplantTemplateInformationModel 1.2.840.10008.5.1.4.43.4
GETImplantAssemblyTemplateInformationModel 1.2.840.10008.5.1.4.44.4
GETImplantTemplateGroupInformationModel 1.2.840.10008.5.1.4.45.4
GETPatientRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.1.3
GETProtocolApprovalInformationModel 1.2.840.10008.5.1.4.1.1.200.6
GETStudyRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.2.3
GeneralAudioWaveformStorage 1.2.840.10008.5.1.4.1.1.9.4.2
GeneralECGWaveformStorage 1.2.840.10008.5.1.4.1.1.9.1.2
GeneralRelevantPatientInformationQuery 1.2.840.10008.5.1.4.37.1
GenericImplantTemplateStorage 1.2.840.10008.5.1.4.43.1
GrayscalePlanarMPRVolumetricPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.6
GrayscaleSoftcopyPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.1
HEVCMain10Profile/Level5.1 1.2.840.10008.1.2.4.108
HEVCMainProfile/Level5.1 1.2.840.10008.1.2.4.107
HangingProtocolStorage 1.2.840.10008.5.1.4.38.1
HemodynamicWaveformStorage 1.2.840.10008.5.1.4.1.1.9.2.1
HotIronColorPaletteSOPInstance 1.2.840.10008.1.5.1
HotMetalBlueColorPaletteSOPInstance 1.2.840.10008.1.5.3
ICBM452T1FrameOfReference 1.2.840.10008.1.4.2.1
ICBMSingleSubjectMRIFrameOfReference 1.2.840.10008.1.4.2.2
IEC61217FixedCoordinateSystemFrameOfReference 1.2.840.10008.1.4.3.1
IEC61217TableTopCoordinateSystemFrameOfReference 1.2.840.10008.1.4.3.3
ImplantAssemblyTemplateStorage 1.2.840.10008.5.1.4.44.1
ImplantTemplateGroupStorage 1.2.840.10008.5.1.4.45.1
ImplantationPlanSRDocumentStorage 1.2.840.10008.5.1.4.1.1.88.70
InstanceAvailabilityNotificationSOPClass 1.2.840.10008.5.1.4.33
IntraocularLensCalculationsStorage 1.2.840.10008.5.1.4.1.1.78.8
IntravascularOpticalCoherenceTomographyImageStorageForPresentation 1.2.840.10008.5.1.4.1.1.14.1
IntravascularOpticalCoherenceTomographyImageStorageForProcessing 1.2.840.10008.5.1.4.1.1.14.2
JPEG2000 1.2.840.10008.1.2.4.91
JPEG2000LosslessOnly 1.2.840.10008.1.2.4.90
JPEG2000Multicomponent 1.2.840.10008.1.2.4.93
JPEG2000MulticomponentLosslessOnly 1.2.840.10008.1.2.4.92
JPEGBaseline 1.2.840.10008.1.2.4.50
JPEGExtended:Hierarchical:Process16+18 1.2.840.10008.1.2.4.59
JPEGExtended:Hierarchical:Process17+19 1.2.840.10008.1.2.4.60
JPEGExtended:Process2+4 1.2.840.10008.1.2.4.51
JPEGExtended:Process3+5 1.2.840.10008.1.2.4.52
JPEGFullProgression:Hierarchical:Process24+26 1.2.840.10008.1.2.4.63
JPEGFullProgression:Hierarchical:Process25+27 1.2.840.10008.1.2.4.64
JPEGFullProgression:Non-hierarchical:Process10+12 1.2.840.10008.1.2.4.55
JPEGFullProgression:Non-hierarchical:Process11+13 1.2.840.10008.1.2.4.56
JPEGLSLossless 1.2.840.10008.1.2.4.80
JPEGLSLossy 1.2.840.10008.1.2.4.81
JPEGLossless:Hierarchical:Process28 1.2.840.10008.1.2.4.65
JPEGLossless:Hierarchical:Process29 1.2.840.10008.1.2.4.66
JPEGLossless:Non-hierarchical-1stOrderPrediction 1.2.840.10008.1.2.4.70
JPEGLossless:Non-hierarchical:Process14 1.2.840.10008.1.2.4.57
JPEGLossless:Non-hierarchical:Process15 1.2.840.10008.1.2.4.58
JPEGSpectralSelection:Hierarchical:Process20+22 1.2.840.10008.1.2.4.61
JPEGSpectralSelection:Hierarchical:Process21+23 1.2.840.10008.1.2.4.62
JPEGSpectralSelection:Non-hierarchical:Process6+8 1.2.840.10008.1.2.4.53
JPEGSpectralSelection:Non-hierarchical:Process7+9 1.2.840.10008.1.2.4.54
JPIPReferenced 1.2.840.10008.1.2.4.94
JPIPReferencedDeflate 1.2.840.10008.1.2.4.95
KeratometryMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.3
KeyObjectSelectionDocumentStorage 1.2.840.10008.5.1.4.1.1.88.59
LDAP_dicomAETitle 1.2.840.10008.15.0.3.7
LDAP_dicomApplicationCluster 1.2.840.10008.15.0.3.9
LDAP_dicomAssociationAcceptor 1.2.840.10008.15.0.3.11
LDAP_dicomAssociationInitiator 1.2.840.10008.15.0.3.10
LDAP_dicomAuthorizedNodeCertificateReference 1.2.840.10008.15.0.3.21
LDAP_dicomConfigurationRoot 1.2.840.10008.15.0.4.1
LDAP_dicomDescription 1.2.840.10008.15.0.3.2
LDAP_dicomDevice 1.2.840.10008.15.0.4.4
LDAP_dicomDeviceName 1.2.840.10008.15.0.3.1
LDAP_dicomDeviceSerialNumber 1.2.840.10008.15.0.3.25
LDAP_dicomDevicesRoot 1.2.840.10008.15.0.4.2
LDAP_dicomHostname 1.2.840.10008.15.0.3.12
LDAP_dicomInstalled 1.2.840.10008.15.0.3.23
LDAP_dicomInstitutionAddress 1.2.840.10008.15.0.3.27
LDAP_dicomInstitutionDepartmentName 1.2.840.10008.15.0.3.28
LDAP_dicomInstitutionName 1.2.840.10008.15.0.3.26
LDAP_dicomIssuerOfPatientID 1.2.840.10008.15.0.3.29
LDAP_dicomManufacturer 1.2.840.10008.15.0.3.3
LDAP_dicomManufacturerModelName 1.2.840.10008.15.0.3.4
LDAP_dicomNetworkAE 1.2.840.10008.15.0.4.5
LDAP_dicomNetworkConnection 1.2.840.10008.15.0.4.6
LDAP_dicomNetworkConnectionReference 1.2.840.10008.15.0.3.8
LDAP_dicomPort 1.2.840.10008.15.0.3.13
LDAP_dicomPreferredCalledAETitle 1.2.840.10008.15.0.3.19
LDAP_dicomPreferredCallingAETitle 1.2.840.10008.15.0.3.30
LDAP_dicomPrimaryDeviceType 1.2.840.10008.15.0.3.17
LDAP_dicomRelatedDeviceReference 1.2.840.10008.15.0.3.18
LDAP_dicomSOPClass 1.2.840.10008.15.0.3.14
LDAP_dicomSoftwareVersion 1.2.840.10008.15.0.3.5
LDAP_dicomStationName 1.2.840.10008.15.0.3.24
LDAP_dicomSupportedCharacterSet 1.2.840.10008.15.0.3.31
LDAP_dicomTLSCyphersuite 1.2.840.10008.15.0.3.20
LDAP_dicomThisNodeCertificateReference 1.2.840.10008.15.0.3.22
LDAP_dicomTransferCapability 1.2.840.10008.15.0.4.8
LDAP_dicomTransferRole 1.2.840.10008.15.0.3.15
LDAP_dicomTransferSyntax 1.2.840.10008.15.0.3.16
LDAP_dicomUniqueAETitle 1.2.840.10008.15.0.4.7
LDAP_dicomUniqueAETitlesRegistryRoot 1.2.840.10008.15.0.4.3
LDAP_dicomVendorData 1.2.840.10008.15.0.3.6
LPBA40AIRFrameOfReference 1.2.840.10008.1.4.6.1
LPBA40FLIRTFrameOfReference 1.2.840.10008.1.4.6.2
LPBA40SPM5FrameOfReference 1.2.840.10008.1.4.6.3
LegacyConvertedEnhancedCTImageStorage 1.2.840.10008.5.1.4.1.1.2.2
LegacyConvertedEnhancedMRImageStorage 1.2.840.10008.5.1.4.1.1.4.4
LegacyConvertedEnhancedPETImageStorage 1.2.840.10008.5.1.4.1.1.128.1
LensometryMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.1
LittleEndianExplicit 1.2.840.10008.1.2.1
LittleEndianImplicit 1.2.840.10008.1.2
MOVEColorPaletteInformationModel 1.2.840.10008.5.1.4.39.3
MOVECompositeInstanceRootRetrieve 1.2.840.10008.5.1.4.1.2.4.2
MOVEDefinedProcedureProtocolInformationModel 1.2.840.10008.5.1.4.20.2
MOVEGenericImplantTemplateInformationModel 1.2.840.10008.5.1.4.43.3
MOVEHangingProtocolInformationModel 1.2.840.10008.5.1.4.38.3
MOVEImplantAssemblyTemplateInformationModel 1.2.840.10008.5.1.4.44.3
MOVEImplantTemplateGroupInformationModel 1.2.840.10008.5.1.4.45.3
MOVEPatientRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.1.2
MOVEProtocolApprovalInformationModel 1.2.840.10008.5.1.4.1.1.200.5
MOVEStudyRootQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.2.2
MPEG2MainProfile@HighLevel 1.2.840.10008.1.2.4.101
MPEG2MainProfile@MainLevel 1.2.840.10008.1.2.4.100
MPEG4BDcompatibleHighProfile/Level4.1 1.2.840.10008.1.2.4.103
MPEG4HighProfile/Level4.1 1.2.840.10008.1.2.4.102
MPEG4HighProfile/Level4.2For2DVideo 1.2.840.10008.1.2.4.104
MPEG4HighProfile/Level4.2For3DVideo 1.2.840.10008.1.2.4.105
MPEG4StereoHighProfile/Level4.2 1.2.840.10008.1.2.4.106
MRImageStorage 1.2.840.10008.5.1.4.1.1.4
MRSpectroscopyStorage 1.2.840.10008.5.1.4.1.1.4.2
MacularGridThicknessAndVolumeReportStorage 1.2.840.10008.5.1.4.1.1.79.1
MammographyCADSRStorage 1.2.840.10008.5.1.4.1.1.88.50
MediaCreationManagementSOPClass 1.2.840.10008.5.1.1.33
MediaStorageDirectoryStorage 1.2.840.10008.1.3.10
MicroscopyBulkSimpleAnnotationsStorage 1.2.840.10008.5.1.4.1.1.91.1
ModalityPerformedProcedureStepNotificationSOPClass 1.2.840.10008.3.1.2.3.5
ModalityPerformedProcedureStepRetrieveSOPClass 1.2.840.10008.3.1.2.3.4
ModalityPerformedProcedureStepSOPClass 1.2.840.10008.3.1.2.3.3
MultichannelRespiratoryWaveformStorage 1.2.840.10008.5.1.4.1.1.9.6.2
MultiframeGrayscaleByteSecondaryCaptureImageStorage 1.2.840.10008.5.1.4.1.1.7.2
MultiframeGrayscaleWordSecondaryCaptureImageStorage 1.2.840.10008.5.1.4.1.1.7.3
MultiframeSingleBitSecondaryCaptureImageStorage 1.2.840.10008.5.1.4.1.1.7.1
MultiframeTrueColorSecondaryCaptureImageStorage 1.2.840.10008.5.1.4.1.1.7.4
MultipleVolumeRenderingVolumetricPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.11
NativeDICOMModel 1.2.840.10008.7.1.1
NuclearMedicineImageStorage 1.2.840.10008.5.1.4.1.1.20
OphthalmicAxialMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.7
OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage 1.2.840.10008.5.1.4.1.1.77.1.5.8
OphthalmicOpticalCoherenceTomographyEnFaceImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.7
OphthalmicPhotography16BitImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.2
OphthalmicPhotography8BitImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.1
OphthalmicThicknessMapStorage 1.2.840.10008.5.1.4.1.1.81.1
OphthalmicTomographyImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.4
OphthalmicVisualFieldStaticPerimetryMeasurementsStorage 1.2.840.10008.5.1.4.1.1.80.1
PET20StepColorPaletteSOPInstance 1.2.840.10008.1.5.4
PETColorPaletteSOPInstance 1.2.840.10008.1.5.2
ParametricMapStorage 1.2.840.10008.5.1.4.1.1.30
PatientRadiationDoseSRStorage 1.2.840.10008.5.1.4.1.1.88.73
PerformedImagingAgentAdministrationSRStorage 1.2.840.10008.5.1.4.1.1.88.75
PlannedImagingAgentAdministrationSRStorage 1.2.840.10008.5.1.4.1.1.88.74
PositronEmissionTomographyImageStorage 1.2.840.10008.5.1.4.1.1.128
PresentationLUTSOPClass 1.2.840.10008.5.1.1.23
PrintJobSOPClass 1.2.840.10008.5.1.1.14
PrinterConfigurationRetrievalSOPClass 1.2.840.10008.5.1.1.16.376
PrinterConfigurationRetrievalSOPInstance 1.2.840.10008.5.1.1.17.376
PrinterSOPClass 1.2.840.10008.5.1.1.16
PrinterSOPInstance 1.2.840.10008.5.1.1.17
PrivateGELittleEndianImplicitWithBigEndianPixelData 1.2.840.113619.5.2
ProceduralEventLoggingSOPClass 1.2.840.10008.1.40
ProceduralEventLoggingSOPInstance 1.2.840.10008.1.40.1
ProcedureLogStorage 1.2.840.10008.5.1.4.1.1.88.40
ProductCharacteristicsQuerySOPClass 1.2.840.10008.5.1.4.41
ProtocolApprovalStorage 1.2.840.10008.5.1.4.1.1.200.3
PseudoColorSoftcopyPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.3
RETIRED_BasicPrintImageOverlayBoxSOPClass 1.2.840.10008.5.1.1.24.1
RETIRED_BasicStudyContentNotificationSOPClass 1.2.840.10008.1.9
RETIRED_DetachedInterpretationManagementSOPClass 1.2.840.10008.3.1.2.6.1
RETIRED_DetachedPatientManagementMetaSOPClass 1.2.840.10008.3.1.2.1.4
RETIRED_DetachedPatientManagementSOPClass 1.2.840.10008.3.1.2.1.1
RETIRED_DetachedResultsManagementMetaSOPClass 1.2.840.10008.3.1.2.5.4
RETIRED_DetachedResultsManagementSOPClass 1.2.840.10008.3.1.2.5.1
RETIRED_DetachedStudyManagementMetaSOPClass 1.2.840.10008.3.1.2.5.5
RETIRED_DetachedStudyManagementSOPClass 1.2.840.10008.3.1.2.3.1
RETIRED_DetachedVisitManagementSOPClass 1.2.840.10008.3.1.2.2.1
RETIRED_FINDGeneralPurposeWorklistInformationModel 1.2.840.10008.5.1.4.32.1
RETIRED_FINDPatientStudyOnlyQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.3.1
RETIRED_GETPatientStudyOnlyQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.3.3
RETIRED_GeneralPurposePerformedProcedureStepSOPClass 1.2.840.10008.5.1.4.32.3
RETIRED_GeneralPurposeScheduledProcedureStepSOPClass 1.2.840.10008.5.1.4.32.2
RETIRED_GeneralPurposeWorklistManagementMetaSOPClass 1.2.840.10008.5.1.4.32
RETIRED_HardcopyColorImageStorage 1.2.840.10008.5.1.1.30
RETIRED_HardcopyGrayscaleImageStorage 1.2.840.10008.5.1.1.29
RETIRED_ImageOverlayBoxSOPClass 1.2.840.10008.5.1.1.24
RETIRED_MOVEPatientStudyOnlyQueryRetrieveInformationModel 1.2.840.10008.5.1.4.1.2.3.2
RETIRED_NuclearMedicineImageStorage 1.2.840.10008.5.1.4.1.1.5
RETIRED_PrintQueueManagementSOPClass 1.2.840.10008.5.1.1.26
RETIRED_PrintQueueSOPInstance 1.2.840.10008.5.1.1.25
RETIRED_PullPrintRequestSOPClass 1.2.840.10008.5.1.1.31
RETIRED_PullStoredPrintManagementMetaSOPClass 1.2.840.10008.5.1.1.32
RETIRED_ReferencedColorPrintManagementMetaSOPClass 1.2.840.10008.5.1.1.18.1
RETIRED_ReferencedGrayscalePrintManagementMetaSOPClass 1.2.840.10008.5.1.1.9.1
RETIRED_ReferencedImageBoxSOPClass 1.2.840.10008.5.1.1.4.2
RETIRED_StandaloneCurveStorage 1.2.840.10008.5.1.4.1.1.9
RETIRED_StandaloneModalityLUTStorage 1.2.840.10008.5.1.4.1.1.10
RETIRED_StandaloneOverlayStorage 1.2.840.10008.5.1.4.1.1.8
RETIRED_StandalonePETCurveStorage 1.2.840.10008.5.1.4.1.1.129
RETIRED_StandaloneVOILUTStorage 1.2.840.10008.5.1.4.1.1.11
RETIRED_StorageCommitmentPullModelSOPClass 1.2.840.10008.1.20.2
RETIRED_StorageCommitmentPullModelSOPInstance 1.2.840.10008.1.20.2.1
RETIRED_StoredPrintStorage 1.2.840.10008.5.1.1.27
RETIRED_StudyComponentManagementSOPClass 1.2.840.10008.3.1.2.3.2
RETIRED_UltrasoundImageStorage 1.2.840.10008.5.1.4.1.1.6
RETIRED_UltrasoundMultiframeImageStorage 1.2.840.10008.5.1.4.1.1.3
RETIRED_VLImageStorage 1.2.840.10008.5.1.4.1.1.77.1
RETIRED_VLMultiframeImageStorage 1.2.840.10008.5.1.4.1.1.77.2
RETIRED_XRayAngiographicBiPlaneImageStorage 1.2.840.10008.5.1.4.1.1.12.3
RFC2557MIMEEncapsulation 1.2.840.10008.1.2.6.1
RLELossless 1.2.840.10008.1.2.5
RTBeamsDeliveryInstructionStorage 1.2.840.10008.5.1.4.34.7
RTBeamsTreatmentRecordStorage 1.2.840.10008.5.1.4.1.1.481.4
RTBrachyApplicationSetupDeliveryInstructionStorage 1.2.840.10008.5.1.4.34.10
RTBrachyTreatmentRecordStorage 1.2.840.10008.5.1.4.1.1.481.6
RTConventionalMachineVerification 1.2.840.10008.5.1.4.34.8
RTDoseStorage 1.2.840.10008.5.1.4.1.1.481.2
RTImageStorage 1.2.840.10008.5.1.4.1.1.481.1
RTIonBeamsTreatmentRecordStorage 1.2.840.10008.5.1.4.1.1.481.9
RTIonMachineVerification 1.2.840.10008.5.1.4.34.9
RTIonPlanStorage 1.2.840.10008.5.1.4.1.1.481.8
RTPhysicianIntentStorage 1.2.840.10008.5.1.4.1.1.481.10
RTPlanStorage 1.2.840.10008.5.1.4.1.1.481.5
RTRadiationRecordSetStorage 1.2.840.10008.5.1.4.1.1.481.16
RTRadiationSalvageRecordStorage 1.2.840.10008.5.1.4.1.1.481.17
RTRadiationSetDeliveryInstructionStorage 1.2.840.10008.5.1.4.1.1.481.21
RTRadiationSetStorage 1.2.840.10008.5.1.4.1.1.481.12
RTSegmentAnnotationStorage 1.2.840.10008.5.1.4.1.1.481.11
RTStructureSetStorage 1.2.840.10008.5.1.4.1.1.481.3
RTTreatmentPreparationStorage 1.2.840.10008.5.1.4.1.1.481.22
RTTreatmentSummaryRecordStorage 1.2.840.10008.5.1.4.1.1.481.7
RadiopharmaceuticalRadiationDoseSRStorage 1.2.840.10008.5.1.4.1.1.88.68
RawDataStorage 1.2.840.10008.5.1.4.1.1.66
RealWorldValueMappingStorage 1.2.840.10008.5.1.4.1.1.67
RenditionSelectionDocumentRealTimeCommunication 1.2.840.10008.10.4
RespiratoryWaveformStorage 1.2.840.10008.5.1.4.1.1.9.6.1
RoboticArmRadiationStorage 1.2.840.10008.5.1.4.1.1.481.15
RoboticRadiationRecordStorage 1.2.840.10008.5.1.4.1.1.481.20
RoutineScalpElectroencephalogramWaveformStorage 1.2.840.10008.5.1.4.1.1.9.7.1
SMPTEST2110-20:UncompressedInterlacedActiveVideo 1.2.840.10008.1.2.7.2
SMPTEST2110-20:UncompressedProgressiveActiveVideo 1.2.840.10008.1.2.7.1
SMPTEST2110-30:PCMDigitalAudio 1.2.840.10008.1.2.7.3
SPM2AVG152PDFrameOfReference 1.2.840.10008.1.4.1.17
SPM2AVG152T1FrameOfReference 1.2.840.10008.1.4.1.15
SPM2AVG152T2FrameOfReference 1.2.840.10008.1.4.1.16
SPM2AVG305T1FrameOfReference 1.2.840.10008.1.4.1.14
SPM2BRAINMASKFrameOfReference 1.2.840.10008.1.4.1.13
SPM2CSFFrameOfReference 1.2.840.10008.1.4.1.12
SPM2EPIFrameOfReference 1.2.840.10008.1.4.1.5
SPM2FILT1FrameOfReference 1.2.840.10008.1.4.1.6
SPM2GRAYFrameOfReference 1.2.840.10008.1.4.1.10
SPM2PDFrameOfReference 1.2.840.10008.1.4.1.4
SPM2PETFrameOfReference 1.2.840.10008.1.4.1.7
SPM2SINGLESUBJT1FrameOfReference 1.2.840.10008.1.4.1.18
SPM2SPECTFrameOfReference 1.2.840.10008.1.4.1.9
SPM2T1FrameOfReference 1.2.840.10008.1.4.1.2
SPM2T2FrameOfReference 1.2.840.10008.1.4.1.3
SPM2TRANSMFrameOfReference 1.2.840.10008.1.4.1.8
SPM2WHITEFrameOfReference 1.2.840.10008.1.4.1.11
SRI24FrameOfReferenc 1.2.840.10008.1.4.4.1
SecondaryCaptureImageStorage 1.2.840.10008.5.1.4.1.1.7
SegmentationStorage 1.2.840.10008.5.1.4.1.1.66.4
SegmentedVolumeRenderingVolumetricPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.10
SimplifiedAdultEchoSRStorage 1.2.840.10008.5.1.4.1.1.88.72
SleepElectroencephalogramWaveformStorage 1.2.840.10008.5.1.4.1.1.9.7.4
SpatialFiducialsStorage 1.2.840.10008.5.1.4.1.1.66.2
SpatialRegistrationStorage 1.2.840.10008.5.1.4.1.1.66.1
SpectaclePrescriptionReportStorage 1.2.840.10008.5.1.4.1.1.78.6
SpringColorPaletteSOPInstance 1.2.840.10008.1.5.5
StandardApplicationContext 1.2.840.10008.3.1.1.1
StandardRoboticCoordinateSystemFrameOfReference 1.2.840.10008.1.4.3.2
StereometricRelationshipStorage 1.2.840.10008.5.1.4.1.1.77.1.5.3
StorageCommitmentPushModelSOPClass 1.2.840.10008.1.20.1
StorageCommitmentPushModelSOPInstance 1.2.840.10008.1.20.1.1
StorageServiceClass 1.2.840.10008.4.2
SubjectiveRefractionMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.4
SubstanceAdministrationLoggingSOPClass 1.2.840.10008.1.42
SubstanceAdministrationLoggingSOPInstance 1.2.840.10008.1.42.1
SubstanceApprovalQuerySOPClass 1.2.840.10008.5.1.4.42
SummerColorPaletteSOPInstance 1.2.840.10008.1.5.6
SurfaceScanMeshStorage 1.2.840.10008.5.1.4.1.1.68.1
SurfaceScanPointCloudStorage 1.2.840.10008.5.1.4.1.1.68.2
SurfaceSegmentationStorage 1.2.840.10008.5.1.4.1.1.66.5
TalairachBrainAtlasFrameOfReference 1.2.840.10008.1.4.1.1
TomotherapeuticRadiationRecordStorage 1.2.840.10008.5.1.4.1.1.481.18
TomotherapeuticRadiationStorage 1.2.840.10008.5.1.4.1.1.481.14
TractographyResultsStorage 1.2.840.10008.5.1.4.1.1.66.6
TwelveLeadECGWaveformStorage 1.2.840.10008.5.1.4.1.1.9.1.1
UPSFilteredGlobalSubscriptionSOPInstance 1.2.840.10008.5.1.4.34.5.1
UPSGlobalSubscriptionSOPInstance 1.2.840.10008.5.1.4.34.5
UltrasoundImageStorage 1.2.840.10008.5.1.4.1.1.6.1
UltrasoundMultiframeImageStorage 1.2.840.10008.5.1.4.1.1.3.1
UnifiedProcedureStepEventSOPClass 1.2.840.10008.5.1.4.34.6.4
UnifiedProcedureStepPullSOPClass 1.2.840.10008.5.1.4.34.6.3
UnifiedProcedureStepPushSOPClass 1.2.840.10008.5.1.4.34.6.1
UnifiedProcedureStepQuerySOPClass 1.2.840.10008.5.1.4.34.6.5
UnifiedProcedureStepWatchSOPClass 1.2.840.10008.5.1.4.34.6.2
UnifiedWorklistAndProcedureStepServiceClass 1.2.840.10008.5.1.4.34.6
UniversalCoordinatedTimeSynchronizationFrameOfReference 1.2.840.10008.15.1.1
VLEndoscopicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.1
VLMicroscopicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.2
VLPhotographicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.4
VLSlideCoordinatesMicroscopicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.3
VLWholeSlideMicroscopyImageStorage 1.2.840.10008.5.1.4.1.1.77.1.6
VOILUTBoxSOPClass 1.2.840.10008.5.1.1.22
VerificationSOPClass 1.2.840.10008.1.1
VideoEndoscopicImageRealTimeCommunication 1.2.840.10008.10.1
VideoEndoscopicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.1.1
VideoMicroscopicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.2.1
VideoPhotographicImageRealTimeCommunication 1.2.840.10008.10.2
VideoPhotographicImageStorage 1.2.840.10008.5.1.4.1.1.77.1.4.1
VisualAcuityMeasurementsStorage 1.2.840.10008.5.1.4.1.1.78.5
VolumeRenderingVolumetricPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.9
WideFieldOphthalmicPhotography3DCoordinatesImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.6
WideFieldOphthalmicPhotographyStereographicProjectionImageStorage 1.2.840.10008.5.1.4.1.1.77.1.5.5
WinterColorPaletteSOPInstance 1.2.840.10008.1.5.8
XADefinedProcedureProtocolStorage 1.2.840.10008.5.1.4.1.1.200.7
XAPerformedProcedureProtocolStorage 1.2.840.10008.5.1.4.1.1.200.8
XAXRFGrayscaleSoftcopyPresentationStateStorage 1.2.840.10008.5.1.4.1.1.11.5
XMLEncoding 1.2.840.10008.1.2.6.2
XRay3DAngiographicImageStorage 1.2.840.10008.5.1.4.1.1.13.1.1
XRay3DCraniofacialImageStorage 1.2.840.10008.5.1.4.1.1.13.1.2
XRayAngiographicImageStorage 1.2.840.10008.5.1.4.1.1.12.1
XRayRadiationDoseSRStorage 1.2.840.10008.5.1.4.1.1.88.67
XRayRadiofluoroscopicImageStorage 1.2.840.10008.5.1.4.1.1.12.2
"""
_UID_BY_NAME = dict(line.split() for line in _DCMTK_UID_NAMES.strip().splitlines())
