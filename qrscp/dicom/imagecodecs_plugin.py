"""A pydicom decoding plugin on imagecodecs (BSD-3-Clause) for the JPEG (ISO/IEC 10918) and JPEG 2000
(ISO/IEC 15444, HTJ2K included) transfer syntaxes.

pydicom's permissively licensed plugins do not decode all of JPEG: python-gdcm and Pillow refuse 12-bit
JPEG Extended, and the plugin that does (pylibjpeg-libjpeg) is GPL-3. imagecodecs' libjpeg-turbo decodes
the 8- and 12-bit lossy processes, its liblj92 the lossless ones (Process 14, 14 SV1). JPEG 2000 is decoded
by the same OpenJPEG as pylibjpeg-openjpeg's, but on every core this process may use (its code-blocks in
parallel: 1.8 times as fast on two cores), with the settings pydicom's own plugin makes. Registered by
:mod:`qrscp.dicom.transcoding` as pydicom's plugin interface asks: ``is_available``,
``DECODER_DEPENDENCIES`` and a frame decoder.
"""
from __future__ import annotations

import os
from typing import Any

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_FAMILY = frozenset((JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1))
#: JPEG 2000 Lossless, JPEG 2000, HTJ2K Lossless, HTJ2K Lossless RPCL, HTJ2K (PS3.5 §A.4.4, §A.4.13).
JPEG_2000_FAMILY = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (90, 91, 201, 202, 203))

DECODER_DEPENDENCIES = {uid: ("numpy", "imagecodecs") for uid in JPEG_FAMILY | JPEG_2000_FAMILY}


def is_available(uid: str) -> bool:
    """True if imagecodecs is installed and ``uid`` is one of the syntaxes above."""
    if uid not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def decode_frame(src: bytes, runner: Any) -> bytes:
    """One frame decoded to native bytes, samples interleaved: JPEG in the stream's colour space (pydicom
    converts YCbCr to RGB itself, as it does for its own plugins), JPEG 2000 with its component transform
    undone (RGB)."""
    import imagecodecs

    if runner.transfer_syntax in JPEG_2000_FAMILY:
        frame = imagecodecs.jpeg2k_decode(src, numthreads=len(os.sched_getaffinity(0))).tobytes()
        # what pydicom's plugin for OpenJPEG (pylibjpeg) tells the runner after decoding
        if runner.photometric_interpretation in ("YBR_ICT", "YBR_RCT"):
            runner.set_option("photometric_interpretation", "RGB")
        precision = runner.get_option("j2k_precision", runner.bits_stored)
        if 0 < precision <= 32:
            runner.set_option("bits_allocated", 8 if precision <= 8 else 16 if precision <= 16 else 32)
        return frame
    if runner.transfer_syntax in (JPEG_LOSSLESS, JPEG_LOSSLESS_SV1):
        return imagecodecs.ljpeg_decode(src).tobytes()
    if runner.samples_per_pixel == 3:
        colour = "YCBCR" if runner.photometric_interpretation.startswith("YBR") else "RGB"
        return imagecodecs.jpeg8_decode(src, colorspace=colour, outcolorspace=colour).tobytes()
    return imagecodecs.jpeg8_decode(src).tobytes()
