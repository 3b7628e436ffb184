"""Conversions: the storage output options, and the transfer syntaxes of sending (transcoding).

A received data set is written as received (bit for bit) unless an output option asks for a conversion
(``+te/+tb/+ti/+td``, ``+g/-g``, ``-e``, ``+p``, ``-u``, ``+cl``): decoding and re-encoding is the
exception, not the receive path. A stored file is likewise sent as stored unless the peer accepted
another transfer syntax for it (docs/association.md §4): then it is converted between the uncompressed
syntaxes, or its pixel data decoded or encoded with the codecs of :mod:`qrscp.dicom.transcoding` (README
"Transcoding").

A conversion reads the data set with :mod:`qrscp.dicom.reader`, leaving values longer than
:data:`LOAD_LIMIT` where they are, and writes it with :mod:`qrscp.dicom.writer`, which copies those in
chunks: memory holds the structure of a data set, not its pixel data. Decoded or encoded pixel data goes
frame by frame into a spool file, and the converted data set into another, which is sent from there.
"""
from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO


from qrscp.dicom import transcoding, uids
from qrscp.dicom.elements import (
    PIXEL_DATA,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SWAP_WIDTH,
    UNDEFINED_LENGTH,
    Element,
    Encoding,
    Fragment,
    raw_bytes,
    swap,
)
from qrscp.dicom.fileformat import StoredFile, open_dataset
from qrscp.dicom.reader import BytesSource, FileSource, Reader, Source
from qrscp.dicom.transcoding import CodecError, ImagePixel
from qrscp.dicom.writer import Writer

#: Values longer than this stay in their source while a data set is converted.
LOAD_LIMIT = 1 << 16

#: The transfer syntaxes qrscp converts between without a codec.
UNCOMPRESSED = frozenset((uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_LE, uids.EXPLICIT_VR_BE,
                          uids.DEFLATED_EXPLICIT_VR_LE))


def is_uncompressed(transfer_syntax: str) -> bool:
    """True for the syntaxes qrscp converts between: implicit/explicit little endian, big endian, deflated."""
    return transfer_syntax in UNCOMPRESSED


def syntax_name(transfer_syntax: str) -> str:
    """A transfer syntax as messages name it: ``JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)``."""
    from pydicom.uid import UID   # pydicom's names; imported only when a message needs one

    name = UID(transfer_syntax).name
    return transfer_syntax if name == transfer_syntax else f"{name} ({transfer_syntax})"


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

    def target_syntax(self, received: str) -> str:
        """The transfer syntax a data set received in ``received`` is stored in (compressed data keeps
        its own: nothing is recompressed on storage)."""
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

    def writer(self, received: str) -> Writer:
        """The writer of data sets received in ``received`` (an odd alignment pads nothing and keeps the
        padding there is, as DCMTK does)."""
        odd_padding = self.padding is not None and (self.padding[0] % 2 == 1 or self.padding[1] % 2 == 1)
        return Writer(self.target_syntax(received), group_length=self.group_length,
                      length_explicit=self.length_explicit, strip_padding=not odd_padding,
                      padding=None if odd_padding else self.padding, enable_new_vr=self.enable_new_vr,
                      compression_level=self.compression_level)


def read_elements(source: Source, start: int, transfer_syntax: str) -> list[Element]:
    """The data set at ``start`` of ``source`` (already inflated), large values left in the source."""
    return Reader(source, Encoding.of(transfer_syntax), load_limit=LOAD_LIMIT).read(start).elements


def convert(source: Source, start: int, received: str, fmt: OutputFormat, sink: Callable[[bytes], object],
            meta_length: int = 0) -> str:
    """Write the data set at ``start`` of ``source`` (received in ``received``, already inflated) to
    ``sink`` as ``fmt`` asks; its transfer syntax. ``meta_length`` bytes precede it in the file (``+p``
    pads the whole file). Raises DataSetError (a ValueError) if the data set does not parse."""
    fmt.writer(received).write(read_elements(source, start, received), sink, meta_length, source)
    return fmt.target_syntax(received)


def _has_encapsulated_data(elements: list[Element]) -> bool:
    return any(element.fragments is not None
               or (element.items is not None and any(map(_has_encapsulated_data, element.items)))
               for element in elements)


# -- transcoding ------------------------------------------------------------------------------------------

class Cost(IntEnum):
    """What sending a stored instance in a transfer syntax takes, cheapest first."""

    AS_STORED = 0
    RE_ENCODED = 1      # between the uncompressed syntaxes (no codec)
    DECOMPRESSED = 2    # pixel data decoded
    COMPRESSED = 3      # pixel data encoded losslessly (decoded first if it was compressed)
    LOSSY = 4           # pixel data encoded lossy: a new SOP instance


def conversion_cost(stored: str, target: str, lossy_allowed: Collection[str] = ()) -> Cost | None:
    """What sending data stored in ``stored`` as ``target`` takes with the codecs installed here (None: not
    possible). Lossy encoding only into ``lossy_allowed``, the lossy syntaxes the user asked for."""
    if target == stored:
        return Cost.AS_STORED
    native = is_uncompressed(stored)
    if is_uncompressed(target):
        return Cost.RE_ENCODED if native else Cost.DECOMPRESSED if transcoding.can_decode(stored) else None
    if transcoding.is_lossy(target) and target not in lossy_allowed:
        return None
    if not transcoding.can_encode(target) or not (native or transcoding.can_decode(stored)):
        return None
    return Cost.LOSSY if transcoding.is_lossy(target) else Cost.COMPRESSED


def needs_codecs_extra(stored: str, target: str, lossy_allowed: Collection[str] = ()) -> bool:
    """True if ``stored`` cannot become ``target`` here, but could with the ``codecs`` extra installed."""
    if conversion_cost(stored, target, lossy_allowed) is not None:
        return False
    native = is_uncompressed(stored)
    if not (native or transcoding.extra_decodes(stored)):
        return False
    if is_uncompressed(target):
        return True
    return transcoding.extra_encodes(target) and (not transcoding.is_lossy(target) or target in lossy_allowed)


#: Bytes a spool keeps in memory before it moves to a file.
SPOOL_MEMORY = 1 << 20


class Spool:
    """Bytes written in pieces: in memory up to :data:`SPOOL_MEMORY`, beyond that in an anonymous
    temporary file in ``directory``."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.size = 0
        self._parts: list[bytes] = []
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None and self.size + len(data) > SPOOL_MEMORY:
            self._file = tempfile.TemporaryFile(dir=self.directory)
            self._file.writelines(self._parts)
            self._parts = []
        if self._file is None:
            self._parts.append(bytes(data))
        else:
            self._file.write(data)
        self.size += len(data)

    def source(self) -> BytesSource | FileSource:
        """What was written, to read back or send (the spool must stay open while it is used)."""
        if self._file is None:
            return BytesSource(b"".join(self._parts))
        self._file.flush()
        return FileSource(self._file)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass(frozen=True)
class Transfer:
    """A stored instance encoded for a peer: its data set, and its SOP Instance UID (a new one after lossy
    compression)."""

    dataset: bytes | FileSource
    sop_instance_uid: str


#: Attributes a conversion of pixel data changes (PS3.3 C.7.6.3, C.7.6.1.1.5, C.12.1.1.2).
IMAGE_TYPE = 0x00080008
DERIVATION_DESCRIPTION = 0x00082111
SOURCE_IMAGE_SEQUENCE = 0x00082112
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155
LOSSY_IMAGE_COMPRESSION = 0x00282110
LOSSY_IMAGE_COMPRESSION_RATIO = 0x00282112
LOSSY_IMAGE_COMPRESSION_METHOD = 0x00282114
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
#: pydicom's UID root, for the UIDs of lossy copies
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def _text(value: str, pad: bytes = b" ") -> bytes:
    data = raw_bytes(value)
    return data + pad if len(data) % 2 else data


def _set(elements: list[Element], tag: int, vr: str, value: bytes | None = None,
         items: list[list[Element]] | None = None) -> None:
    """Replace or insert (in tag order) the element ``tag``."""
    element = Element(tag, vr, value, length=len(value) if value is not None else 0, items=items,
                      item_lengths=[UNDEFINED_LENGTH] * len(items) if items is not None else None)
    for index, existing in enumerate(elements):
        if existing.tag == tag:
            elements[index] = element
            return
        if existing.tag > tag:
            elements.insert(index, element)
            return
    elements.append(element)


def _get(elements: list[Element], tag: int) -> Element | None:
    return next((element for element in elements if element.tag == tag), None)


def _value_text(elements: list[Element], tag: int) -> str:
    element = _get(elements, tag)
    return element.value.decode("latin-1").strip(" \0") if element is not None and element.value else ""


def _native_frames(source: Source, element: Element, pixel: ImagePixel) -> Iterator[bytes]:
    """The native frames of pixel data ``element`` (in ``source`` or in memory), little endian."""
    length = pixel.frame_length
    if element.value is not None:
        source, position, little, available = BytesSource(element.value), 0, True, len(element.value)
    else:
        position, little, available = element.position, element.little, element.length
    if available < length * pixel.number_of_frames:
        raise CodecError(f"{available} bytes of pixel data, {length * pixel.number_of_frames} expected")
    width = SWAP_WIDTH.get(element.vr) if not little and pixel.bits_allocated > 8 else None
    for index in range(pixel.number_of_frames):
        frame = source.read(position + index * length, length)
        yield swap(frame, width) if width else frame


class _Transcoder:
    """One stored data set re-encoded with its pixel data decoded and/or encoded."""

    def __init__(self, elements: list[Element], source: Source, stored: str, spool: Callable[[], Spool]) -> None:
        self.elements = elements
        self.source = source
        self.stored = stored
        self.spool = spool

    def decode(self, element: Element) -> tuple[Element, ImagePixel]:
        """The pixel data decoded into a spool: its element and description; the Image Pixel attributes
        changed to match (photometric interpretation, colour by pixel; Lossy Image Compression kept, and
        set for JPEG's lossy processes)."""
        pixel = ImagePixel.of(self.elements)
        source = self.source
        if not isinstance(source, FileSource):     # encapsulated pixel data is never in a deflated data set
            raise CodecError("encapsulated pixel data outside a stored file")
        table, lengths = self._value(EXTENDED_OFFSET_TABLE), self._value(EXTENDED_OFFSET_TABLE_LENGTHS)
        spool = self.spool()
        with os.fdopen(os.dup(source.fd), "rb") as file:
            file.seek(source.offset + element.position)
            decoded = transcoding.decode(file, pixel, self.stored, spool.write,
                                         (table, lengths) if table and lengths else None)
        elements = self.elements
        _set(elements, transcoding.PHOTOMETRIC_INTERPRETATION, "CS", _text(decoded.photometric_interpretation))
        if decoded.samples_per_pixel > 1:
            _set(elements, transcoding.PLANAR_CONFIGURATION, "US", struct.pack("<H", 0))
        if self.stored in (transcoding.JPEG_BASELINE, transcoding.JPEG_EXTENDED) and \
                _get(elements, LOSSY_IMAGE_COMPRESSION) is None:
            _set(elements, LOSSY_IMAGE_COMPRESSION, "CS", b"01")
        native = Element(PIXEL_DATA, "OW" if decoded.bits_allocated > 8 else "OB", None, 0, spool.size,
                         source=spool.source())
        return native, decoded

    def _value(self, tag: int) -> bytes | None:
        element = _get(self.elements, tag)
        if element is None:
            return None
        return element.value if element.value is not None else self.source.read(element.position, element.length)

    def encode(self, element: Element, source: Source, pixel: ImagePixel, target: str) -> tuple[Element, int]:
        """Native pixel data encoded in ``target`` into a spool, frame by frame: the encapsulated element
        (one fragment a frame, basic offset table filled in when it fits) and its encoded size."""
        spool = self.spool()
        lengths = transcoding.encode(_native_frames(source, element, pixel), pixel, target, spool.write)
        offsets, position = [], 0
        for length in lengths:
            offsets.append(position)
            position += 8 + length
        table = struct.pack(f"<{len(offsets)}L", *offsets) if position <= 0xFFFFFFFF else b""
        fragments = [Fragment(0, len(table), table)]
        start = 0
        for length in lengths:
            fragments.append(Fragment(start, length))
            start += length
        if target != transcoding.RLE_LOSSLESS and pixel.samples_per_pixel > 1:   # PS3.5 §8.2
            _set(self.elements, transcoding.PLANAR_CONFIGURATION, "US", struct.pack("<H", 0))
        return Element(PIXEL_DATA, "OB", None, 0, UNDEFINED_LENGTH, fragments=fragments,
                       source=spool.source()), spool.size

    def mark_lossy(self, target: str, ratio: float, sop_class_uid: str, sop_instance_uid: str) -> str:
        """The changes of a lossy compression (PS3.3 C.7.6.1.1.5): a new SOP Instance UID, derived from the
        old one and the syntax (the same copy each time), Image Type DERIVED, Lossy Image Compression "01",
        its ratio and method appended, a Derivation Description, the source image referenced."""
        from pydicom.uid import UID, generate_uid   # the lossy path only

        elements = self.elements
        new_uid = generate_uid(_UID_PREFIX, [sop_instance_uid, target, "qrscp lossy copy"])
        _set(elements, SOP_INSTANCE_UID, "UI", _text(new_uid, b"\0"))
        image_type = _value_text(elements, IMAGE_TYPE)
        if image_type:
            _set(elements, IMAGE_TYPE, "CS", _text("\\".join(["DERIVED", *image_type.split("\\")[1:]])))
        _set(elements, LOSSY_IMAGE_COMPRESSION, "CS", b"01")
        for tag, value in ((LOSSY_IMAGE_COMPRESSION_RATIO, f"{ratio:.4g}"[:16]),
                           (LOSSY_IMAGE_COMPRESSION_METHOD, transcoding.LOSSY_METHODS[target])):
            before = _value_text(elements, tag)
            _set(elements, tag, "DS" if tag == LOSSY_IMAGE_COMPRESSION_RATIO else "CS",
                 _text("\\".join(filter(None, (before, value)))))
        description = f"Lossy compression with {UID(target).name}, compression ratio {ratio:.4g}:1"
        before = _value_text(elements, DERIVATION_DESCRIPTION)
        _set(elements, DERIVATION_DESCRIPTION, "ST", _text("; ".join(filter(None, (before, description)))[:1024]))
        reference = [Element(REFERENCED_SOP_CLASS_UID, "UI", _text(sop_class_uid, b"\0")),
                     Element(REFERENCED_SOP_INSTANCE_UID, "UI", _text(sop_instance_uid, b"\0"))]
        existing = _get(elements, SOURCE_IMAGE_SEQUENCE)
        items = (existing.items or []) + [reference] if existing is not None else [reference]
        _set(elements, SOURCE_IMAGE_SEQUENCE, "SQ", None, items)
        return new_uid


class StoredInstance:
    """A stored file opened for sending: its data set as stored, or converted for a peer.

    ``spool_directory``: where conversions spool (the storage area); ``lossy_allowed``: the lossy transfer
    syntaxes the user asked for (``-xw``, ``-xu``...), the only ones pixel data is encoded lossy into.
    """

    def __init__(self, stored: StoredFile, file: BinaryIO, inflate_limit: int, spool_directory: str | None = None,
                 lossy_allowed: Collection[str] = ()) -> None:
        self.stored = stored
        self.file = file
        self.inflate_limit = inflate_limit
        self.spool_directory = spool_directory
        self.lossy_allowed = frozenset(lossy_allowed)
        self._spools: list[Spool] = []

    @property
    def transfer_syntax(self) -> str:
        return self.stored.transfer_syntax

    def cost(self, transfer_syntax: str) -> Cost | None:
        """What sending it in ``transfer_syntax`` takes (None: not possible here)."""
        return conversion_cost(self.transfer_syntax, transfer_syntax, self.lossy_allowed)

    def needs_codecs_extra(self, transfer_syntax: str) -> bool:
        """True if it could be sent in ``transfer_syntax`` with the ``codecs`` extra installed."""
        return needs_codecs_extra(self.transfer_syntax, transfer_syntax, self.lossy_allowed)

    def _spool(self) -> Spool:
        spool = Spool(self.spool_directory)
        self._spools.append(spool)
        return spool

    def close(self) -> None:
        """Remove the spools of its conversions (what :meth:`transfer` returned is gone with them)."""
        for spool in self._spools:
            spool.close()
        self._spools = []

    def transfer(self, transfer_syntax: str) -> Transfer:
        """The data set encoded in ``transfer_syntax``, valid until :meth:`close`. Raises ValueError
        (CodecError for pixel data that does not decode or encode) when it cannot be converted."""
        stored = self.stored
        if transfer_syntax == stored.transfer_syntax:
            return Transfer(FileSource(self.file, stored.dataset_offset), stored.sop_instance_uid)
        if self.cost(transfer_syntax) is None:
            raise ValueError(f"cannot convert {syntax_name(stored.transfer_syntax)} to {syntax_name(transfer_syntax)}")
        source, start = open_dataset(self.file, stored.dataset_offset, stored.transfer_syntax, self.inflate_limit,
                                     self.spool_directory)
        elements = read_elements(source, start, stored.transfer_syntax)
        sop_instance_uid = stored.sop_instance_uid
        pixel_data = _get(elements, PIXEL_DATA)
        native_stored = is_uncompressed(stored.transfer_syntax)
        if pixel_data is not None and not (native_stored and is_uncompressed(transfer_syntax)):
            sop_instance_uid = self._convert_pixel_data(elements, source, pixel_data, transfer_syntax)
        elif not native_stored and _has_encapsulated_data(elements):
            raise ValueError(f"cannot convert {syntax_name(stored.transfer_syntax)} to {syntax_name(transfer_syntax)}:"
                             " encapsulated pixel data in a sequence")
        spool = self._spool()
        Writer(transfer_syntax, strip_padding=False).write(elements, spool.write, 0, source)
        if spool.size % 2:      # a deflated data set is padded to even length (PS3.5 §A.5)
            spool.write(b"\0")
        output = spool.source()
        return Transfer(output.data if isinstance(output, BytesSource) else output, sop_instance_uid)

    def _convert_pixel_data(self, elements: list[Element], source: Source, pixel_data: Element,
                            target: str) -> str:
        """Decode and/or encode the pixel data for ``target``, in ``elements``; the SOP Instance UID."""
        stored = self.stored
        transcoder = _Transcoder(elements, source, stored.transfer_syntax, self._spool)
        if _has_encapsulated_data([element for element in elements if element is not pixel_data]):
            raise ValueError("encapsulated pixel data in a sequence")
        if pixel_data.fragments is not None:
            pixel_data, pixel = transcoder.decode(pixel_data)
        else:
            pixel = ImagePixel.of(elements)
        encoded_size = 0
        if not is_uncompressed(target):
            native_source = pixel_data.source if pixel_data.source is not None else source
            pixel_data, encoded_size = transcoder.encode(pixel_data, native_source, pixel, target)
        elements[:] = [pixel_data if element.tag == PIXEL_DATA else element for element in elements
                       if element.tag not in (EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS)]
        if transcoding.is_lossy(target):
            ratio = pixel.frame_length * pixel.number_of_frames / max(1, encoded_size)
            return transcoder.mark_lossy(target, ratio, _value_text(elements, SOP_CLASS_UID) or stored.sop_class_uid,
                                         stored.sop_instance_uid)
        return stored.sop_instance_uid
