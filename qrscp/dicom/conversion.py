"""Conversions between the uncompressed transfer syntaxes: the storage output options, and sending.

A received data set is written as received (bit for bit) unless an output option asks for a conversion
(``+te/+tb/+ti/+td``, ``+g/-g``, ``-e``, ``+p``, ``-u``, ``+cl``): decoding and re-encoding is the
exception, not the receive path. A stored file is likewise sent as stored unless the peer accepted
another transfer syntax for it (docs/association.md §4).

A conversion reads the data set with :mod:`qrscp.dicom.reader`, leaving values longer than
:data:`LOAD_LIMIT` where they are, and writes it with :mod:`qrscp.dicom.writer`, which copies those in
chunks: memory holds the structure of a data set, not its pixel data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import UID

from qrscp.dicom import uids
from qrscp.dicom.elements import Element, Encoding
from qrscp.dicom.fileformat import StoredFile, open_dataset
from qrscp.dicom.reader import FileSource, Reader, Source
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


def dataset_for_transfer(source: Source, start: int, stored: str, target: str) -> bytes:
    """The data set at ``start`` of ``source`` (already inflated; stored in ``stored``) encoded in
    ``target``, one of the uncompressed syntaxes, as DCMTK sends it (explicit lengths, group lengths
    recalculated, padding kept). Raises ValueError when it cannot be converted (encapsulated pixel data
    keeps its syntax)."""
    impossible = f"cannot convert {syntax_name(stored)} to {syntax_name(target)}"
    if not is_uncompressed(target):
        raise ValueError(impossible)
    elements = read_elements(source, start, stored)
    if not is_uncompressed(stored) and _has_encapsulated_data(elements):
        raise ValueError(impossible)
    return Writer(target, strip_padding=False).encode(elements, 0, source)


def _has_encapsulated_data(elements: list[Element]) -> bool:
    return any(element.fragments is not None
               or (element.items is not None and any(map(_has_encapsulated_data, element.items)))
               for element in elements)


class StoredInstance:
    """A stored file opened for sending: its data set as stored, or converted for a peer."""

    def __init__(self, stored: StoredFile, file: BinaryIO, inflate_limit: int) -> None:
        self.stored = stored
        self.file = file
        self.inflate_limit = inflate_limit

    @property
    def transfer_syntax(self) -> str:
        return self.stored.transfer_syntax

    def dataset(self, transfer_syntax: str) -> bytes:
        """The data set encoded in ``transfer_syntax`` (the stored syntax or an uncompressed one).
        Raises ValueError when it cannot be converted."""
        stored = self.stored
        if transfer_syntax == stored.transfer_syntax:
            source = FileSource(self.file, stored.dataset_offset)
            return b"".join(source.chunks(0, source.size))
        source, start = open_dataset(self.file, stored.dataset_offset, stored.transfer_syntax, self.inflate_limit)
        return dataset_for_transfer(source, start, stored.transfer_syntax, transfer_syntax)
