"""DICOM files as stored in a storage area: file meta information, output options, conversions.

A received data set is written as received (bit for bit) unless an output option asks for a conversion
(``+te/+tb/+ti/+td``, ``+g/-g``, ``-e``, ``+p``, ``-u``, ``+cl``): decoding and re-encoding is the
exception, not the receive path. A stored file is likewise sent as stored unless the peer accepted
another transfer syntax for it (ref §6.4).

Conversions parse the data set into a tree of elements whose values are kept as bytes (binary values in
little endian order) and write it again in the target encoding, as DCMTK's ``dcmconv`` with the same
options does (checked against DCMTK 3.6.7):

* values are copied byte for byte; only binary VRs (US, OW, FL, AT, ...) are byte-swapped for big endian;
* elements are written in ascending tag order; a repeated tag keeps its first element;
* implicit VR input takes its VRs from the data dictionary; the ambiguous ones are resolved as DCMTK
  does (``_resolve_ambiguous_vrs``); unknown tags become UN; a UN element of undefined length is a
  sequence in implicit VR little endian (CP-246) and is written as SQ;
* group lengths (``+g=``/``+g``/``-g``) and explicit or undefined sequence/item lengths (``+e/-e``)
  are applied to every data set and item; existing DataSetTrailingPadding (FFFC,FFFC) elements are
  dropped, and ``+p f i`` adds new ones after the group lengths are computed;
* ``-u`` writes the post-1993 VRs (UN, UT, UC, UR, OF, OD, OL, OV, SV, UV) as OB, their values in
  little endian order whatever the transfer syntax;
* deflated output is a raw deflate stream (no zlib header) of the explicit VR little endian encoding.

pydicom is used for its data dictionary only: its reader accepts truncated data with a warning and
guesses the VR encoding, and its writer re-encodes text values and never writes group lengths of
groups above 0006, so neither can produce what DCMTK writes.
"""
from __future__ import annotations

import array
import io
import struct
import zlib
from dataclasses import dataclass
from itertools import groupby
from typing import BinaryIO

from pydicom.datadict import get_entry, private_dictionary_VR
from pydicom.uid import UID

from qrscp.dicom import uids

PREAMBLE = bytes(128) + b"DICM"


@dataclass(frozen=True)
class OutputFormat:
    """How received data sets are written (the storage output options)."""

    write_file: bool = True             # +F (meta header) / -F
    write_xfer: str | None = None       # None: the received transfer syntax (+t=)
    bit_preserving: bool = False        # +B
    group_length: str = "recalc"        # +g= / +g ('create') / -g ('remove')
    length_explicit: bool = True        # +e / -e
    padding: tuple[int, int] | None = None   # +p file-pad item-pad
    enable_new_vr: bool = True          # +u / -u
    compression_level: int | None = None     # +cl

    @classmethod
    def from_options(cls, options) -> "OutputFormat":
        """The output format the command-line options select."""
        return cls(write_file=options.write_file, write_xfer=options.write_xfer,
                   bit_preserving=options.bit_preserving, group_length=options.group_length,
                   length_explicit=options.length_explicit, padding=options.padding,
                   enable_new_vr=options.enable_new_vr, compression_level=options.compression_level)

    def target_syntax(self, received: str) -> str:
        """The transfer syntax a data set received in ``received`` is stored in.

        Compressed data is stored in its own transfer syntax: there are no codecs (ref §7).
        """
        if self.bit_preserving or self.write_xfer is None or not is_uncompressed(received):
            return received
        return self.write_xfer

    def needs_conversion(self, received: str) -> bool:
        """True if data sets received in ``received`` must be decoded and re-encoded before writing."""
        if self.bit_preserving:
            return False
        return (self.target_syntax(received) != received or self.group_length != "recalc"
                or not self.length_explicit or self.padding is not None or not self.enable_new_vr
                or (self.compression_level is not None and received == uids.DEFLATED_EXPLICIT_VR_LE))


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"UN", b"OW", b"SQ", b"UT"):
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded_uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _padded_text(text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae_title: str) -> bytes:
    """Preamble, ``DICM`` and the group 0002 of a file (PS3.10 §7.1), with SourceApplicationEntityTitle."""
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _padded_uid(sop_class_uid)),
        _element(0x0003, b"UI", _padded_uid(sop_instance_uid)),
        _element(0x0010, b"UI", _padded_uid(transfer_syntax)),
        _element(0x0012, b"UI", _padded_uid(uids.IMPLEMENTATION_CLASS_UID)),
        _element(0x0013, b"SH", _padded_text(uids.IMPLEMENTATION_VERSION_NAME)),
        _element(0x0016, b"AE", _padded_text(source_ae_title)) if source_ae_title else b"",
    ))
    return PREAMBLE + _element(0x0000, b"UL", struct.pack("<L", len(body))) + body


# ---------------------------------------------------------------------------------------------------
# Transfer syntaxes and VRs

#: (implicit VR, little endian) of the transfer syntaxes that can be converted into one another.
_ENCODINGS: dict[str, tuple[bool, bool]] = {
    uids.IMPLICIT_VR_LE: (True, True),
    uids.EXPLICIT_VR_LE: (False, True),
    uids.EXPLICIT_VR_BE: (False, False),
    uids.DEFLATED_EXPLICIT_VR_LE: (False, True),
}
#: Encapsulated (compressed) transfer syntaxes all encode the data set in explicit VR little endian.
_ENCAPSULATED_ENCODING = (False, True)


def is_uncompressed(transfer_syntax: str) -> bool:
    """True for the syntaxes qrscp converts between: implicit/explicit little endian, big endian, deflated."""
    return transfer_syntax in _ENCODINGS


def _syntax_name(transfer_syntax: str) -> str:
    name = UID(transfer_syntax).name
    return transfer_syntax if name == transfer_syntax else f"{name} ({transfer_syntax})"


ITEM = 0xFFFEE000
ITEM_DELIMITATION = 0xFFFEE00D
SEQUENCE_DELIMITATION = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
DATASET_TRAILING_PADDING = 0xFFFCFFFC
UNDEFINED_LENGTH = 0xFFFFFFFF

_STANDARD_VRS = frozenset((
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"))
#: VRs with a reserved field and a 32-bit length in explicit VR (PS3.5 §7.1.2).
_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
#: Size of the numbers that are byte-swapped between little and big endian.
_SWAP_WIDTH = {"AT": 2, "OW": 2, "SS": 2, "US": 2, "FL": 4, "OF": 4, "OL": 4, "SL": 4, "UL": 4,
               "FD": 8, "OD": 8, "OV": 8, "SV": 8, "UV": 8}
#: VRs written as OB with ``--disable-new-vr``.
_NEW_VRS = frozenset(("UN", "UT", "UC", "UR", "OF", "OD", "OL", "OV", "SV", "UV"))
#: VRs whose values are rewritten as DCMTK writes them (``_dcmtk_string``).
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                         "UI", "UR", "UT"))
_ARRAY_TYPES = {array.array(code).itemsize: code for code in "HIQ"}

#: "US or SS" elements that are SS when PixelRepresentation (0028,0103) in the same item is 1; the other
#: "US or SS" elements read in implicit VR are US (DCMTK 3.6.7, verified with dcmconv).
_SIGNED_IF_PIXEL_REPRESENTATION = frozenset((
    0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280120, 0x00280121, 0x00283002,
    0x00409211, 0x00409216, 0x00603004, 0x00603006))
PIXEL_REPRESENTATION = 0x00280103
WAVEFORM_BITS_ALLOCATED = 0x54001004
WAVEFORM_DATA = 0x54001010


def _dcmtk_string(vr: str, value: bytes) -> bytes:
    """A string value as DCMTK writes it back (verified with dcmconv).

    UI: white space removed, trailing NULs stripped, padded with NUL to even length. Other string VRs: an
    odd-length value gets a NUL appended; an even-length one loses its trailing spaces and is padded with
    one space to even length.
    """
    if vr == "UI":
        value = value.translate(None, b" \t\n\v\f\r").rstrip(b"\0")
        return value + b"\0" if len(value) % 2 else value
    if len(value) % 2:
        return value + b"\0"
    value = value.rstrip(b" ")
    return value + b" " if len(value) % 2 else value


def _swap(data: bytes, width: int) -> bytes:
    """``data`` with every ``width``-byte number byte-swapped (a trailing partial number is kept)."""
    whole = len(data) - len(data) % width
    numbers = array.array(_ARRAY_TYPES[width], data[:whole])
    numbers.byteswap()
    return numbers.tobytes() + data[whole:]


# ---------------------------------------------------------------------------------------------------
# The element tree

@dataclass
class Element:
    """One data element as parsed (:func:`parse_dataset`); binary values are held in little endian byte
    order. ``length`` is the encoded length of a sequence and ``item_lengths`` those of its items (None:
    undefined length); of any other element, ``len(value)``."""

    tag: int
    vr: str
    value: bytes = b""
    items: list[list[Element]] | None = None    # SQ: the items' elements
    fragments: list[bytes] | None = None        # encapsulated pixel data: offset table and fragments
    length: int | None = None                   # SQ only
    item_lengths: list[int | None] | None = None  # SQ only


def _implicit_vr(tag: int, creators: dict[int, str]) -> str:
    """The VR of ``tag`` in implicit VR: from the data dictionary (private ones by their creator)."""
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0:
        return "UL"
    if group % 2:
        if 0x0010 <= element <= 0x00FF:
            return "LO"
        creator = creators.get((group << 8) | (element >> 8))
        if creator:
            try:
                return private_dictionary_VR(tag, creator)
            except KeyError:
                pass
        return "UN"
    try:
        return get_entry(tag)[0]
    except KeyError:
        return "UN"


def _us_value(elements: list[Element], tag: int) -> int | None:
    for element in elements:
        if element.tag == tag and len(element.value) >= 2:
            return struct.unpack_from("<H", element.value)[0]
    return None


def _resolve_ambiguous_vrs(elements: list[Element]) -> None:
    """Give the elements of one data set read in implicit VR the VR DCMTK gives them."""
    pixel_representation = _us_value(elements, PIXEL_REPRESENTATION)
    waveform_bits = _us_value(elements, WAVEFORM_BITS_ALLOCATED)
    for element in elements:
        if " or " not in element.vr:
            continue
        if element.vr == "US or SS":
            signed = element.tag in _SIGNED_IF_PIXEL_REPRESENTATION and pixel_representation == 1
            element.vr = "SS" if signed else "US"
        elif element.vr == "OB or OW":
            words = (element.tag == PIXEL_DATA or element.tag & 0xFF00FFFF == 0x60003000
                     or (element.tag == WAVEFORM_DATA and waveform_bits is not None and waveform_bits > 8))
            element.vr = "OW" if words else "OB"
        else:                       # "US or OW", "US or SS or OW": lookup table data
            element.vr = "OW"


class _Parser:
    """Parses an encoded data set into ``Element`` lists, strictly within the buffer's bounds."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.buffer = memoryview(data)
        self.implicit = implicit
        self.little = little
        self.endian = "<" if little else ">"

    def _header(self, pos: int, end: int) -> tuple[int, int]:
        """The tag and the 32-bit length of an item or delimitation item at ``pos``."""
        if end - pos < 8:
            raise ValueError(f"data set truncated at offset {pos}")
        group, element, length = struct.unpack_from(self.endian + "HHL", self.buffer, pos)
        return (group << 16) | element, length

    def dataset(self, pos: int, end: int, in_item: bool = False, implicit: bool | None = None,
                stop_after: int | None = None) -> tuple[list[Element], int]:
        """The elements from ``pos`` up to ``end`` or, ``in_item``, an item delimitation item.

        Returns the elements in tag order and the position after them. ``stop_after`` ends the data set
        before the first element whose tag is greater.
        """
        implicit = self.implicit if implicit is None else implicit
        elements: dict[int, Element] = {}
        creators: dict[int, str] = {}
        while pos < end:
            tag, length = self._header(pos, end)
            if tag == ITEM_DELIMITATION and in_item:
                return self._finish(elements, implicit), pos + 8
            if stop_after is not None and tag > stop_after:
                break
            if tag >> 16 == 0xFFFE:
                raise ValueError(f"unexpected ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {pos}")
            if implicit:
                vr, pos = _implicit_vr(tag, creators), pos + 8
            else:
                vr = bytes(self.buffer[pos + 4:pos + 6]).decode("latin-1")
                if vr in _STANDARD_VRS and vr not in _LONG_VRS:
                    length = struct.unpack_from(self.endian + "H", self.buffer, pos + 6)[0]
                    pos += 8
                else:                   # a non-standard VR is unknown, with a 32-bit length (as DCMTK)
                    _, length = self._header(pos + 4, end)
                    pos += 12
                    vr = vr if vr in _STANDARD_VRS else "UN"
            element, pos = self._value(tag, vr, length, pos, end, implicit)
            if implicit and element.vr == "LO" and tag >> 16 & 1 and tag & 0xFFFF <= 0x00FF:
                creators[(tag >> 16 << 8) | (tag & 0xFF)] = element.value.decode("latin-1").strip(" \0")
            elements.setdefault(tag, element)
        if in_item and stop_after is None:
            raise ValueError("item without item delimitation item")
        return self._finish(elements, implicit), pos

    @staticmethod
    def _finish(elements: dict[int, Element], implicit: bool) -> list[Element]:
        ordered = [elements[tag] for tag in sorted(elements)]
        if implicit:
            _resolve_ambiguous_vrs(ordered)
        return ordered

    def _value(self, tag: int, vr: str, length: int, pos: int, end: int,
               implicit: bool) -> tuple[Element, int]:
        """The element whose value starts at ``pos``, and the position after it."""
        if length == UNDEFINED_LENGTH:
            if tag == PIXEL_DATA and vr in ("OB", "OW", "OB or OW", "UN"):
                fragments, pos = self._fragments(pos, end)
                return Element(tag, "OB", fragments=fragments), pos
            if vr in ("SQ", "UN") or implicit:   # UN: implicit VR little endian (CP-246)
                items, lengths, pos = self._items(pos, None, end, implicit or vr == "UN")
                return Element(tag, "SQ", items=items, item_lengths=lengths), pos
            raise ValueError(f"undefined length for ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}")
        if length > end - pos:
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) of length {length} exceeds the data set")
        if vr == "SQ":
            try:
                items, lengths, _ = self._items(pos, pos + length, pos + length, implicit)
            except ValueError:
                if not (implicit and tag >> 16 & 1):
                    raise
                return Element(tag, "UN", bytes(self.buffer[pos:pos + length])), pos + length  # not a SQ
            return Element(tag, "SQ", items=items, length=length, item_lengths=lengths), pos + length
        value = bytes(self.buffer[pos:pos + length])
        if not self.little and vr in _SWAP_WIDTH:
            value = _swap(value, _SWAP_WIDTH[vr])
        return Element(tag, vr, value), pos + length

    def _items(self, pos: int, stop: int | None, end: int,
               implicit: bool) -> tuple[list[list[Element]], list[int | None], int]:
        """The items of a sequence up to ``stop`` or, if None, its sequence delimitation item, and their
        lengths (None: undefined)."""
        items = []
        lengths: list[int | None] = []
        while stop is None or pos < stop:
            tag, length = self._header(pos, end)
            pos += 8
            if tag == SEQUENCE_DELIMITATION and stop is None:
                return items, lengths, pos
            if tag != ITEM:
                raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) in a sequence at offset {pos - 8}")
            if length == UNDEFINED_LENGTH:
                elements, pos = self.dataset(pos, end, in_item=True, implicit=implicit)
                lengths.append(None)
            else:
                if length > end - pos:
                    raise ValueError(f"item of length {length} exceeds its sequence at offset {pos - 8}")
                elements, _ = self.dataset(pos, pos + length, implicit=implicit)
                pos += length
                lengths.append(length)
            items.append(elements)
        return items, lengths, pos

    def _fragments(self, pos: int, end: int) -> tuple[list[bytes], int]:
        """The items of encapsulated pixel data up to its sequence delimitation item."""
        fragments = []
        while True:
            tag, length = self._header(pos, end)
            pos += 8
            if tag == SEQUENCE_DELIMITATION:
                return fragments, pos
            if tag != ITEM or length == UNDEFINED_LENGTH or length > end - pos:
                raise ValueError(f"bad pixel data fragment at offset {pos - 8}")
            fragments.append(bytes(self.buffer[pos:pos + length]))
            pos += length


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    except zlib.error as error:
        raise ValueError(f"deflated data set does not inflate: {error}") from error


def check_dataset(data: bytes, implicit: bool, little: bool) -> None:
    """Raise ValueError unless ``data`` parses completely, strictly within its bounds, as a data set."""
    try:
        _Parser(data, implicit, little).dataset(0, len(data))
    except RecursionError:
        raise ValueError("data set nested too deeply") from None


def parse_dataset(data: bytes, transfer_syntax: str) -> list[Element]:
    """The top-level elements of a data set encoded in ``transfer_syntax``, in tag order (ValueError if
    it does not parse)."""
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        data = _inflate(data)
    implicit, little = _ENCODINGS.get(transfer_syntax, _ENCAPSULATED_ENCODING)
    elements, _ = _Parser(data, implicit, little).dataset(0, len(data))
    return elements


# ---------------------------------------------------------------------------------------------------
# Encoding

class _Writer:
    """Encodes element trees in one transfer syntax with DCMTK's writing options."""

    def __init__(self, transfer_syntax: str, *, group_length: str = "recalc", length_explicit: bool = True,
                 strip_padding: bool = True, padding: tuple[int, int] | None = None, enable_new_vr: bool = True,
                 compression_level: int | None = None) -> None:
        self.transfer_syntax = transfer_syntax
        self.group_length = group_length            # 'recalc' | 'create' | 'remove'
        self.length_explicit = length_explicit
        self.strip_padding = strip_padding          # drop existing DataSetTrailingPadding elements
        self.file_pad, self.item_pad = padding or (0, 0)
        self.enable_new_vr = enable_new_vr
        self.compression_level = 6 if compression_level is None else compression_level   # zlib's default
        self.implicit, self.little = _ENCODINGS.get(transfer_syntax, _ENCAPSULATED_ENCODING)
        self.endian = "<" if self.little else ">"

    def encode(self, elements: list[Element], meta_length: int) -> bytes:
        """The data set ``elements``; with file padding, ``meta_length`` bytes precede it in the file."""
        data = self._dataset(elements, self.file_pad, meta_length)
        if self.transfer_syntax != uids.DEFLATED_EXPLICIT_VR_LE:
            return data
        deflater = zlib.compressobj(self.compression_level, zlib.DEFLATED, -zlib.MAX_WBITS)
        return deflater.compress(data) + deflater.flush()

    def _dataset(self, elements: list[Element], pad_unit: int, preceding: int) -> bytes:
        """One data set or item content: group lengths, then padding to a multiple of ``pad_unit``."""
        present_lengths = set()
        encoded: list[tuple[int, bytes]] = []
        for element in elements:
            group = element.tag >> 16
            if element.tag & 0xFFFF == 0:
                present_lengths.add(group)
            elif element.tag != DATASET_TRAILING_PADDING or not self.strip_padding:
                encoded.append((group, self._element(element)))
        parts = []
        by_group = {group: [data for _, data in members] for group, members in groupby(encoded, lambda x: x[0])}
        if self.group_length == "recalc":
            groups = sorted(by_group.keys() | present_lengths)
        else:
            groups = list(by_group)
        for group in groups:
            members = by_group.get(group, [])
            if self.group_length == "create" or (self.group_length == "recalc" and group in present_lengths):
                length = struct.pack(self.endian + "L", sum(map(len, members)))
                parts.append(self._header(group << 16, "UL", 4) + length)
            parts.extend(members)
        data = b"".join(parts)
        if pad_unit:
            data += self._padding(pad_unit, preceding + len(data))
        return data

    def _padding(self, unit: int, length: int) -> bytes:
        """The DataSetTrailingPadding that makes ``length`` a multiple of ``unit`` (none if it is one)."""
        missing = unit - length % unit
        if missing == unit:
            return b""
        header = 8 if self.implicit else 12
        while missing < header:
            missing += unit
        return self._header(DATASET_TRAILING_PADDING, "OB", missing - header) + bytes(missing - header)

    def _header(self, tag: int, vr: str, length: int) -> bytes:
        e = self.endian
        if self.implicit:
            return struct.pack(e + "HHL", tag >> 16, tag & 0xFFFF, length)
        if vr in _LONG_VRS:
            return struct.pack(e + "HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
        return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def _delimited(self, tag: int, vr: str, content: bytes, delimiter: int) -> bytes:
        """``content`` behind a header with an explicit length or, with ``-e``, the undefined length."""
        length = len(content) if self.length_explicit else UNDEFINED_LENGTH
        if vr:
            header = self._header(tag, vr, length)
        else:                           # an item: tag and 32-bit length in every encoding
            header = struct.pack(self.endian + "HHL", tag >> 16, tag & 0xFFFF, length)
        if self.length_explicit:
            return header + content
        return header + content + struct.pack(self.endian + "HHL", 0xFFFE, delimiter & 0xFFFF, 0)

    def _element(self, element: Element) -> bytes:
        if element.items is not None:
            content = b"".join(self._delimited(ITEM, "", self._dataset(item, self.item_pad, 0), ITEM_DELIMITATION)
                               for item in element.items)
            return self._delimited(element.tag, "SQ", content, SEQUENCE_DELIMITATION)
        if element.fragments is not None:
            content = b"".join(struct.pack(self.endian + "HHL", 0xFFFE, 0xE000, len(fragment)) + fragment
                               for fragment in element.fragments)
            return (self._header(element.tag, element.vr, UNDEFINED_LENGTH) + content
                    + struct.pack(self.endian + "HHL", 0xFFFE, 0xE0DD, 0))
        vr = "OB" if not self.enable_new_vr and element.vr in _NEW_VRS else element.vr
        value = element.value
        if element.vr in _STRING_VRS:
            value = _dcmtk_string(element.vr, value)
        elif len(value) % 2:
            value += b"\0"
        if not self.implicit and vr not in _LONG_VRS and len(value) > 0xFFFF:
            vr = "UN"                   # PS3.5 §6.2.2: too long for a 16-bit length field
        if not self.little and vr in _SWAP_WIDTH:
            value = _swap(value, _SWAP_WIDTH[vr])
        return self._header(element.tag, vr, len(value)) + value


def convert_dataset(data: bytes, received_ts: str, fmt: OutputFormat, meta_length: int = 0) -> tuple[bytes, str]:
    """The data set ``data`` received in ``received_ts`` re-encoded as ``fmt`` asks, and its transfer syntax.

    ``data`` is the data set as received (deflated if ``received_ts`` is deflated). Compressed data keeps
    its transfer syntax (the other options still apply). ``meta_length`` is the number of bytes written
    before the data set in the file (preamble and meta header): ``+p`` pads the whole file (an odd alignment
    pads nothing and keeps the padding there is, as DCMTK does). Raises ValueError if ``data`` does not parse.
    """
    target = fmt.target_syntax(received_ts)
    odd_padding = fmt.padding is not None and (fmt.padding[0] % 2 == 1 or fmt.padding[1] % 2 == 1)
    writer = _Writer(target, group_length=fmt.group_length, length_explicit=fmt.length_explicit,
                     strip_padding=not odd_padding,     # DCMTK leaves padding alone if an alignment is odd
                     padding=None if odd_padding else fmt.padding, enable_new_vr=fmt.enable_new_vr,
                     compression_level=fmt.compression_level)
    return writer.encode(parse_dataset(data, received_ts), meta_length), target


# ---------------------------------------------------------------------------------------------------
# Stored files

@dataclass(frozen=True)
class StoredFile:
    """Where the data set of a stored file is, and how it is encoded."""

    path: str
    transfer_syntax: str        # from the meta header; for a file without one (-F), detected as DCMTK does
    dataset_offset: int         # where the data set starts in the file
    sop_class_uid: str
    sop_instance_uid: str


TRANSFER_SYNTAX_UID = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
#: How much of a file without usable meta information is read first to find its SOP UIDs.
_FIRST_READ = 1 << 16


def _known_tag(group: int, element: int) -> bool:
    """True if DCMTK's data dictionary knows the tag without a private creator."""
    if element == 0 or (group % 2 and 0x0010 <= element <= 0x00FF):
        return True
    if group % 2:
        return False
    try:
        get_entry((group << 16) | element)
    except KeyError:
        return False
    return True


def _detect_transfer_syntax(head: bytes) -> str:
    """The transfer syntax of a data set without meta information, from its first 6 bytes, as DCMTK guesses.

    Explicit VR if bytes 4-5 are a VR; big endian if only the big endian reading of the first tag is in the
    data dictionary, or if both are and only the big endian group is below 0100.
    """
    if len(head) < 6:
        raise ValueError("data set too short to detect its transfer syntax")
    little = struct.unpack_from("<HH", head)
    big = struct.unpack_from(">HH", head)
    explicit = head[4:6].decode("latin-1") in _STANDARD_VRS
    known_little, known_big = _known_tag(*little), _known_tag(*big)
    if known_little and known_big:
        big_endian = little[0] > 0xFF and big[0] <= 0xFF
    else:
        big_endian = known_big and not known_little
    if not big_endian:
        return uids.EXPLICIT_VR_LE if explicit else uids.IMPLICIT_VR_LE
    if not explicit:
        raise ValueError("data set in implicit VR big endian, which is not a DICOM transfer syntax")
    return uids.EXPLICIT_VR_BE


def _read_exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise ValueError("file meta information truncated")
    return data


def _read_meta(file: BinaryIO) -> dict[int, bytes]:
    """The group 0002 elements (explicit VR little endian) from the file position; stops before group 0002 ends."""
    meta = {}
    while True:
        header = file.read(8)
        if len(header) < 8 or struct.unpack_from("<H", header)[0] != 0x0002:
            file.seek(-len(header), 1)
            return meta
        tag = 0x00020000 | struct.unpack_from("<H", header, 2)[0]
        if header[4:6].decode("latin-1") in _LONG_VRS:
            length = struct.unpack("<L", _read_exactly(file, 4))[0]
        else:
            length = struct.unpack_from("<H", header, 6)[0]
        meta[tag] = _read_exactly(file, length)


def _uid(value: bytes | None) -> str:
    return value.decode("latin-1").strip(" \0") if value else ""


def _top_level_uids(data: bytes, transfer_syntax: str) -> tuple[str, str]:
    implicit, little = _ENCODINGS.get(transfer_syntax, _ENCAPSULATED_ENCODING)
    elements, _ = _Parser(data, implicit, little).dataset(0, len(data), stop_after=SOP_INSTANCE_UID)
    values = {element.tag: element.value for element in elements}
    return _uid(values.get(SOP_CLASS_UID)), _uid(values.get(SOP_INSTANCE_UID))


def dataset_sop_uids(head: bytes, transfer_syntax: str) -> tuple[str, str]:
    """SOP Class and Instance UID from ``head``, the first bytes of a data set encoded in
    ``transfer_syntax`` (parsed up to the SOP Instance UID); ValueError if that part does not parse."""
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        try:
            head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, _FIRST_READ)
        except zlib.error as error:
            raise ValueError(f"deflated data set does not inflate: {error}") from error
    try:
        return _top_level_uids(head, transfer_syntax)
    except RecursionError:
        raise ValueError("data set nested too deeply") from None


def _sop_uids(file: BinaryIO, transfer_syntax: str) -> tuple[str, str]:
    """SOP Class and Instance UID from the data set at the file position (read as far as needed)."""
    data = file.read(_FIRST_READ)
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LE:
        data = _inflate(data + file.read())
    elif len(data) == _FIRST_READ:
        try:
            return _top_level_uids(data, transfer_syntax)
        except ValueError:              # an element reaches beyond the first read
            data += file.read()
    return _top_level_uids(data, transfer_syntax)


def read_stored_file(path: str, content: bytes | None = None) -> StoredFile:
    """Where the data set of the file ``path`` starts, its transfer syntax and SOP UIDs.

    Reads the preamble and meta information only (from ``content`` when the caller already holds the
    file's bytes); the data set is read only for what the meta information lacks (files written with
    ``-F``: transfer syntax detected as DCMTK does, SOP UIDs from the data set).
    Raises OSError if the file cannot be read, ValueError if it is not a DICOM file.
    """
    with (open(path, "rb") if content is None else io.BytesIO(content)) as file:
        head = file.read(len(PREAMBLE))
        meta: dict[int, bytes] = {}
        dataset_offset = 0
        if head[128:132] == b"DICM" or head[:2] == b"\x02\x00":     # the latter: no preamble
            file.seek(len(PREAMBLE) if head[128:132] == b"DICM" else 0)
            meta = _read_meta(file)
            dataset_offset = file.tell()
        file.seek(dataset_offset)
        transfer_syntax = _uid(meta.get(TRANSFER_SYNTAX_UID))
        if not transfer_syntax:
            transfer_syntax = _detect_transfer_syntax(file.read(6))
            file.seek(dataset_offset)
        sop_class_uid = _uid(meta.get(MEDIA_STORAGE_SOP_CLASS_UID))
        sop_instance_uid = _uid(meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID))
        if not (sop_class_uid and sop_instance_uid):
            sop_class_uid, sop_instance_uid = _sop_uids(file, transfer_syntax)
    if not (sop_class_uid and sop_instance_uid):
        raise ValueError(f"{path}: no SOP Class UID or SOP Instance UID")
    return StoredFile(path, transfer_syntax, dataset_offset, sop_class_uid, sop_instance_uid)


def dataset_for_transfer(stored: StoredFile, data: bytes, target_ts: str) -> bytes:
    """The data set of ``stored`` (``data``: the file's bytes from its data set offset) encoded in ``target_ts``.

    Unchanged when ``target_ts`` is the stored transfer syntax; otherwise converted to one of the uncompressed
    syntaxes (implicit/explicit VR little endian, big endian, deflated) as DCMTK sends them (explicit lengths,
    group lengths recalculated, padding kept). Raises ValueError when it cannot be converted (there are no
    codecs: encapsulated pixel data keeps its syntax, and nothing is compressed).
    """
    if target_ts == stored.transfer_syntax:
        return data
    impossible = f"cannot convert {_syntax_name(stored.transfer_syntax)} to {_syntax_name(target_ts)}"
    if not is_uncompressed(target_ts):
        raise ValueError(impossible)
    elements = parse_dataset(data, stored.transfer_syntax)
    if not is_uncompressed(stored.transfer_syntax) and _has_encapsulated_data(elements):
        raise ValueError(impossible)
    return _Writer(target_ts, strip_padding=False).encode(elements, 0)


def _has_encapsulated_data(elements: list[Element]) -> bool:
    return any(element.fragments is not None
               or (element.items is not None and any(map(_has_encapsulated_data, element.items)))
               for element in elements)
