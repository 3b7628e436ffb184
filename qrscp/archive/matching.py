"""Query keys, matching by VR and the hierarchical search of C-FIND, C-MOVE and C-GET (docs/matching.md).

The archive hands us its records as a ``RecordTable`` (``records.py``): the values of the fields a query
needs, by slot, and for each searched field a lookup of its distinct values. Each key is compiled once
into a test; the key expected to select the fewest records (an exact value or UID list, by the sizes of
its lookup entries) takes its records from its lookup, testing each distinct value once, and only
those records are tested for the other keys. So a query costs in proportion to the distinct values of
its first key and to the records it selects, not to the records of the area (docs/matching.md §3).

Reference behaviours reproduced here: the 30 keys of DCMTK's ``TbFindAttr`` with their levels; only
the unique keys of the levels above the query level take part in matching, plus every key of the
query level (and, in Study Root at STUDY level, the patient keys); lower-level keys are returned but
never matched; a missing higher-level unique key or a level above the model makes a C-FIND fail
(0xC000) as soon as one record reaches that point, and makes a retrieve match nothing; one C-FIND
response per distinct entity (first record of each); a C-FIND whose keys are none of the indexed ones
ends at the first matching record without Specific Character Set (its response would be empty).

Character sets (docs/matching.md §4, ``charset.py``): a key of a VR affected by the character set is compared in
UTF-8 when the request's and the record's sets differ and one of them is neither ASCII nor UTF-8; a
side that cannot be converted is compared as it is, with DCMTK's warning (the query key's once per
C-FIND, a candidate's once per record compared). A stored value is converted once, when a search first
needs it, and kept with its lookup key (``RecordTable.notes``) with what DCMTK logs comparing it.

Deliberate differences: a non-empty PatientComments/AdditionalPatientHistory key never matches
(docs/differences.md #11); the entities already reported by an earlier C-FIND of the same association do not
suppress this one's (DCMTK keeps that list when a C-FIND ends on an empty response); C-MOVE/C-GET
match with the character set of their own identifier (DCMTK uses the last C-FIND's); records in
``ISO_IR 203`` or in code extensions with ``ISO 2022 IR 87``/``159``, which Debian's iconv cannot open,
are converted and compared in UTF-8 (DCMTK compares their bytes, and for the code extensions keeps the
half-selected converter for the following records of the same set, so that whether a record matches
depends on the record before it).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import contains, itemgetter, ne, or_


from qrscp.archive.records import LookupKey, RecordTable, charset_keyed, count_of, slots_of
from qrscp.dicom import charset as cs
from qrscp.dicom import dictionary
from qrscp.dicom.elements import raw_bytes
from qrscp.dicom.identifiers import Identifier, make_identifier
from qrscp.log import DATA, DB, get_logger

#: Query/Retrieve levels, numbered as DCMTK does in its log lines.
PATIENT, STUDY, SERIES, IMAGE = range(4)
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018

#: The unique key of each level.
UNIQUE_KEYS = (PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)

#: Status codes of the failures.
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_UNABLE_TO_PROCESS = 0xC000


@dataclass(frozen=True)
class Model:
    """A Query/Retrieve information model: the highest and the lowest level of its queries."""

    name: str
    top: int
    bottom: int


MODEL_PATIENT_ROOT = Model("Patient Root", PATIENT, IMAGE)
MODEL_STUDY_ROOT = Model("Study Root", STUDY, IMAGE)
MODEL_PATIENT_STUDY = Model("Patient/Study Only", PATIENT, STUDY)

#: SOP Class UID of the request -> model (other SOP classes: STATUS_SOP_CLASS_NOT_SUPPORTED).
FIND_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1": MODEL_PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.1": MODEL_STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.1": MODEL_PATIENT_STUDY,
}
MOVE_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.2": MODEL_PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": MODEL_STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.2": MODEL_PATIENT_STUDY,
}
GET_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.3": MODEL_PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": MODEL_STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.3": MODEL_PATIENT_STUDY,
}


@dataclass(frozen=True)
class Key:
    """A supported key (docs/matching.md §1): its level, type, whether the index stores it, and its VR."""

    tag: int
    keyword: str
    level: int
    unique: bool
    indexed: bool = True
    vr: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vr", dictionary.vr(self.tag))


#: The supported keys, in the reference's table order (required and optional keys alike).
KEYS: dict[int, Key] = {key.tag: key for key in (
    Key(0x00100030, "PatientBirthDate", PATIENT, False),
    Key(0x00100040, "PatientSex", PATIENT, False),
    Key(0x00100010, "PatientName", PATIENT, False),
    Key(PATIENT_ID, "PatientID", PATIENT, True),
    Key(0x00100032, "PatientBirthTime", PATIENT, False),
    Key(0x00101000, "OtherPatientIDs", PATIENT, False),
    Key(0x00101001, "OtherPatientNames", PATIENT, False),
    Key(0x00102160, "EthnicGroup", PATIENT, False),
    Key(0x00104000, "PatientComments", PATIENT, False, indexed=False),
    Key(0x00100021, "IssuerOfPatientID", PATIENT, False),
    Key(0x00080020, "StudyDate", STUDY, False),
    Key(0x00080030, "StudyTime", STUDY, False),
    Key(0x00200010, "StudyID", STUDY, False),
    Key(0x00080050, "AccessionNumber", STUDY, False),
    Key(0x00080090, "ReferringPhysicianName", STUDY, False),
    Key(0x00081030, "StudyDescription", STUDY, False),
    Key(0x00081060, "NameOfPhysiciansReadingStudy", STUDY, False),
    Key(STUDY_INSTANCE_UID, "StudyInstanceUID", STUDY, True),
    Key(0x00201070, "OtherStudyNumbers", STUDY, False),
    Key(0x00081080, "AdmittingDiagnosesDescription", STUDY, False),
    Key(0x00101010, "PatientAge", STUDY, False),
    Key(0x00101020, "PatientSize", STUDY, False),
    Key(0x00101030, "PatientWeight", STUDY, False),
    Key(0x00102180, "Occupation", STUDY, False),
    Key(0x001021B0, "AdditionalPatientHistory", STUDY, False, indexed=False),
    Key(0x00200011, "SeriesNumber", SERIES, False),
    Key(SERIES_INSTANCE_UID, "SeriesInstanceUID", SERIES, True),
    Key(0x00080060, "Modality", SERIES, False),
    Key(0x00200013, "InstanceNumber", IMAGE, False),
    Key(SOP_INSTANCE_UID, "SOPInstanceUID", IMAGE, True),
)}


class QueryError(Exception):
    """A request the reference fails: ``status`` is the DIMSE status to answer with.

    ``str(error)`` is the line the reference logs for it, at ``log_level`` (a ``logging`` level);
    ``log_level`` None means the reference logs nothing (the text is then only for our debugging).
    """

    def __init__(self, status: int, message: str, log_level: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.log_level = log_level


@dataclass
class Query:
    """A parsed C-FIND, C-MOVE or C-GET identifier.

    ``keys``: the supported keys present (tag -> value as DCMTK's ``getString()``: up to the first
    NUL, trailing spaces removed), in tag order. ``request_charset``: the identifier's Specific
    Character Set.
    """

    model: Model
    level: int
    keys: dict[int, bytes]
    request_charset: str = cs.ASCII
    retrieve: bool = False

    @functools.cached_property
    def response_vrs(self) -> dict[int, str]:
        """The keys the responses carry (the requested indexed ones): tag -> VR."""
        return {tag: KEYS[tag].vr for tag in self.keys if KEYS[tag].indexed}

    @property
    def level_name(self) -> str:
        """The normalised QueryRetrieveLevel (``STUDY`` for a request's ``study`` or ``STUDYX``)."""
        return LEVELS[self.level]

    def fields(self) -> list[int]:
        """The fields (tags) the record table must hold for matching and for the responses."""
        tags = {tag for tag in self.keys if KEYS[tag].indexed} | {SPECIFIC_CHARACTER_SET}
        if self.retrieve:
            return sorted(tags | {SOP_INSTANCE_UID})
        return sorted(tags | set(UNIQUE_KEYS[:self.level + 1]))

    def response_fields(self) -> list[int]:
        """The fields a C-FIND response is made of (:func:`find_response`)."""
        return [*self.response_vrs, SPECIFIC_CHARACTER_SET]


# ---------------------------------------------------------------------------------------------
# Parsing the identifier


def _element_bytes(identifier: Identifier, tag: int) -> bytes | None:
    """The value of ``tag`` as DCMTK's ``getString()`` gives it, None if the element is absent."""
    element = identifier.get(tag)
    if element is None:
        return None
    return (element.value or b"").split(b"\0", 1)[0].rstrip(b" ")


def _parse(identifier: Identifier, model: Model, retrieve: bool) -> Query:
    level_value = _element_bytes(identifier, QUERY_RETRIEVE_LEVEL)
    if not level_value:
        service = "Move" if retrieve else "Find"
        raise QueryError(STATUS_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                         f"DB_start{service}Request(): missing Query/Retrieve Level", logging.WARNING)
    # Only the first 49 characters, ASCII letters upper-cased, compared by prefix.
    level_text = level_value[:49].upper()
    level = next((n for n, name in enumerate(LEVELS) if level_text.startswith(name.encode())), None)
    if level is None:
        raise QueryError(STATUS_UNABLE_TO_PROCESS,
                         f"Illegal query level ({level_value.decode('latin-1')})", None)
    keys = {element.tag: _element_bytes(identifier, element.tag) for element in identifier.elements
            if element.tag in KEYS}
    return Query(model=model, level=level, keys=keys,
                 request_charset=cs.parse_charset(_element_bytes(identifier, SPECIFIC_CHARACTER_SET) or b""),
                 retrieve=retrieve)


def _check_identifier(query: Query, retrieve: bool) -> None:
    """``--check-find`` / ``--check-move`` (docs/matching.md §7); raise QueryError(0xA900)."""
    def fail(message: str, level: int = logging.DEBUG) -> None:
        raise QueryError(STATUS_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, message, level)

    model, level = query.model, query.level
    if level < model.top:
        fail(f"Level incompatible with Information Model (level {level})",
             logging.DEBUG if retrieve else logging.INFO)
    if level > model.bottom:
        fail(f"Level incompatible with Information Model (level {level})")
    # the key levels of the identifier, in the order of its elements
    keys = [(KEYS[tag].level, KEYS[tag].unique, value) for tag, value in query.keys.items()]
    for lvl in range(PATIENT, IMAGE + 1):
        present = [(unique, value) for key_level, unique, value in keys if key_level == lvl]
        if lvl == PATIENT and model.top == STUDY:
            if present and (retrieve or level != STUDY):
                fail(f"Key found in Study Root Information Model (level {lvl})")
        elif lvl < level or (retrieve and lvl == level):
            found = False
            for unique, value in present:
                if not unique:
                    fail(f"Non Unique Key found (level {lvl})")
                if not value:
                    fail(f"Unique Key value is empty (level {lvl})")
                if found:
                    fail(f"More than one Unique Key found (level {lvl})")
                found = True
            if not found:
                fail(f"No Unique Key found (level {lvl})")
        elif lvl == level:
            if not present:
                fail(f"No Key found at query level (level {lvl})")
        elif present:
            fail(f"Key found beyond query level (level {lvl})")


def parse_find(identifier: Identifier, model: Model, check_find: bool) -> Query:
    """Parse a C-FIND identifier (decoded without value conversion); raise QueryError."""
    query = _parse(identifier, model, retrieve=False)
    if check_find:
        _check_identifier(query, retrieve=False)
    return query


def parse_retrieve(identifier: Identifier, model: Model, check_move: bool) -> Query:
    """Parse a C-MOVE or C-GET identifier (decoded without value conversion); raise QueryError."""
    query = _parse(identifier, model, retrieve=True)
    if check_move:
        _check_identifier(query, retrieve=True)
    return query


# ---------------------------------------------------------------------------------------------
# Matching by VR (DCMTK's DcmAttributeMatching), on values trimmed of spaces and NULs

#: A compiled key: the results of testing many trimmed candidates (truthy: match).
Test = Callable[[Iterable[bytes]], Iterable[object]]
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_PAD = b" \0"


def parse_date(value: bytes) -> tuple[int, int, int] | None:
    """``YYYYMMDD`` or the old ``YYYY.MM.DD``, month 1-12, day 1-31 (no calendar check)."""
    if len(value) == 10 and value[4:5] == value[7:8] == b".":
        value = value[:4] + value[5:7] + value[8:]
    if len(value) != 8 or not value.isdigit():
        return None
    year, month, day = int(value[:4]), int(value[4:6]), int(value[6:])
    return (year, month, day) if 1 <= month <= 12 and 1 <= day <= 31 else None


_TIME = re.compile(rb"(\d\d)(?:(\d\d)(?:(\d\d(?:\.\d+)?))?)?|(\d\d):(\d\d)(?::(\d\d(?:\.\d+)?))?")


def parse_time(value: bytes) -> float | None:
    """``HH[MM[SS[.F...]]]`` or the old ``HH:MM[:SS[.F...]]`` as seconds since midnight.

    Hours 0-23, minutes 0-59, seconds up to 60 (a leap second: 10:10:60 equals 10:11:00).
    """
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    hours, minutes, seconds = (match[1], match[2], match[3]) if match[1] else (match[4], match[5], match[6])
    h, m, s = int(hours), int(minutes or 0), float(seconds or 0)
    return (h * 60 + m) * 60 + s if h < 24 and m < 60 and s <= 60 else None


def _per_distinct(test: Callable[[bytes], object]) -> Test:
    """Run an expensive ``test`` once per distinct value."""
    def many(values: Iterable[bytes]) -> Iterable[object]:
        values = list(values)
        results = {value: test(value) for value in set(values)}
        return map(results.__getitem__, values)
    return many


class _Range:
    """Single value or range ``a-b``, ``-b``, ``a-`` (split at the first dash) of dates or times: a
    :data:`Test`, and :meth:`accepts` for a candidate already parsed.

    A part that does not parse matches nothing, nor does a candidate that does not parse.
    """

    def __init__(self, query: bytes, parse: Callable[[bytes], object]) -> None:
        self.parse = parse
        first, dash, second = query.partition(b"-")
        self.low = parse(first) if first else None
        self.high = parse(second) if second else None
        self.valid = not ((first and self.low is None) or (second and self.high is None))
        self.single = not dash

    def accepts(self, parsed: object) -> bool:
        """Whether a candidate that ``parse`` gave ``parsed`` matches."""
        if not self.valid or parsed is None:
            return False
        if self.single:
            return parsed == self.low
        return (self.low is None or self.low <= parsed) and (self.high is None or parsed <= self.high)  # type: ignore

    def __call__(self, values: Iterable[bytes]) -> Iterable[object]:
        return _per_distinct(lambda value: self.accepts(self.parse(value)))(values)


def _wildcard_test(query: bytes) -> Test:
    """``*`` any sequence, ``?`` any one byte (``query`` has one of them), anything else itself (bytewise,
    case-sensitive)."""
    pattern = re.sub(rb"\*+", b"*", query)
    if b"?" not in pattern:
        parts = pattern.split(b"*")
        if len(parts) == 2 and not parts[1]:
            return lambda values: map(bytes.startswith, values, repeat(parts[0]))
        if len(parts) == 2 and not parts[0]:
            return lambda values: map(bytes.endswith, values, repeat(parts[1]))
        if len(parts) == 3 and not parts[0] and not parts[2]:
            return lambda values: map(contains, values, repeat(parts[1]))
    regex = re.compile(b"".join(b".*" if c == b"*" else b"." if c == b"?" else re.escape(c)
                                for c in re.findall(rb".", pattern, re.DOTALL)), re.DOTALL)
    return _per_distinct(regex.fullmatch)


def _exact_values(vr: str, query: bytes) -> frozenset[bytes] | None:
    """The trimmed candidates the trimmed, non-empty ``query`` matches, when they are a few plain values
    (a UID list, a string without wildcards, IS, DS, AS...); None for wildcards, dates and times."""
    if vr == "UI":     # a list of UIDs, each part trimmed
        return frozenset(part.strip(_PAD) for part in query.split(b"\\"))
    if vr in ("DA", "TM") or (vr in _WILDCARD_VRS and (b"*" in query or b"?" in query)):
        return None
    return frozenset((query,))


def _compile(vr: str, query: bytes) -> Test:
    """The test of trimmed candidates against the trimmed, non-empty ``query`` for ``vr``."""
    if vr in _PARSERS:
        return _Range(query, _PARSERS[vr])
    exact = _exact_values(vr, query)
    if exact is None:
        return _wildcard_test(query)
    return functools.partial(map, exact.__contains__)


_COST = {"UI": 0, "DA": 3, "TM": 3}
_PARSERS = {"DA": parse_date, "TM": parse_time}
_UNPARSED = object()


class _Matcher:
    """One non-universal query key, compiled once for the whole scan."""

    def __init__(self, key: Key, value: bytes, request_charset: str) -> None:
        self.key = key
        self.value = value
        self.request_charset = request_charset
        self.never = not key.indexed        # PatientComments, AdditionalPatientHistory (docs/differences.md #11)
        trimmed = value.strip(_PAD)
        self.test = _compile(key.vr, trimmed)
        self.exact = _exact_values(key.vr, trimmed)
        self._utf8_test: Test | None = None
        wildcard = key.vr in _WILDCARD_VRS and (b"*" in value or b"?" in value)
        self.cost = -1 if self.never else 2 if wildcard else _COST.get(key.vr, 1)

    def utf8_test(self, record_charset: str) -> Test:
        """The test of UTF-8 candidates (the query converted once; as it is if that fails)."""
        if self._utf8_test is None:
            try:
                value = cs.to_utf8(self.value, self.request_charset, self.key.vr)
            except cs.CharsetError as error:
                get_logger(DB).warning(
                    f"Character set conversion of the query key failed with the following error: '{error}', "
                    f"will compare values that use different (incompatible) character sets: "
                    f'"{cs.charset_name(self.request_charset)}" and "{cs.charset_name(record_charset)}"')
                value = self.value
            self._utf8_test = _compile(self.key.vr, value.strip(_PAD))
        return self._utf8_test


# ---------------------------------------------------------------------------------------------
# Searching the record table


@dataclass(frozen=True)
class _Candidate:
    """A stored value as a search in UTF-8 compares it (kept with its key, ``RecordTable.notes``): the
    bytes compared (converted, or as they are when that fails; trimmed) and what DCMTK logs each time it
    compares a record holding it: warnings about reading it, the conversion's failure, and
    (``reselect``) the failed selection of the record's character set, which DCMTK tries for every record."""

    compared: bytes
    warnings: tuple[str, ...] = ()
    error: cs.CharsetError | None = None
    reselect: bool = False

    @property
    def noisy(self) -> bool:
        return bool(self.warnings or self.error)

    @classmethod
    def of(cls, value: bytes, record: str, vr: str) -> _Candidate:
        """``value`` (trimmed) of a record in the character set ``record``, as compared in UTF-8."""
        if not cs.needs_utf8_conversion(record):
            return cls(value)
        source = cs.source_of(record)
        if isinstance(source, cs.CharsetError):
            return cls(value, error=source, reselect=True)
        warnings: list[str] = []
        try:
            return cls(source.to_utf8(value, vr, warnings.append).strip(_PAD), tuple(warnings))
        except cs.CharsetError as error:
            return cls(value, tuple(warnings), error)


class _Scan:
    """One search of a record table, and which records need a character set conversion to be compared."""

    def __init__(self, query: Query, table: RecordTable) -> None:
        self.query = query
        self.table = table
        request = query.request_charset
        # record's Specific Character Set (raw) -> its string, for the records compared in UTF-8
        self.converted: dict[bytes, str] = {}
        for raw in table.charsets():
            record = cs.parse_charset(raw)
            if record != request and (cs.needs_utf8_conversion(record) or cs.needs_utf8_conversion(request)):
                self.converted[raw] = record

    def select(self, matchers: list[_Matcher]) -> list[int]:
        """The live slots whose records match every one of ``matchers``, ascending. The key expected to
        select the fewest records selects them from its lookup; each other key tests only those."""
        if not matchers:
            return self.table.live_slots()
        searches = sorted((_KeySearch(self, matcher) for matcher in matchers), key=_KeySearch.order)
        rows = searches[0].everywhere()
        for search in searches[1:]:
            if not rows:
                break
            rows = search.among(rows)
        return rows

    def candidate_failed(self, error: cs.CharsetError, record: str) -> None:
        get_logger(DB).warning(
            f"Character set conversion of the candidate failed with the following error: '{error}', "
            f"will compare values that use different (incompatible) character sets: "
            f'"{cs.charset_name(self.query.request_charset)}" and "{cs.charset_name(record)}"')


class _KeySearch:
    """One non-universal key against the lookup of its field: each lookup key is decided once."""

    def __init__(self, scan: _Scan, matcher: _Matcher) -> None:
        self.scan = scan
        self.matcher = matcher
        self.tag = tag = matcher.key.tag
        #: some records are compared in UTF-8 (their value converted, or the query's)
        self.converting = bool(scan.converted) and matcher.key.vr in cs.AFFECTED_VRS
        self.results: dict[LookupKey, bool] = {}
        self.noisy: set[LookupKey] = set()      # the decided keys whose records log when compared
        #: the lookup keys an exact key selects without testing any (None: every key is tested)
        self.direct: list[LookupKey] | None = None
        self.estimate = math.inf
        if matcher.never:
            return
        self.lookup = scan.table.lookup(tag)
        self.notes = scan.table.notes(tag)
        if matcher.exact is not None and not self.converting:
            if charset_keyed(tag):
                self.direct = [key for charset in scan.table.charsets() for value in matcher.exact
                               if (key := (charset, value)) in self.lookup]
            else:
                self.direct = [value for value in matcher.exact if value in self.lookup]
            self.estimate = sum(count_of(self.lookup[key]) for key in self.direct)

    def order(self) -> tuple[int, float]:
        """Keys that never match first, then by kind of test, then by how many records they select."""
        return self.matcher.cost, self.estimate

    def everywhere(self) -> list[int]:
        """Every live slot whose value matches (every record is compared)."""
        if self.matcher.never:
            return []
        keys = self.direct
        if keys is None:
            keys = list(self.lookup)
            keys = list(compress(keys, self._decide(keys)))
        if self.converting:
            self._log_compared(self.scan.converted, [(slot, key) for key in self.noisy
                                                     for slot in slots_of(self.lookup[key])])
        found = [slots_of(self.lookup[key]) for key in keys]
        return list(found[0]) if len(found) == 1 else sorted(chain.from_iterable(found))

    def among(self, rows: list[int]) -> list[int]:
        """The ``rows`` (ascending live slots) whose value matches."""
        if self.matcher.never:
            return []
        key = self.scan.table.key
        keys = [key(self.tag, row) for row in rows]
        decided = self._decide(keys)
        if self.converting:
            self._log_compared({key[0] for key in keys},   # type: ignore[index]
                               [(row, key) for row, key in zip(rows, keys) if key in self.noisy])
        return list(compress(rows, decided))

    def _decide(self, keys: Sequence[LookupKey]) -> list[bool]:
        """Whether each of ``keys`` matches (each decided once per search; what it takes to decide, a
        parsed date or a converted value, once per key and table)."""
        results = self.results
        new = [key for key in dict.fromkeys(keys) if key not in results]
        if new:
            matcher, notes = self.matcher, self.notes
            if isinstance(matcher.test, _Range):
                for key in new:
                    parsed = notes.get(key, _UNPARSED)
                    if parsed is _UNPARSED:
                        parsed = notes[key] = matcher.test.parse(key)  # type: ignore[arg-type]
                    results[key] = matcher.test.accepts(parsed)
            else:
                converted = self.scan.converted if self.converting else {}
                plain = [key for key in new if key[0] not in converted] if converted else new  # type: ignore
                values = [key[1] for key in plain] if charset_keyed(self.tag) else plain  # type: ignore[index]
                results.update(zip(plain, map(bool, matcher.test(values))))  # type: ignore[arg-type]
                groups: dict[bytes, list[LookupKey]] = {}
                for key in new if converted else ():
                    if key[0] in converted:  # type: ignore[index]
                        groups.setdefault(key[0], []).append(key)  # type: ignore[index]
                request = self.scan.query.request_charset
                for raw, group in groups.items():
                    record = converted[raw]
                    test = matcher.utf8_test(record) if cs.needs_utf8_conversion(request) else matcher.test
                    candidates = [notes.get(key) or notes.setdefault(key, _Candidate.of(key[1], record,
                                                                                        matcher.key.vr))
                                  for key in group]  # type: ignore[index]
                    results.update(zip(group, map(bool, test([c.compared for c in candidates]))))  # type: ignore
                    self.noisy.update(key for key, c in zip(group, candidates) if c.noisy)  # type: ignore
        return [results[key] for key in keys]

    def _log_compared(self, charsets: Iterable[bytes], noisy: list[tuple[int, LookupKey]]) -> None:
        """What DCMTK logs comparing records in UTF-8: the selection of each converted character set among
        ``charsets`` (the records' ones), then for each record that logs something (``noisy``: slot and
        key), in slot order, its warnings."""
        for raw in charsets:
            record = self.scan.converted.get(raw)
            if record is not None and cs.needs_utf8_conversion(record) and \
                    not isinstance(cs.source_of(record), cs.CharsetError):
                cs.select_source(record)   # logs what DCMTK logs selecting it
        data_log = get_logger(DATA)
        for _, key in sorted(noisy, key=itemgetter(0)):
            record = self.scan.converted[key[0]]  # type: ignore[index]
            candidate: _Candidate = self.notes[key]  # type: ignore[assignment]
            if candidate.reselect:
                with contextlib.suppress(cs.CharsetError):
                    cs.select_source(record)
            for warning in candidate.warnings:
                data_log.warning(warning)
            if candidate.error is not None:
                self.scan.candidate_failed(candidate.error, record)


def _matchers(query: Query, tags: list[int]) -> list[_Matcher]:
    """The compiled non-universal keys among ``tags``."""
    return [_Matcher(KEYS[tag], query.keys[tag], query.request_charset) for tag in tags if query.keys[tag].strip(_PAD)]


def _search(query: Query, table: RecordTable) -> list[int]:
    """DCMTK's ``hierarchicalCompare`` over all records: the matching slots, ascending.

    Raises QueryError(0xC000) exactly when the reference's compare fails on some record: the query
    level is above the model's top, or a record matches the unique keys of the levels above a level
    whose unique key the identifier lacks.
    """
    scan = _Scan(query, table)
    if query.level < query.model.top:
        if table.live_count:
            raise QueryError(STATUS_UNABLE_TO_PROCESS,
                             f"hierarchicalCompare : query level {query.level} is above the information model",
                             None)
        return []
    higher: list[int] = []
    for level in range(query.model.top, query.level):
        uid = UNIQUE_KEYS[level]
        if uid not in query.keys:
            if scan.select(_matchers(query, higher)):
                raise QueryError(STATUS_UNABLE_TO_PROCESS,
                                 f"hierarchicalCompare : No UID Key found at level {level}", logging.WARNING)
            return []
        higher.append(uid)
    study_root_patient_keys = query.model.top == STUDY and query.level == STUDY
    at_level = [tag for tag in query.keys
                if KEYS[tag].level == query.level or (study_root_patient_keys and KEYS[tag].level == PATIENT)]
    return scan.select(_matchers(query, higher + at_level))


def _pick(column: Sequence[bytes | None], rows: Sequence[int]) -> Sequence[bytes]:
    """The values of ``column`` at ``rows``."""
    return itemgetter(*rows)(column) if len(rows) > 1 else [column[n] for n in rows]  # type: ignore[return-value]


def find_matches(query: Query, table: RecordTable) -> list[int]:
    """The C-FIND responses: the slot of the first record of each distinct entity, ascending.

    Raises QueryError(0xC000) when the reference's C-FIND fails (see ``_search``).
    """
    matches = _search(query, table)
    # One response per entity: PatientID, + StudyInstanceUID, + SeriesInstanceUID, + SOPInstanceUID.
    # The records of an entity usually follow each other: compare neighbours first, then keep the
    # first record of each entity among those left. (No object per record that the garbage
    # collector would have to track: the identities are NUL-joined bytes, as the fields are C strings.)
    identity = [_pick(table.values(tag), matches) for tag in UNIQUE_KEYS[:query.level + 1]]
    count = len(matches)
    changed = map(ne, identity[0][1:], identity[0][:-1])
    for values in identity[1:]:
        changed = map(or_, changed, map(ne, values[1:], values[:-1]))
    starts = [0, *compress(range(1, count), changed)] if count else []
    entities = list(map(b"\0".join, zip(*(_pick(values, starts) for values in identity))))
    first = dict(zip(reversed(entities), reversed(starts)))
    rows = [matches[n] for n in sorted(first.values())]
    if not any(KEYS[tag].indexed for tag in query.keys):
        # The response to a record without Specific Character Set would be empty: DCMTK ends there.
        charsets = table.values(SPECIFIC_CHARACTER_SET)
        rows = rows[:next((n for n, row in enumerate(rows) if not charsets[row]), len(rows))]
    return rows


def retrieve_matches(query: Query, table: RecordTable) -> list[int]:
    """The C-MOVE/C-GET sub-operations: the slots of every matching record, ascending (docs/matching.md §8).

    The failures of a C-FIND match nothing here.
    """
    try:
        return _search(query, table)
    except QueryError:
        return []


# ---------------------------------------------------------------------------------------------
# Responses


def find_response(query: Query, record: Mapping[int, bytes], retrieve_ae_title: str,
                  policy: cs.CharsetPolicy) -> Identifier:
    """The C-FIND response identifier for a matching ``record``: its values of ``query.response_fields()``
    (docs/matching.md §5).

    The requested indexed keys with the record's values (empty if it has none), QueryRetrieveLevel
    normalised, RetrieveAETitle, and SpecificCharacterSet, all converted to the character set chosen
    by ``policy`` (logging DCMTK's lines about it). The values are the bytes to send, in tag order.
    """
    vrs = query.response_vrs
    values, charset = cs.convert_response({tag: (vr, record[tag]) for tag, vr in vrs.items()},
                                          cs.parse_charset(record[SPECIFIC_CHARACTER_SET]), query.request_charset,
                                          policy)
    elements = [(tag, vrs[tag], value) for tag, value in values.items()]
    elements += [(QUERY_RETRIEVE_LEVEL, "CS", query.level_name.encode()),
                 (RETRIEVE_AE_TITLE, "AE", raw_bytes(retrieve_ae_title))]
    if charset:
        elements.append((SPECIFIC_CHARACTER_SET, "CS", charset.encode("latin-1")))
    return make_identifier(elements)
