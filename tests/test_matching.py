"""Query parsing, matching by VR, the hierarchical search, duplicates and response identifiers.

The expectations are DCMTK dcmqrscp 3.6.7's observed answers (docs/matching.md), except where docs/differences.md says
otherwise. The record tables are built by hand, as ``StorageArea`` builds them; every search is also run
on a table that reached the same records by updates (the path of a worker whose index changes), and
the last test compares with the real dcmqrscp on the same records.
"""
from __future__ import annotations

import logging
import struct
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from conftest import dcmtk, dcmtk_env, free_port, needs_dcmtk, wait_for_port
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from qrscp.archive.matching import (
    FIND_MODELS,
    GET_MODELS,
    IMAGE,
    KEYS,
    MODEL_PATIENT_ROOT,
    MODEL_PATIENT_STUDY,
    MODEL_STUDY_ROOT,
    MOVE_MODELS,
    PATIENT,
    SERIES,
    STUDY,
    Model,
    QueryError,
    find_matches,
    find_response,
    parse_date,
    parse_find,
    parse_retrieve,
    parse_time,
    retrieve_matches,
)
from qrscp.archive.records import SPECIFIC_CHARACTER_SET, RecordTable
from qrscp.dicom.charset import CharsetPolicy
from qrscp.dicom.identifiers import Identifier, decode_identifier, encode_identifier
from qrscp.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE

PR, SR, PS = MODEL_PATIENT_ROOT, MODEL_STUDY_ROOT, MODEL_PATIENT_STUDY
INDEXED = [tag for tag, key in KEYS.items() if key.indexed]


# --- helpers ------------------------------------------------------------------------------------------------------

def identifier(*, implicit: bool = False, **keys: str | bytes) -> Identifier:
    """An identifier as a C-FIND-RQ brings it: encoded exactly as given (``str`` as UTF-8, odd
    lengths padded) and decoded without value conversion."""
    data = b""
    for tag, value in sorted((tag_for_keyword(k), v.encode() if isinstance(v, str) else v) for k, v in keys.items()):
        vr = dictionary_VR(tag)
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        if implicit:
            data += struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
        else:
            data += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    return decode_identifier(data, IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE)


def raw_values(response: Identifier) -> dict[int, bytes]:
    """The raw values of a response identifier of ours, without padding."""
    return {element.tag: element.value.rstrip(b" \0") for element in response.elements}


def record(n: int, **values: str | bytes) -> dict[str, bytes]:
    """Index values of a record; by default its own patient, study, series and instance."""
    defaults = {"PatientID": f"P{n}", "StudyInstanceUID": f"1.{n}", "SeriesInstanceUID": f"1.{n}.1",
                "SOPInstanceUID": f"1.{n}.1.1"}
    return {k: v.encode() if isinstance(v, str) else v for k, v in {**defaults, **values}.items()}


def values_of(record: dict[str, bytes]) -> dict[int, bytes]:
    """A record's values by tag (``charset``: SpecificCharacterSet)."""
    values = {tag: record.get(KEYS[tag].keyword, b"") for tag in INDEXED}
    values[SPECIFIC_CHARACTER_SET] = record.get("charset", b"")
    return values


def columns(*records: dict[str, bytes]) -> RecordTable:
    """A record table holding these records in slots 0, 1, ... (``charset``: SpecificCharacterSet)."""
    values = [values_of(r) for r in records]
    return RecordTable(len(records), range(len(records)),
                       {tag: [v[tag] for v in values] for tag in [*INDEXED, SPECIFIC_CHARACTER_SET]})


def updated(*records: dict[str, bytes]) -> RecordTable:
    """A table that comes to hold the same records by updates: every slot first held another record
    (its lookups built), then the records were put in reverse order, one removed and put again."""
    table = columns(*(record(100 + n, PatientName="Other^X", StudyDate="19990101", charset="ISO_IR 100")
                      for n in range(len(records))))
    for tag in [*INDEXED, SPECIFIC_CHARACTER_SET]:
        table.lookup(tag)
    for slot in reversed(range(len(records))):
        table.put(slot, values_of(records[slot]))
    if records:
        table.remove(0)
        table.put(0, values_of(records[0]))
    return table


def find(model: Model, records: list[dict[str, bytes]], **keys: str | bytes) -> list[int]:
    """The slots our C-FIND answers for the identifier ``keys``: the same on a second search and on a
    table that came to hold the records by updates."""
    query = parse_find(identifier(**keys), model, False)
    table = columns(*records)
    found = find_matches(query, table)
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)   # the warnings a test counts are those of one search
    try:
        assert find_matches(query, table) == found
        assert find_matches(query, updated(*records)) == found
    finally:
        logging.disable(previous)
    return found


def matched(keyword: str, query: str | bytes, candidates: list[str]) -> list[str]:
    """The candidate values of ``keyword`` that match ``query`` (one record each, Study Root)."""
    level = KEYS[tag_for_keyword(keyword)].level
    name = ("STUDY", "STUDY", "SERIES", "IMAGE")[level]
    higher = {"StudyInstanceUID": "", "SeriesInstanceUID": ""} if level == IMAGE else \
        {"StudyInstanceUID": ""} if level == SERIES else {}
    records = [record(n, **{keyword: value}) for n, value in enumerate(candidates)]
    rows = find(SR, records, QueryRetrieveLevel=name, **{**higher, keyword: query})
    return [candidates[row] for row in rows]


# --- matching by VR (docs/matching.md §4) -------------------------------------------------------------------------

NAMES = ["Doe^John", "Doe", "doe^john", "Do", "Smith^Doe", "  Doe^John", "Roe^Jim", "Dean", "Den", "Dxe^A", ""]


@pytest.mark.parametrize("query, expected", [
    ("Doe*", ["Doe^John", "Doe", "  Doe^John"]),
    ("doe*", ["doe^john"]),                                      # case-sensitive
    ("Doe", ["Doe"]),                                            # no PN component logic
    ("Doe^John ", ["Doe^John", "  Doe^John"]),                   # trimmed on both sides
    ("  Doe^John", ["Doe^John", "  Doe^John"]),
    ("D?e^*", ["Doe^John", "  Doe^John", "Dxe^A"]),
    ("*John", ["Doe^John", "  Doe^John"]),
    ("*oe^J*", ["Doe^John", "  Doe^John", "Roe^Jim"]),
    ("D*e*n", ["Doe^John", "  Doe^John", "Dean", "Den"]),
    ("*", NAMES),                                                # also the empty value
    ("***", NAMES),
    ("?", []),
    ("??", ["Do"]),
    ("", NAMES),                                                 # universal
    ("    ", NAMES),
])
def test_wildcard_matching(query, expected):
    assert matched("PatientName", query, NAMES) == expected


@pytest.mark.parametrize("keyword, query, candidates, expected", [
    ("Modality", "CT\\MR", ["CT", "MR", "CT\\MR"], ["CT\\MR"]),  # backslash is a character
    ("Modality", "ct", ["CT"], []),
    ("Modality", "C?", ["CT", "CR", "MR"], ["CT", "CR"]),
    ("StudyDescription", "a.b(c)+", ["a.b(c)+", "axb(c)+", "a.bcc"], ["a.b(c)+"]),
    ("AccessionNumber", "A\\*", ["A\\1", "A", "B\\1"], ["A\\1"]),
    ("PatientID", "P*", ["P1", "Q1", "p1"], ["P1"]),
])
def test_wildcard_matching_other_string_vrs(keyword, query, candidates, expected):
    assert matched(keyword, query, candidates) == expected


def _wildcard_reference(query: str, value: str) -> bool:
    """DCMTK's WildCardMatcher, written down directly."""
    if not query:
        return not value
    if query[0] == "*":
        return _wildcard_reference(query[1:], value) or (bool(value) and _wildcard_reference(query, value[1:]))
    return bool(value) and query[0] in ("?", value[0]) and _wildcard_reference(query[1:], value[1:])


@settings(max_examples=300, deadline=None)
@given(st.text("ab*?", min_size=1, max_size=6), st.lists(st.text("ab", max_size=6), max_size=8))
def test_wildcard_matching_is_dcmtk_s(query, candidates):
    assert matched("PatientName", query, candidates) == [c for c in candidates if _wildcard_reference(query, c)]


def test_question_mark_is_one_byte():
    """Observed: UTF-8 ``M?ller*`` does not match UTF-8 ``Müller`` (ü is two bytes), ``M??ller*`` does."""
    records = [record(0, PatientName="Müller", charset="ISO_IR 192"), record(1, PatientName="Muller")]
    for query, expected in (("M?ller*", [1]), ("M??ller*", [0])):
        assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                    PatientName=query) == expected


DATES = ["20210615", "2021.06.15", "20210230", "20211301", "2021061", "00000101", "20210600", "20240229",
         "+0210615", "2021-06-15", "20210615 ", "20210132", "20210431", "2021.6.15", ""]


@pytest.mark.parametrize("query, expected", [
    ("20210615", ["20210615", "2021.06.15", "20210615 "]),
    ("2021.06.15", ["20210615", "2021.06.15", "20210615 "]),     # old format, both sides
    (" 20210615 ", ["20210615", "2021.06.15", "20210615 "]),
    ("20210101-20211231", ["20210615", "2021.06.15", "20210230", "20210615 ", "20210431"]),
    ("-20210615", ["20210615", "2021.06.15", "20210230", "00000101", "20210615 ", "20210431"]),
    ("20210615-", ["20210615", "2021.06.15", "20240229", "20210615 "]),
    ("-", ["20210615", "2021.06.15", "20210230", "00000101", "20240229", "20210615 ", "20210431"]),
    ("2021.01.01-2021.12.31", ["20210615", "2021.06.15", "20210230", "20210615 ", "20210431"]),
    ("20210230", ["20210230"]),                                 # parsed without a calendar check
    ("20211231-20210101", []),                                  # reversed range
    ("2021*", []),                                              # no wildcards
    ("20210615\\20210616", []),                                 # no lists
    ("20210615--", []),
    ("20210615 -20210616", []),
    ("20210132", []),
    ("2021-06-15", []),
])
def test_date_matching(query, expected):
    assert matched("StudyDate", query, DATES) == expected


def test_dates_compare_field_by_field():
    """Observed: 20210230 is not 20210302, and sorts between 20210228 and 20210301."""
    dates = ["20210302", "20210301", "20210230", "20210231", "20210228"]
    assert matched("StudyDate", "20210231-20210301", dates) == ["20210301", "20210231"]
    assert matched("PatientBirthDate", "20210302", dates) == ["20210302"]


TIMES = ["101010", "1010", "10", "101010.123", "10:10:10", "10:10", "101060", "240000", "235959.999999", "1010.5",
         "101010.1234567", " 1010", "10101", "2400", "1060", "101061", "10:10:10.5", "101010+0100", "101010.",
         "1", "101100", "101000", "10:1010", "101060.5", ""]


@pytest.mark.parametrize("query, expected", [
    ("101010", ["101010", "10:10:10"]),
    ("1010", ["1010", "10:10", " 1010", "101000"]),              # 10:10:00, not 10:10:10
    ("10:10", ["1010", "10:10", " 1010", "101000"]),
    ("10", ["10"]),
    ("101010.12300", ["101010.123"]),
    ("101010.1", []),
    ("101010.1234567", ["101010.1234567"]),
    ("101100", ["101060", "101100"]),                           # 10:10:60 is 10:11:00
    ("100000-120000", ["101010", "1010", "10", "101010.123", "10:10:10", "10:10", "101060", "101010.1234567",
                       " 1010", "10:10:10.5", "101100", "101000"]),
    ("-1010", ["1010", "10", "10:10", " 1010", "101000"]),
    ("1010-", ["101010", "1010", "101010.123", "10:10:10", "10:10", "101060", "235959.999999", "101010.1234567",
               " 1010", "10:10:10.5", "101100", "101000"]),
    ("120000-100000", []),
    ("10*", []),
    ("240000", []),
    ("1060", []),
    ("101010+0100", []),
])
def test_time_matching(query, expected):
    assert matched("StudyTime", query, TIMES) == expected


@pytest.mark.parametrize("value, parsed", [
    (b"20210615", (2021, 6, 15)), (b"2021.06.15", (2021, 6, 15)), (b"20210230", (2021, 2, 30)),
    (b"20211301", None), (b"20210100", None), (b"2021.0615", None), (b"2021.06.1.", None), (b"", None),
])
def test_parse_date(value, parsed):
    assert parse_date(value) == parsed


@pytest.mark.parametrize("value, seconds", [
    (b"10", 36000.0), (b"1010", 36600.0), (b"101010.5", 36610.5), (b"10:10:10.5", 36610.5), (b"235960", 86400.0),
    (b"1010.5", None), (b"10:1010", None), (b"1010:10", None), (b"101060.5", None), (b"24", None), (b"", None),
])
def test_parse_time(value, seconds):
    assert parse_time(value) == seconds


@pytest.mark.parametrize("keyword, query, candidates, expected", [
    ("StudyInstanceUID", "1.2\\1.3", ["1.2", "1.3", "1.4", "1.2.3"], ["1.2", "1.3"]),
    ("StudyInstanceUID", "1.*", ["1.2", "1.*"], ["1.*"]),        # wildcards are literal in UIDs
    ("StudyInstanceUID", "1.2 ", ["1.2"], ["1.2"]),
    ("StudyInstanceUID", " 1.2 \\ 1.3 \\1.4", ["1.2", "1.3", "1.4", "1.5"], ["1.2", "1.3", "1.4"]),  # parts trimmed
    ("StudyInstanceUID", "\\\\1.3\\", ["1.2", "1.3"], ["1.3"]),
    ("SOPInstanceUID", "1.5\\1.6", ["1.5", "1.6", "1.7"], ["1.5", "1.6"]),
    ("SeriesNumber", "*", ["1", "*"], ["*"]),                    # IS: exact, no wildcard
    ("SeriesNumber", "1", ["1", "01", " 1", "1 "], ["1", " 1", "1 "]),
    ("InstanceNumber", "1?", ["1?", "12"], ["1?"]),
    ("OtherStudyNumbers", "5\\6", ["5", "6", "5\\6"], ["5\\6"]),
    ("PatientSize", "1.70", ["1.70", "1.7"], ["1.70"]),          # DS: the string, not the number
    ("PatientWeight", "070", ["70", "070"], ["070"]),
    ("PatientAge", "030Y", ["030Y", "30Y"], ["030Y"]),
])
def test_exact_matching(keyword, query, candidates, expected):
    assert matched(keyword, query, candidates) == expected


@pytest.mark.parametrize("keyword", ["PatientComments", "AdditionalPatientHistory"])
def test_unindexed_keys(keyword):
    """docs/differences.md #11: a non-empty value never matches, an empty one is universal."""
    records = [record(0), record(1)]
    assert find(SR, records, QueryRetrieveLevel="STUDY", **{keyword: "*"}) == []
    assert find(SR, records, QueryRetrieveLevel="STUDY", StudyInstanceUID="", **{keyword: ""}) == [0, 1]
    assert find(SR, records, QueryRetrieveLevel="STUDY", StudyInstanceUID="", **{keyword: "  "}) == [0, 1]


# --- character sets in matching (docs/matching.md §4) -------------------------------------------------------------

def test_utf8_query_matches_latin1_record():
    """Observed: UTF-8 ``Müller*`` matches a Latin-1 and a UTF-8 record."""
    records = [record(0, PatientName="Müller^Jörg".encode("latin-1"), charset="ISO_IR 100"),
               record(1, PatientName="Müller^Hans", charset="ISO_IR 192"),
               record(2, PatientName="山田^太郎", charset="ISO_IR 192"),
               record(3, PatientName="Muller^Ascii")]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                PatientName="Müller*") == [0, 1]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 100",
                PatientName="Müller*".encode("latin-1")) == [0, 1]


def test_only_the_side_that_is_not_utf8_is_converted():
    """An ASCII request's bytes are compared as they are, a Latin-1 record is converted to UTF-8:
    8-bit bytes in the request meet only a record without Specific Character Set."""
    records = [record(0, PatientName="Müller".encode("latin-1"), charset="ISO_IR 100"),
               record(1, PatientName="Müller".encode("latin-1"))]
    assert find(SR, records, QueryRetrieveLevel="STUDY", PatientName="Müller".encode("latin-1")) == [1]
    assert find(SR, records, QueryRetrieveLevel="STUDY", PatientName="M?ller") == [1]
    assert find(SR, records, QueryRetrieveLevel="STUDY", PatientName="M??ller") == [0]


def test_readable_code_extensions_are_compared_in_utf8():
    records = [record(0, PatientName=b"\x1b-AM\xfcller^\x1b-AJ\xf6rg", charset="\\ISO 2022 IR 100"),
               record(1, PatientName=b"Kim^Gil=\x1b$)C\xb1\xe8^\x1b$)C\xb1\xe6", charset="\\ISO 2022 IR 149")]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                PatientName="Müller*") == [0]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="*=김*") == [1]


def test_japanese_kanji_records_are_compared_in_utf8(dcmtk_log):
    """Deliberate difference (README 19, 27): DCMTK's iconv cannot read ISO 2022 IR 87 and compares its
    records' bytes with the UTF-8 query; we convert them."""
    records = [record(0, PatientName=b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", charset="\\ISO 2022 IR 87"),
               record(1, PatientName="山田^太郎", charset="ISO_IR 192"),
               record(2, PatientName=b"Yamada^Hanako", charset="\\ISO 2022 IR 87")]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                PatientName="*山田*") == [0, 1]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                PatientName="Yamada*") == [0, 2]
    assert dcmtk_log == []


def test_unreadable_records_are_warned_about_once_each(dcmtk_log):
    records = [record(n, PatientName=b"Doe", charset="ISO_IR 999") for n in range(3)]
    records += [record(n, PatientName=b"D\xff", charset="ISO_IR 13") for n in (3, 4)]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="D*") == [
        0, 1, 2, 3, 4]
    unsupported = ("W: Character set conversion of the candidate failed with the following error: 'Cannot select "
                   "source character set: SpecificCharacterSet (0008,0005) value 'ISO_IR 999' not supported', will "
                   'compare values that use different (incompatible) character sets: "ISO_IR 192" and "ISO_IR 999"')
    illegal = ("W: Character set conversion of the candidate failed with the following error: 'Cannot convert "
               "character encoding: Invalid or incomplete multibyte or wide character', will compare values that "
               'use different (incompatible) character sets: "ISO_IR 192" and "ISO_IR 13"')
    assert dcmtk_log == [unsupported] * 3 + [illegal] * 2


def test_single_valued_iso_2022_query_is_compared_as_it_is(dcmtk_log):
    """Observed (cs_iso2022_latin1_query): DCMTK cannot read 'ISO 2022 IR 100', so the query's Latin-1
    bytes meet the records converted to UTF-8 (no match), the records in the same character set, and
    the records that cannot be read either."""
    latin = "Müller^Jörg".encode("latin-1")
    records = [record(0, PatientName=latin, charset="ISO_IR 100"),
               record(1, PatientName=latin, charset="ISO 2022 IR 100"),
               record(2, PatientName=latin, charset="ISO_IR 999"),
               record(3, PatientName="Müller^Jörg", charset="ISO_IR 192"),
               record(4, PatientName=b"Muller")]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO 2022 IR 100",
                PatientName="Müller*".encode("latin-1")) == [1, 2]
    assert dcmtk_log[0] == (
        "W: Character set conversion of the query key failed with the following error: 'Cannot select source "
        "character set: SpecificCharacterSet (0008,0005) value 'ISO 2022 IR 100' not supported', will compare "
        'values that use different (incompatible) character sets: "ISO 2022 IR 100" and "ISO_IR 100"')
    assert len(dcmtk_log) == 2                           # and the ISO_IR 999 record


def test_values_not_affected_by_the_character_set_are_not_converted():
    records = [record(0, Modality="CT", charset="ISO_IR 144"), record(1, Modality="MR", charset="ISO_IR 144")]
    assert find(SR, records, QueryRetrieveLevel="SERIES", SpecificCharacterSet="ISO_IR 192", StudyInstanceUID="",
                Modality="CT") == [0]


@pytest.mark.filterwarnings("ignore:Unknown encoding")       # pydicom reading the identifier
def test_conversion_failures_compare_raw_bytes(dcmtk_log):
    records = [record(0, PatientName=b"Foo", charset="ISO_IR 999"), record(1, PatientName="Foo")]
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192",
                PatientName="Foo") == [0, 1]
    assert dcmtk_log == [
        "W: Character set conversion of the candidate failed with the following error: 'Cannot select source "
        "character set: SpecificCharacterSet (0008,0005) value 'ISO_IR 999' not supported', will compare "
        'values that use different (incompatible) character sets: "ISO_IR 192" and "ISO_IR 999"']
    dcmtk_log.clear()
    assert find(SR, records, QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 998",
                PatientName="Foo") == [0, 1]
    assert dcmtk_log[0] == (
        "W: Character set conversion of the query key failed with the following error: 'Cannot select source "
        "character set: SpecificCharacterSet (0008,0005) value 'ISO_IR 998' not supported', will compare "
        'values that use different (incompatible) character sets: "ISO_IR 998" and "ISO_IR 999"')


# --- the identifier (docs/matching.md §2) -------------------------------------------------------------------------

@pytest.mark.parametrize("value, level", [
    ("PATIENT", PATIENT), ("STUDY", STUDY), ("SERIES", SERIES), ("IMAGE", IMAGE),
    ("study", STUDY), ("STUDYXYZ", STUDY), ("Image", IMAGE),
])
def test_query_retrieve_level_by_prefix(value, level):
    query = parse_find(identifier(QueryRetrieveLevel=value), PR, False)
    assert query.level == level
    assert query.level_name == ("PATIENT", "STUDY", "SERIES", "IMAGE")[level]


@pytest.mark.parametrize("keys, status, message, log_level", [
    ({}, 0xA900, "DB_startFindRequest(): missing Query/Retrieve Level", logging.WARNING),
    ({"QueryRetrieveLevel": ""}, 0xA900, "DB_startFindRequest(): missing Query/Retrieve Level", logging.WARNING),
    ({"QueryRetrieveLevel": "  "}, 0xA900, "DB_startFindRequest(): missing Query/Retrieve Level", logging.WARNING),
    ({"QueryRetrieveLevel": "FOO"}, 0xC000, "Illegal query level (FOO)", None),
    ({"QueryRetrieveLevel": " STUDY"}, 0xC000, "Illegal query level ( STUDY)", None),
])
def test_bad_query_retrieve_level(keys, status, message, log_level):
    with pytest.raises(QueryError) as failure:
        parse_find(identifier(PatientID="", **keys), PR, False)
    assert (failure.value.status, str(failure.value), failure.value.log_level) == (status, message, log_level)


def test_bad_query_retrieve_level_of_a_retrieve():
    with pytest.raises(QueryError) as failure:
        parse_retrieve(identifier(PatientID="1"), PR, False)
    assert (failure.value.status, str(failure.value)) == (0xA900, "DB_startMoveRequest(): missing Query/Retrieve Level")
    with pytest.raises(QueryError) as failure:
        parse_retrieve(identifier(QueryRetrieveLevel="WHAT"), PR, False)
    assert failure.value.status == 0xC000


def test_parsed_keys():
    """Only the 30 supported keys; values as DCMTK's getString(): trailing spaces and NUL padding gone."""
    query = parse_find(identifier(implicit=True, QueryRetrieveLevel="STUDY", PatientName=" Doe  ",
                                  StudyInstanceUID=b"1.2\0", SeriesDescription="x", SOPClassUID="1.2.3",
                                  SpecificCharacterSet="ISO_IR 100", PatientComments=""), SR, False)
    assert query.keys == {0x00100010: b" Doe", 0x00104000: b"", 0x0020000D: b"1.2"}
    assert query.request_charset == "ISO_IR 100"
    assert query.fields() == [0x00080005, 0x00100010, 0x00100020, 0x0020000D]


def test_keys_of_an_identifier_someone_decoded():
    """If the identifier's elements were converted (e.g. for a log dump), their bytes are re-encoded."""
    ident = identifier(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 100",
                       PatientName="Müller*".encode("latin-1"), SeriesNumber="007")
    str(ident)
    query = parse_find(ident, SR, False)
    assert query.keys == {0x00100010: "Müller*".encode("latin-1"), 0x00200011: b"007"}


def test_retrieve_fields():
    query = parse_retrieve(identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID="1", SeriesInstanceUID="2"),
                           SR, False)
    assert query.fields() == [0x00080005, 0x00080018, 0x0020000D, 0x0020000E]


def test_model_tables():
    assert FIND_MODELS["1.2.840.10008.5.1.4.1.2.1.1"] is PR
    assert MOVE_MODELS["1.2.840.10008.5.1.4.1.2.2.2"] is SR
    assert GET_MODELS["1.2.840.10008.5.1.4.1.2.3.3"] is PS
    assert len(KEYS) == 30 and sum(not key.indexed for key in KEYS.values()) == 2


# --- the hierarchical search and its statuses (docs/matching.md §3, matching.md §6) -------------------------------

STUDIES = [record(0, PatientName="Doe^J", Modality="CT", SeriesNumber="1"),
           record(1, PatientID="P0", StudyInstanceUID="1.1", PatientName="Doe^J", Modality="MR", SeriesNumber="2"),
           record(2, PatientName="Roe^R", Modality="MR", SeriesNumber="1")]


def uid_key_missing(level: int) -> tuple[int, str, int]:
    return 0xC000, f"hierarchicalCompare : No UID Key found at level {level}", logging.WARNING


@pytest.mark.parametrize("model, keys", [
    (PR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}),
    (PR, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "", "SeriesInstanceUID": "", "SOPInstanceUID": ""}),
    (PS, {"QueryRetrieveLevel": "STUDY"}),
])
def test_missing_patient_id_fails(model, keys):
    with pytest.raises(QueryError) as failure:
        find(model, STUDIES, **keys)
    error = failure.value
    assert (error.status, str(error), error.log_level) == uid_key_missing(0)


def test_missing_unique_key_fails_only_when_a_record_gets_there():
    """Observed: a PatientID that matches nothing never reaches the missing study key."""
    keys = {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}
    assert find(PR, STUDIES, PatientID="P9", **keys) == []
    assert find(PR, [], **keys) == []
    with pytest.raises(QueryError) as failure:
        find(PR, STUDIES, PatientID="P2", **keys)
    assert (failure.value.status, str(failure.value), failure.value.log_level) == uid_key_missing(1)
    with pytest.raises(QueryError) as failure:
        find(SR, STUDIES, QueryRetrieveLevel="IMAGE", StudyInstanceUID="1.2", SOPInstanceUID="")
    assert (failure.value.status, str(failure.value)) == uid_key_missing(2)[:2]


def test_level_above_the_model_fails_if_there_is_a_record():
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}
    with pytest.raises(QueryError) as failure:
        find(SR, STUDIES, **keys)
    assert failure.value.status == 0xC000 and failure.value.log_level is None
    assert find(SR, [], **keys) == []
    assert retrieve_matches(parse_retrieve(identifier(**keys), SR, False), columns(*STUDIES)) == []


def test_patient_level():
    assert find(PR, STUDIES, QueryRetrieveLevel="PATIENT", PatientID="") == [0, 2]
    assert find(PS, STUDIES, QueryRetrieveLevel="PATIENT", PatientName="Doe*") == [0]


def test_only_the_unique_keys_of_higher_levels_take_part():
    """PatientName is above the STUDY level in Patient Root: ignored; Modality is below: ignored."""
    assert find(PR, STUDIES, QueryRetrieveLevel="STUDY", PatientID="P0", PatientName="Nobody",
                StudyInstanceUID="", Modality="US") == [0, 1]
    # wildcards work for PatientID, lists for UIDs
    assert find(PR, STUDIES, QueryRetrieveLevel="SERIES", PatientID="P*", StudyInstanceUID="1.1\\1.2",
                SeriesInstanceUID="", SeriesNumber="1") == [2]
    assert find(PR, STUDIES, QueryRetrieveLevel="SERIES", PatientID="P0\\P2", StudyInstanceUID="",
                SeriesInstanceUID="") == []


def test_study_root_matches_patient_keys_at_study_level_only():
    assert find(SR, STUDIES, QueryRetrieveLevel="STUDY", PatientName="Doe*") == [0, 1]
    assert find(SR, STUDIES, QueryRetrieveLevel="SERIES", StudyInstanceUID="", PatientName="Doe*",
                Modality="MR") == [1, 2]


def test_patient_study_only_below_its_bottom_works_like_patient_root():
    keys = {"PatientID": "P0", "StudyInstanceUID": "1.1", "SeriesInstanceUID": ""}
    assert find(PS, STUDIES, QueryRetrieveLevel="SERIES", **keys) == [1]
    assert find(PS, STUDIES, QueryRetrieveLevel="IMAGE", SOPInstanceUID="", **{**keys, "SeriesInstanceUID": "1.1.1"}) == [1]


# --- duplicates ---------------------------------------------------------------------------------------------------

def test_one_response_per_entity_first_record_wins():
    images = [record(0, PatientID="A", StudyInstanceUID="S1", SeriesInstanceUID="S1.1", SOPInstanceUID="I1"),
              record(1, PatientID="A", StudyInstanceUID="S2", SeriesInstanceUID="S2.1", SOPInstanceUID="I2"),
              record(2, PatientID="A", StudyInstanceUID="S1", SeriesInstanceUID="S1.2", SOPInstanceUID="I3"),
              record(3, PatientID="B", StudyInstanceUID="S1", SeriesInstanceUID="S1.2", SOPInstanceUID="I4"),
              record(4, PatientID="A", StudyInstanceUID="S1", SeriesInstanceUID="S1.2", SOPInstanceUID="I3"),
              record(5, PatientID="A", StudyInstanceUID="S2", SeriesInstanceUID="S2.1", SOPInstanceUID="I5")]
    assert find(PR, images, QueryRetrieveLevel="PATIENT", PatientID="") == [0, 3]
    # PatientID is part of the identity even in Study Root
    assert find(SR, images, QueryRetrieveLevel="STUDY", StudyInstanceUID="") == [0, 1, 3]
    assert find(SR, images, QueryRetrieveLevel="SERIES", StudyInstanceUID="", SeriesInstanceUID="") == [0, 1, 2, 3]
    assert find(SR, images, QueryRetrieveLevel="IMAGE", StudyInstanceUID="", SeriesInstanceUID="",
                SOPInstanceUID="") == [0, 1, 2, 3, 5]
    # a retrieve gets every record
    query = parse_retrieve(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="S1"), SR, False)
    assert retrieve_matches(query, columns(*images)) == [0, 2, 3, 4]


def test_responses_end_at_the_first_empty_one():
    """Without indexed keys a record without Specific Character Set has an empty response: the
    C-FIND ends there (observed: 1 response from 3 matching records)."""
    records = [record(0, charset="ISO_IR 100"), record(1), record(2, charset="ISO_IR 100")]
    assert find(SR, records, QueryRetrieveLevel="STUDY") == [0]
    assert find(SR, records, QueryRetrieveLevel="STUDY", PatientComments="") == [0]
    assert find(SR, records, QueryRetrieveLevel="STUDY", StudyInstanceUID="") == [0, 1, 2]


def test_retrieve_keys():
    """Without --check-move other keys of the query level take part; errors match nothing."""
    def retrieve(model: Model, **keys: str) -> list[int]:
        return retrieve_matches(parse_retrieve(identifier(**keys), model, False), columns(*STUDIES))

    assert retrieve(SR, QueryRetrieveLevel="STUDY", StudyInstanceUID="1.1", StudyDate="20200101") == []
    assert retrieve(SR, QueryRetrieveLevel="STUDY", PatientName="Doe*") == [0, 1]
    assert retrieve(PR, QueryRetrieveLevel="STUDY", StudyInstanceUID="1.1") == []       # no PatientID
    assert retrieve(PR, QueryRetrieveLevel="STUDY", PatientID="P0", StudyInstanceUID="1.0\\1.1") == [0, 1]


# --- --check-find and --check-move (docs/matching.md §7) ----------------------------------------------------------

@pytest.mark.parametrize("model, keys, message, log_level", [
    (PR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, "No Unique Key found (level 0)", logging.DEBUG),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "", "StudyInstanceUID": ""},
     "Unique Key value is empty (level 0)", logging.DEBUG),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "PatientName": "", "StudyInstanceUID": ""},
     "Non Unique Key found (level 0)", logging.DEBUG),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "PatientComments": "", "StudyInstanceUID": ""},
     "Non Unique Key found (level 0)", logging.DEBUG),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A"}, "No Key found at query level (level 1)", logging.DEBUG),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "StudyInstanceUID": "", "Modality": ""},
     "Key found beyond query level (level 2)", logging.DEBUG),
    (SR, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},
     "Level incompatible with Information Model (level 0)", logging.INFO),
    (SR, {"QueryRetrieveLevel": "STUDY", "PatientName": ""}, "No Key found at query level (level 1)", logging.DEBUG),
    (SR, {"QueryRetrieveLevel": "SERIES", "PatientID": "A", "StudyInstanceUID": "1", "SeriesInstanceUID": ""},
     "Key found in Study Root Information Model (level 0)", logging.DEBUG),
    (SR, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}, "No Unique Key found (level 1)", logging.DEBUG),
    (PS, {"QueryRetrieveLevel": "SERIES", "PatientID": "A", "StudyInstanceUID": "1", "SeriesInstanceUID": ""},
     "Level incompatible with Information Model (level 2)", logging.DEBUG),
])
def test_check_find_rejects(model, keys, message, log_level):
    """Observed statuses and -d lines of dcmqrscp -XF."""
    with pytest.raises(QueryError) as failure:
        parse_find(identifier(**keys), model, True)
    assert (failure.value.status, str(failure.value), failure.value.log_level) == (0xA900, message, log_level)


@pytest.mark.parametrize("model, keys", [
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "StudyInstanceUID": ""}),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A\\B", "StudyInstanceUID": "", "StudyDate": ""}),
    (SR, {"QueryRetrieveLevel": "STUDY", "PatientName": "", "StudyInstanceUID": ""}),
    (SR, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1", "SeriesInstanceUID": ""}),
    (PS, {"QueryRetrieveLevel": "PATIENT", "PatientName": "D*"}),
])
def test_check_find_accepts(model, keys):
    parse_find(identifier(**keys), model, True)


@pytest.mark.parametrize("model, keys, message", [
    (SR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "StudyInstanceUID": "1"},
     "Key found in Study Root Information Model (level 0)"),
    (SR, {"QueryRetrieveLevel": "PATIENT", "PatientID": "A"}, "Level incompatible with Information Model (level 0)"),
    (PS, {"QueryRetrieveLevel": "SERIES", "PatientID": "A", "StudyInstanceUID": "1", "SeriesInstanceUID": "2"},
     "Level incompatible with Information Model (level 2)"),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A"}, "No Unique Key found (level 1)"),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "StudyInstanceUID": ""}, "Unique Key value is empty (level 1)"),
    (PR, {"QueryRetrieveLevel": "STUDY", "PatientID": "A", "StudyInstanceUID": "1", "StudyDate": "2021"},
     "Non Unique Key found (level 1)"),
    (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1", "SeriesInstanceUID": "2"},
     "Key found beyond query level (level 2)"),
])
def test_check_move_rejects(model, keys, message):
    with pytest.raises(QueryError) as failure:
        parse_retrieve(identifier(**keys), model, True)
    assert (failure.value.status, str(failure.value), failure.value.log_level) == (0xA900, message, logging.DEBUG)


@pytest.mark.parametrize("model, keys", [
    (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1\\2"}),
    (PR, {"QueryRetrieveLevel": "IMAGE", "PatientID": "A", "StudyInstanceUID": "1", "SeriesInstanceUID": "2",
          "SOPInstanceUID": "3"}),
    (PS, {"QueryRetrieveLevel": "PATIENT", "PatientID": "A"}),
])
def test_check_move_accepts(model, keys):
    parse_retrieve(identifier(**keys), model, True)


# --- response identifiers (docs/matching.md §5) -------------------------------------------------------------------

def respond(records: list[dict[str, bytes]], row: int, policy: CharsetPolicy = CharsetPolicy(),
            **keys: str | bytes) -> tuple[Identifier, dict[int, bytes]]:
    query = parse_find(identifier(**keys), SR, False)
    response = find_response(query, columns(*records).record(row, query.response_fields()), "QRSCP", policy)
    return response, raw_values(response)


def test_response_content():
    """Requested indexed keys with the record's values (lower levels too, empty if missing), the
    normalised level, RetrieveAETitle; not the unindexed or unsupported keys."""
    records = [record(0, PatientName="Doe^John", Modality="CT", StudyDate="20210615")]
    response, content = respond(records, 0, QueryRetrieveLevel="studyx", StudyInstanceUID="", PatientName="",
                                Modality="", SOPInstanceUID="", PatientBirthDate="", PatientComments="",
                                SeriesDescription="", SOPClassUID="")
    assert content == {0x00080018: b"1.0.1.1", 0x00080052: b"STUDY", 0x00080054: b"QRSCP", 0x00080060: b"CT",
                       0x00100010: b"Doe^John", 0x00100030: b"", 0x0020000D: b"1.0"}
    assert response.get(0x00080018).value == b"1.0.1.1\0" and response.get(0x00080052).value == b"STUDY "


def test_response_is_written_as_it_is():
    """The response's raw elements go out unchanged on the request's transfer syntax."""
    records = [record(0, PatientName="Müller".encode("latin-1"), SeriesNumber=" 007", charset="ISO_IR 100")]
    for implicit in (False, True):
        query = parse_find(identifier(implicit=implicit, QueryRetrieveLevel="SERIES", SpecificCharacterSet="ISO_IR 100",
                                      StudyInstanceUID="", SeriesNumber="", PatientName=""), SR, False)
        data = encode_identifier(find_response(query, columns(*records).record(0, query.response_fields()), "QR",
                                               CharsetPolicy()),
                                 IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE)
        back = read_dataset(BytesIO(data), implicit, True)
        assert back.get_item(0x00100010).value == "Müller".encode("latin-1")
        assert back.get_item(0x00200011).value == b" 007"
        assert back.get_item(0x00080005).value == b"ISO_IR 100"


def test_response_character_set_conversion(dcmtk_log):
    records = [record(0, PatientName="Müller^Jörg".encode("latin-1"), charset="ISO_IR 100"),
               record(1, PatientName="Smith^John", charset="ISO_IR 100"),
               record(2, PatientName="Muller")]
    # converted to the request's UTF-8
    _, content = respond(records, 0, SpecificCharacterSet="ISO_IR 192", QueryRetrieveLevel="STUDY", PatientName="")
    assert content[0x00100010] == "Müller^Jörg".encode() and content[0x00080005] == b"ISO_IR 192"
    # ASCII request: converted, the Specific Character Set deleted
    _, content = respond(records, 1, QueryRetrieveLevel="STUDY", PatientName="")
    assert content[0x00100010] == b"Smith^John" and 0x00080005 not in content
    # ASCII request and Latin-1 letters: sent unconverted, with its character set
    _, content = respond(records, 0, QueryRetrieveLevel="STUDY", PatientName="")
    assert content[0x00100010] == "Müller^Jörg".encode("latin-1") and content[0x00080005] == b"ISO_IR 100"
    # an ASCII record for a Latin-1 request gets the request's character set
    _, content = respond(records, 2, SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="STUDY", PatientName="")
    assert content[0x00080005] == b"ISO_IR 100"
    # -Cr +U8: always UTF-8
    _, content = respond(records, 0, CharsetPolicy(override=True, charset="ISO_IR 192"),
                        QueryRetrieveLevel="STUDY", PatientName="")
    assert content[0x00100010] == "Müller^Jörg".encode() and content[0x00080005] == b"ISO_IR 192"
    assert 'W: Converting response from character set "ISO_IR 100" to character set "ASCII" failed, (error ' \
           "message: Cannot convert character encoding: Invalid or incomplete multibyte or wide character)" in dcmtk_log


def test_responses_to_an_iso_2022_request(dcmtk_log):
    """Observed (cs_iso2022_latin1_responses): DCMTK cannot convert to ISO 2022, so an ASCII record goes
    without Specific Character Set, Latin-1 and UTF-8 records as they are, in their own. We do the same for
    a single ISO 2022 term (no destination for DCMTK either), and convert to code extensions where the
    record's text has a place in them (README difference 19)."""
    records = [record(0, PatientName="Doe^John"),
               record(1, PatientName="Müller^Jörg".encode("latin-1"), charset="ISO_IR 100"),
               record(2, PatientName="Παπαδόπουλος", charset="ISO_IR 192"),
               record(3, PatientName="Yamada^Tarou=山田^太郎", charset="ISO_IR 192")]
    contents = [respond(records, row, SpecificCharacterSet="ISO 2022 IR 100", QueryRetrieveLevel="STUDY",
                        PatientName="")[1] for row in range(4)]
    assert [content.get(0x00080005) for content in contents] == [None, b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 192"]
    assert [content[0x00100010] for content in contents] == [
        b"Doe^John", "Müller^Jörg".encode("latin-1"), "Παπαδόπουλος".encode(), "Yamada^Tarou=山田^太郎".encode()]
    assert sum("Cannot select destination character set" in line for line in dcmtk_log) == 4   # once per record
    contents = [respond(records, row, SpecificCharacterSet="\\ISO 2022 IR 87", QueryRetrieveLevel="STUDY",
                        PatientName="")[1] for row in range(4)]
    assert [content.get(0x00080005) for content in contents] == [
        b"\\ISO 2022 IR 87", b"ISO_IR 100", b"ISO_IR 192", b"\\ISO 2022 IR 87"]
    assert contents[3][0x00100010] == b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"


def test_response_elements_in_tag_order():
    records = [record(0, PatientName="Müller".encode("latin-1"), charset="ISO_IR 100")]
    response, _ = respond(records, 0, SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="STUDY", PatientName="",
                          StudyInstanceUID="", Modality="", AccessionNumber="")
    tags = [element.tag for element in response.elements]
    assert tags == sorted(tags) == [
        0x00080005, 0x00080050, 0x00080052, 0x00080054, 0x00080060, 0x00100010, 0x0020000D]


# --- a large area (its speed is measured by scripts/bench, not asserted here) -------------------------------------

def test_queries_over_fifty_thousand_records():
    count = 50_000
    records: dict[int, list[bytes]] = {tag: [b""] * count for tag in [*INDEXED, SPECIFIC_CHARACTER_SET]}
    records[0x00100020] = [b"P%d" % (n // 50) for n in range(count)]
    records[0x0020000D] = [b"1.2.%d" % (n // 50) for n in range(count)]
    records[0x0020000E] = [b"1.2.%d.%d" % (n // 50, n // 10) for n in range(count)]
    records[0x00080018] = [b"1.2.3.%d" % n for n in range(count)]
    records[0x00100010] = [b"Name%d^X" % (n // 50) for n in range(count)]
    records[0x00080020] = [b"2021%02d%02d" % (1 + n % 12, 1 + n % 28) for n in range(count)]
    queries = [
        (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.500"}, 1),
        (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, 1000),
        (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientName": "Name1*"}, 111),
        (SR, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": "20210301-20210601"}, 1000),
        (PR, {"QueryRetrieveLevel": "SERIES", "PatientID": "P7", "StudyInstanceUID": "", "SeriesInstanceUID": ""}, 5),
    ]
    table = RecordTable(count, range(count), records)
    for model, keys, expected in queries:
        query = parse_find(identifier(**keys), model, False)
        assert [len(find_matches(query, table)) for _ in range(2)] == [expected] * 2, keys


# --- against DCMTK's dcmqrscp -------------------------------------------------------------------------------------

ORACLE_RECORDS = [
    dict(PatientID="A", PatientName="Doe^John", StudyDate="20210615", StudyTime="101010", Modality="CT",
         SeriesNumber="1", InstanceNumber="1", StudyDescription="Kopf", SpecificCharacterSet="ISO_IR 100"),
    dict(PatientID="A", PatientName="Doe^John", StudyDate="20210615", StudyTime="101010", Modality="CT",
         SeriesNumber="1", InstanceNumber="2", StudyDescription="Kopf", SpecificCharacterSet="ISO_IR 100"),
    dict(PatientID="B", PatientName="Müller^Jörg", StudyDate="2020.01.01", StudyTime="1010", Modality="MR",
         SeriesNumber="2", InstanceNumber="1", StudyDescription="Bauch", SpecificCharacterSet="ISO_IR 100"),
    dict(PatientID="C", PatientName="Müller^Hans", StudyDate="20210230", StudyTime="10:10", Modality="MR",
         SeriesNumber="3", InstanceNumber="1", SpecificCharacterSet="ISO_IR 192", PatientBirthDate="19700101"),
    dict(PatientID="D", PatientName="山田^太郎", StudyDate="20211301", StudyTime="240000", Modality="US",
         SeriesNumber="01", StudyDescription="Bauch", SpecificCharacterSet="ISO_IR 192"),
    dict(PatientID="E", PatientName="Иванов^Иван", StudyDate="19991231", StudyTime="235959.5", Modality="CT",
         SeriesNumber="1", SpecificCharacterSet="ISO_IR 144", PatientAge="030Y"),
    dict(PatientID="F", PatientName="Smith^Jane", StudyDate="", StudyTime="", Modality="CT", SeriesNumber="1",
         AccessionNumber="ACC\\1"),
]
ORACLE_QUERIES: list[tuple[Model, dict[str, str]]] = [
    (SR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="", StudyDate="", StudyDescription="")),
    (SR, dict(QueryRetrieveLevel="STUDY", PatientName="Doe*", PatientID="", Modality="", SOPInstanceUID="")),
    (SR, dict(QueryRetrieveLevel="STUDY", PatientName="*J*", StudyDate="20200101-20211231")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyDate="-20201231", StudyTime="100000-120000", PatientBirthDate="")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyTime="1010", AccessionNumber="ACC\\1", PatientAge="")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="", SpecificCharacterSet="ISO_IR 192",
              PatientName="Müller*")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="", SpecificCharacterSet="ISO_IR 100", PatientName="")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="", SpecificCharacterSet="ISO_IR 192", PatientName="")),
    (SR, dict(QueryRetrieveLevel="SERIES", StudyInstanceUID="", SeriesNumber="01", Modality="")),
    (SR, dict(QueryRetrieveLevel="SERIES", StudyInstanceUID="", SeriesNumber="1", PatientName="Nobody")),
    (SR, dict(QueryRetrieveLevel="IMAGE", StudyInstanceUID="", SeriesInstanceUID="", InstanceNumber="1")),
    (SR, dict(QueryRetrieveLevel="PATIENT", PatientID="")),
    (PR, dict(QueryRetrieveLevel="PATIENT", PatientID="", PatientName="")),
    (PR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="")),
    (PR, dict(QueryRetrieveLevel="SERIES", PatientID="Z", SeriesInstanceUID="")),
    (PR, dict(QueryRetrieveLevel="SERIES", PatientID="A\\B", StudyInstanceUID="", SeriesInstanceUID="")),
    (PS, dict(QueryRetrieveLevel="SERIES", PatientID="A", StudyInstanceUID="", SeriesInstanceUID="")),
    (PS, dict(QueryRetrieveLevel="studyx", PatientID="", StudyInstanceUID="")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.65\\1.2.67", PatientName="")),
    (SR, dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 144", PatientName="Иван*")),
    (SR, dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 100", PatientName="Müller*")),
    (SR, dict(QueryRetrieveLevel="STUDY", StudyDescription="Bauch", PatientBirthDate="19700101")),
    (PR, dict(QueryRetrieveLevel="IMAGE", PatientID="A", StudyInstanceUID="1.2.65", SeriesInstanceUID="",
              SOPInstanceUID="", InstanceNumber="")),
    (SR, dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO 2022 IR 100", PatientName="Müller*")),
    (SR, dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO 2022 IR 100", PatientName="")),
    (SR, dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 203", PatientName="M*")),
]


def _oracle_area(area: Path) -> RecordTable:
    """Store ORACLE_RECORDS as files, index them with dcmqridx; return our record table for them."""
    files = []
    for n, values in enumerate(ORACLE_RECORDS):
        ds = Dataset()
        ds.SpecificCharacterSet = values.get("SpecificCharacterSet", "")
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = f"1.2.9.{n}"
        ds.StudyInstanceUID = f"1.2.{ord(values['PatientID'])}"
        ds.SeriesInstanceUID = f"1.2.{ord(values['PatientID'])}.{len(values['Modality'])}"
        for keyword, value in values.items():
            if keyword != "SpecificCharacterSet":
                setattr(ds, keyword, value)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = area / f"f{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    subprocess.run([dcmtk("dcmqridx"), str(area), *files], env=dcmtk_env(), check=True, capture_output=True)
    stored = [dcmread(path) for path in files]
    result: dict[int, list[bytes]] = {
        tag: [(ds.get_item(tag).value or b"").rstrip(b" \0") if tag in ds else b"" for ds in stored] for tag in INDEXED}
    result[SPECIFIC_CHARACTER_SET] = [values.get("SpecificCharacterSet", "").encode() for values in ORACLE_RECORDS]
    return RecordTable(len(stored), range(len(stored)), result)


#: Request character sets DCMTK (Debian's iconv build) cannot convert to and we do (README difference 19).
CONVERTED_WHERE_DCMTK_CANNOT = {"ISO_IR 203"}


def _without_charset(answer: tuple[int, list[dict[int, str]]]) -> tuple[int, list[dict[int, str]]]:
    status, responses = answer
    return status, [{tag: value for tag, value in response.items() if tag != 0x00080005} for response in responses]


def _decoded(identifier: Dataset) -> dict[int, str]:
    """The values of a response identifier as pydicom decodes them when it receives them."""
    return {int(elem.tag): str(elem.value) for elem in identifier}


def _our_answer(model: Model, request: Dataset, table: RecordTable) -> tuple[int, list]:
    """Final status and response identifiers of our C-FIND for ``request``, as received."""
    try:
        query = parse_find(decode_identifier(encode(request, False, True), EXPLICIT_VR_LE), model, False)
        rows = find_matches(query, table)
    except QueryError as error:
        return error.status, []
    return 0x0000, [_decoded(decode(BytesIO(encode_identifier(
        find_response(query, table.record(row, query.response_fields()), "QR", CharsetPolicy()), EXPLICIT_VR_LE)),
        False, True)) for row in rows]


@pytest.mark.dcmtk
@pytest.mark.filterwarnings("ignore:Invalid value for VR")   # the odd dates and times are on purpose
@pytest.mark.filterwarnings("ignore:Unknown encoding")       # pydicom has no ISO_IR 203
@needs_dcmtk
def test_same_answers_as_dcmqrscp(tmp_path):
    """Statuses, matches and response identifiers of the real dcmqrscp for the same records."""
    from pynetdicom import AE

    area = tmp_path / "area"
    area.mkdir()
    ours = _oracle_area(area)
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
                      f"HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                      f"AETable BEGIN\nQR {area} RW (10, 1024mb) ANY\nAETable END\n")
    server = subprocess.Popen([dcmtk("dcmqrscp"), "-c", str(config)], env=dcmtk_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=10, process=server)
        ae = AE(ae_title="SCU")
        uids = {model: uid for uid, model in FIND_MODELS.items()}
        for uid in uids.values():
            ae.add_requested_context(uid)
        assoc = ae.associate("127.0.0.1", port, ae_title="QR")
        assert assoc.is_established
        try:
            for model, keys in ORACLE_QUERIES:
                request = Dataset()
                for keyword, value in keys.items():
                    setattr(request, keyword, value)
                theirs, status = [], None
                for rsp_status, rsp in assoc.send_c_find(request, uids[model]):
                    status = rsp_status.Status
                    if status == 0xFF00:
                        theirs.append(_decoded(rsp))
                answer, expected = _our_answer(model, request, ours), (status, theirs)
                if keys.get("SpecificCharacterSet") in CONVERTED_WHERE_DCMTK_CANNOT:
                    # README difference 19: the same text, converted to the request's character set
                    assert {response[0x00080005] for response in answer[1]} == {keys["SpecificCharacterSet"]}
                    answer, expected = _without_charset(answer), _without_charset(expected)
                assert answer == expected, keys
        finally:
            assoc.release()
    finally:
        server.terminate()
        server.wait(timeout=10)
