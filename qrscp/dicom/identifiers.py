"""Identifiers (the data sets of C-FIND, C-MOVE and C-GET messages) to and from the bytes of a transfer syntax.

Identifiers are decoded by the data-set reader without value conversion: the matching code reads the
raw bytes of each key, as DCMTK's ``getString()`` does. A deflated identifier may inflate to at most
:data:`MAX_INFLATED_IDENTIFIER` bytes.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from qrscp.dicom import uids
from qrscp.dicom.elements import LONG_VRS, SWAP_WIDTH, DataSet, Element, Encoding
from qrscp.dicom.inflate import inflate
from qrscp.dicom.reader import read_dataset
from qrscp.dicom.writer import Writer

#: The most a deflated identifier may inflate to.
MAX_INFLATED_IDENTIFIER = 1 << 24
#: The most elements (and items) an identifier may have: real ones have a few dozen.
MAX_IDENTIFIER_ELEMENTS = 100_000


class Identifier(DataSet):
    """A decoded identifier: its top-level elements with their values as received (raw bytes)."""


def inflate_identifier(data: bytes) -> bytes:
    """A deflated identifier, inflated (ValueError if it does not inflate, or to more than 16 MiB)."""
    return inflate(data, MAX_INFLATED_IDENTIFIER, "identifier")


def decode_identifier(data: bytes, transfer_syntax: str) -> Identifier:
    """The identifier ``data`` received on a context with ``transfer_syntax``. Raises ValueError if malformed."""
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        data = inflate_identifier(data)
    dataset = read_dataset(data, Encoding.of(transfer_syntax), max_elements=MAX_IDENTIFIER_ELEMENTS)
    return Identifier(dataset.elements, dataset.encoding)


def make_identifier(elements: Iterable[tuple[int, str, bytes]]) -> Identifier:
    """An identifier of the given (tag, VR, value) elements; values are padded to an even length."""
    made = []
    for tag, vr, value in sorted(elements):
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        made.append(Element(tag, vr, value, 0, len(value)))
    return Identifier(made)


def _encode_flat(identifier: Identifier, encoding: Encoding) -> bytes | None:
    """The lean encoding of an identifier of short, even, loaded values (every C-FIND response); None
    for anything else."""
    order = encoding.order
    header = struct.Struct(order + ("HHL" if encoding.implicit else "HH2sH"))
    parts = []
    for element in identifier.elements:
        value = element.value
        if value is None or element.items is not None or element.fragments is not None or len(value) % 2 \
                or len(value) > 0xFFFF or element.vr in LONG_VRS or (not encoding.little and element.vr in SWAP_WIDTH):
            return None
        if encoding.implicit:
            parts.append(header.pack(element.tag >> 16, element.tag & 0xFFFF, len(value)))
        else:
            parts.append(header.pack(element.tag >> 16, element.tag & 0xFFFF, element.vr.encode(), len(value)))
        parts.append(value)
    return b"".join(parts)


def encode_identifier(identifier: DataSet, transfer_syntax: str) -> bytes:
    """``identifier`` encoded for a context with ``transfer_syntax``, its values as they are."""
    encoding = Encoding.of(transfer_syntax)
    data = _encode_flat(identifier, encoding)   # type: ignore[arg-type]
    if data is None:
        syntax = uids.EXPLICIT_VR_LE if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE else transfer_syntax
        data = Writer(syntax, group_length="recalc", normalise_strings=False).encode(identifier.elements)
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data
