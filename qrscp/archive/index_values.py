"""The values a DICOM instance contributes to its index record (ref §1.6-§1.7).

Values are taken exactly as DCMTK's ``findAndGetString`` returns them on the top-level data set: the
raw bytes in the data set's own character set, multiple values joined by their backslashes, trailing
padding removed (spaces; for UIDs every white-space character, as DCMTK's input correction does),
leading and embedded spaces kept, cut at the first NUL. An element of odd length keeps its trailing
spaces (DCMTK pads its buffer with a NUL first), an element whose VR is not a string VR yields ``""``.

A lean reader walks the data set's elements without decoding them: only the wanted top-level values
are read, pixel data and other bulk values are skipped, never loaded. Every transfer syntax is handled:
implicit and explicit VR, little and big endian, deflated, encapsulated pixel data.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from pydicom.datadict import dictionary_VR

from qrscp.archive import index

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SPECIFIC_CHARACTER_SET = 0x00080005
IMAGE_COMMENTS = 0x00204000
CONTENT_DESCRIPTION = 0x00700081
VERIFICATION_FLAG = 0x0040A493
COMPLETION_FLAG = 0x0040A491
COMPLETION_FLAG_DESCRIPTION = 0x0040A492
DIGITAL_SIGNATURES_SEQUENCE = 0xFFFAFFFA
PIXEL_DATA = 0x7FE00010

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")

GSPS_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
#: The literal descriptions of two retired print classes.
FIXED_DESCRIPTIONS = {
    "1.2.840.10008.5.1.1.29": b"Hardcopy Grayscale Image",
    "1.2.840.10008.5.1.1.27": b"Stored Print",
}
#: The structured-report-like classes whose description is DCMTK's UID name plus the document flags.
SR_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.88.11": b"BasicTextSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.22": b"EnhancedSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.33": b"ComprehensiveSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.34": b"Comprehensive3DSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.35": b"ExtensibleSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.40": b"ProcedureLogStorage",
    "1.2.840.10008.5.1.4.1.1.88.50": b"MammographyCADSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.59": b"KeyObjectSelectionDocumentStorage",
    "1.2.840.10008.5.1.4.1.1.88.65": b"ChestCADSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.67": b"XRayRadiationDoseSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.68": b"RadiopharmaceuticalRadiationDoseSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.69": b"ColonCADSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.70": b"ImplantationPlanSRDocumentStorage",
    "1.2.840.10008.5.1.4.1.1.88.71": b"AcquisitionContextSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.72": b"SimplifiedAdultEchoSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.73": b"PatientRadiationDoseSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.74": b"PlannedImagingAgentAdministrationSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.75": b"PerformedImagingAgentAdministrationSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.76": b"EnhancedXRayRadiationDoseSRStorage",
    "1.2.840.10008.5.1.4.1.1.78.6": b"SpectaclePrescriptionReportStorage",
    "1.2.840.10008.5.1.4.1.1.79.1": b"MacularGridThicknessAndVolumeReportStorage",
}
DESCRIPTION_MAX_LENGTH = index.INSTANCE_DESCRIPTION.size - 1
SIGNED_SUFFIX = b" (Signed)"

#: Tags of the values an index record takes from the data set.
PARAM_TAGS = tuple(index.PARAM_BY_TAG)
WANTED_TAGS = frozenset((*PARAM_TAGS, SOP_CLASS_UID, IMAGE_COMMENTS, CONTENT_DESCRIPTION, VERIFICATION_FLAG,
                         COMPLETION_FLAG, COMPLETION_FLAG_DESCRIPTION))

STRING_VRS = frozenset((b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST",
                        b"TM", b"UC", b"UI", b"UR", b"UT"))
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                       b"UV"))
_ALL_VRS = STRING_VRS | _LONG_VRS | frozenset((b"AT", b"FD", b"FL", b"SL", b"SS", b"UL", b"US"))
_WHITESPACE = b" \t\n\v\f\r"
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM, ITEM_DELIMITATION, SEQUENCE_DELIMITATION = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: A wanted value longer than this is read only in part (the index keeps at most 1024 bytes).
_VALUE_READ_LIMIT = 1 << 16
_WINDOW = 1 << 18


class DicomFileError(ValueError):
    """The file is not a DICOM file this reader (and DCMTK) can load."""


@dataclass(frozen=True)
class IndexValues:
    """What one instance contributes to its index record."""

    #: The value of every param tag (``b""`` when absent), keyed by tag, untruncated.
    values: dict[int, bytes]
    #: InstanceDescription (ref §1.7), at most 128 bytes.
    instance_description: bytes
    #: SOP Class and SOP Instance UID of the data set (``""`` when absent).
    sop_class_uid: str
    sop_instance_uid: str

    @property
    def specific_character_set(self) -> bytes:
        return self.values[SPECIFIC_CHARACTER_SET]

    @property
    def study_instance_uid(self) -> bytes:
        return self.values[STUDY_INSTANCE_UID]


def dcmtk_string(vr: bytes, raw: bytes) -> bytes:
    """The string DCMTK's ``findAndGetString`` returns for an element with ``vr`` and value ``raw``."""
    if vr not in STRING_VRS:
        return b""
    if vr == b"UI":
        return raw.split(b"\0", 1)[0].translate(None, _WHITESPACE)
    if len(raw) % 2:
        raw += b"\0"  # DCMTK evens an odd length with a NUL, so no trailing space is removed
    return raw.rstrip(b" ").split(b"\0", 1)[0]


# --- the reader --------------------------------------------------------------------------------------

class _Source(Protocol):
    size: int

    def read(self, pos: int, n: int) -> bytes: ...

    def contains(self, pattern: bytes, start: int, end: int) -> bool: ...


class _Bytes:
    """A data set held in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, pos: int, n: int) -> bytes:
        if pos + n > self.size:
            raise DicomFileError("unexpected end of data")
        return self.data[pos:pos + n]

    def contains(self, pattern: bytes, start: int, end: int) -> bool:
        return self.data.find(pattern, start, end) >= 0


class _Window:
    """A file read through a moving window: what the parser skips is never read."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self.size = size
        self._base = 0
        self._data = b""

    def read(self, pos: int, n: int) -> bytes:
        if pos + n > self.size:
            raise DicomFileError("unexpected end of file")
        start = pos - self._base
        if start < 0 or start + n > len(self._data):
            self._file.seek(pos)
            self._data = self._file.read(max(n, _WINDOW))
            self._base, start = pos, 0
        return self._data[start:start + n]

    def contains(self, pattern: bytes, start: int, end: int) -> bool:
        overlap = len(pattern) - 1
        while start < end:
            n = min(end - start, _WINDOW)
            if pattern in self.read(start, n):
                return True
            start += n - overlap if n > overlap and start + n < end else n
        return False


@dataclass
class _Scan:
    """The parser's findings."""

    little: bool
    explicit: bool
    #: wanted top-level elements: tag -> (VR, raw value); the first occurrence wins, as in DCMTK
    found: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    #: whether the first DigitalSignaturesSequence (pre-order) has items; None while none was seen
    signed: bool | None = None
    _vr_cache: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        order = "<" if self.little else ">"
        self._short_head = struct.Struct(order + "HH2sH")   # tag, VR, 16-bit length
        self._long_head = struct.Struct(order + "HHI")      # tag, 32-bit length
        self._long_length = struct.Struct(order + "I")

    def header(self, source: _Source, pos: int) -> tuple[int, bytes | None, int, int]:
        """Tag, VR (explicit VR only), value length and value position of the element at ``pos``."""
        head = source.read(pos, 8)
        group, element, vr, length = self._short_head.unpack(head)
        tag = group << 16 | element
        if group == 0xFFFE or not self.explicit:
            return tag, None, self._long_head.unpack(head)[2], pos + 8
        if vr in _LONG_VRS:
            return tag, vr, self._long_length.unpack(source.read(pos + 8, 4))[0], pos + 12
        if vr not in _ALL_VRS:
            raise DicomFileError(f"invalid VR {vr!r} of element ({group:04x},{element:04x})")
        return tag, vr, length, pos + 8

    def implicit_vr(self, tag: int) -> bytes:
        vr = self._vr_cache.get(tag)
        if vr is None:
            try:
                vr = dictionary_VR(tag).encode()
            except KeyError:
                vr = b"UN"
            self._vr_cache[tag] = vr
        return vr

    @property
    def signature_tag(self) -> bytes:
        return struct.pack("<HH" if self.little else ">HH", 0xFFFA, 0xFFFA)


def _parse_dataset(scan: _Scan, source: _Source, pos: int, end: int | None, top: bool) -> int:
    """Parse elements from ``pos`` up to ``end``, or (``end`` None) up to an item delimitation or the end
    of the data; the position after them."""
    limit = source.size if end is None else end
    while pos < limit:
        if top and limit - pos < 8:
            break  # trailing bytes too short for an element: ignored
        tag, vr, length, pos = scan.header(source, pos)
        if tag == ITEM_DELIMITATION and not top:
            return pos
        if tag >> 16 == 0xFFFE:
            raise DicomFileError(f"unexpected item tag ({tag >> 16:04x},{tag & 0xFFFF:04x}) in data set")
        if vr is None:
            vr = scan.implicit_vr(tag)
        if tag == DIGITAL_SIGNATURES_SEQUENCE and scan.signed is None:
            scan.signed = length != 0 and (length != UNDEFINED_LENGTH or scan.header(source, pos)[0] == ITEM)
        if length == UNDEFINED_LENGTH:
            if tag == PIXEL_DATA or (vr not in (b"SQ", b"UN") and scan.explicit):
                pos = _skip_fragments(scan, source, pos)
            elif vr == b"UN" and scan.explicit:
                inner = _Scan(little=True, explicit=False, signed=scan.signed)
                pos = _parse_items(inner, source, pos, None)
                scan.signed = inner.signed
            else:
                pos = _parse_items(scan, source, pos, None)
            continue
        if pos + length > source.size:
            raise DicomFileError(f"element ({tag >> 16:04x},{tag & 0xFFFF:04x}) larger than the data")
        if top and tag in WANTED_TAGS and tag not in scan.found:
            scan.found[tag] = (vr, source.read(pos, min(length, _VALUE_READ_LIMIT)))
        elif vr == b"SQ" and scan.signed is None and source.contains(scan.signature_tag, pos, pos + length):
            _parse_items(scan, source, pos, pos + length)
        pos += length
    return pos


def _parse_items(scan: _Scan, source: _Source, pos: int, end: int | None) -> int:
    """Parse the items of a sequence (up to ``end`` or its delimitation); the position after it."""
    while end is None or pos < end:
        tag, _, length, pos = scan.header(source, pos)
        if tag == SEQUENCE_DELIMITATION:
            return pos
        if tag != ITEM:
            raise DicomFileError(f"unexpected tag ({tag >> 16:04x},{tag & 0xFFFF:04x}) in a sequence")
        if length == UNDEFINED_LENGTH:
            pos = _parse_dataset(scan, source, pos, None, top=False)
        else:
            _parse_dataset(scan, source, pos, pos + length, top=False)
            pos += length
    return pos


def _skip_fragments(scan: _Scan, source: _Source, pos: int) -> int:
    """Skip encapsulated pixel data (items of fragments up to the sequence delimitation)."""
    while True:
        tag, _, length, pos = scan.header(source, pos)
        if tag == SEQUENCE_DELIMITATION:
            return pos
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise DicomFileError("invalid encapsulated pixel data")
        pos += length


def _guess_encoding(source: _Source, pos: int) -> tuple[bool, bool]:
    """(little endian, explicit VR) of a data set without transfer syntax, from its first element."""
    head = source.read(pos, 6)
    little = struct.unpack("<H", head[:2])[0] <= struct.unpack(">H", head[:2])[0]
    return little, head[4:6] in _ALL_VRS


def _encoding(transfer_syntax_uid: str) -> tuple[bool, bool]:
    """(little endian, explicit VR) of a transfer syntax; unknown ones are explicit VR little endian."""
    return transfer_syntax_uid != EXPLICIT_VR_BE, transfer_syntax_uid != IMPLICIT_VR_LE


def _read_meta(source: _Source) -> tuple[int, str | None]:
    """Position of the data set and the transfer syntax of the file meta information (if any)."""
    if source.size >= 132 and source.read(128, 4) == b"DICM":
        pos = 132
    elif source.size >= 8 and source.read(0, 2) == b"\x02\x00":
        pos = 0  # meta information without preamble
    else:
        return 0, None
    meta = _Scan(little=True, explicit=True)
    transfer_syntax = None
    while pos + 8 <= source.size and source.read(pos, 2) == b"\x02\x00":
        tag, _, length, pos = meta.header(source, pos)
        if length == UNDEFINED_LENGTH:
            raise DicomFileError("undefined length in the file meta information")
        if tag == 0x00020010:
            transfer_syntax = source.read(pos, length).split(b"\0", 1)[0].strip().decode("ascii", "replace")
        pos += length
    return pos, transfer_syntax


#: A deflated data set that inflates to more than this is refused (a "zip bomb" must not exhaust memory).
INFLATE_LIMIT = 64 << 20


def _inflate(data: bytes) -> bytes:
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS | 32):
        inflater = zlib.decompressobj(wbits)
        try:
            inflated = inflater.decompress(data, INFLATE_LIMIT)
        except zlib.error:
            continue
        if inflater.unconsumed_tail:
            raise DicomFileError(f"the deflated data set inflates to more than {INFLATE_LIMIT >> 20} MiB")
        return inflated
    raise DicomFileError("cannot inflate the deflated data set")


def _scan(source: _Source, transfer_syntax_uid: str | None) -> _Scan:
    pos, meta_syntax = _read_meta(source)
    syntax = meta_syntax or transfer_syntax_uid
    if syntax in DEFLATED_TRANSFER_SYNTAXES:
        source, pos = _Bytes(_inflate(source.read(pos, source.size - pos))), 0
    if pos >= source.size:
        raise DicomFileError("no data set")
    little, explicit = _encoding(syntax) if syntax else _guess_encoding(source, pos)
    scan = _Scan(little=little, explicit=explicit)
    _parse_dataset(scan, source, pos, None, top=True)
    return scan


def _values(scan: _Scan) -> IndexValues:
    def value(tag: int) -> bytes:
        vr, raw = scan.found.get(tag, (b"", b""))
        return dcmtk_string(vr, raw)

    sop_class_uid = value(SOP_CLASS_UID).decode("latin-1")
    description = _instance_description(sop_class_uid, scan, value)
    return IndexValues(values={tag: value(tag) for tag in PARAM_TAGS}, instance_description=description,
                       sop_class_uid=sop_class_uid, sop_instance_uid=value(SOP_INSTANCE_UID).decode("latin-1"))


def _instance_description(sop_class_uid: str, scan: _Scan, value) -> bytes:
    """InstanceDescription (ref §1.7): ImageComments by default, the document flags of SR-like classes,
    fixed texts for two print classes, ContentDescription for GSPS; marked when signed."""
    if sop_class_uid in SR_CLASS_NAMES:
        description = SR_CLASS_NAMES[sop_class_uid]
        for tag in (VERIFICATION_FLAG, COMPLETION_FLAG, COMPLETION_FLAG_DESCRIPTION):
            if tag in scan.found:
                description += b", " + value(tag)
    elif sop_class_uid in FIXED_DESCRIPTIONS:
        description = FIXED_DESCRIPTIONS[sop_class_uid]
    elif sop_class_uid == GSPS_STORAGE:
        description = value(CONTENT_DESCRIPTION)
    else:
        description = value(IMAGE_COMMENTS)
    description = description[:DESCRIPTION_MAX_LENGTH]
    if scan.signed and len(description) + len(SIGNED_SUFFIX) < DESCRIPTION_MAX_LENGTH:
        description = description + SIGNED_SUFFIX if description else b"Signed Instance"
    return description


def read_index_values(path: str, transfer_syntax_uid: str | None = None) -> IndexValues:
    """The index values of the DICOM file ``path``.

    The transfer syntax comes from the file meta information; a file without one (written with ``-F``)
    is read in ``transfer_syntax_uid`` if given, else in the encoding its first element suggests.
    Raises :class:`DicomFileError` if the file cannot be parsed, ``OSError`` if it cannot be read.
    """
    with open(path, "rb", buffering=0) as file:
        return _values(_scan(_Window(file, os.fstat(file.fileno()).st_size), transfer_syntax_uid))


def index_values_from_bytes(data: bytes, transfer_syntax_uid: str | None = None) -> IndexValues:
    """The index values of a DICOM file's bytes, or of a bare data set encoded in ``transfer_syntax_uid``."""
    return _values(_scan(_Bytes(data), transfer_syntax_uid))


def index_values_from_dataset(dataset) -> IndexValues:
    """The index values of a pydicom ``Dataset``: it is encoded as it was read (raw elements are written
    unchanged, so the bytes are the original ones) and parsed like a file."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    implicit, little = dataset.original_encoding
    if implicit is None:
        implicit, little = False, True
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, dataset)
    syntax = IMPLICIT_VR_LE if implicit else ("1.2.840.10008.1.2.1" if little else EXPLICIT_VR_BE)
    return index_values_from_bytes(buffer.getvalue(), syntax)
