"""index.dat format 5 (qrscp.archive.index) and the extraction of index values (qrscp.archive.index_values).

Also home of a small raw DICOM writer (``Encoder``, ``dicom_file``) used by the other storage tests: it
writes exactly the bytes it is given (odd lengths, stray padding, wrong VRs), which pydicom would fix.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from conftest import needs_dcmtk, run_dcmtk
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from qrscp.archive import index
from qrscp.archive.index_values import IndexValues, read_index_values
from qrscp.archive.storage_area import DatabaseError, StorageArea
from qrscp.dicom.elements import DataSetError


def index_values_from_bytes(data: bytes, transfer_syntax_uid: str | None = None) -> IndexValues:
    """The index values of a file holding ``data`` (a DICOM file, or a bare data set in ``transfer_syntax_uid``)."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as file:
        file.write(data)
        file.flush()
        return read_index_values(file.name, transfer_syntax_uid)


IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF


# --- a raw DICOM writer -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Encoder:
    """Encodes elements, items and sequences byte for byte in one transfer syntax."""

    transfer_syntax: str = EXPLICIT_LE

    @property
    def explicit(self) -> bool:
        return self.transfer_syntax != IMPLICIT_LE

    @property
    def order(self) -> str:
        return ">" if self.transfer_syntax == EXPLICIT_BE else "<"

    def element(self, tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
        length = len(value) if length is None else length
        head = struct.pack(self.order + "HH", tag >> 16, tag & 0xFFFF)
        if not self.explicit:
            return head + struct.pack(self.order + "I", length) + value
        if vr in _LONG_VRS:
            return head + vr + b"\0\0" + struct.pack(self.order + "I", length) + value
        return head + vr + struct.pack(self.order + "H", length) + value

    def item(self, content: bytes, undefined: bool = False) -> bytes:
        if undefined:
            return (struct.pack(self.order + "HHI", 0xFFFE, 0xE000, UNDEFINED) + content
                    + struct.pack(self.order + "HHI", 0xFFFE, 0xE00D, 0))
        return struct.pack(self.order + "HHI", 0xFFFE, 0xE000, len(content)) + content

    def sequence(self, tag: int, items: list[bytes], undefined: bool = False) -> bytes:
        body = b"".join(self.item(item, undefined) for item in items)
        if undefined:
            return self.element(tag, b"SQ", body + struct.pack(self.order + "HHI", 0xFFFE, 0xE0DD, 0), UNDEFINED)
        return self.element(tag, b"SQ", body)

    def encapsulated_pixel_data(self, fragments: list[bytes]) -> bytes:
        body = self.item(b"") + b"".join(self.item(fragment) for fragment in fragments)
        return self.element(0x7FE00010, b"OB", body + struct.pack(self.order + "HHI", 0xFFFE, 0xE0DD, 0),
                            UNDEFINED)

    def dataset(self, elements: list[tuple[int, bytes, bytes]]) -> bytes:
        """Elements (tag, VR, value) in tag order; the first of equal tags comes first."""
        return b"".join(self.element(tag, vr, value) for tag, vr, value in
                        sorted(elements, key=lambda element: element[0]))


def _even(uid: bytes) -> bytes:
    return uid + b"\0" if len(uid) % 2 else uid


def dicom_file(dataset: bytes, transfer_syntax: str = EXPLICIT_LE, sop_class_uid: bytes = SECONDARY_CAPTURE.encode(),
               sop_instance_uid: bytes = b"1.2.3.4", meta: bool = True) -> bytes:
    """A DICOM file: preamble and file meta information (unless ``meta`` is false), then ``dataset``
    (deflated for the deflated transfer syntax)."""
    if transfer_syntax == DEFLATED:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset = compressor.compress(dataset) + compressor.flush()
    if not meta:
        return dataset
    meta_encoder = Encoder(EXPLICIT_LE)
    body = meta_encoder.dataset([(0x00020001, b"OB", b"\0\1"), (0x00020002, b"UI", _even(sop_class_uid)),
                                 (0x00020003, b"UI", _even(sop_instance_uid)),
                                 (0x00020010, b"UI", _even(transfer_syntax.encode()))])
    group_length = meta_encoder.element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return bytes(128) + b"DICM" + group_length + body + dataset


def instance(sop_instance_uid: bytes, study_instance_uid: bytes = b"1.2.3", *, transfer_syntax: str = EXPLICIT_LE,
             sop_class_uid: bytes = SECONDARY_CAPTURE.encode(), extra: list[tuple[int, bytes, bytes]] = (),
             padding: int = 0) -> bytes:
    """A small instance file; ``padding`` bytes of pixel data make it larger."""
    encoder = Encoder(transfer_syntax)
    elements = [(0x00080016, b"UI", _even(sop_class_uid)), (0x00080018, b"UI", _even(sop_instance_uid)),
                (0x0020000D, b"UI", _even(study_instance_uid)), (0x00100010, b"PN", b"Doe^John"),
                (0x00100020, b"LO", b"PID1"), (0x00080060, b"CS", b"OT"), *extra]
    if padding:
        elements.append((0x7FE00010, b"OB", bytes(padding + padding % 2)))
    return dicom_file(encoder.dataset(elements), transfer_syntax, sop_class_uid, sop_instance_uid)


#: A data set exercising DCMTK's value rules: (tag, VR, raw value, the value DCMTK stores). Every
#: expectation was observed with DCMTK 3.6.7's dcmqridx (test_dcmqridx re-checks them against it).
VALUE_RULES = [
    (0x00080005, b"CS", b"ISO_IR 100", b"ISO_IR 100"),
    (0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0", b"1.2.840.10008.5.1.4.1.1.7"),
    (0x00080018, b"UI", b"1.2.3.4\0", b"1.2.3.4"),
    (0x00100010, b"PN", b"  M\xfcller^J\xf6rg   ", b"  M\xfcller^J\xf6rg"),   # leading kept, trailing removed
    (0x00100020, b"LO", b"ID\0\0", b"ID"),                                 # cut at the NUL
    (0x00081030, b"LO", b"A \\B  ", b"A \\B"),                             # multi-valued: backslash kept
    (0x0008103E, b"LO", b"X\0\0 ", b"X"),
    (0x00204000, b"LT", b"line1\r\nline2    ", b"line1\r\nline2"),
    (0x0020000D, b"UI", b" 1.2 .3\t", b"1.2.3"),                           # UIDs lose every white space
    (0x0020000E, b"UI", b"1.2.4", b"1.2.4"),                               # odd length
    (0x00100040, b"CS", b"", b""),
    (0x00080060, b"CS", b"    ", b""),
    (0x00101010, b"AS", b"0123456789" * 4, b"0123456789" * 4),             # truncated by the record writer
    (0x00080050, b"SH", b" \0 x", b" "),
    (0x00200011, b"IS", b" 12 ", b" 12"),
    (0x00101030, b"DS", b" 1.50\\2 ", b" 1.50\\2"),
    (0x00100030, b"DA", b"20200101 ", b"20200101 "),                       # odd length keeps its space
    (0x00080030, b"TM", b"1010\0 ", b"1010"),
    (0x00081060, b"PN", b"A\\ B ", b"A\\ B "),
    (0x00081050, b"PN", b"\\\\", b"\\\\"),
    (0x00181030, b"LO", b" \0 ", b" "),
    (0x00102160, b"SH", b"\tX\t", b"\tX\t"),
    (0x00100021, b"UN", b"Issuer", b""),                                   # not a string VR: nothing
    (0x00200010, b"SH", b"\0\0  ", b""),
    (0x00700080, b"CS", b"LABEL", b"LABEL"),
]


def value_rules_dataset(encoder: Encoder) -> bytes:
    return encoder.dataset([(tag, vr, raw) for tag, vr, raw, _ in VALUE_RULES])


# --- layout -------------------------------------------------------------------------------------------------------

def test_layout_is_the_reference_one():
    assert (index.HEADER, index.RECORDS_OFFSET, index.RECORD_SIZE) == (b"QRDB05", 44006, 8032)
    fields = {param.field.name: (param.field.offset, param.field.size) for param in index.PARAMS}
    assert fields["PatientBirthDate"] == (952, 81)
    assert fields["ProcedureDescription"] == (3623, 257)
    assert fields["SOPInstanceUID"] == (5300, 65)
    assert fields["PresentationLabel"] == (6603, 17)
    assert fields["SpecificCharacterSet"] == (7007, 1025)
    assert (index.HSTAT.offset, index.INSTANCE_DESCRIPTION.offset) == (6877, 6878)
    tags = [param.tag for param in index.PARAMS]
    assert tags[11] == tags[15] == 0x00081030 and tags[12] == tags[16] == 0x00081060
    assert tags[35] == 0x00700080 and tags[37] == 0x00080005
    assert index.PARAM_BY_TAG[0x00081030].index == 11


def test_free_record_has_the_shape_dcmtk_gives_it():
    free = index.FREE_RECORD
    assert len(free) == index.RECORD_SIZE and free[0] == 0
    for param in index.PARAMS:
        pointer, length, group, element = struct.unpack_from("<QIHH", free, param.offset)
        assert (pointer, length, group << 16 | element) == (0, param.max_length, param.tag)
    assert index.decode_record(free).is_free


def test_record_round_trip_truncates_like_strncpy():
    values = {param.tag: b"v%d" % param.index for param in index.PARAMS}
    values[0x00101010] = b"A" * 40
    record = index.Record(b"/area/CT_1.dcm", b"1.2.840.10008.5.1.4.1.1.2", 1700000000.0, 1234, 1,
                          index.param_values(values), b"d" * 200)
    data = index.encode_record(record)
    decoded = index.decode_record(data)
    assert decoded.params[20] == b"A" * 32 and decoded.instance_description == b"d" * 128
    assert decoded.params[15] == decoded.params[11] == values[0x00081030]
    assert (decoded.filename, decoded.image_size, decoded.hstat, decoded.recorded_date) == \
        (b"/area/CT_1.dcm", 1234, 1, 1700000000.0)
    for param, value in zip(index.PARAMS, decoded.params):
        pointer, length, group, element = struct.unpack_from("<QIHH", data, param.offset)
        assert (pointer, length, group << 16 | element) == (0, len(value), param.tag)
    with pytest.raises(ValueError):
        index.encode_record(index.Record(b"x" * 257, b"", 0.0, 0, 1, [b""] * 38, b""))


def test_descriptors_round_trip():
    descriptors = index.decode_descriptors(b"")
    assert len(descriptors) == 500 and not any(d.in_use for d in descriptors)
    descriptors[3] = index.StudyDescriptor(b"1.2.3", 100, 1700000000.0, 2)
    block = index.encode_descriptors(descriptors)
    assert len(block) == index.DESCRIPTORS_SIZE
    assert struct.unpack_from("<65s3xIdI4x", block, 3 * 88) == (b"1.2.3".ljust(65, b"\0"), 100, 1700000000.0, 2)
    assert index.decode_descriptors(block)[3] == descriptors[3]


def _index_bytes(records: list[index.Record | None]) -> bytes:
    return index.HEADER + bytes(index.DESCRIPTORS_SIZE) + b"".join(
        index.FREE_RECORD if record is None else index.encode_record(record) for record in records)


def _record(n: int, **values: bytes) -> index.Record:
    tags = {0x00080018: b"1.2.%d" % n, 0x0020000D: b"1.2", 0x00100010: b"Name%d" % n}
    tags.update({index.PARAM_BY_TAG[int(k[1:], 16)].tag: v for k, v in values.items()})
    return index.Record(b"/f%d" % n, b"1.2.840.10008.5.1.4.1.1.7", 0.0, n, 1, index.param_values(tags), b"")


def test_column_reads():
    data = bytearray(_index_bytes([_record(0), None, _record(2, t00100010=b""), _record(3)]) + b"partial")
    assert index.slot_count(len(data)) == 4
    live = index.live_slots(data, 4)
    assert live == [0, 2, 3]
    assert index.param_column(data, index.PARAM_BY_TAG[0x00100010], live) == [b"Name0", b"", b"Name3"]
    assert index.string_column(data, index.FILENAME, live) == [b"/f0", b"/f2", b"/f3"]
    # an implausible ValueLength: the values are read as C strings instead
    struct.pack_into("<I", data, index.record_offset(3) + index.PARAM_BY_TAG[0x00100010].offset + 8, 5000)
    assert index.param_column(data, index.PARAM_BY_TAG[0x00100010], live) == [b"Name0", b"", b"Name3"]


@pytest.mark.parametrize("header", [b"", b"x", b"QRDB0", b"QRDB04", b"QRDB0G", b"QRDB10", b"QRDB-5", b"QRDBx5",
                                    b"ABCD05", b"QRDB 5", b"QRDB5x", b"QRDB05"])
@needs_dcmtk
def test_header_validation_as_dcmtk(tmp_path, header):
    (tmp_path / "index.dat").write_bytes(header)
    dcmtk = run_dcmtk("dcmqridx", "-p", str(tmp_path))
    (tmp_path / "index.dat").write_bytes(header)
    try:
        StorageArea(str(tmp_path), 500, -1).close()
        ours = b""
    except DatabaseError as error:
        ours = b"E: %s\n" % str(error).encode()
    assert ours == dcmtk.stderr
    assert (dcmtk.returncode == 0) == (ours == b"")


@needs_dcmtk
def test_reads_an_index_written_by_dcmtk(tmp_path):
    files = [get_testdata_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm")]
    assert run_dcmtk("dcmqridx", str(tmp_path), *files).returncode == 0
    with StorageArea(str(tmp_path), 500, -1) as area:
        snapshot = area.read_snapshot()
        columns = area.read_columns([0x00100020, 0x00080018, "filename", "slot", "charset"])
    assert [os.fsdecode(record.filename) for _, record in snapshot.records] == files
    assert columns["filename"] == [os.fsencode(f) for f in files] and columns["slot"] == [0, 1, 2, 3]
    for (_, record), filename in zip(snapshot.records, files):
        values = read_index_values(filename)
        assert record.params == [index.stored_value(p.field, values.values[p.tag]) for p in index.PARAMS]
        assert record.image_size == os.path.getsize(filename) and record.hstat == 1
    assert columns[0x00080018] == [r.sop_instance_uid for _, r in snapshot.records]
    assert sum(d.image_count for d in snapshot.descriptors) == 4


# --- index values -------------------------------------------------------------------------------------------------

def test_value_rules(tmp_path):
    path = tmp_path / "rules.dcm"
    path.write_bytes(dicom_file(value_rules_dataset(Encoder())))
    values = read_index_values(str(path))
    params = {tag: expected for tag, _, _, expected in VALUE_RULES if tag in index.PARAM_BY_TAG}
    assert len(params) == len(VALUE_RULES) - 2   # all but SOP Class UID and ImageComments
    assert {tag: values.values[tag] for tag in params} == params
    assert all(value == b"" for tag, value in values.values.items() if tag not in params)
    assert values.instance_description == b"line1\r\nline2"
    assert values.sop_class_uid == SECONDARY_CAPTURE and values.sop_instance_uid == "1.2.3.4"


@pytest.mark.parametrize("transfer_syntax", [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED, JPEG_BASELINE])
@pytest.mark.parametrize("meta", [True, False])
def test_every_transfer_syntax_gives_the_same_values(transfer_syntax, meta):
    encoder = Encoder(transfer_syntax)
    signatures = encoder.sequence(0xFFFAFFFA, [encoder.element(0x04000100, b"US", b"\0\1")], undefined=True)
    nested = encoder.sequence(0x00081140, [encoder.element(0x00100010, b"PN", b"Nested^Name")], undefined=True)
    pixels = encoder.encapsulated_pixel_data([b"\xff\xd8" + bytes(100)]) if transfer_syntax == JPEG_BASELINE \
        else encoder.element(0x7FE00010, b"OW", bytes(64))
    data = dicom_file(value_rules_dataset(encoder) + nested + pixels + signatures, transfer_syntax, meta=meta)
    syntax = None if meta or transfer_syntax in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE) else transfer_syntax
    values = index_values_from_bytes(data, syntax)
    assert values.values[0x00100010] == b"  M\xfcller^J\xf6rg"   # the nested PatientName is not the one
    assert values.values[0x0020000D] == b"1.2.3" and values.values[0x00101030] == b" 1.50\\2"
    assert values.instance_description == b"line1\r\nline2 (Signed)"


def _bytes_read() -> int:
    """The bytes this process has read from files and sockets so far (Linux's ``rchar``)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_bulk_data_is_skipped_not_read(tmp_path):
    """A 3 GiB (sparse) pixel data element, and a 1 GiB encapsulated fragment, are stepped over."""
    encoder = Encoder()
    for name, pixels_head, size in (
            ("native.dcm", encoder.element(0x7FE00010, b"OW", b"", 3 << 30), 3 << 30),
            ("encapsulated.dcm", encoder.element(0x7FE00010, b"OB", b"", UNDEFINED) + encoder.item(b"")
             + struct.pack("<HHI", 0xFFFE, 0xE000, 1 << 30), 1 << 30)):
        tail = encoder.sequence(0xFFFAFFFA, [b""]) if name == "native.dcm" else \
            struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) + encoder.sequence(0xFFFAFFFA, [b""])
        path = tmp_path / name
        with open(path, "wb") as file:
            file.write(dicom_file(value_rules_dataset(encoder)) + pixels_head)
            file.seek(size, os.SEEK_CUR)
            file.write(tail)
        before = _bytes_read()
        values = read_index_values(str(path))
        assert _bytes_read() - before < 1 << 20
        assert values.instance_description.endswith(b" (Signed)")


def test_from_bytes_equals_from_file():
    """A data set in memory (as pydicom writes it back, without meta information) gives the same values
    as its file."""
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm"):
        path = get_testdata_file(name)
        dataset = pydicom.dcmread(path)
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = dataset.original_encoding
        write_dataset(buffer, dataset)
        values = index_values_from_bytes(buffer.getvalue(), dataset.file_meta.TransferSyntaxUID)
        assert values == read_index_values(path), name


@pytest.mark.parametrize("data", [b"", b"hello world, this is not DICOM\n" * 3,
                                  dicom_file(Encoder().element(0x00100010, b"PN", b"x", 100))])
def test_unreadable_data_is_rejected(tmp_path, data):
    path = Path(tmp_path, "bad.dcm")
    path.write_bytes(data)
    with pytest.raises(DataSetError):
        read_index_values(str(path))
