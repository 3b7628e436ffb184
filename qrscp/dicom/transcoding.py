"""Pixel data codecs: which transfer syntaxes can be decoded and encoded here, and the frame-by-frame
decoding and encoding of pixel data (README "Transcoding", docs/association.md §4).

The codecs are pydicom 3's pixel data plugins, brought by the ``codecs`` extra (``pip install
'qrscp[codecs]'``): numpy, pylibjpeg with pylibjpeg-openjpeg (JPEG 2000 encoding) and pylibjpeg-rle
(RLE), pyjpegls (JPEG-LS) and imagecodecs (decoding the JPEG 10918 processes, JPEG 2000 and HTJ2K, through
:mod:`qrscp.dicom.imagecodecs_plugin`); all MIT or BSD. Nothing of it is imported until a conversion
needs it: ``dcmqrscp`` keeps numpy out of its processes (``qrscp.cli.dcmqrscp``), and the first
conversion lets it in and reloads pydicom's ``pixels`` package, whose plugins look for numpy when they
are imported. :func:`preload` does that ahead of time.

Memory: one frame at a time. Decoding reads one encoded frame from the stored file, checks the
dimensions its codestream declares against the data set's (a stream that claims more is refused before
it is decoded), decodes it and hands the native bytes to a sink; encoding takes native frames one by one.
Any failure of a codec is a :class:`CodecError` (a ValueError): the instance fails, nothing else.
"""
from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import struct
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from qrscp.dicom import imagecodecs_plugin
from qrscp.dicom.elements import Element

EXTRA = "codecs"
INSTALL_HINT = "pip install 'qrscp[codecs]'"

JPEG_BASELINE = imagecodecs_plugin.JPEG_BASELINE
JPEG_EXTENDED = imagecodecs_plugin.JPEG_EXTENDED
JPEG_LOSSLESS = imagecodecs_plugin.JPEG_LOSSLESS
JPEG_LOSSLESS_SV1 = imagecodecs_plugin.JPEG_LOSSLESS_SV1
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

JPEG_FAMILY = imagecodecs_plugin.JPEG_FAMILY
JPEG_LS_FAMILY = frozenset((JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS))
JPEG_2000_FAMILY = imagecodecs_plugin.JPEG_2000_FAMILY


@dataclass(frozen=True)
class Codec:
    """A pydicom plugin for one transfer syntax, the package of the extra that provides it, and the
    options it is called with."""

    plugin: str
    package: str
    options: tuple[tuple[str, Any], ...] = ()


#: What the ``codecs`` extra decodes (PS3.5 §8.2, §A.4).
DECODERS: dict[str, Codec] = {
    **{uid: Codec("imagecodecs", "imagecodecs") for uid in JPEG_FAMILY},
    **{uid: Codec("pyjpegls", "pyjpegls") for uid in JPEG_LS_FAMILY},
    **{uid: Codec("imagecodecs", "imagecodecs") for uid in JPEG_2000_FAMILY},   # on every core (see there)
    RLE_LOSSLESS: Codec("pylibjpeg", "pylibjpeg-rle"),
}
#: Lossy JPEG 2000 at 10:1, near-lossless JPEG-LS with a maximum error of 2 (DCMTK's dcmcjpls default).
J2K_LOSSY_RATIO = 10
JLS_NEAR_LOSSLESS_ERROR = 2
#: What the ``codecs`` extra encodes: pydicom 3 has encoders for these only.
ENCODERS: dict[str, Codec] = {
    RLE_LOSSLESS: Codec("pylibjpeg", "pylibjpeg-rle"),
    JPEG_LS_LOSSLESS: Codec("pyjpegls", "pyjpegls"),
    JPEG_LS_NEAR_LOSSLESS: Codec("pyjpegls", "pyjpegls", (("jls_error", JLS_NEAR_LOSSLESS_ERROR),)),
    JPEG_2000_LOSSLESS: Codec("pylibjpeg", "pylibjpeg-openjpeg"),
    JPEG_2000: Codec("pylibjpeg", "pylibjpeg-openjpeg", (("j2k_cr", [J2K_LOSSY_RATIO]),)),
}
#: Lossy transfer syntaxes, with their Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1) where it is
#: defined. JPEG-LS near-lossless and JPEG 2000 (.91) may carry lossless data, but qrscp encodes them lossy.
LOSSY_METHODS: dict[str, str] = {
    JPEG_BASELINE: "ISO_10918_1", JPEG_EXTENDED: "ISO_10918_1", JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1",
    JPEG_2000: "ISO_15444_1", HTJ2K: "ISO_15444_15",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2", "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    **{f"1.2.840.10008.1.2.4.{n}": "ISO_14496_10" for n in range(102, 107)},
    "1.2.840.10008.1.2.4.107": "ISO_23008_2", "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}
#: The Python modules each package of the extra installs, and numpy, which they all need.
_MODULES = {"numpy": "numpy", "imagecodecs": "imagecodecs", "pyjpegls": "jpeg_ls",
            "pylibjpeg-openjpeg": "openjpeg", "pylibjpeg-rle": "rle", "pylibjpeg": "pylibjpeg"}


class CodecError(ValueError):
    """Pixel data that cannot be decoded or encoded (a corrupt stream, an unsupported layout, a codec's
    refusal)."""


def is_lossy(transfer_syntax: str) -> bool:
    """True for the transfer syntaxes whose encoding loses information (as qrscp encodes them)."""
    return transfer_syntax in LOSSY_METHODS


# -- what is installed ----------------------------------------------------------------------------------

@functools.cache
def _installed(package: str) -> bool:
    """Whether ``package`` of the extra (and numpy) can be imported, without importing it (numpy may be
    kept out of ``sys.modules`` on purpose)."""
    return all(importlib.machinery.PathFinder.find_spec(_MODULES[name]) is not None
               for name in ("numpy", "pylibjpeg" if package.startswith("pylibjpeg-") else package, package))


class _NumpyRefused(importlib.abc.MetaPathFinder):
    """Refuses numpy, which pydicom imports when it is installed, for pixel data the archive decodes only to
    transcode (a finder: a ``None`` in ``sys.modules`` would tell other code that numpy is loaded)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] == "numpy":
            raise ModuleNotFoundError(f"No module named {name!r} (the server keeps numpy out)", name=name)


_NUMPY_REFUSED = _NumpyRefused()


def keep_numpy_out() -> None:
    """Keep numpy out of this process until a conversion needs it: about 10 MB less in every server
    process, and cheaper forks (``dcmqrscp`` calls this first thing)."""
    if "numpy" not in sys.modules and _NUMPY_REFUSED not in sys.meta_path:
        sys.meta_path.insert(0, _NUMPY_REFUSED)


@functools.cache
def _pixels() -> Any:
    """pydicom's ``pixels`` package with numpy, the extra's plugins registered (None without numpy)."""
    if not _installed("numpy"):
        return None
    if _NUMPY_REFUSED in sys.meta_path:   # kept out so far: let it in, and re-import what looked for it
        sys.meta_path.remove(_NUMPY_REFUSED)
        for name in [name for name in sys.modules if name == "pydicom.pixels" or name.startswith("pydicom.pixels.")]:
            del sys.modules[name]
    pixels = importlib.import_module("pydicom.pixels")
    for uid in JPEG_FAMILY | JPEG_2000_FAMILY:
        try:
            pixels.get_decoder(uid).add_plugin("imagecodecs", (imagecodecs_plugin.__name__, "decode_frame"))
        except ValueError:      # registered already (this package's pydicom.pixels was imported before)
            pass
    return pixels


def _coder(codecs: dict[str, Codec], transfer_syntax: str, kind: str) -> Any:
    """pydicom's ``kind`` ("decoder", "encoder") of ``transfer_syntax`` if the extra's plugin for it in
    ``codecs`` is available here."""
    codec = codecs.get(transfer_syntax)
    pixels = _pixels() if codec is not None and _installed(codec.package) else None
    if pixels is None:
        return None
    coder = getattr(pixels, f"get_{kind}")(transfer_syntax)
    return coder if codec.plugin in coder.available_plugins else None


def _decoder(transfer_syntax: str) -> Any:
    return _coder(DECODERS, transfer_syntax, "decoder")


def _encoder(transfer_syntax: str) -> Any:
    return _coder(ENCODERS, transfer_syntax, "encoder")


@functools.cache
def can_decode(transfer_syntax: str) -> bool:
    """Whether pixel data in ``transfer_syntax`` can be decoded with what is installed."""
    return _decoder(transfer_syntax) is not None


@functools.cache
def can_encode(transfer_syntax: str) -> bool:
    """Whether native pixel data can be encoded in ``transfer_syntax`` with what is installed."""
    return _encoder(transfer_syntax) is not None


def extra_decodes(transfer_syntax: str) -> bool:
    """Whether the ``codecs`` extra, once installed, decodes ``transfer_syntax``."""
    return transfer_syntax in DECODERS


def extra_encodes(transfer_syntax: str) -> bool:
    """Whether the ``codecs`` extra, once installed, encodes ``transfer_syntax``."""
    return transfer_syntax in ENCODERS


def preload() -> bool:
    """Import numpy and every codec of the extra now (before a privilege drop, say), each exercised once
    on a tiny image so that nothing is left to import lazily; False if the extra is not installed."""
    if _pixels() is None:
        return False
    image = ImagePixel(rows=64, columns=64, samples_per_pixel=1, bits_allocated=8, bits_stored=8,
                       pixel_representation=0, photometric_interpretation="MONOCHROME2",
                       planar_configuration=0, number_of_frames=1)
    frame = bytes(range(256)) * 16
    for transfer_syntax in ENCODERS:
        if can_encode(transfer_syntax) and can_decode(transfer_syntax):
            encoded = encode_frame(frame, image, transfer_syntax)
            _decode_frame(_decoder(transfer_syntax), encoded, image, transfer_syntax)
    for transfer_syntax in DECODERS:
        can_decode(transfer_syntax)
    if _installed("imagecodecs"):
        importlib.import_module("imagecodecs")
    return True


# -- the image pixel description ----------------------------------------------------------------------

ROWS = 0x00280010
COLUMNS = 0x00280011
SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC_INTERPRETATION = 0x00280004
PLANAR_CONFIGURATION = 0x00280006
NUMBER_OF_FRAMES = 0x00280008
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
PIXEL_REPRESENTATION = 0x00280103


@dataclass(frozen=True)
class ImagePixel:
    """The Image Pixel attributes that describe pixel data (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int

    @classmethod
    def of(cls, elements: list[Element]) -> ImagePixel:
        """The description in the top level of a data set (values read, little endian). Raises
        CodecError when it is incomplete or describes what no codec handles (bit-packed data)."""
        values = {element.tag: element.value for element in elements
                  if SAMPLES_PER_PIXEL <= element.tag <= PIXEL_REPRESENTATION and element.value is not None}

        def number(tag: int, default: int | None = None) -> int:
            value = values.get(tag)
            if not value or len(value) < 2:
                if default is None:
                    raise CodecError(f"no ({tag >> 16:04X},{tag & 0xFFFF:04X}) for the pixel data")
                return default
            return int.from_bytes(value[:2], "little")

        frames = values.get(NUMBER_OF_FRAMES, b"1").decode("ascii", "replace").strip(" \0") or "1"
        try:
            number_of_frames = int(frames)
        except ValueError:
            raise CodecError(f"Number of Frames {frames!r} is not a number") from None
        pixel = cls(rows=number(ROWS), columns=number(COLUMNS), samples_per_pixel=number(SAMPLES_PER_PIXEL, 1),
                    bits_allocated=number(BITS_ALLOCATED), bits_stored=number(BITS_STORED),
                    pixel_representation=number(PIXEL_REPRESENTATION, 0),
                    photometric_interpretation=values.get(PHOTOMETRIC_INTERPRETATION, b"").decode(
                        "ascii", "replace").strip(" \0"),
                    planar_configuration=number(PLANAR_CONFIGURATION, 0), number_of_frames=number_of_frames)
        if pixel.bits_allocated % 8 or not 8 <= pixel.bits_allocated <= 32 or pixel.number_of_frames < 1 \
                or pixel.samples_per_pixel not in (1, 3) or not pixel.photometric_interpretation:
            raise CodecError(f"pixel data of {pixel.bits_allocated} bits allocated, {pixel.samples_per_pixel} "
                             f"samples, {pixel.number_of_frames} frames, photometric interpretation "
                             f"{pixel.photometric_interpretation!r}: not converted")
        return pixel

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (YBR_FULL_422 keeps two samples a pixel, PS3.3 C.7.6.3.1.2)."""
        samples = 2 if self.photometric_interpretation == "YBR_FULL_422" else self.samples_per_pixel
        return self.rows * self.columns * samples * self.bits_allocated // 8

    def options(self, transfer_syntax: str, **changes: Any) -> dict[str, Any]:
        """pydicom's decoding and encoding options for this description."""
        from pydicom.uid import UID
        options = {"rows": self.rows, "columns": self.columns, "samples_per_pixel": self.samples_per_pixel,
                   "bits_allocated": self.bits_allocated, "bits_stored": self.bits_stored,
                   "pixel_representation": self.pixel_representation,
                   "photometric_interpretation": self.photometric_interpretation,
                   "number_of_frames": self.number_of_frames, "transfer_syntax_uid": UID(transfer_syntax),
                   "pixel_keyword": "PixelData"}
        if self.samples_per_pixel > 1:
            options["planar_configuration"] = self.planar_configuration
        options.update(changes)
        return options


# -- decoding -------------------------------------------------------------------------------------------

_J2K_SIZ = b"\xff\x4f\xff\x51"
#: JPEG start-of-frame markers (not DHT C4, JPG C8, DAC CC), and JPEG-LS's SOF55 (F7).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def codestream_shape(frame: bytes, transfer_syntax: str) -> tuple[int, int, int] | None:
    """(rows, columns, components) a JPEG, JPEG-LS or JPEG 2000 codestream declares (None: not found, or
    not one of those)."""
    if transfer_syntax in JPEG_2000_FAMILY:
        at = frame.find(_J2K_SIZ, 0, 1 << 16)
        if at < 0 or len(frame) < at + 42:
            return None
        x, y, x0, y0 = struct.unpack_from(">4L", frame, at + 8)
        return y - y0, x - x0, struct.unpack_from(">H", frame, at + 40)[0]
    if transfer_syntax not in JPEG_FAMILY | JPEG_LS_FAMILY:
        return None
    pos = 2 if frame[:2] == b"\xff\xd8" else -1
    while 0 <= pos and pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = struct.unpack_from(">H", frame, pos + 2)[0]
        if marker in _SOF_MARKERS and pos + 10 <= len(frame):
            rows, columns = struct.unpack_from(">HH", frame, pos + 5)
            return rows, columns, frame[pos + 9]
        if marker == 0xDA:      # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _check_shape(frame: bytes, pixel: ImagePixel, transfer_syntax: str) -> None:
    shape = codestream_shape(frame, transfer_syntax)
    if shape is None:
        return
    rows, columns, components = shape
    if (rows not in (0, pixel.rows)   # 0: the height follows in a DNL marker (JPEG)
            or columns != pixel.columns or components != pixel.samples_per_pixel):
        raise CodecError(f"the codestream is {columns}x{rows} with {components} components, the data set "
                         f"says {pixel.columns}x{pixel.rows} with {pixel.samples_per_pixel}")


def _decode_frame(decoder: Any, frame: bytes, pixel: ImagePixel, transfer_syntax: str) -> tuple[bytes, str]:
    """One encoded frame as native little-endian bytes, and the photometric interpretation they have."""
    from pydicom import encaps
    _check_shape(frame, pixel, transfer_syntax)
    array, properties = decoder.as_array(
        encaps.encapsulate([frame], has_bot=False), decoding_plugin=DECODERS[transfer_syntax].plugin,
        as_rgb=transfer_syntax in JPEG_FAMILY, **pixel.options(transfer_syntax, number_of_frames=1))
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    expected = pixel.rows * pixel.columns * pixel.samples_per_pixel * array.dtype.itemsize
    if len(data) != expected or array.dtype.itemsize != pixel.bits_allocated // 8:
        raise CodecError(f"a frame decoded to {len(data)} bytes, {expected} expected")
    interpretation = properties.get("photometric_interpretation", pixel.photometric_interpretation)
    # decoded without colour conversion, YBR_FULL_422 is full resolution: YBR_FULL (PS3.3 C.7.6.3.1.2)
    return data, "YBR_FULL" if interpretation == "YBR_FULL_422" else str(interpretation)


def decode(file: BinaryIO, pixel: ImagePixel, transfer_syntax: str, sink: Callable[[bytes], object],
           extended_offsets: tuple[bytes, bytes] | None = None) -> ImagePixel:
    """Decode the encapsulated pixel data at the position of ``file`` (its basic offset table item) frame by
    frame, each frame's native little-endian bytes to ``sink``; what they are (colour by pixel, the
    photometric interpretation of the decoded data: RGB for JPEG's YCbCr, as DCMTK's dcmdjpeg). Raises
    CodecError."""
    from pydicom import encaps
    decoder = _decoder(transfer_syntax)
    if decoder is None:
        raise CodecError(f"no decoder for {transfer_syntax} here")
    interpretation = pixel.photometric_interpretation
    decoded = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames: Iterator[bytes] = encaps.generate_frames(file, number_of_frames=pixel.number_of_frames,
                                                             extended_offsets=extended_offsets)
            for frame in frames:
                if decoded == pixel.number_of_frames:
                    break       # JPEG may split a frame into more than the data set says (pydicom's note)
                data, interpretation = _decode_frame(decoder, frame, pixel, transfer_syntax)
                sink(data)
                decoded += 1
    except CodecError:
        raise
    except Exception as error:   # whatever a codec raises on a corrupt stream
        raise CodecError(f"cannot decode frame {decoded + 1}: {_message(error)}") from error
    if decoded < pixel.number_of_frames:
        raise CodecError(f"{decoded} of {pixel.number_of_frames} frames in the pixel data")
    return replace(pixel, photometric_interpretation=interpretation, planar_configuration=0)


def _message(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1].strip() if text else type(error).__name__


# -- encoding -------------------------------------------------------------------------------------------

def encode_frame(frame: bytes, pixel: ImagePixel, transfer_syntax: str) -> bytes:
    """One native little-endian frame encoded in ``transfer_syntax``. Raises CodecError."""
    encoder = _encoder(transfer_syntax)
    if encoder is None:
        raise CodecError(f"no encoder for {transfer_syntax} here")
    codec = ENCODERS[transfer_syntax]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return encoder.encode(frame, encoding_plugin=codec.plugin, **dict(codec.options),
                                  **pixel.options(transfer_syntax, number_of_frames=1))
    except Exception as error:
        raise CodecError(f"cannot encode in {transfer_syntax}: {_message(error)}") from error


def encode(frames: Iterable[bytes], pixel: ImagePixel, transfer_syntax: str,
           sink: Callable[[bytes], object]) -> list[int]:
    """Encode native frames one by one, each (padded to even length) to ``sink``; their lengths. Raises
    CodecError (YBR_FULL_422 must be expanded first, which qrscp does not do)."""
    if pixel.photometric_interpretation == "YBR_FULL_422":
        raise CodecError("uncompressed YBR_FULL_422 pixel data is not recompressed")
    lengths = []
    for frame in frames:
        encoded = encode_frame(frame, pixel, transfer_syntax)
        if len(encoded) % 2:
            encoded += b"\0"
        sink(encoded)
        lengths.append(len(encoded))
    return lengths
