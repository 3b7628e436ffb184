"""Query keys, matching by VR and the hierarchical search of C-FIND, C-MOVE and C-GET (docs/matching.md).

The archive hands us its records as columns (one list of raw value bytes per index field, in slot
order, see ``StorageArea.read_columns``); a query is matched against whole columns at once: each key
is compiled once into a predicate, the cheapest and most selective keys run first, and only the rows
that survive are looked at by the next key. From the second search of a column on, while the index is
unchanged, the first key is answered from a lookup table of that column (trimmed value -> rows, kept
in ``Columns.derived``): plain values are looked up, other predicates run once per distinct value.

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
C-FIND, a candidate's once per record compared).

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
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import contains, itemgetter, ne, or_


from qrscp.dicom import charset as cs
from qrscp.dicom import dictionary
from qrscp.dicom.elements import raw_bytes
from qrscp.dicom.identifiers import Identifier, make_identifier
from qrscp.log import DB, get_logger

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

    def fields(self) -> list[int | str]:
        """The columns ``read_columns`` must supply for matching and for the responses."""
        tags = {tag for tag in self.keys if KEYS[tag].indexed}
        if self.retrieve:
            return sorted(tags | {SOP_INSTANCE_UID}) + ["charset", "filename", "sop_class_uid"]
        return sorted(tags | set(UNIQUE_KEYS[:self.level + 1])) + ["charset"]


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


def _never(_: bytes) -> bool:
    return False


def _per_distinct(test: Callable[[bytes], object]) -> Test:
    """Run an expensive ``test`` once per distinct value."""
    def many(values: Iterable[bytes]) -> Iterable[object]:
        values = list(values)
        results = {value: test(value) for value in set(values)}
        return map(results.__getitem__, values)
    return many


def _range_test(query: bytes, parse: Callable[[bytes], object]) -> Test:
    """Single value or range ``a-b``, ``-b``, ``a-`` (split at the first dash) of dates or times.

    A part that does not parse matches nothing, nor does a candidate that does not parse.
    """
    first, dash, second = query.partition(b"-")
    low = parse(first) if first else None
    high = parse(second) if second else None
    if (first and low is None) or (second and high is None):
        return functools.partial(map, _never)
    if not dash:
        return _per_distinct(lambda value: parse(value) == low)
    return _per_distinct(lambda value: (v := parse(value)) is not None
                         and (low is None or low <= v) and (high is None or v <= high))


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
    if vr == "DA":
        return _range_test(query, parse_date)
    if vr == "TM":
        return _range_test(query, parse_time)
    exact = _exact_values(vr, query)
    if exact is None:
        return _wildcard_test(query)
    return functools.partial(map, exact.__contains__)


_COST = {"UI": 0, "DA": 3, "TM": 3}


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
# Scanning the columns


def _pick(column: Sequence[bytes], rows: Sequence[int] | None) -> Sequence[bytes]:
    """The values of ``column`` at ``rows`` (None: all)."""
    if rows is None:
        return column
    return itemgetter(*rows)(column) if len(rows) > 1 else [column[n] for n in rows]


def _select_from_table(table: dict[bytes, list[int]], matcher: _Matcher) -> list[int]:
    """Every row whose value matches, from its column's lookup table (no record needs converting): plain
    values are looked up, another test runs once per distinct value."""
    if matcher.exact is not None:
        found = [table[value] for value in matcher.exact if value in table]
    else:
        found = list(compress(table.values(), matcher.test(list(table))))
    return list(found[0]) if len(found) == 1 else sorted(chain.from_iterable(found))


class _Scan:
    """The columns of one search, and which records need a character set conversion to be compared."""

    def __init__(self, query: Query, columns: dict[int | str, list[bytes]]) -> None:
        self.query = query
        self.columns = columns
        # kept with the columns while the index is unchanged (``Columns.derived``), else for this search
        self.derived: dict[object, object] = getattr(columns, "derived", {})
        self.charsets = columns["charset"]
        request = query.request_charset
        # record's Specific Character Set (raw) -> its string, for the records compared in UTF-8,
        # in the order of their first records
        self.converted: dict[bytes, str] = {}
        distinct = self.derived.get("charsets")
        if distinct is None:
            distinct = self.derived["charsets"] = list(dict.fromkeys(self.charsets))
        for raw in distinct:
            record = cs.parse_charset(raw)
            if record != request and (cs.needs_utf8_conversion(record) or cs.needs_utf8_conversion(request)):
                self.converted[raw] = record

    def _lookup_table(self, tag: int) -> dict[bytes, list[int]] | None:
        """The column of ``tag`` as trimmed value -> its rows, in order; None the first time the column is
        searched since the index changed (a table costs about three scans: it pays from the second on)."""
        table = self.derived.get(("lookup", tag))
        if table is None and self.derived.pop(("searched", tag), False):
            table = self.derived[("lookup", tag)] = {}
            for row, value in enumerate(self.columns[tag]):
                table.setdefault(value.strip(_PAD), []).append(row)
        elif table is None:
            self.derived[("searched", tag)] = True
        return table

    def select(self, rows: list[int] | None, matcher: _Matcher) -> list[int]:
        """The ``rows`` (None: all) whose value matches, in their order."""
        if matcher.never:
            return []
        if rows is None and not (self.converted and matcher.key.vr in cs.AFFECTED_VRS):
            table = self._lookup_table(matcher.key.tag)
            if table is not None:
                return _select_from_table(table, matcher)
        values = _pick(self.columns[matcher.key.tag], rows)
        matches = list(matcher.test(map(bytes.strip, values, repeat(_PAD))))
        if self.converted and matcher.key.vr in cs.AFFECTED_VRS:
            charsets = _pick(self.charsets, rows)
            for raw, record in self.converted.items():
                positions = list(compress(range(len(values)), map(raw.__eq__, charsets)))
                if positions:
                    test = matcher.utf8_test(record) if cs.needs_utf8_conversion(self.query.request_charset) \
                        else matcher.test
                    group = self._compared_values(_pick(values, positions), record, matcher.key.vr)
                    for position, match in zip(positions, test(map(bytes.strip, group, repeat(_PAD)))):
                        matches[position] = match
        return list(compress(range(len(values)) if rows is None else rows, matches))

    def _compared_values(self, values: Sequence[bytes], record: str, vr: str) -> Sequence[bytes]:
        """``values`` of records in the character set ``record`` as they are compared (UTF-8 if needed).

        A value that cannot be converted is compared as it is; DCMTK warns for each such record.
        """
        if not cs.needs_utf8_conversion(record):
            return values
        try:
            source = cs.select_source(record)
        except cs.CharsetError as error:
            self._candidate_failed(error, record)
            for _ in range(len(values) - 1):     # DCMTK selects (and fails, logging) again for each record
                with contextlib.suppress(cs.CharsetError):
                    cs.select_source(record)
                self._candidate_failed(error, record)
            return values
        if source.code_extensions:          # reading a value may log: once per record, as DCMTK
            return [self._candidate_utf8(source, value, record, vr) for value in values]
        converted: dict[bytes, bytes] = {}
        failures: dict[bytes, cs.CharsetError] = {}
        for value in set(values):
            try:
                converted[value] = source.to_utf8(value, vr)
            except cs.CharsetError as error:
                converted[value], failures[value] = value, error
        for value in values if failures else ():
            if value in failures:
                self._candidate_failed(failures[value], record)
        return list(map(converted.__getitem__, values))

    def _candidate_utf8(self, source: cs.Source, value: bytes, record: str, vr: str) -> bytes:
        """One candidate ``value`` in UTF-8, or as it is (with DCMTK's warning) if that fails."""
        try:
            return source.to_utf8(value, vr)
        except cs.CharsetError as error:
            self._candidate_failed(error, record)
            return value

    def _candidate_failed(self, error: cs.CharsetError, record: str) -> None:
        get_logger(DB).warning(
            f"Character set conversion of the candidate failed with the following error: '{error}', "
            f"will compare values that use different (incompatible) character sets: "
            f'"{cs.charset_name(self.query.request_charset)}" and "{cs.charset_name(record)}"')


def _matchers(query: Query, tags: list[int]) -> list[_Matcher]:
    """The compiled non-universal keys among ``tags``, cheapest first."""
    matchers = [_Matcher(KEYS[tag], query.keys[tag], query.request_charset)
                for tag in tags if query.keys[tag].strip(_PAD)]
    return sorted(matchers, key=lambda m: m.cost)


def _search(query: Query, columns: dict[int | str, list[bytes]]) -> list[int] | None:
    """DCMTK's ``hierarchicalCompare`` over all records: the matching rows in slot order (None: all).

    Raises QueryError(0xC000) exactly when the reference's compare fails on some record: the query
    level is above the model's top, or a record matches the unique keys of the levels above a level
    whose unique key the identifier lacks.
    """
    scan = _Scan(query, columns)
    rows: list[int] | None = None
    if query.level < query.model.top:
        if scan.charsets:
            raise QueryError(STATUS_UNABLE_TO_PROCESS,
                             f"hierarchicalCompare : query level {query.level} is above the information model",
                             None)
        return []
    for level in range(query.model.top, query.level):
        uid = UNIQUE_KEYS[level]
        if uid not in query.keys:
            if scan.charsets if rows is None else rows:
                raise QueryError(STATUS_UNABLE_TO_PROCESS,
                                 f"hierarchicalCompare : No UID Key found at level {level}", logging.WARNING)
            return []
        for matcher in _matchers(query, [uid]):
            rows = scan.select(rows, matcher)
    study_root_patient_keys = query.model.top == STUDY and query.level == STUDY
    at_level = [tag for tag in query.keys
                if KEYS[tag].level == query.level or (study_root_patient_keys and KEYS[tag].level == PATIENT)]
    for matcher in _matchers(query, at_level):
        rows = scan.select(rows, matcher)
    return rows


def find_matches(query: Query, columns: dict[int | str, list[bytes]]) -> list[int]:
    """The C-FIND responses: the row of the first record of each distinct entity, in slot order.

    Raises QueryError(0xC000) when the reference's C-FIND fails (see ``_search``).
    """
    matches = _search(query, columns)
    # One response per entity: PatientID, + StudyInstanceUID, + SeriesInstanceUID, + SOPInstanceUID.
    # The records of an entity usually follow each other: compare neighbours first, then keep the
    # first record of each entity among those left. (No object per record that the garbage
    # collector would have to track: the identities are NUL-joined bytes, as the fields are C strings.)
    identity = [_pick(columns[tag], matches) for tag in UNIQUE_KEYS[:query.level + 1]]
    count = len(identity[0])
    changed = map(ne, identity[0][1:], identity[0][:-1])
    for values in identity[1:]:
        changed = map(or_, changed, map(ne, values[1:], values[:-1]))
    starts = [0, *compress(range(1, count), changed)] if count else []
    entities = list(map(b"\0".join, zip(*(_pick(values, starts) for values in identity))))
    first = dict(zip(reversed(entities), reversed(starts)))
    everything = range(count) if matches is None else matches
    rows = [everything[n] for n in sorted(first.values())]
    if not any(KEYS[tag].indexed for tag in query.keys):
        # The response to a record without Specific Character Set would be empty: DCMTK ends there.
        charsets = columns["charset"]
        rows = rows[:next((n for n, row in enumerate(rows) if not charsets[row]), len(rows))]
    return rows


def retrieve_matches(query: Query, columns: dict[int | str, list[bytes]]) -> list[int]:
    """The C-MOVE/C-GET sub-operations: every matching record, in slot order (docs/matching.md §8).

    The failures of a C-FIND match nothing here.
    """
    try:
        rows = _search(query, columns)
    except QueryError:
        return []
    return list(range(len(columns["charset"]))) if rows is None else rows


# ---------------------------------------------------------------------------------------------
# Responses


def find_response(query: Query, columns: dict[int | str, list[bytes]], row: int, retrieve_ae_title: str,
                  policy: cs.CharsetPolicy) -> Identifier:
    """The C-FIND response identifier for the record at ``row`` (docs/matching.md §5).

    The requested indexed keys with the record's values (empty if it has none), QueryRetrieveLevel
    normalised, RetrieveAETitle, and SpecificCharacterSet, all converted to the character set chosen
    by ``policy`` (logging DCMTK's lines about it). The values are the bytes to send, in tag order.
    """
    vrs = query.response_vrs
    values, charset = cs.convert_response({tag: (vr, columns[tag][row]) for tag, vr in vrs.items()},
                                          cs.parse_charset(columns["charset"][row]), query.request_charset, policy)
    elements = [(tag, vrs[tag], value) for tag, value in values.items()]
    elements += [(QUERY_RETRIEVE_LEVEL, "CS", query.level_name.encode()),
                 (RETRIEVE_AE_TITLE, "AE", raw_bytes(retrieve_ae_title))]
    if charset:
        elements.append((SPECIFIC_CHARACTER_SET, "CS", charset.encode("latin-1")))
    return make_identifier(elements)
