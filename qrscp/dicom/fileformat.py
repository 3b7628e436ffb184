"""DICOM files (PS3.10): the file meta information, and where a stored file's data set is.

A stored file is read lazily: its meta information tells the transfer syntax and the SOP UIDs, and
:func:`open_dataset` gives a :class:`~qrscp.dicom.reader.Source` for its data set that the reader reads
by window. A deflated data set is inflated into an anonymous temporary file (bounded: see
:mod:`qrscp.dicom.inflate`), so that it can be read the same way.
"""
from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from typing import BinaryIO


from qrscp.dicom import dictionary, uids
from qrscp.dicom.elements import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STANDARD_VRS,
    Encoding,
    raw_bytes,
    raw_text,
)
from qrscp.dicom.inflate import inflate_pieces
from qrscp.dicom.reader import BytesSource, DataSetError, FileSource, Reader, Source

PREAMBLE = bytes(128) + b"DICM"

TRANSFER_SYNTAX_UID = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
#: How much of a data set is read first to find its SOP UIDs.
_FIRST_READ = 1 << 16

#: The transfer syntaxes whose data set is deflated (PS3.5 §A.5; JPIP Referenced Deflate).
DEFLATED_TRANSFER_SYNTAXES = frozenset((uids.DEFLATED_EXPLICIT_VR_LE, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"))


# -- writing ----------------------------------------------------------------------------------------------

def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"UN", b"OW", b"SQ", b"UT"):
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded_uid(uid: str) -> bytes:
    raw = raw_bytes(uid)
    return raw + b"\0" if len(raw) % 2 else raw


def _padded_text(text: str) -> bytes:
    raw = raw_bytes(text)
    return raw + b" " if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae_title: str) -> bytes:
    """Preamble, ``DICM`` and the group 0002 of a file (PS3.10 §7.1), with SourceApplicationEntityTitle."""
    body = b"".join((
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _padded_uid(sop_class_uid)),
        _meta_element(0x0003, b"UI", _padded_uid(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _padded_uid(transfer_syntax)),
        _meta_element(0x0012, b"UI", _padded_uid(uids.IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", _padded_text(uids.IMPLEMENTATION_VERSION_NAME)),
        _meta_element(0x0016, b"AE", _padded_text(source_ae_title)) if source_ae_title else b"",
    ))
    return PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<L", len(body))) + body


# -- reading ----------------------------------------------------------------------------------------------

def _known_tag(group: int, element: int) -> bool:
    """True if DCMTK's data dictionary knows the tag without a private creator."""
    if element == 0 or (group % 2 and 0x0010 <= element <= 0x00FF):
        return True
    if group % 2:
        return False
    try:
        dictionary.entry((group << 16) | element)
    except KeyError:
        return False
    return True


def detect_transfer_syntax(head: bytes) -> str:
    """The transfer syntax of a data set without meta information, from its first 6 bytes, as DCMTK guesses.

    Explicit VR if bytes 4-5 are a VR; big endian if only the big endian reading of the first tag is in the
    data dictionary, or if both are and only the big endian group is below 0100.
    """
    if len(head) < 6:
        raise DataSetError("data set too short to detect its transfer syntax")
    little = struct.unpack_from("<HH", head)
    big = struct.unpack_from(">HH", head)
    explicit = head[4:6].decode("latin-1") in STANDARD_VRS
    known_little, known_big = _known_tag(*little), _known_tag(*big)
    if known_little and known_big:
        big_endian = little[0] > 0xFF and big[0] <= 0xFF
    else:
        big_endian = known_big and not known_little
    if not big_endian:
        return uids.EXPLICIT_VR_LE if explicit else uids.IMPLICIT_VR_LE
    if not explicit:
        raise DataSetError("data set in implicit VR big endian, which is not a DICOM transfer syntax")
    return uids.EXPLICIT_VR_BE


#: How much of a file is read at once for its meta information (which is longer only with large private
#: group 0002 elements: then more is read).
_META_READ = 1 << 12
_META_HEADER = struct.Struct("<HH2sH")


def read_meta(source: Source) -> tuple[int, dict[int, bytes]]:
    """Where the data set starts in a file, and its group 0002 elements (tag -> raw value).

    A file may lack the preamble (the meta information then starts at 0) or the meta information
    altogether (written with ``-F``: the data set starts at 0).
    """
    data = source.read(0, min(source.size, _META_READ))
    if len(data) >= 132 and data[128:132] == b"DICM":
        pos = 132
    elif data[:2] == b"\x02\x00" and len(data) >= 8:
        pos = 0
    else:
        return 0, {}
    meta: dict[int, bytes] = {}
    while True:
        if pos + 12 > len(data) < source.size:     # what follows may lie beyond what was read
            data = source.read(0, min(source.size, max(2 * len(data), pos + 12)))
        if pos + 8 > len(data) or data[pos:pos + 2] != b"\x02\x00":
            return pos, meta
        _group, element, vr, length = _META_HEADER.unpack_from(data, pos)
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            if pos + 12 > len(data):
                raise DataSetError(f"data set truncated at offset {pos + 8}")
            length = struct.unpack_from("<L", data, pos + 8)[0]
            pos += 12
        else:
            pos += 8
        if length == 0xFFFFFFFF:
            raise DataSetError("undefined length in the file meta information")
        if pos + length > len(data):
            if pos + length > source.size:
                raise DataSetError(f"data set truncated at offset {pos}")
            data = source.read(0, pos + length)
        meta[0x00020000 | element] = data[pos:pos + length]
        pos += length


def _uid(value: bytes | None) -> str:
    return raw_text(value).strip(" \0") if value else ""


def dataset_sop_uids(source: Source, transfer_syntax: str, start: int = 0) -> tuple[str, str]:
    """SOP Class and Instance UID of the data set at ``start`` of ``source`` (parsed up to the SOP Instance
    UID; ``""`` where absent). Raises DataSetError if that part does not parse."""
    dataset = Reader(source, Encoding.of(transfer_syntax)).read(start, stop_after=SOP_INSTANCE_UID)
    values = {element.tag: element.value for element in dataset.elements}
    return _uid(values.get(SOP_CLASS_UID)), _uid(values.get(SOP_INSTANCE_UID))


def head_sop_uids(head: bytes, transfer_syntax: str) -> tuple[str, str]:
    """SOP Class and Instance UID from ``head``, the first bytes of a data set encoded in
    ``transfer_syntax`` (a deflated one inflated no further than :data:`_FIRST_READ` bytes). Raises
    DataSetError if that part does not parse."""
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        pieces: list[bytes] = []
        try:
            for piece in inflate_pieces((head,), 1 << 40):
                pieces.append(piece)
                if sum(map(len, pieces)) >= _FIRST_READ:
                    break
        except ValueError:
            if not pieces:
                raise DataSetError("the deflated data set does not inflate") from None
        head = b"".join(pieces)[:_FIRST_READ]
    return dataset_sop_uids(BytesSource(head), transfer_syntax)


@dataclass(frozen=True)
class StoredFile:
    """Where the data set of a stored file is, and how it is encoded."""

    path: str
    transfer_syntax: str        # from the meta header; for a file without one (-F), detected as DCMTK does
    dataset_offset: int         # where the data set starts in the file
    sop_class_uid: str
    sop_instance_uid: str


def read_stored_file(path: str, file: BinaryIO | None = None) -> StoredFile:
    """Where the data set of the file ``path`` starts, its transfer syntax and SOP UIDs.

    Reads the preamble and meta information (through ``file`` if the caller has it open); the data set
    is read only for what the meta information lacks (files written with ``-F``: transfer syntax detected
    as DCMTK does, SOP UIDs from the data set). Raises OSError if the file cannot be read, DataSetError
    (a ValueError) if it is not a DICOM file.
    """
    opened = file if file is not None else open(path, "rb")
    try:
        source = FileSource(opened, window=_META_READ)   # the meta information, not the whole file
        dataset_offset, meta = read_meta(source)
        transfer_syntax = _uid(meta.get(TRANSFER_SYNTAX_UID))
        if not transfer_syntax:
            transfer_syntax = detect_transfer_syntax(source.read(dataset_offset, min(6, source.size - dataset_offset)))
        sop_class_uid = _uid(meta.get(MEDIA_STORAGE_SOP_CLASS_UID))
        sop_instance_uid = _uid(meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID))
        if not (sop_class_uid and sop_instance_uid):
            if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
                head = source.read(dataset_offset, min(_FIRST_READ, source.size - dataset_offset))
                sop_class_uid, sop_instance_uid = head_sop_uids(head, transfer_syntax)
            else:
                sop_class_uid, sop_instance_uid = dataset_sop_uids(source, transfer_syntax, dataset_offset)
    finally:
        if file is None:
            opened.close()
    if not (sop_class_uid and sop_instance_uid):
        raise DataSetError(f"{path}: no SOP Class UID or SOP Instance UID")
    return StoredFile(path, transfer_syntax, dataset_offset, sop_class_uid, sop_instance_uid)


def open_dataset(file: BinaryIO | int, offset: int, transfer_syntax: str, limit: int,
                 directory: str | None = None) -> tuple[Source, int]:
    """A source for the data set at ``offset`` of ``file``, and where it starts in that source.

    A deflated data set is inflated (at most ``limit`` bytes, else InflateLimitExceeded) into an anonymous
    temporary file in ``directory``, which goes when the source does.
    """
    if transfer_syntax not in DEFLATED_TRANSFER_SYNTAXES:
        return FileSource(file), offset
    source = FileSource(file, offset)
    spool = tempfile.TemporaryFile(dir=directory)
    for piece in inflate_pieces(source.chunks(0, source.size), limit):
        spool.write(piece)
    spool.flush()
    return _SpooledSource(spool), 0


class _SpooledSource(FileSource):
    """A file source over an anonymous temporary file that it keeps open while it lives."""

    def __init__(self, spool: BinaryIO) -> None:
        super().__init__(spool)
        self._spool = spool

    def __del__(self) -> None:
        self._spool.close()

