"""Identifiers (the data sets of C-FIND/C-MOVE/C-GET messages) to and from the bytes of a transfer syntax.

Identifiers are decoded without value conversion: the matching code reads the raw bytes of each key, as
DCMTK's ``getString()`` does.
"""
from __future__ import annotations

import struct
import zlib
from io import BytesIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from qrscp.dicom import uids
from qrscp.dicom.fileformat import check_dataset

#: A decoded identifier: its elements with their values as received (raw bytes).
Identifier = Dataset


def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of an uncompressed or compressed transfer syntax."""
    if transfer_syntax == uids.IMPLICIT_VR_LE:
        return True, True
    if transfer_syntax == uids.EXPLICIT_VR_BE:
        return False, False
    return False, True


#: The most a deflated identifier may inflate to.
MAX_INFLATED_IDENTIFIER = 1 << 24


def inflate_identifier(data: bytes) -> bytes:
    """A deflated identifier, inflated (ValueError if it does not inflate, or to more than 16 MiB)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, MAX_INFLATED_IDENTIFIER)
    except zlib.error as error:
        raise ValueError(f"identifier does not inflate: {error}") from error
    if inflater.unconsumed_tail:
        raise ValueError(f"identifier inflates to more than {MAX_INFLATED_IDENTIFIER} bytes")
    return inflated


def decode_identifier(data: bytes, transfer_syntax: str) -> Dataset:
    """The identifier ``data`` received on a context with ``transfer_syntax``. Raises ValueError if malformed."""
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        data = inflate_identifier(data)
    implicit, little = _encoding(transfer_syntax)
    check_dataset(data, implicit, little)  # pydicom would accept a truncated identifier
    try:
        return read_dataset(BytesIO(data), implicit, little)
    except Exception as error:  # pydicom raises many kinds for broken input
        raise ValueError(f"identifier does not parse: {error}") from error


#: VRs whose values are byte strings with a 2-byte length in explicit VR (all the query keys are such)
_SHORT_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI"})


def _encode_strings(dataset: Dataset, implicit: bool, little: bool) -> bytes | None:
    """The lean encoding of a data set of raw string elements (C-FIND responses), None for anything else."""
    order = "<" if little else ">"
    header = struct.Struct(order + ("HHL" if implicit else "HH2sH"))
    parts = []
    for tag in sorted(dataset.keys()):
        element = dataset.get_item(tag)
        value = element.value
        if not isinstance(element, RawDataElement) or element.VR not in _SHORT_STRING_VRS \
                or not isinstance(value, bytes) or len(value) % 2 or len(value) > 0xFFFF:
            return None
        if implicit:
            parts.append(header.pack(tag.group, tag.element, len(value)))
        else:
            parts.append(header.pack(tag.group, tag.element, element.VR.encode(), len(value)))
        parts.append(value)
    return b"".join(parts)


def encode_identifier(dataset: Dataset, transfer_syntax: str) -> bytes:
    """``dataset`` encoded for a context with ``transfer_syntax``."""
    implicit, little = _encoding(transfer_syntax)
    data = _encode_strings(dataset, implicit, little)
    if data is None:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR = implicit
        buffer.is_little_endian = little
        write_dataset(buffer, dataset)
        data = buffer.getvalue()
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data
