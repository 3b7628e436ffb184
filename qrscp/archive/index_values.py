"""The values a DICOM instance contributes to its index record (docs/index-format.md §6-§7).

Values are taken exactly as DCMTK's ``findAndGetString`` returns them on the top-level data set: the
raw bytes in the data set's own character set, multiple values joined by their backslashes, trailing
padding removed (spaces; for UIDs every white-space character, as DCMTK's input correction does),
leading and embedded spaces kept, cut at the first NUL. An element of odd length keeps its trailing
spaces (DCMTK pads its buffer with a NUL first), an element whose VR is not a string VR yields ``""``.

The data-set reader (:mod:`qrscp.dicom.reader`) walks the top level of the data set through a moving
window over the file: only the wanted values are read, pixel data and other bulk values are stepped
over, sequences are skipped unless they may hold a DigitalSignaturesSequence. Every transfer syntax is
handled: implicit and explicit VR, little and big endian, deflated (inflated into a temporary file, at
most :data:`MAX_INFLATED` bytes), encapsulated pixel data.
"""
from __future__ import annotations

from dataclasses import dataclass

from qrscp.archive import index
from qrscp.dicom.elements import STRING_VRS, Encoding, raw_text
from qrscp.dicom.fileformat import (
    TRANSFER_SYNTAX_UID,
    detect_transfer_syntax,
    open_dataset,
    read_meta,
)
from qrscp.dicom.reader import FileSource, Reader, Source

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

_WHITESPACE = b" \t\n\v\f\r"
#: A wanted value longer than this is read only in part (the index keeps at most 1024 bytes).
_VALUE_READ_LIMIT = 1 << 16
#: A deflated data set inflates to at most this many bytes here: the largest study a storage area can
#: hold (docs/index-format.md §10), so anything larger could not be stored uncompressed anyway.
MAX_INFLATED = index.MAX_BYTES_PER_STUDY


@dataclass(frozen=True)
class IndexValues:
    """What one instance contributes to its index record."""

    #: The value of every param tag (``b""`` when absent), keyed by tag, untruncated.
    values: dict[int, bytes]
    #: InstanceDescription (docs/index-format.md §7), at most 128 bytes.
    instance_description: bytes
    #: SOP Class and SOP Instance UID of the data set (``""`` when absent).
    sop_class_uid: str
    sop_instance_uid: str

    @property
    def study_instance_uid(self) -> bytes:
        return self.values[STUDY_INSTANCE_UID]


def find_and_get_string(vr: str, raw: bytes) -> bytes:
    """The string DCMTK's ``findAndGetString`` returns for an element with ``vr`` and value ``raw``."""
    if vr not in STRING_VRS:
        return b""
    if vr == "UI":
        return raw.split(b"\0", 1)[0].translate(None, _WHITESPACE)
    if len(raw) % 2:
        raw += b"\0"  # DCMTK evens an odd length with a NUL, so no trailing space is removed
    return raw.rstrip(b" ").split(b"\0", 1)[0]


# --- reading -----------------------------------------------------------------------------------------

def _values(source: Source, start: int, encoding: Encoding) -> IndexValues:
    reader = Reader(source, encoding, load_limit=_VALUE_READ_LIMIT, skip_sequences=True,
                    watch=DIGITAL_SIGNATURES_SEQUENCE, ignore_incomplete_end=True)
    found = {element.tag: element for element in reader.read(start).elements if element.tag in WANTED_TAGS}

    def value(tag: int) -> bytes:
        element = found.get(tag)
        if element is None:
            return b""
        raw = element.value if element.value is not None else source.read(element.position, _VALUE_READ_LIMIT)
        return find_and_get_string(element.vr, raw)

    sop_class_uid = raw_text(value(SOP_CLASS_UID))
    description = _instance_description(sop_class_uid, found.keys(), reader.watched, value)
    return IndexValues(values={tag: value(tag) for tag in PARAM_TAGS}, instance_description=description,
                       sop_class_uid=sop_class_uid, sop_instance_uid=raw_text(value(SOP_INSTANCE_UID)))


def _instance_description(sop_class_uid: str, present, signed: bool | None, value) -> bytes:
    """InstanceDescription (docs/index-format.md §7): ImageComments by default, the document flags of SR-like classes,
    fixed texts for two print classes, ContentDescription for GSPS; marked when signed."""
    if sop_class_uid in SR_CLASS_NAMES:
        description = SR_CLASS_NAMES[sop_class_uid]
        for tag in (VERIFICATION_FLAG, COMPLETION_FLAG, COMPLETION_FLAG_DESCRIPTION):
            if tag in present:
                description += b", " + value(tag)
    elif sop_class_uid in FIXED_DESCRIPTIONS:
        description = FIXED_DESCRIPTIONS[sop_class_uid]
    elif sop_class_uid == GSPS_STORAGE:
        description = value(CONTENT_DESCRIPTION)
    else:
        description = value(IMAGE_COMMENTS)
    description = description[:DESCRIPTION_MAX_LENGTH]
    if signed and len(description) + len(SIGNED_SUFFIX) < DESCRIPTION_MAX_LENGTH:
        description = description + SIGNED_SUFFIX if description else b"Signed Instance"
    return description


def _syntax(source: Source, start: int, meta: dict[int, bytes], transfer_syntax_uid: str | None) -> str:
    """The transfer syntax of the data set: the meta information's, else the one given, else DCMTK's guess."""
    syntax = meta.get(TRANSFER_SYNTAX_UID, b"").split(b"\0", 1)[0].strip().decode("ascii", "replace")
    return syntax or transfer_syntax_uid or detect_transfer_syntax(source.read(start, min(6, source.size - start)))


def read_index_values(path: str, transfer_syntax_uid: str | None = None, directory: str | None = None,
                      inflate_limit: int = MAX_INFLATED) -> IndexValues:
    """The index values of the DICOM file ``path``.

    The transfer syntax comes from the file meta information; a file without one (written with ``-F``)
    is read in ``transfer_syntax_uid`` if given, else in the encoding DCMTK would guess. A deflated data
    set is inflated (at most ``inflate_limit`` bytes) into a temporary file in ``directory``. Raises
    DataSetError (a ValueError; InflateLimitExceeded for a data set that inflates too far) if the file
    cannot be parsed, ``OSError`` if it cannot be read.
    """
    with open(path, "rb", buffering=0) as file:
        source = FileSource(file)
        start, meta = read_meta(source)
        syntax = _syntax(source, start, meta, transfer_syntax_uid)
        dataset, start = open_dataset(file, start, syntax, inflate_limit, directory)
        return _values(dataset, start, Encoding.of(syntax))
