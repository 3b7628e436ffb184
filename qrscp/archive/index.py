"""The ``index.dat`` file of a storage area, format 5 (docs/index-format.md §2-§6), byte-compatible with DCMTK 3.6.7.

This module is the only place in the project that knows the layout: the header, the block of 500 study
descriptors and the 8032-byte image records with their 38 ``param`` slots. Everything is little-endian
with the offsets of the LP64 structs DCMTK writes.

Reading is done on a buffer (an ``mmap`` of the file, or ``bytes``) by slicing, column by column: the
find/move path needs a few fields of every live record, and one list comprehension per field over
10,000-50,000 records costs a few milliseconds where per-record objects would cost far more.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import compress
from typing import Iterable, Iterator, NamedTuple, Sequence

FILE_NAME = "index.dat"

#: ``QRDB`` + ``%.2X`` of DBVERSION 5, no NUL.
DB_VERSION = 5
HEADER = b"QRDB%02X" % DB_VERSION
HEADER_SIZE = len(HEADER)

#: DB_UpperMaxStudies: the descriptor block always holds 500 entries, whatever the configured limit.
MAX_STUDIES = 500
#: DB_UpperMaxBytesPerStudy (1 GiB).
MAX_BYTES_PER_STUDY = 0x40000000

DESCRIPTORS_OFFSET = HEADER_SIZE
DESCRIPTOR_SIZE = 88
DESCRIPTORS_SIZE = MAX_STUDIES * DESCRIPTOR_SIZE
RECORDS_OFFSET = DESCRIPTORS_OFFSET + DESCRIPTORS_SIZE
RECORD_SIZE = 8032

#: StudyDescRecord: StudyInstanceUID char[65], 3 padding, StudySize uint32, LastRecordedDate double,
#: NumberofRegistratedImages uint32, 4 tail padding.
_DESCRIPTOR = struct.Struct("<65s3xIdI4x")
assert _DESCRIPTOR.size == DESCRIPTOR_SIZE

#: DB_SmallDcmElmt: PValueField (a pointer, written as 0), ValueLength uint32, XTag group and element.
_PARAM = struct.Struct("<QIHH")
PARAM_SIZE = _PARAM.size
_DATE = struct.Struct("<d")
_SIZE = struct.Struct("<I")


class Field(NamedTuple):
    """A fixed-size field of an image record: ``size`` bytes at ``offset`` (strings: max length + 1)."""

    name: str
    offset: int
    size: int


class Param(NamedTuple):
    """One of the 38 ``param`` slots: the tag written to disk, the backing string field, the DCMTK
    dictionary name of the tag (what ``dcmqridx -p`` prints) and the slot's own offset."""

    index: int
    tag: int
    field: Field
    keyword: str
    offset: int

    @property
    def max_length(self) -> int:
        return self.field.size - 1


FILENAME = Field("filename", 0, 257)
SOP_CLASS_UID = Field("SOPClassUID", 257, 65)
RECORDED_DATE = Field("RecordedDate", 328, 8)
IMAGE_SIZE = Field("ImageSize", 336, 4)
PARAMS_OFFSET = 344
PARAM_COUNT = 38

# The string fields behind the params, in record order: (field name, size, tag, dictionary name).
# Params 15 and 16 carry the tags of 11 and 12 (a quirk of the reference, docs/index-format.md §6): they always hold
# StudyDescription and NameOfPhysiciansReadingStudy again.
_PARAM_FIELDS = (
    ("PatientBirthDate", 81, 0x00100030, "PatientBirthDate"),
    ("PatientSex", 129, 0x00100040, "PatientSex"),
    ("PatientName", 257, 0x00100010, "PatientName"),
    ("PatientID", 257, 0x00100020, "PatientID"),
    ("PatientBirthTime", 129, 0x00100032, "PatientBirthTime"),
    ("OtherPatientIDs", 257, 0x00101000, "RETIRED_OtherPatientIDs"),
    ("OtherPatientNames", 257, 0x00101001, "OtherPatientNames"),
    ("EthnicGroup", 65, 0x00102160, "EthnicGroup"),
    ("StudyDate", 81, 0x00080020, "StudyDate"),
    ("StudyTime", 129, 0x00080030, "StudyTime"),
    ("StudyID", 129, 0x00200010, "StudyID"),
    ("StudyDescription", 257, 0x00081030, "StudyDescription"),
    ("NameOfPhysiciansReadingStudy", 257, 0x00081060, "NameOfPhysiciansReadingStudy"),
    ("AccessionNumber", 129, 0x00080050, "AccessionNumber"),
    ("ReferringPhysicianName", 257, 0x00080090, "ReferringPhysicianName"),
    ("ProcedureDescription", 257, 0x00081030, "StudyDescription"),
    ("AttendingPhysiciansName", 257, 0x00081060, "NameOfPhysiciansReadingStudy"),
    ("StudyInstanceUID", 65, 0x0020000D, "StudyInstanceUID"),
    ("OtherStudyNumbers", 97, 0x00201070, "RETIRED_OtherStudyNumbers"),
    ("AdmittingDiagnosesDescription", 257, 0x00081080, "AdmittingDiagnosesDescription"),
    ("PatientAge", 33, 0x00101010, "PatientAge"),
    ("PatientSize", 129, 0x00101020, "PatientSize"),
    ("PatientWeight", 129, 0x00101030, "PatientWeight"),
    ("Occupation", 65, 0x00102180, "Occupation"),
    ("SeriesNumber", 97, 0x00200011, "SeriesNumber"),
    ("SeriesInstanceUID", 65, 0x0020000E, "SeriesInstanceUID"),
    ("Modality", 129, 0x00080060, "Modality"),
    ("ImageNumber", 97, 0x00200013, "InstanceNumber"),
    ("SOPInstanceUID", 65, 0x00080018, "SOPInstanceUID"),
    ("SeriesDate", 81, 0x00080021, "SeriesDate"),
    ("SeriesTime", 129, 0x00080031, "SeriesTime"),
    ("SeriesDescription", 257, 0x0008103E, "SeriesDescription"),
    ("ProtocolName", 257, 0x00181030, "ProtocolName"),
    ("OperatorsName", 257, 0x00081070, "OperatorsName"),
    ("PerformingPhysicianName", 257, 0x00081050, "PerformingPhysicianName"),
    ("PresentationLabel", 17, 0x00700080, "ContentLabel"),
    ("IssuerOfPatientID", 257, 0x00100021, "IssuerOfPatientID"),
)
_STRINGS_OFFSET = PARAMS_OFFSET + PARAM_COUNT * PARAM_SIZE


def _layout() -> tuple[tuple[Param, ...], Field, Field, Field]:
    params: list[Param] = []
    offset = _STRINGS_OFFSET
    for index, (name, size, tag, keyword) in enumerate(_PARAM_FIELDS):
        params.append(Param(index, tag, Field(name, offset, size), keyword, PARAMS_OFFSET + index * PARAM_SIZE))
        offset += size
    hstat = Field("hstat", offset, 1)
    description = Field("InstanceDescription", offset + 1, 129)
    charset = Field("SpecificCharacterSet", description.offset + description.size, 1025)
    params.append(Param(len(params), 0x00080005, charset, "SpecificCharacterSet",
                        PARAMS_OFFSET + len(params) * PARAM_SIZE))
    assert len(params) == PARAM_COUNT and charset.offset + charset.size == RECORD_SIZE
    return tuple(params), hstat, description, charset


PARAMS, HSTAT, INSTANCE_DESCRIPTION, SPECIFIC_CHARACTER_SET = _layout()

#: The first param of each tag (lookups by tag take the first, as DCMTK's do).
PARAM_BY_TAG: dict[int, Param] = {}
for _param in PARAMS:
    PARAM_BY_TAG.setdefault(_param.tag, _param)

#: Every string field of a record by name (the params' backing fields, filename, SOPClassUID,
#: InstanceDescription).
STRING_FIELDS: dict[str, Field] = {field.name: field for field in
                                   (FILENAME, SOP_CLASS_UID, INSTANCE_DESCRIPTION,
                                    *(param.field for param in PARAMS))}

STUDY_INSTANCE_UID = PARAM_BY_TAG[0x0020000D]
SOP_INSTANCE_UID = PARAM_BY_TAG[0x00080018]

#: hstat values (DVIF_objectIsNew / not new).
OBJECT_IS_NEW = 1
OBJECT_IS_NOT_NEW = 0


class IndexFormatError(Exception):
    """``index.dat`` has no valid format-5 header; the message is the reference's."""


def _scan_hex(text: bytes) -> int:
    """``sscanf(text, "%x")`` as glibc does it; 0 when nothing matches; negative values wrap to 32 bits."""
    text = text.lstrip(b" \t\n\v\f\r")
    sign = 1
    if text[:1] in (b"+", b"-"):
        sign = -1 if text[:1] == b"-" else 1
        text = text[1:]
    if text[:2].lower() == b"0x" and text[2:3] and text[2:3] in b"0123456789abcdefABCDEF":
        text = text[2:]
    digits = b""
    for byte in text:
        if chr(byte) not in "0123456789abcdefABCDEF":
            break
        digits += bytes([byte])
    return (sign * int(digits, 16)) & 0xFFFFFFFF if digits else 0


def check_header(header: bytes, filename: str) -> None:
    """Validate the first bytes of an index file as DCMTK does; :class:`IndexFormatError` if invalid."""
    version = _scan_hex(header[4:HEADER_SIZE]) if len(header) >= HEADER_SIZE and header.startswith(b"QRDB") \
        else 0
    if version == 0:
        raise IndexFormatError(f"{filename}: unknown/legacy QRDB database file format")
    if version != DB_VERSION:
        raise IndexFormatError(f"{filename}: invalid/unsupported QRDB database version {version}")


def slot_count(file_size: int) -> int:
    """Number of (complete) record slots in an index file of ``file_size`` bytes."""
    return max(0, (file_size - RECORDS_OFFSET) // RECORD_SIZE)


def record_offset(slot: int) -> int:
    """File offset of record ``slot``."""
    return RECORDS_OFFSET + slot * RECORD_SIZE


# --- study descriptors -------------------------------------------------------------------------------

@dataclass
class StudyDescriptor:
    """One StudyDescRecord; in use iff ``image_count > 0``."""

    study_instance_uid: bytes = b""
    study_size: int = 0
    last_recorded_date: float = 0.0
    image_count: int = 0

    @property
    def in_use(self) -> bool:
        return self.image_count > 0


def decode_descriptors(block: bytes) -> list[StudyDescriptor]:
    """The 500 descriptors of a descriptor block; a short block (a fresh index) reads as zeros."""
    block = block[:DESCRIPTORS_SIZE].ljust(DESCRIPTORS_SIZE, b"\0")
    return [StudyDescriptor(uid.split(b"\0", 1)[0], size, date, count)
            for uid, size, date, count in _DESCRIPTOR.iter_unpack(block)]


def encode_descriptor(descriptor: StudyDescriptor) -> bytes:
    """The 88 bytes of one descriptor, zero-filled after its UID."""
    return _DESCRIPTOR.pack(descriptor.study_instance_uid[:64], descriptor.study_size & 0xFFFFFFFF,
                            descriptor.last_recorded_date, descriptor.image_count & 0xFFFFFFFF)


def encode_descriptors(descriptors: Sequence[StudyDescriptor]) -> bytes:
    """The descriptor block for ``descriptors`` (500 of them)."""
    assert len(descriptors) == MAX_STUDIES
    return b"".join(map(encode_descriptor, descriptors))


# --- image records -----------------------------------------------------------------------------------

@dataclass
class Record:
    """One image record, decoded (values are the stored C strings)."""

    filename: bytes
    sop_class_uid: bytes
    recorded_date: float
    image_size: int
    hstat: int
    params: list[bytes]          # the 38 param values in param order
    instance_description: bytes

    @property
    def is_free(self) -> bool:
        return not self.filename

    @property
    def sop_instance_uid(self) -> bytes:
        return self.params[SOP_INSTANCE_UID.index]

    @property
    def study_instance_uid(self) -> bytes:
        return self.params[STUDY_INSTANCE_UID.index]


def string_value(data: bytes | memoryview, field: Field, base: int = 0) -> bytes:
    """The C string of ``field`` in the record at ``base`` of ``data``."""
    start = base + field.offset
    return bytes(data[start:start + field.size]).split(b"\0", 1)[0]


def decode_record(data: bytes | memoryview, base: int = 0) -> Record:
    """The record at ``base`` in ``data`` (a whole record must be there)."""
    return Record(
        filename=string_value(data, FILENAME, base),
        sop_class_uid=string_value(data, SOP_CLASS_UID, base),
        recorded_date=_DATE.unpack_from(data, base + RECORDED_DATE.offset)[0],
        image_size=_SIZE.unpack_from(data, base + IMAGE_SIZE.offset)[0],
        hstat=data[base + HSTAT.offset],
        params=[string_value(data, param.field, base) for param in PARAMS],
        instance_description=string_value(data, INSTANCE_DESCRIPTION, base),
    )


def record_values(data: bytes, tags: Iterable[int]) -> dict[int, bytes]:
    """The values of the params ``tags`` in the record ``data`` (its 8032 bytes), as :func:`param_column`
    reads them: cut by ``ValueLength``, or as C strings if it is implausible."""
    values = {}
    for tag in tags:
        param = PARAM_BY_TAG[tag]
        length = _PARAM.unpack_from(data, param.offset)[1]
        start = param.field.offset
        values[tag] = data[start:start + length] if length <= param.max_length else string_value(data, param.field)
    return values


def record_params(record: Record) -> dict[int, bytes]:
    """The value of each param tag (the first param of each) as ``record`` stores it in its slot."""
    return {tag: stored_value(param.field, record.params[param.index]) for tag, param in PARAM_BY_TAG.items()}


def stored_value(field: Field, value: bytes) -> bytes:
    """What ``strncpy`` leaves of ``value`` in ``field``: cut at a NUL, truncated to the maximum length."""
    return value.split(b"\0", 1)[0][:field.size - 1]


def _put(record: bytearray, field: Field, value: bytes) -> int:
    """Store ``value`` into ``field`` of a zeroed record; the stored length."""
    value = stored_value(field, value)
    record[field.offset:field.offset + len(value)] = value
    return len(value)


def encode_record(record: Record) -> bytes:
    """The 8032 bytes of a live record: zero-filled strings, every param with pointer 0, its tag and
    ``ValueLength`` = the length of the stored value. Over-long values are truncated like ``strncpy``."""
    if not record.filename or len(record.filename) > FILENAME.size - 1 or b"\0" in record.filename:
        raise ValueError(f"file name not storable in the index: {record.filename!r}")
    data = bytearray(RECORD_SIZE)
    _put(data, FILENAME, record.filename)
    _put(data, SOP_CLASS_UID, record.sop_class_uid)
    _DATE.pack_into(data, RECORDED_DATE.offset, record.recorded_date)
    _SIZE.pack_into(data, IMAGE_SIZE.offset, record.image_size & 0xFFFFFFFF)
    for param, value in zip(PARAMS, record.params, strict=True):
        length = _put(data, param.field, value)
        _PARAM.pack_into(data, param.offset, 0, length, param.tag >> 16, param.tag & 0xFFFF)
    data[HSTAT.offset] = record.hstat
    _put(data, INSTANCE_DESCRIPTION, record.instance_description)
    return bytes(data)


def _free_record() -> bytes:
    data = bytearray(RECORD_SIZE)
    for param in PARAMS:
        _PARAM.pack_into(data, param.offset, 0, param.max_length, param.tag >> 16, param.tag & 0xFFFF)
    return bytes(data)


#: What a deleted record is overwritten with: the shape DCMTK's ``DB_IdxRemove`` gives it (every param
#: tagged, ValueLength = maximum, filename empty), with zeros where DCMTK leaves stack garbage.
FREE_RECORD = _free_record()


def record_writes(slot: int, data: bytes) -> list[tuple[int, bytes]]:
    """The (offset, bytes) writes, in order, that put ``data`` (a live record, or :data:`FREE_RECORD`)
    into ``slot`` so that the slot reads as free in between (a crash never leaves a live record half
    written): a live record gets the first byte of its file name last, a freed one first."""
    offset = record_offset(slot) + FILENAME.offset
    if data[FILENAME.offset]:
        return [(offset, b"\0" + data[1:]), (offset, data[:1])]
    return [(offset, b"\0"), (offset, data)]


def slot_is_free(first_byte: bytes) -> bool:
    """Whether the byte at :func:`liveness_offset` marks a free slot (or lies past the end of the file)."""
    return first_byte in (b"", b"\0")


def liveness_offset(slot: int) -> int:
    """File offset of the byte that says whether ``slot`` is free (the first byte of its file name)."""
    return record_offset(slot) + FILENAME.offset


def param_values(values_by_tag: dict[int, bytes]) -> list[bytes]:
    """The 38 param values for attribute values keyed by tag (params 15/16 repeat their tags' values)."""
    return [values_by_tag.get(param.tag, b"") for param in PARAMS]


# --- column reads ------------------------------------------------------------------------------------

def live_slots(buffer: bytes | memoryview, slots: int) -> list[int]:
    """Slot numbers of the live records (``filename[0] != 0``) among the first ``slots``."""
    first_bytes = buffer[RECORDS_OFFSET:RECORDS_OFFSET + slots * RECORD_SIZE:RECORD_SIZE]
    return list(compress(range(slots), first_bytes))


def _offsets(field: Field, slots: Sequence[int], slots_in_file: int) -> Iterable[int]:
    """File offsets of ``field`` in each of ``slots``."""
    start = RECORDS_OFFSET + field.offset
    if len(slots) == slots_in_file:  # every slot is live: slots == range(slots_in_file)
        return range(start, start + slots_in_file * RECORD_SIZE, RECORD_SIZE)
    return map(start.__add__, map(RECORD_SIZE.__mul__, slots))


def string_column(buffer: bytes | memoryview, field: Field, slots: Sequence[int]) -> list[bytes]:
    """The C-string value of ``field`` for each of ``slots`` (ascending live slots of ``buffer``)."""
    size = field.size
    return [buffer[o:o + size].split(b"\0", 1)[0] for o in _offsets(field, slots, slot_count(len(buffer)))]


def param_column(buffer: bytes | memoryview, param: Param, slots: Sequence[int]) -> list[bytes]:
    """The value of ``param`` for each of ``slots`` (see :func:`iter_param_column`)."""
    return list(iter_param_column(buffer, param, slots))


def iter_param_column(buffer: bytes | memoryview, param: Param, slots: Sequence[int]) -> Iterator[bytes]:
    """The value of ``param`` for each of ``slots`` (ascending live slots of ``buffer``), cut by its
    ``ValueLength`` (which DCMTK keeps equal to the string length and trusts too), one at a time. Falls
    back to C-string reads if a length is implausible."""
    slots_in_file = slot_count(len(buffer))
    length_at = RECORDS_OFFSET + param.offset + 8
    end = RECORDS_OFFSET + slots_in_file * RECORD_SIZE
    low = buffer[length_at:end:RECORD_SIZE]   # ValueLength is at most 1024: two bytes suffice
    high = buffer[length_at + 1:end:RECORD_SIZE]
    if len(slots) != slots_in_file:
        low, high = bytes(map(low.__getitem__, slots)), bytes(map(high.__getitem__, slots))
    lengths: Sequence[int] = low if high.count(0) == len(high) else [a | b << 8 for a, b in zip(low, high)]
    if lengths and max(lengths) > param.max_length:
        return iter(string_column(buffer, param.field, slots))
    return (buffer[o:o + n] for o, n in zip(_offsets(param.field, slots, slots_in_file), lengths))


def recorded_date_and_size(buffer: bytes | memoryview, slot: int) -> tuple[float, int]:
    """RecordedDate and ImageSize of record ``slot``."""
    offset = record_offset(slot)
    return _DATE.unpack_from(buffer, offset + RECORDED_DATE.offset)[0], \
        _SIZE.unpack_from(buffer, offset + IMAGE_SIZE.offset)[0]


def read_record(buffer: bytes | memoryview, slot: int) -> Record:
    """Record ``slot`` of an index file held in ``buffer``."""
    return decode_record(buffer, record_offset(slot))
