"""Data elements as this package holds them (PS3.5 §7): tags, VRs, encodings, and the element tree.

:class:`Element` is what :mod:`qrscp.dicom.reader` produces and :mod:`qrscp.dicom.writer` consumes.
Values are raw bytes, binary ones in little endian order whatever the encoding they came in; a value
that is large (pixel data, say) may be left where it is in the data it was read from (``value`` None,
``position`` and ``length`` say where), so that it is copied, never held.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING


from qrscp.dicom import dictionary, uids

if TYPE_CHECKING:
    from qrscp.dicom.reader import Source

ITEM = 0xFFFEE000
ITEM_DELIMITATION = 0xFFFEE00D
SEQUENCE_DELIMITATION = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
DATASET_TRAILING_PADDING = 0xFFFCFFFC
SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
PIXEL_REPRESENTATION = 0x00280103
WAVEFORM_BITS_ALLOCATED = 0x54001004
WAVEFORM_DATA = 0x54001010
UNDEFINED_LENGTH = 0xFFFFFFFF

#: The VRs of PS3.5 §6.2.
STANDARD_VRS = frozenset((
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"))
#: VRs with a reserved field and a 32-bit length in explicit VR (PS3.5 §7.1.2).
LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
#: VRs whose values are character strings.
STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"))
#: Size of the numbers that are byte-swapped between little and big endian.
SWAP_WIDTH = {"AT": 2, "OW": 2, "SS": 2, "US": 2, "FL": 4, "OF": 4, "OL": 4, "SL": 4, "UL": 4,
              "FD": 8, "OD": 8, "OV": 8, "SV": 8, "UV": 8}
#: VRs that DCMTK writes as OB with ``--disable-new-vr``.
NEW_VRS = frozenset(("UN", "UT", "UC", "UR", "OF", "OD", "OL", "OV", "SV", "UV"))

#: "US or SS" elements that are SS when PixelRepresentation (0028,0103) in the same item is 1; the other
#: "US or SS" elements read in implicit VR are US (DCMTK 3.6.7, verified with dcmconv).
_SIGNED_IF_PIXEL_REPRESENTATION = frozenset((
    0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280120, 0x00280121, 0x00283002,
    0x00409211, 0x00409216, 0x00603004, 0x00603006))


def raw_text(value: bytes) -> str:
    """A UID, AE title or code string as text, byte for byte: a byte outside ASCII becomes a lone surrogate,
    so that :func:`raw_bytes` gives back exactly what was received (DCMTK keeps such bytes too)."""
    return value.decode("ascii", "surrogateescape")


def raw_bytes(text: str) -> bytes:
    """The bytes of a value made by :func:`raw_text` (or of plain ASCII text)."""
    return text.encode("ascii", "surrogateescape")


class DataSetError(ValueError):
    """The data is not a data set that DCMTK could read (or it exceeds a bound of this package)."""


@dataclass(frozen=True)
class Encoding:
    """How a data set is encoded: implicit or explicit VR, little or big endian."""

    implicit: bool
    little: bool

    @classmethod
    def of(cls, transfer_syntax: str) -> Encoding:
        """The encoding of the data set in ``transfer_syntax`` (after inflation, for the deflated ones);
        every encapsulated or unknown syntax encodes it in explicit VR little endian."""
        if transfer_syntax == uids.IMPLICIT_VR_LE:
            return IMPLICIT_LITTLE
        if transfer_syntax == uids.EXPLICIT_VR_BE:
            return EXPLICIT_BIG
        return EXPLICIT_LITTLE

    @property
    def order(self) -> str:
        """The ``struct`` byte order character."""
        return "<" if self.little else ">"


IMPLICIT_LITTLE = Encoding(True, True)
EXPLICIT_LITTLE = Encoding(False, True)
EXPLICIT_BIG = Encoding(False, False)


@dataclass(eq=False, slots=True)
class Fragment:
    """One item of encapsulated pixel data: where its bytes are, and the bytes if they were read."""

    position: int
    length: int
    data: bytes | None = None


@dataclass(eq=False, slots=True)
class Element:
    """One data element as read.

    ``value`` holds the value (None when left in the source: then ``position`` and ``length`` say where
    it is, and ``little`` its byte order there; ``source`` names the data it is in when that is not the
    data set's own, e.g. pixel data a conversion wrote to a spool file). A sequence has ``items`` (each a list of elements) and,
    as encoded, its ``length`` and ``item_lengths`` (``UNDEFINED_LENGTH`` for undefined ones); encapsulated
    pixel data has ``fragments`` (the first is the basic offset table).
    """

    tag: int
    vr: str
    value: bytes | None = b""
    position: int = 0
    length: int = 0
    items: list[list[Element]] | None = None
    item_lengths: list[int] | None = None
    fragments: list[Fragment] | None = None
    little: bool = True
    source: Source | None = None


@dataclass(eq=False)
class DataSet:
    """The top-level elements of a data set, in tag order, and how it was encoded."""

    elements: list[Element]
    encoding: Encoding = field(default=EXPLICIT_LITTLE)

    def get(self, tag: int) -> Element | None:
        """The element ``tag`` (None if absent)."""
        for element in self.elements:
            if element.tag == tag:
                return element
        return None


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary.vr(tag)
    except KeyError:
        return "UN"


def implicit_vr(tag: int, creators: dict[int, str]) -> str:
    """The VR of ``tag`` read in implicit VR: from the data dictionary (private tags by their creator,
    from ``creators``: the creator element's tag -> its value); ``UN`` for unknown tags."""
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0:
        return "UL"
    if group % 2:
        if 0x0010 <= element <= 0x00FF:
            return "LO"
        creator = creators.get((group << 16) | (element >> 8))
        if creator:
            try:
                return dictionary.private_vr(tag, creator)
            except KeyError:
                pass
        return "UN"
    return _dictionary_vr(tag)


def _us_value(elements: list[Element], tag: int) -> int | None:
    for element in elements:
        if element.tag == tag and element.value is not None and len(element.value) >= 2:
            return int.from_bytes(element.value[:2], "little")
    return None


def resolve_ambiguous_vrs(elements: list[Element]) -> None:
    """Give the elements of one data set or item read in implicit VR the VR DCMTK gives them."""
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


def swap(data: bytes, width: int) -> bytes:
    """``data`` with every ``width``-byte number byte-swapped (a trailing partial number is kept)."""
    whole = len(data) - len(data) % width
    reversed_numbers = bytearray(data[:whole])
    for offset in range(width):
        reversed_numbers[offset::width] = data[width - 1 - offset:whole:width]
    return bytes(reversed_numbers) + data[whole:]
