"""A pydicom decoding plugin for the JPEG (ISO/IEC 10918) transfer syntaxes, on imagecodecs (BSD-3-Clause).

pydicom's permissively licensed plugins do not decode them all: python-gdcm and Pillow refuse 12-bit JPEG
Extended, and the plugin that does (pylibjpeg-libjpeg) is GPL-3. imagecodecs' libjpeg-turbo decodes the
8- and 12-bit lossy processes, its liblj92 the lossless ones (Process 14, 14 SV1). Registered by
:mod:`qrscp.dicom.transcoding` as pydicom's plugin interface asks: ``is_available``,
``DECODER_DEPENDENCIES`` and a frame decoder.
"""
from __future__ import annotations

from typing import Any

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

DECODER_DEPENDENCIES = {uid: ("numpy", "imagecodecs")
                        for uid in (JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1)}


def is_available(uid: str) -> bool:
    """True if imagecodecs is installed and ``uid`` is one of the JPEG syntaxes."""
    if uid not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def decode_frame(src: bytes, runner: Any) -> bytes:
    """One JPEG frame decoded to native bytes, samples interleaved, in the stream's colour space (pydicom
    converts YCbCr to RGB itself, as it does for its own plugins)."""
    import imagecodecs

    if runner.transfer_syntax in (JPEG_LOSSLESS, JPEG_LOSSLESS_SV1):
        return imagecodecs.ljpeg_decode(src).tobytes()
    if runner.samples_per_pixel == 3:
        colour = "YCBCR" if runner.photometric_interpretation.startswith("YBR") else "RGB"
        return imagecodecs.jpeg8_decode(src, colorspace=colour, outcolorspace=colour).tobytes()
    return imagecodecs.jpeg8_decode(src).tobytes()
