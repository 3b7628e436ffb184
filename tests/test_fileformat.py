"""Stored-file conversions (qrscp.dicom.fileformat): the storage output options, reading stored files, and the
retrieve-side transfer-syntax conversion.

Conversions are checked on pydicom's bundled test files, decoded back with pydicom and compared element by
element (pixel data included) with the original, and byte for byte against DCMTK's ``dcmconv`` with the
same options, which is the oracle for what the reference writes.
"""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import needs_dcmtk, run_dcmtk
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from qrscp.dicom import conversion, fileformat, uids
from qrscp.dicom.conversion import OutputFormat, StoredInstance
from qrscp.dicom.elements import SWAP_WIDTH, Encoding, swap
from qrscp.dicom.fileformat import StoredFile, read_stored_file
from qrscp.dicom.inflate import inflate
from qrscp.dicom.reader import BytesSource, read_dataset

LEI, LEE, BEE, DEFLATED = (uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_LE, uids.EXPLICIT_VR_BE,
                           uids.DEFLATED_EXPLICIT_VR_LE)
UNCOMPRESSED = (LEE, BEE, LEI, DEFLATED)
JPEG2000 = "1.2.840.10008.1.2.4.91"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"

#: pydicom test files in each uncompressed transfer syntax, with sequences, multi-frame pixel data,
#: waveforms, private elements and odd lengths between them.
FILES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm",
         "test-SR.dcm", "waveform_ecg.dcm", "rtdose_expb.dcm", "SC_rgb_small_odd_big_endian.dcm",
         "nested_priv_SQ.dcm", "examples_palette.dcm")
PADDING = 0xFFFCFFFC

# pydicom warns about the invalid values some of its test files hold on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")


# ---------------------------------------------------------------------------------------------------
# Helpers

@lru_cache(maxsize=None)
def stored(name: str) -> tuple[StoredFile, bytes]:
    """A pydicom test file as a stored file (as pydicom reads it), and its data set bytes."""
    path = get_testdata_file(name)
    dataset = dcmread(path, stop_before_pixels=True)
    offset = 132 + 12 + dataset.file_meta.FileMetaInformationGroupLength
    info = StoredFile(path, dataset.file_meta.TransferSyntaxUID, offset, dataset.get("SOPClassUID", ""),
                      dataset.get("SOPInstanceUID", ""))
    return info, Path(path).read_bytes()[offset:]


def convert_dataset(data: bytes, received: str, fmt: OutputFormat, meta_length: int = 0) -> tuple[bytes, str]:
    """The received data set ``data`` (deflated if ``received`` is) as a store with ``fmt`` writes it, and
    its transfer syntax."""
    if received == DEFLATED:
        data = inflate(data, 1 << 30)
    parts: list[bytes] = []
    target = conversion.convert(BytesSource(data), 0, received, fmt, parts.append, meta_length)
    return b"".join(parts), target


def transfer(path: str | Path, target: str) -> bytes:
    """The data set of the file ``path`` as a retrieve sends it to a peer that accepted ``target``."""
    with open(path, "rb") as file:
        instance = StoredInstance(read_stored_file(str(path), file), file, 1 << 30)
        try:
            data = instance.transfer(target).dataset
            return data if isinstance(data, bytes) else b"".join(data.chunks(0, data.size))
        finally:
            instance.close()


def decode(data: bytes, transfer_syntax: str) -> Dataset:
    """``data`` decoded by pydicom (behind a meta header naming ``transfer_syntax``)."""
    return dcmread(io.BytesIO(fileformat.file_meta(SC_IMAGE, "1.2.3", transfer_syntax, "") + data))


def little_endian_value(element, little: bool):
    """The element's value, with raw binary values (OW, OF, ...: bytes in pydicom) in little endian order."""
    width = SWAP_WIDTH.get(element.VR)
    if width and not little and isinstance(element.value, bytes):
        return swap(element.value, width)
    return element.value


def content(dataset: Dataset) -> dict[int, object]:
    """The elements of ``dataset`` (recursively) without group lengths and padding, comparable across
    transfer syntaxes: raw binary values in little endian order, sequences as lists of items, private
    values (unknown VR in implicit VR) as their bytes without trailing padding."""
    little = dataset.original_encoding[1]
    result: dict[int, object] = {}
    for tag in dataset.keys():
        if tag.element == 0 or tag == PADDING:
            continue
        raw = dataset.get_item(tag)
        value = raw.value.encode("latin-1") if isinstance(raw.value, str) else raw.value or b""
        if tag.is_private and not tag.is_private_creator and raw.VR != "SQ" and isinstance(value, bytes):
            width = SWAP_WIDTH.get(raw.VR or "UN")
            result[tag] = (value if little or not width else swap(value, width)).rstrip(b" \0")
            continue
        element = dataset[tag]
        if element.VR == "SQ":
            result[tag] = [content(item) for item in element.value]
        else:
            result[tag] = little_endian_value(element, little)
    return result


def same_content(a: Dataset, b: Dataset) -> None:
    """Assert ``a`` and ``b`` hold the same elements and values, and tell the first difference."""
    left, right = content(a), content(b)
    assert left.keys() == right.keys()
    for tag in left:
        assert left[tag] == right[tag], f"{tag} differs"


def explicit_le(*elements: tuple[int, str, bytes]) -> bytes:
    """A data set in explicit VR little endian from (tag, VR, value) triples, written as given."""
    parts = []
    for tag, vr, value in elements:
        if vr in ("OB", "OD", "OF", "OL", "OW", "SQ", "UC", "UN", "UR", "UT"):
            parts.append(struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value)
        else:
            parts.append(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value)
    return b"".join(parts)


def implicit_le(*elements: tuple[int, bytes]) -> bytes:
    """A data set in implicit VR little endian from (tag, value) pairs, written as given."""
    return b"".join(struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value for tag, value in elements)


def item(data: bytes) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(data)) + data


SOP_UIDS = ((0x00080016, "UI", SC_IMAGE.encode() + b"\0"), (0x00080018, "UI", b"1.2.3.4\0"))


def walk(data: bytes, little: bool = True) -> list[tuple[int, str, int, int]]:
    """The top-level (tag, VR, length, value offset) of an explicit VR data set, by hand."""
    endian = "<" if little else ">"
    result, pos = [], 0
    while pos < len(data):
        group, element = struct.unpack_from(endian + "HH", data, pos)
        vr = data[pos + 4:pos + 6].decode()
        if vr in ("OB", "OD", "OF", "OL", "OW", "SQ", "UC", "UN", "UR", "UT"):
            length, start = struct.unpack_from(endian + "L", data, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from(endian + "H", data, pos + 6)[0], pos + 8
        result.append(((group << 16) | element, vr, length, start))
        assert length != 0xFFFFFFFF, "walk() handles explicit lengths only"
        pos = start + length
    return result


# ---------------------------------------------------------------------------------------------------
# OutputFormat

def test_output_format_keeps_compressed_syntaxes():
    fmt = OutputFormat(write_xfer=LEE)
    assert fmt.target_syntax(BEE) == LEE
    assert fmt.target_syntax(JPEG2000) == JPEG2000
    assert not fmt.needs_conversion(JPEG2000)
    assert fmt.needs_conversion(BEE)
    assert OutputFormat(write_xfer=LEE, bit_preserving=True).target_syntax(BEE) == BEE
    assert not OutputFormat().needs_conversion(LEI)


# ---------------------------------------------------------------------------------------------------
# convert_dataset: transfer syntaxes

@pytest.mark.parametrize("target", UNCOMPRESSED)
@pytest.mark.parametrize("name", FILES)
def test_conversion_keeps_every_element(name, target):
    info, data = stored(name)
    # pydicom reads a private sequence of explicit length in implicit VR as bytes: undefined lengths there
    fmt = OutputFormat(write_xfer=target, length_explicit=not (name == "nested_priv_SQ.dcm" and target == LEI))
    converted, syntax = convert_dataset(data, info.transfer_syntax, fmt)
    assert syntax == target
    same_content(decode(data, info.transfer_syntax), decode(converted, target))


@pytest.mark.parametrize("name", ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"))
def test_conversion_round_trip_is_exact(name):
    info, data = stored(name)
    normalised, _ = convert_dataset(data, info.transfer_syntax, OutputFormat(write_xfer=info.transfer_syntax))
    for target in UNCOMPRESSED:
        there, _ = convert_dataset(data, info.transfer_syntax, OutputFormat(write_xfer=target))
        back, _ = convert_dataset(there, target, OutputFormat(write_xfer=info.transfer_syntax))
        assert back == normalised


def test_big_endian_swaps_binary_values():
    data = explicit_le(*SOP_UIDS, (0x00181638, "OF", struct.pack("<2f", 1.5, -2.25)),
                       (0x00280010, "US", struct.pack("<H", 0x0102)),
                       (0x00209165, "AT", struct.pack("<HH", 0x0028, 0x0010)),
                       (0x7FE00010, "OW", struct.pack("<2H", 0x0102, 0x0304)))
    converted, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=BEE))
    values = {tag: converted[start:start + length] for tag, _, length, start in walk(converted, little=False)}
    assert values[0x00181638] == struct.pack(">2f", 1.5, -2.25)
    assert values[0x00280010] == b"\x01\x02"
    assert values[0x00209165] == struct.pack(">HH", 0x0028, 0x0010)
    assert values[0x7FE00010] == b"\x01\x02\x03\x04"
    assert values[0x00080018] == b"1.2.3.4\0"


def test_deflated_output_is_raw_deflate_at_the_compression_level():
    info, data = stored("CT_small.dcm")
    fast, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=DEFLATED, compression_level=1))
    best, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=DEFLATED, compression_level=9))
    plain, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=LEE))
    assert zlib.decompress(fast, -zlib.MAX_WBITS) == zlib.decompress(best, -zlib.MAX_WBITS) == plain
    assert len(best) < len(fast)


def test_deflated_input_is_recompressed_at_another_level():
    info, data = stored("image_dfl.dcm")
    assert OutputFormat(compression_level=9).needs_conversion(DEFLATED)
    converted, syntax = convert_dataset(data, DEFLATED, OutputFormat(compression_level=9))
    assert syntax == DEFLATED
    same_content(decode(data, DEFLATED), decode(converted, DEFLATED))


def test_compressed_data_keeps_its_syntax_and_pixel_data():
    info, data = stored("JPEG2000.dcm")
    converted, syntax = convert_dataset(data, JPEG2000, OutputFormat(write_xfer=BEE, group_length="create"))
    assert syntax == JPEG2000
    original, result = decode(data, JPEG2000), decode(converted, JPEG2000)
    assert result.PixelData == original.PixelData
    assert result[0x00080000].value > 0
    same_content(original, result)


# ---------------------------------------------------------------------------------------------------
# convert_dataset: group lengths, sequence lengths, padding, new VRs

def group_lengths(dataset: Dataset) -> list[tuple[set[int], set[int]]]:
    """For every data set and item: (groups with a group length element, groups present)."""
    found = [({e.tag.group for e in dataset if e.tag.element == 0},
              {e.tag.group for e in dataset if e.tag.element != 0})]
    for element in dataset:
        if element.VR == "SQ":
            for child in element.value:
                found += group_lengths(child)
    return found


def test_group_length_create_adds_one_to_every_group_of_every_item():
    info, data = stored("rtplan.dcm")
    converted, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=LEE, group_length="create"))
    for with_length, present in group_lengths(decode(converted, LEE)):
        assert with_length == present
    elements = walk(converted)
    for tag, _, length, start in elements:
        if tag & 0xFFFF == 0:
            group = [(s, n) for t, _, n, s in elements if t >> 16 == tag >> 16 and t != tag]
            end = group[-1][0] + group[-1][1]
            assert struct.unpack_from("<L", converted, start)[0] == end - (start + 4)


def test_group_length_remove_drops_them_everywhere():
    info, data = stored("rtplan.dcm")
    with_lengths, _ = convert_dataset(data, LEI, OutputFormat(group_length="create"))
    converted, _ = convert_dataset(with_lengths, LEI, OutputFormat(group_length="remove"))
    assert all(not found for found, _ in group_lengths(decode(converted, LEI)))
    assert converted == convert_dataset(data, LEI, OutputFormat(write_xfer=LEI))[0]


def test_group_length_recalc_corrects_only_those_present():
    data = explicit_le((0x00080000, "UL", struct.pack("<L", 999)), *SOP_UIDS,
                       (0x00100010, "PN", b"DOE^JOHN"))
    converted, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=BEE))
    elements = walk(converted, little=False)
    assert [tag for tag, *_ in elements] == [0x00080000, 0x00080016, 0x00080018, 0x00100010]
    start = elements[0][3]
    assert struct.unpack_from(">L", converted, start)[0] == elements[3][3] - 8 - (start + 4)


@pytest.mark.parametrize("explicit", (True, False))
def test_sequence_and_item_lengths(explicit):
    info, data = stored("test-SR.dcm")
    converted, _ = convert_dataset(data, info.transfer_syntax, OutputFormat(length_explicit=explicit))
    result = decode(converted, info.transfer_syntax)
    sequences = [e for e in result.iterall() if e.VR == "SQ"]
    assert sequences
    for sequence in sequences:
        assert sequence.is_undefined_length is not explicit
        for child in sequence.value:
            assert child.is_undefined_length_sequence_item is not explicit
    same_content(decode(data, info.transfer_syntax), result)


def item_lengths(data: bytes, little: bool) -> list[int]:
    """Lengths of the items in a data set without binary values, found by their tag."""
    endian = "<" if little else ">"
    tag = struct.pack(endian + "HH", 0xFFFE, 0xE000)
    lengths, pos = [], data.find(tag)
    while pos >= 0:
        lengths.append(struct.unpack_from(endian + "L", data, pos + 4)[0])
        pos = data.find(tag, pos + 8)
    return lengths


@pytest.mark.parametrize("target", (LEE, LEI, BEE))
def test_padding_aligns_the_file_and_every_item(target):
    info, data = stored("rtplan.dcm")
    meta_length = 200
    converted, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=target, padding=(512, 64)), meta_length)
    assert (meta_length + len(converted)) % 512 == 0
    result = decode(converted, target)
    assert PADDING in result
    lengths = item_lengths(converted, little=target != BEE)
    assert lengths and all(length % 64 == 0 for length in lengths)
    same_content(decode(data, LEI), result)


def test_padding_is_replaced_and_removed():
    info, data = stored("rtplan.dcm")
    padded, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=LEE, padding=(256, 32)))
    repadded, _ = convert_dataset(padded, LEE, OutputFormat(padding=(256, 32)))
    assert repadded == padded
    unpadded, _ = convert_dataset(padded, LEE, OutputFormat(group_length="remove"))
    assert b"\xfc\xff\xfc\xff" not in unpadded
    assert unpadded == convert_dataset(data, LEI, OutputFormat(write_xfer=LEE))[0]


def test_odd_padding_pads_nothing_and_keeps_padding():
    info, data = stored("rtplan.dcm")
    converted, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=LEE, padding=(7, 64)))
    assert b"\xfc\xff\xfc\xff" not in converted
    info, data = stored("CT_small.dcm")
    kept, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=LEE, padding=(64, 7)))
    assert PADDING in decode(kept, LEE)
    assert PADDING not in decode(convert_dataset(data, LEE, OutputFormat(write_xfer=BEE))[0], BEE)


def test_disable_new_vr_writes_ob_in_little_endian_order():
    values = {0x00181638: ("OF", struct.pack("<2f", 1.5, -2.25)), 0x0040A160: ("UT", b"text"),
              0x00660040: ("OL", struct.pack("<L", 0x01020304)), 0x00091001: ("UN", b"\x01\x02\x03\x04"),
              0x00080119: ("UC", b"abcd"), 0x00660022: ("OD", struct.pack("<d", 3.5))}
    data = explicit_le(*SOP_UIDS, (0x00090010, "LO", b"ACME"),
                       *sorted((tag, vr, value) for tag, (vr, value) in values.items()))
    for target in (LEE, BEE):
        converted, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=target, enable_new_vr=False))
        written = {tag: (vr, converted[start:start + length])
                   for tag, vr, length, start in walk(converted, little=target == LEE)}
        assert {tag: written.get(tag) for tag in values} == {tag: ("OB", value) for tag, (_, value) in values.items()}
        assert written.keys() == {0x00080016, 0x00080018, 0x00090010, *values}   # nothing dropped, nothing added


# ---------------------------------------------------------------------------------------------------
# convert_dataset: implicit VR, strings, errors

def test_implicit_vr_gets_the_vrs_dcmtk_gives():
    ambiguous = implicit_le(
        (0x00080016, SC_IMAGE.encode() + b"\0"), (0x00080018, b"1.2.3.4\0"),
        (0x00090010, b"ACME"), (0x00091001, b"\x01\x02"),
        (0x00280103, struct.pack("<H", 1)), (0x00280106, struct.pack("<H", 0xFFFE)),
        (0x00281101, struct.pack("<3H", 4, 0, 16)),
        (0x00283000, item(implicit_le((0x00283002, struct.pack("<3H", 4, 0, 16)),
                                      (0x00283006, struct.pack("<2H", 1, 2))))),
        (0x54000100, item(implicit_le((0x54001004, struct.pack("<H", 16)), (0x54001010, b"\x01\x02")))
         + item(implicit_le((0x54001004, struct.pack("<H", 8)), (0x54001010, b"\x01\x02")))),
        (0x60003000, b"\x01\x02"), (0x7FE00010, b"\x01\x02"))
    converted, _ = convert_dataset(ambiguous, LEI, OutputFormat(write_xfer=LEE))
    result = decode(converted, LEE)
    assert result[0x00091001].VR == "UN"
    assert result[0x00280106].VR == "SS"                  # PixelRepresentation 1 in the same data set
    assert result[0x00281101].VR == "US"                  # not one of those elements
    assert result[0x00283000].value[0][0x00283002].VR == "US"   # no PixelRepresentation in the item
    assert result[0x00283000].value[0][0x00283006].VR == "OW"
    assert [w[0x54001010].VR for w in result[0x54000100].value] == ["OW", "OB"]
    assert result[0x60003000].VR == result[0x7FE00010].VR == "OW"


def test_string_values_are_written_as_dcmtk_does():
    data = explicit_le((0x00080016, "UI", SC_IMAGE.encode() + b"\0"), (0x00080018, "UI", b" 1.2. 3 "),
                       (0x00080050, "SH", b"    "), (0x00080070, "LO", b"ABC"), (0x00080080, "LO", b"AB  "),
                       (0x00100010, "PN", b"A^B "), (0x00101010, "AS", b"A\0"))
    converted, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=LEI))
    elements = {e.tag: e.value for e in read_dataset(converted, Encoding.of(LEI)).elements}
    assert elements == {0x00080016: SC_IMAGE.encode() + b"\0", 0x00080018: b"1.2.3\0", 0x00080050: b"",
                        0x00080070: b"ABC\0", 0x00080080: b"AB", 0x00100010: b"A^B ", 0x00101010: b"A\0"}


def test_elements_are_sorted_and_a_repeated_tag_keeps_the_first():
    data = explicit_le((0x00100010, "PN", b"FIRST "), *SOP_UIDS, (0x00100010, "PN", b"SECOND"))
    converted, _ = convert_dataset(data, LEE, OutputFormat(write_xfer=LEI))
    assert [(e.tag, e.value) for e in read_dataset(converted, Encoding.of(LEI)).elements] == [
        (0x00080016, SC_IMAGE.encode() + b"\0"), (0x00080018, b"1.2.3.4\0"), (0x00100010, b"FIRST ")]


def test_cp246_un_sequence_is_written_as_sq():
    info, data = stored("UN_sequence.dcm")
    converted, _ = convert_dataset(data, info.transfer_syntax, OutputFormat(length_explicit=False))
    result = decode(converted, info.transfer_syntax)
    sequence = result[0x4453100C]
    assert sequence.VR == "SQ"
    assert sequence.value[0][0x00081115].value[0][0x00081199].value[0].ReferencedSOPClassUID == \
        "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("data, syntax", [
    (stored("MR_truncated.dcm")[1], LEE),
    (stored("rtplan_truncated.dcm")[1], LEI),
    (b"\x08\x00\x16\x00UI\x1a\x00short", LEE),
    (b"\x08\x00", LEE),
    (explicit_le((0x00081115, "SQ", b"\x08\x00\x50\x11UI\x02\x0012")), LEE),   # not an item
    (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", LEE),                                # an item at the top level
    (b"not deflated data", DEFLATED),
])
def test_bad_data_raises_value_error(data, syntax):
    with pytest.raises(ValueError):
        convert_dataset(data, syntax, OutputFormat(write_xfer=LEI))


# ---------------------------------------------------------------------------------------------------
# read_stored_file

@pytest.mark.parametrize("name", [name for name in FILES if name != "nested_priv_SQ.dcm"] + ["JPEG2000.dcm"])
def test_read_stored_file_with_meta_header(name):
    path = get_testdata_file(name)
    info = read_stored_file(path)
    dataset = dcmread(path)
    assert info.path == path
    assert info.transfer_syntax == dataset.file_meta.TransferSyntaxUID
    assert info.sop_class_uid == dataset.file_meta.MediaStorageSOPClassUID
    assert info.sop_instance_uid == dataset.file_meta.MediaStorageSOPInstanceUID
    with open(path, "rb") as file:
        file.seek(info.dataset_offset)
        assert file.read(2) != b"\x02\x00"
    assert info.dataset_offset == 132 + 12 + dataset.file_meta.FileMetaInformationGroupLength


@pytest.mark.parametrize("target", (LEE, BEE, LEI))
def test_read_stored_file_without_meta_header_detects_the_syntax(tmp_path, target):
    info, data = stored("rtplan.dcm")
    converted, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=target, group_length="create"))
    path = tmp_path / "dataset.dcm"
    path.write_bytes(converted)
    assert read_stored_file(str(path)) == StoredFile(str(path), target, 0, info.sop_class_uid,
                                                      info.sop_instance_uid)
    assert info.sop_instance_uid == "1.2.777.777.77.7.7777.7777.20030903150023"    # not the meta header's


@pytest.mark.parametrize("name, syntax", [("ExplVR_BigEndNoMeta.dcm", BEE), ("ExplVR_LitEndNoMeta.dcm", LEE)])
def test_read_stored_file_without_meta_header_pydicom_files(name, syntax):
    info = read_stored_file(get_testdata_file(name))
    assert (info.transfer_syntax, info.dataset_offset) == (syntax, 0)
    assert info.sop_instance_uid == dcmread(get_testdata_file(name), force=True).SOPInstanceUID


def test_read_stored_file_meta_without_uids_reads_the_data_set(tmp_path):
    info, data = stored("image_dfl.dcm")
    meta = struct.pack("<HH2sH", 2, 0x10, b"UI", len(DEFLATED)) + DEFLATED.encode()
    path = tmp_path / "deflated.dcm"
    path.write_bytes(bytes(128) + b"DICM" + meta + data)
    assert read_stored_file(str(path)) == StoredFile(str(path), DEFLATED, 132 + len(meta),
                                                      info.sop_class_uid, info.sop_instance_uid)


def test_read_stored_file_errors(tmp_path):
    with pytest.raises(OSError):
        read_stored_file(str(tmp_path / "missing.dcm"))
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a DICOM file at all")
    with pytest.raises(ValueError):
        read_stored_file(str(garbage))
    with pytest.raises(ValueError, match="no SOP Class UID"):
        read_stored_file(get_testdata_file("nested_priv_SQ.dcm"))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:150])
    with pytest.raises(ValueError):
        read_stored_file(str(truncated))


# ---------------------------------------------------------------------------------------------------
# dataset_for_transfer

def test_transfer_in_the_stored_syntax_is_the_data_unchanged():
    for name in ("CT_small.dcm", "JPEG2000.dcm", "image_dfl.dcm"):
        info, data = stored(name)
        assert transfer(info.path, info.transfer_syntax) == data


@pytest.mark.parametrize("target", UNCOMPRESSED)
@pytest.mark.parametrize("name", ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "image_dfl.dcm", "test-SR.dcm"))
def test_transfer_converts_between_uncompressed_syntaxes(name, target):
    info, data = stored(name)
    converted = transfer(info.path, target)
    same_content(decode(data, info.transfer_syntax), decode(converted, target))


def test_transfer_keeps_padding(tmp_path):
    info, data = stored("rtplan.dcm")
    padded, _ = convert_dataset(data, LEI, OutputFormat(write_xfer=LEE, padding=(256, 32)))
    path = tmp_path / "padded.dcm"
    path.write_bytes(padded)
    converted = transfer(path, BEE)
    assert PADDING in decode(converted, BEE)


def test_transfer_never_compresses_lossy_unasked_nor_decodes_video():
    """Lossy JPEG 2000 only when the user asked for it (tests/test_transcoding.py covers the codecs)."""
    with pytest.raises(ValueError, match="cannot convert"):
        transfer(get_testdata_file("CT_small.dcm"), JPEG2000)
    with pytest.raises(ValueError, match="cannot convert"):
        transfer(get_testdata_file("CT_small.dcm"), "1.2.840.10008.1.2.4.100")


def test_transfer_of_compressed_syntax_without_pixel_data():
    info, data = stored("UN_sequence.dcm")
    converted = transfer(info.path, BEE)
    same_content(decode(data, info.transfer_syntax), decode(converted, BEE))


# ---------------------------------------------------------------------------------------------------
# DCMTK as the oracle: the same bytes as dcmconv with the same options

XFER_OPTIONS = {LEE: "+te", BEE: "+tb", LEI: "+ti", DEFLATED: "+td"}
GROUP_LENGTH_OPTIONS = {"recalc": "+g=", "create": "+g", "remove": "-g"}


def dcmconv_options(fmt: OutputFormat) -> list[str]:
    """dcmconv's options for what ``fmt`` asks (``-p`` as dcmqrscp's default: padding removed)."""
    options = [XFER_OPTIONS.get(fmt.write_xfer, "+t="), GROUP_LENGTH_OPTIONS[fmt.group_length],
               "+e" if fmt.length_explicit else "-e", "+u" if fmt.enable_new_vr else "-u"]
    options += ["+p", *map(str, fmt.padding)] if fmt.padding else ["-p"]
    if fmt.compression_level is not None:
        options += ["+cl", str(fmt.compression_level)]
    return options


def dcmconv(tmp_path: Path, source: Path, *options: str) -> tuple[StoredFile, bytes]:
    """``dcmconv`` output of ``source``: the stored-file view and its data set bytes."""
    output = tmp_path / "dcmconv.dcm"
    result = run_dcmtk("dcmconv", "-q", *options, str(source), str(output))
    assert result.returncode == 0, result.stderr
    info = read_stored_file(str(output))
    return info, output.read_bytes()[info.dataset_offset:]


ORACLE_FORMATS = [
    OutputFormat(write_xfer=LEE), OutputFormat(write_xfer=BEE), OutputFormat(write_xfer=LEI),
    OutputFormat(write_xfer=DEFLATED), OutputFormat(write_xfer=DEFLATED, compression_level=1),
    OutputFormat(group_length="create"), OutputFormat(write_xfer=BEE, group_length="create"),
    OutputFormat(group_length="remove"), OutputFormat(length_explicit=False),
    OutputFormat(write_xfer=LEI, length_explicit=False, group_length="create"),
    OutputFormat(padding=(512, 64)), OutputFormat(write_xfer=LEI, padding=(100, 6)),
    OutputFormat(write_xfer=DEFLATED, padding=(256, 16), group_length="create"),
    OutputFormat(padding=(7, 64)), OutputFormat(padding=(0, 10)),
    OutputFormat(enable_new_vr=False), OutputFormat(write_xfer=BEE, enable_new_vr=False),
    OutputFormat(write_xfer=BEE, group_length="create", length_explicit=False, padding=(256, 16),
                 enable_new_vr=False),
]


def oracle_id(fmt: OutputFormat) -> str:
    return " ".join(dcmconv_options(fmt))


@needs_dcmtk
@pytest.mark.parametrize("fmt", ORACLE_FORMATS, ids=oracle_id)
@pytest.mark.parametrize("name", ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "image_dfl.dcm", "rtplan.dcm", "test-SR.dcm", "JPEG2000.dcm"))
def test_conversion_matches_dcmconv(tmp_path, name, fmt):
    info, data = stored(name)
    if not conversion.is_uncompressed(info.transfer_syntax) and fmt.write_xfer:
        fmt = OutputFormat(group_length=fmt.group_length, length_explicit=fmt.length_explicit,
                           padding=fmt.padding, enable_new_vr=fmt.enable_new_vr)
    expected_info, expected = dcmconv(tmp_path, Path(get_testdata_file(name)), *dcmconv_options(fmt))
    converted, syntax = convert_dataset(data, info.transfer_syntax, fmt, expected_info.dataset_offset)
    assert syntax == expected_info.transfer_syntax
    assert converted == expected


@needs_dcmtk
@pytest.mark.parametrize("target", (LEE, BEE, LEI))
def test_implicit_vr_conversion_matches_dcmconv(tmp_path, target):
    data = implicit_le(
        (0x00080016, SC_IMAGE.encode() + b"\0"), (0x00080018, b"1.2.3.4\0"),
        (0x00080119, b"abcd"), (0x00090010, b"ACME"), (0x00091001, b"\x01\x02\x03\x04"),
        (0x00181638, struct.pack("<2f", 1.5, -2.25)), (0x00280100, struct.pack("<H", 8)),
        (0x00280103, struct.pack("<H", 1)), (0x00280106, struct.pack("<H", 0x8001)),
        (0x00280120, struct.pack("<H", 2)), (0x00281101, struct.pack("<3H", 4, 0, 16)),
        (0x00283000, item(implicit_le((0x00283002, struct.pack("<3H", 4, 0, 16)),
                                      (0x00283006, struct.pack("<2H", 1, 2))))),
        (0x0040A160, b"text"), (0x00660040, struct.pack("<L", 0x01020304)),
        (0x54000100, item(implicit_le((0x54001004, struct.pack("<H", 32)), (0x54001010, b"\x01\x02")))
         + item(implicit_le((0x54001004, struct.pack("<H", 8)), (0x54001010, b"\x01\x02")))),
        (0x5400100A, b"\x01\x02"), (0x60003000, b"\x01\x02\x03\x04"), (0x7FE00010, b"\x01\x02\x03\x04"))
    source = tmp_path / "implicit.dcm"
    source.write_bytes(data)
    for enable_new_vr in (True, False):
        fmt = OutputFormat(write_xfer=target, enable_new_vr=enable_new_vr)
        _, expected = dcmconv(tmp_path, source, "-f", "-ti", *dcmconv_options(fmt))
        assert convert_dataset(data, LEI, fmt)[0] == expected


@needs_dcmtk
def test_string_values_match_dcmconv(tmp_path):
    values = [b"AB  ", b"ABC", b" A B ", b"A\0", b"AB\0\0", b"A \\B ", b"", b"    ", b"1. 2", b"A\t "]
    tags = {"CS": 0x00080060, "LO": 0x00080070, "LT": 0x00080108, "PN": 0x00100010, "UT": 0x0040A160,
            "UI": 0x0020000D}
    for value in values:
        data = explicit_le(*SOP_UIDS, *sorted((tag, vr, value) for vr, tag in tags.items()))
        source = tmp_path / "strings.dcm"
        source.write_bytes(data)
        _, expected = dcmconv(tmp_path, source, "-f", "-te", "+ti", "-p")
        assert convert_dataset(data, LEE, OutputFormat(write_xfer=LEI))[0] == expected, value


@needs_dcmtk
@pytest.mark.parametrize("target", UNCOMPRESSED)
@pytest.mark.parametrize("name", ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "image_dfl.dcm", "test-SR.dcm", "UN_sequence.dcm"))
def test_transfer_matches_dcmtk_network_encoding(tmp_path, name, target):
    """DCMTK sends with explicit lengths, group lengths recalculated and padding kept (dcmconv +g= +e -p=); a
    deflated stream goes padded to even length, as DCMTK's receivers require (PS3.5 §A.5)."""
    info, data = stored(name)
    if target == info.transfer_syntax:
        return
    _, expected = dcmconv(tmp_path, Path(get_testdata_file(name)), XFER_OPTIONS[target], "+g=", "+e", "-p=")
    if len(expected) % 2:
        expected += b"\0"
    assert transfer(info.path, target) == expected


@needs_dcmtk
@pytest.mark.parametrize("target", (LEE, BEE, LEI))
def test_detection_without_meta_header_matches_dcmtk(tmp_path, target):
    """dcmconv +t= writes what it detected in a file without meta information into the meta header."""
    for name in ("CT_small.dcm", "rtplan.dcm", "test-SR.dcm"):
        source = tmp_path / "no-meta.dcm"
        assert run_dcmtk("dcmconv", "-F", XFER_OPTIONS[target], get_testdata_file(name), str(source)).returncode == 0
        detected, _ = dcmconv(tmp_path, source, "+t=")
        assert read_stored_file(str(source)).transfer_syntax == detected.transfer_syntax == target
