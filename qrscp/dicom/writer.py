"""The data-set writer: element trees encoded in a transfer syntax with DCMTK's writing options.

What DCMTK's ``dcmconv`` writes with the same options (checked against DCMTK 3.6.7):

* values are copied byte for byte; only binary VRs (US, OW, FL, AT, ...) are byte-swapped for big endian;
  string values are written as DCMTK writes them back (:func:`dcmtk_string`);
* group lengths (``+g=``/``+g``/``-g``) and explicit or undefined sequence/item lengths (``+e/-e``) are
  applied to every data set and item; existing DataSetTrailingPadding (FFFC,FFFC) elements are dropped,
  and ``+p f i`` adds new ones after the group lengths are computed;
* ``-u`` writes the post-1993 VRs (UN, UT, UC, UR, OF, OD, OL, OV, SV, UV) as OB, their values in little
  endian order whatever the transfer syntax;
* deflated output is a raw deflate stream (no zlib header) of the explicit VR little endian encoding.

The encoded size of everything is computed before it is written, so that the data set streams out in
pieces: values left in their source by the reader (pixel data) are copied from it in chunks, never held.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from itertools import groupby

from qrscp.dicom import uids
from qrscp.dicom.elements import (
    DATASET_TRAILING_PADDING,
    ITEM,
    ITEM_DELIMITATION,
    LONG_VRS,
    NEW_VRS,
    SEQUENCE_DELIMITATION,
    STRING_VRS,
    SWAP_WIDTH,
    UNDEFINED_LENGTH,
    Element,
    Encoding,
    swap,
)
from qrscp.dicom.reader import FileSource, Source

#: Bytes of a value left in its source that are copied at a time (a multiple of every swap width).
COPY_CHUNK = 1 << 20


def dcmtk_string(vr: str, value: bytes) -> bytes:
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


class Writer:
    """Encodes element trees in ``transfer_syntax`` (see the module for the options)."""

    def __init__(self, transfer_syntax: str, *, group_length: str = "recalc", length_explicit: bool = True,
                 strip_padding: bool = True, padding: tuple[int, int] | None = None, enable_new_vr: bool = True,
                 compression_level: int | None = None, normalise_strings: bool = True) -> None:
        self.transfer_syntax = transfer_syntax
        self.group_length = group_length            # 'recalc' | 'create' | 'remove'
        self.length_explicit = length_explicit
        self.strip_padding = strip_padding          # drop existing DataSetTrailingPadding elements
        self.file_pad, self.item_pad = padding or (0, 0)
        self.enable_new_vr = enable_new_vr
        self.compression_level = 6 if compression_level is None else compression_level   # zlib's default
        self.normalise_strings = normalise_strings
        encoding = Encoding.of(transfer_syntax)
        self.implicit, self.little = encoding.implicit, encoding.little
        self.endian = encoding.order
        self._sizes: dict[int, int] = {}
        self._source: Source | None = None

    # -- entry points -------------------------------------------------------------------------------

    def encode(self, elements: list[Element], meta_length: int = 0, source: Source | None = None) -> bytes:
        """The data set ``elements`` in memory; with file padding, ``meta_length`` bytes precede it in the
        file; ``source``: where values left unread by the reader are."""
        parts: list[bytes] = []
        self.write(elements, parts.append, meta_length, source)
        return b"".join(parts)

    def write(self, elements: list[Element], sink: Callable[[bytes], object], meta_length: int = 0,
              source: Source | None = None) -> None:
        """Write the data set ``elements`` to ``sink`` in pieces (see :meth:`encode`)."""
        self._sizes = {}
        self._source = source
        try:
            if self.transfer_syntax != uids.DEFLATED_EXPLICIT_VR_LE:
                for part in self._dataset(elements, self.file_pad, meta_length):
                    sink(part)
                return
            deflater = zlib.compressobj(self.compression_level, zlib.DEFLATED, -zlib.MAX_WBITS)
            for part in self._dataset(elements, self.file_pad, meta_length):
                out = deflater.compress(part)
                if out:
                    sink(out)
            sink(deflater.flush())
        finally:
            self._sizes = {}
            self._source = None

    # -- sizes --------------------------------------------------------------------------------------

    def _members(self, elements: list[Element]) -> tuple[list[tuple[int, list[Element]]], set[int]]:
        """The elements to write, by group, and the groups whose length element was present."""
        present_lengths = set()
        kept: list[Element] = []
        for element in elements:
            if element.tag & 0xFFFF == 0:
                present_lengths.add(element.tag >> 16)
            elif element.tag != DATASET_TRAILING_PADDING or not self.strip_padding:
                kept.append(element)
        groups = [(group, list(members)) for group, members in groupby(kept, lambda e: e.tag >> 16)]
        if self.group_length == "recalc":
            by_group = dict(groups)
            groups = [(group, by_group.get(group, [])) for group in sorted(by_group.keys() | present_lengths)]
        return groups, present_lengths

    def _with_length(self, group: int, present_lengths: set[int]) -> bool:
        return self.group_length == "create" or (self.group_length == "recalc" and group in present_lengths)

    def _dataset_size(self, elements: list[Element], pad_unit: int, preceding: int) -> int:
        groups, present = self._members(elements)
        size = 0
        for group, members in groups:
            content = sum(self._element_size(member) for member in members)
            size += content + (self._header_size("UL") + 4 if self._with_length(group, present) else 0)
        if pad_unit:
            size += len(self._padding(pad_unit, preceding + size))
        return size

    def _header_size(self, vr: str) -> int:
        return 8 if self.implicit or vr not in LONG_VRS else 12

    def _element_size(self, element: Element) -> int:
        size = self._sizes.get(id(element))
        if size is None:
            if element.items is not None:
                content = self._sequence_content_size(element)
                size = self._header_size("SQ") + content + (0 if self.length_explicit else 8)
            elif element.fragments is not None:
                size = self._header_size(element.vr) + sum(8 + f.length for f in element.fragments) + 8
            else:
                vr, length = self._value_vr_and_length(element)
                size = self._header_size(vr) + length
            self._sizes[id(element)] = size
        return size

    def _sequence_content_size(self, element: Element) -> int:
        assert element.items is not None
        return sum(8 + self._dataset_size(item, self.item_pad, 0) + (0 if self.length_explicit else 8)
                   for item in element.items)

    def _value(self, element: Element) -> bytes | None:
        """The value to write, if it is in memory (None: it is copied from the source)."""
        value = element.value
        if value is None:
            return None
        if element.vr in STRING_VRS and self.normalise_strings:
            return dcmtk_string(element.vr, value)
        return value + b"\0" if len(value) % 2 else value

    def _value_vr_and_length(self, element: Element) -> tuple[str, int]:
        value = self._value(element)
        length = len(value) if value is not None else element.length + element.length % 2
        vr = "OB" if not self.enable_new_vr and element.vr in NEW_VRS else element.vr
        if not self.implicit and vr not in LONG_VRS and length > 0xFFFF:
            vr = "UN"                   # PS3.5 §6.2.2: too long for a 16-bit length field
        return vr, length

    # -- encoding -----------------------------------------------------------------------------------

    def _header(self, tag: int, vr: str, length: int) -> bytes:
        e = self.endian
        if self.implicit:
            return struct.pack(e + "HHL", tag >> 16, tag & 0xFFFF, length)
        if vr in LONG_VRS:
            return struct.pack(e + "HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
        return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def _item_header(self, tag: int, length: int) -> bytes:
        return struct.pack(self.endian + "HHL", tag >> 16, tag & 0xFFFF, length)

    def _padding(self, unit: int, length: int) -> bytes:
        """The DataSetTrailingPadding that makes ``length`` a multiple of ``unit`` (none if it is one)."""
        missing = unit - length % unit
        if missing == unit:
            return b""
        header = 8 if self.implicit else 12
        while missing < header:
            missing += unit
        return self._header(DATASET_TRAILING_PADDING, "OB", missing - header) + bytes(missing - header)

    def _dataset(self, elements: list[Element], pad_unit: int, preceding: int) -> Iterator[bytes]:
        """One data set or item content: group lengths, then padding to a multiple of ``pad_unit``."""
        groups, present = self._members(elements)
        written = 0
        for group, members in groups:
            if self._with_length(group, present):
                length = sum(self._element_size(member) for member in members)
                head = self._header(group << 16, "UL", 4) + struct.pack(self.endian + "L", length)
                written += len(head)
                yield head
            for member in members:
                written += self._element_size(member)
                yield from self._element(member)
        if pad_unit:
            yield self._padding(pad_unit, preceding + written)

    def _element(self, element: Element) -> Iterator[bytes]:
        if element.items is not None:
            yield from self._sequence(element)
        elif element.fragments is not None:
            yield self._header(element.tag, element.vr, UNDEFINED_LENGTH)
            for fragment in element.fragments:
                yield self._item_header(ITEM, fragment.length)
                if fragment.data is not None:
                    yield fragment.data
                else:
                    yield from self._copy(fragment.position, fragment.length, "OB", element.little,
                                          element.source)
            yield self._item_header(SEQUENCE_DELIMITATION, 0)
        else:
            vr, length = self._value_vr_and_length(element)
            yield self._header(element.tag, vr, length)
            value = self._value(element)
            swap_width = SWAP_WIDTH.get(vr) if not self.little else None
            if value is not None:
                yield swap(value, swap_width) if swap_width else value
            else:
                yield from self._copy(element.position, element.length, vr, element.little, element.source)
                if element.length % 2:
                    yield b"\0"

    def _copy(self, position: int, length: int, vr: str, little: bool,
              own_source: Source | None = None) -> Iterator[bytes]:
        """A value left in its source (the element's own, else the data set's), in chunks, in the byte
        order of the output."""
        source = own_source if own_source is not None else self._source
        if source is None:
            raise ValueError("a value was left unread and no source was given")
        width = SWAP_WIDTH.get(vr) if little != self.little else None
        if isinstance(source, FileSource):
            chunks: Iterator[bytes] = source.chunks(position, length, COPY_CHUNK)
        else:
            chunks = (source.read(start, min(COPY_CHUNK, position + length - start))
                      for start in range(position, position + length, COPY_CHUNK))
        for chunk in chunks:
            yield swap(chunk, width) if width else chunk

    def _sequence(self, element: Element) -> Iterator[bytes]:
        assert element.items is not None
        content = self._sequence_content_size(element)
        yield self._header(element.tag, "SQ", content if self.length_explicit else UNDEFINED_LENGTH)
        for item in element.items:
            size = self._dataset_size(item, self.item_pad, 0)
            yield self._item_header(ITEM, size if self.length_explicit else UNDEFINED_LENGTH)
            yield from self._dataset(item, self.item_pad, 0)
            if not self.length_explicit:
                yield self._item_header(ITEM_DELIMITATION, 0)
        if not self.length_explicit:
            yield self._item_header(SEQUENCE_DELIMITATION, 0)
