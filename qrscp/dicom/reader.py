"""The data-set reader: identifiers, index values, stored files and conversions all read through it.

A :class:`Reader` parses an encoded data set from a :class:`Source` (bytes in memory, or a file read
through a moving window) into :class:`~qrscp.dicom.elements.Element` lists, strictly within the bounds
of the data, whatever a length field claims:

* every length is checked against the data that holds it before anything is read;
* values longer than ``load_limit`` are left in the source (the writer copies them), so reading a
  large file costs memory for its structure, not for its pixel data;
* nesting deeper than :data:`MAX_DEPTH` and more than ``max_elements`` elements and items are refused;
* ``skip_sequences`` steps over sequences of defined length without parsing them (the index values need
  only the top level), and walks those of undefined length without keeping them.

The rules are DCMTK's (checked against its ``dcmconv`` and ``dcmqrscp``): a repeated tag keeps its first
element; implicit VR takes VRs from the data dictionary (private tags by their creator) and resolves the
ambiguous ones as DCMTK does; a VR that is not one of PS3.5's is read as UN with a 32-bit length; a UN
element of undefined length is a sequence in implicit VR little endian (CP-246).
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Protocol

from qrscp.dicom.elements import (
    IMPLICIT_LITTLE,
    ITEM,
    ITEM_DELIMITATION,
    LONG_VRS,
    PIXEL_DATA,
    SEQUENCE_DELIMITATION,
    STANDARD_VRS,
    SWAP_WIDTH,
    UNDEFINED_LENGTH,
    DataSet,
    DataSetError,
    Element,
    Encoding,
    Fragment,
    implicit_vr,
    resolve_ambiguous_vrs,
    swap,
)

#: Sequences nested deeper than this are refused (DCMTK has no limit; see the README's known limitations).
MAX_DEPTH = 400
#: Elements and items a data set may have, at all levels, by default.
MAX_ELEMENTS = 1_000_000
#: Bytes a file source reads at a time.
_WINDOW = 1 << 18


class Source(Protocol):
    """Encoded data, read by position."""

    size: int

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (DataSetError if they are not all there)."""

    def contains(self, pattern: bytes, start: int, end: int) -> bool:
        """Whether ``pattern`` occurs within ``[start, end)``."""


class BytesSource:
    """Encoded data held in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.size = len(data)

    def read(self, pos: int, n: int) -> bytes:
        if pos + n > self.size or pos < 0:
            raise DataSetError(f"data set truncated at offset {pos}")
        return bytes(self.data[pos:pos + n])

    def contains(self, pattern: bytes, start: int, end: int) -> bool:
        return bytes(self.data[start:end]).find(pattern) >= 0 if isinstance(self.data, memoryview) \
            else self.data.find(pattern, start, end) >= 0


class FileSource:
    """Encoded data in a file, from ``offset`` on, read through a moving window (of ``window`` bytes, or
    what one read asks for if more): what the reader steps over is never read."""

    def __init__(self, file: BinaryIO | int, offset: int = 0, size: int | None = None, window: int = _WINDOW) -> None:
        self.fd = file if isinstance(file, int) else file.fileno()
        self.offset = offset
        self.size = (os.fstat(self.fd).st_size - offset) if size is None else size
        self.window = window
        self._base = 0
        self._data = b""

    def read(self, pos: int, n: int) -> bytes:
        if pos + n > self.size or pos < 0:
            raise DataSetError(f"data set truncated at offset {pos}")
        start = pos - self._base
        if start < 0 or start + n > len(self._data):
            self._data = os.pread(self.fd, max(n, self.window), self.offset + pos)
            self._base, start = pos, 0
            if len(self._data) < n:
                raise DataSetError(f"data set truncated at offset {pos}")
        return self._data[start:start + n]

    def contains(self, pattern: bytes, start: int, end: int) -> bool:
        overlap = len(pattern) - 1
        while start < end:
            n = min(end - start, _WINDOW)
            if pattern in self.read(start, n):
                return True
            start += n - overlap if n > overlap and start + n < end else n
        return False

    def chunks(self, pos: int, length: int, size: int = 1 << 20):
        """The bytes ``[pos, pos + length)`` in pieces of at most ``size`` (without the window)."""
        end = pos + length
        while pos < end:
            data = os.pread(self.fd, min(size, end - pos), self.offset + pos)
            if not data:
                raise DataSetError(f"data set truncated at offset {pos}")
            yield data
            pos += len(data)


class Reader:
    """Parses the data set in ``source``, encoded as ``encoding``.

    ``watch``: a sequence tag to look for at every level, also inside sequences that are skipped;
    :attr:`watched` then tells whether its first occurrence (in pre-order) has items (None: none seen).
    ``ignore_incomplete_end``: bytes at the end of the top level too few for an element header end the
    data set instead of being an error (a C-STORE data set so cut is stored, as DCMTK stores it).
    """

    def __init__(self, source: Source, encoding: Encoding, *, load_limit: int | None = None,
                 skip_sequences: bool = False, max_elements: int = MAX_ELEMENTS, watch: int | None = None,
                 ignore_incomplete_end: bool = False) -> None:
        self.source = source
        self.encoding = encoding
        self.load_limit = load_limit
        self.skip_sequences = skip_sequences
        self.max_elements = max_elements
        self.watch = watch
        self.watched: bool | None = None
        self.ignore_incomplete_end = ignore_incomplete_end
        self._watch_bytes = None if watch is None else struct.pack(encoding.order + "HH", watch >> 16,
                                                                    watch & 0xFFFF)
        self._count = 0

    # -- the whole data set -------------------------------------------------------------------------

    def read(self, start: int = 0, end: int | None = None, *, stop_after: int | None = None) -> DataSet:
        """The top-level elements from ``start`` up to ``end`` (the end of the source); with
        ``stop_after``, up to the first element whose tag is greater. Raises :class:`DataSetError`."""
        end = self.source.size if end is None else end
        try:
            elements, _ = self._dataset(start, end, self.encoding, depth=0, in_item=False, keep=True,
                                        stop_after=stop_after)
        except RecursionError:
            raise DataSetError("data set nested too deeply") from None
        return DataSet(elements, self.encoding)

    # -- parsing ------------------------------------------------------------------------------------

    def _counted(self) -> None:
        self._count += 1
        if self._count > self.max_elements:
            raise DataSetError(f"data set of more than {self.max_elements} elements")

    def _item_header(self, pos: int, end: int, encoding: Encoding) -> tuple[int, int]:
        """The tag and 32-bit length of the element, item or delimitation item at ``pos``."""
        if end - pos < 8:
            raise DataSetError(f"data set truncated at offset {pos}")
        group, element, length = struct.unpack(encoding.order + "HHL", self.source.read(pos, 8))
        return (group << 16) | element, length

    def _dataset(self, pos: int, end: int, encoding: Encoding, *, depth: int, in_item: bool, keep: bool,
                 stop_after: int | None = None) -> tuple[list[Element], int]:
        """The elements from ``pos`` up to ``end`` or, ``in_item``, an item delimitation item; in tag
        order, and the position after them (nothing kept unless ``keep``)."""
        if depth > MAX_DEPTH:
            raise DataSetError(f"sequences nested more than {MAX_DEPTH} levels deep")
        elements: dict[int, Element] = {}
        creators: dict[int, str] = {}
        order = encoding.order
        while pos < end:
            if end - pos < 8:
                if depth == 0 and self.ignore_incomplete_end:
                    break
                raise DataSetError(f"data set truncated at offset {pos}")
            head = self.source.read(pos, 8)
            group, number = struct.unpack_from(order + "HH", head)
            tag = (group << 16) | number
            if tag == ITEM_DELIMITATION and in_item:
                return self._finish(elements, encoding), pos + 8
            if stop_after is not None and tag > stop_after:
                break
            if group == 0xFFFE:
                raise DataSetError(f"unexpected ({group:04X},{number:04X}) at offset {pos}")
            self._counted()
            if encoding.implicit:
                vr = implicit_vr(tag, creators)
                length = struct.unpack_from(order + "L", head, 4)[0]
                pos += 8
            else:
                vr = head[4:6].decode("latin-1")
                if vr in STANDARD_VRS and vr not in LONG_VRS:
                    length = struct.unpack_from(order + "H", head, 6)[0]
                    pos += 8
                else:                   # a non-standard VR is unknown, with a 32-bit length (as DCMTK)
                    length = struct.unpack(order + "L", self.source.read(pos + 8, 4))[0] if pos + 12 <= end \
                        else self._truncated(pos)
                    pos += 12
                    vr = vr if vr in STANDARD_VRS else "UN"
            element, pos = self._value(tag, vr, length, pos, end, encoding, depth, keep)
            if keep and encoding.implicit and element.vr == "LO" and group & 1 and number <= 0x00FF \
                    and element.value is not None:
                creators[(group << 16) | number] = element.value.decode("latin-1").strip(" \0")
            if keep:
                elements.setdefault(tag, element)
        if in_item and stop_after is None:
            raise DataSetError("item without item delimitation item")
        return self._finish(elements, encoding), pos

    @staticmethod
    def _truncated(pos: int) -> int:
        raise DataSetError(f"data set truncated at offset {pos}")

    @staticmethod
    def _finish(elements: dict[int, Element], encoding: Encoding) -> list[Element]:
        ordered = [elements[tag] for tag in sorted(elements)]
        if encoding.implicit:
            resolve_ambiguous_vrs(ordered)
        return ordered

    def _note_watched(self, tag: int, length: int, pos: int, end: int, encoding: Encoding) -> None:
        if tag == self.watch and self.watched is None:
            self.watched = length != 0 and (length != UNDEFINED_LENGTH
                                            or self._item_header(pos, end, encoding)[0] == ITEM)

    def _value(self, tag: int, vr: str, length: int, pos: int, end: int, encoding: Encoding, depth: int,
               keep: bool) -> tuple[Element, int]:
        """The element whose value starts at ``pos``, and the position after it."""
        if self.watch is not None:
            self._note_watched(tag, length, pos, end, encoding)
        if length == UNDEFINED_LENGTH:
            if tag == PIXEL_DATA and vr in ("OB", "OW", "OB or OW", "UN"):
                fragments, after = self._fragments(pos, end, encoding)
                return Element(tag, "OB", None, pos, UNDEFINED_LENGTH, fragments=fragments), after
            if vr in ("SQ", "UN") or encoding.implicit:   # UN: implicit VR little endian (CP-246)
                inner = IMPLICIT_LITTLE if vr == "UN" else encoding
                keep_items = keep and not self.skip_sequences
                items, lengths, after = self._items(pos, None, end, inner, depth + 1, keep_items)
                return Element(tag, "SQ", None, pos, UNDEFINED_LENGTH, items if keep_items else None,
                               lengths if keep_items else None), after
            raise DataSetError(f"undefined length for ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}")
        if length > end - pos:
            raise DataSetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) of length {length} exceeds the data set")
        if vr == "SQ":
            return self._sequence(tag, length, pos, encoding, depth, keep), pos + length
        return self._plain(tag, vr, length, pos, encoding), pos + length

    def _sequence(self, tag: int, length: int, pos: int, encoding: Encoding, depth: int, keep: bool) -> Element:
        """A sequence of defined ``length`` at ``pos``: parsed, or skipped (then searched for the watched
        tag, and parsed only if it may hold it)."""
        if not keep or self.skip_sequences:
            if self._watch_bytes is not None and self.watched is None and \
                    self.source.contains(self._watch_bytes, pos, pos + length):
                try:
                    self._items(pos, pos + length, pos + length, encoding, depth + 1, keep=False)
                except DataSetError:
                    pass
            return Element(tag, "SQ", None, pos, length)
        try:
            items, lengths, _ = self._items(pos, pos + length, pos + length, encoding, depth + 1, keep=True)
        except DataSetError:
            if not (encoding.implicit and tag >> 16 & 1):
                raise
            return self._plain(tag, "UN", length, pos, encoding)   # a private element that is no sequence
        return Element(tag, "SQ", None, pos, length, items, lengths)

    def _plain(self, tag: int, vr: str, length: int, pos: int, encoding: Encoding) -> Element:
        if self.load_limit is not None and length > self.load_limit:
            return Element(tag, vr, None, pos, length, little=encoding.little)
        value = self.source.read(pos, length)
        if not encoding.little and vr in SWAP_WIDTH:
            value = swap(value, SWAP_WIDTH[vr])
        return Element(tag, vr, value, pos, length)

    def _items(self, pos: int, stop: int | None, end: int, encoding: Encoding, depth: int,
               keep: bool) -> tuple[list[list[Element]], list[int], int]:
        """The items of a sequence up to ``stop`` or, if None, its sequence delimitation item, with their
        lengths (UNDEFINED_LENGTH for undefined ones), and the position after the sequence."""
        items: list[list[Element]] = []
        lengths: list[int] = []
        while stop is None or pos < stop:
            tag, length = self._item_header(pos, end, encoding)
            pos += 8
            if tag == SEQUENCE_DELIMITATION and stop is None:
                return items, lengths, pos
            if tag != ITEM:
                raise DataSetError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) in a sequence at offset {pos - 8}")
            self._counted()
            if length == UNDEFINED_LENGTH:
                elements, pos = self._dataset(pos, end, encoding, depth=depth, in_item=True, keep=keep)
            else:
                if length > end - pos:
                    raise DataSetError(f"item of length {length} exceeds its sequence at offset {pos - 8}")
                elements, _ = self._dataset(pos, pos + length, encoding, depth=depth, in_item=False, keep=keep)
                pos += length
            if keep:
                items.append(elements)
                lengths.append(length)
        return items, lengths, pos

    def _fragments(self, pos: int, end: int, encoding: Encoding) -> tuple[list[Fragment], int]:
        """The items of encapsulated pixel data up to its sequence delimitation item."""
        fragments = []
        while True:
            tag, length = self._item_header(pos, end, encoding)
            pos += 8
            if tag == SEQUENCE_DELIMITATION:
                return fragments, pos
            if tag != ITEM or length == UNDEFINED_LENGTH or length > end - pos:
                raise DataSetError(f"bad pixel data fragment at offset {pos - 8}")
            self._counted()
            loaded = self.load_limit is None or length <= self.load_limit
            fragments.append(Fragment(pos, length, self.source.read(pos, length) if loaded else None))
            pos += length


def read_dataset(data: bytes | bytearray | memoryview, encoding: Encoding, **options: object) -> DataSet:
    """The data set ``data`` (in memory) encoded as ``encoding``; see :class:`Reader` for ``options``."""
    return Reader(BytesSource(data), encoding, **options).read()  # type: ignore[arg-type]
