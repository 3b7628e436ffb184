"""DICOM files as stored in a storage area: the file meta information and the output options.

A received data set is written as received (bit for bit) unless an output option asks for a conversion
(``+te/+tb/+ti/+td``, ``+g/-g``, ``-e``, ``+p``, ``-u``, ``+cl``): decoding and re-encoding is the
exception, not the receive path.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from qrscp import uids

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
        """The transfer syntax a data set received in ``received`` is stored in."""
        if self.bit_preserving or self.write_xfer is None:
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
