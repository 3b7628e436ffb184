"""``dcmqridx`` (qrscp.cli.dcmqridx) against DCMTK's: the same records byte for byte, the same ``-p`` output,
the same messages; plus ``--check`` and ``--repair``."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_dcmtk, run_dcmtk, run_qrscp
from pydicom.data import get_testdata_files
from test_index import (
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    Encoder,
    dicom_file,
    instance,
    value_rules_dataset,
)

from qrscp.archive import index

pytestmark = needs_dcmtk

def ours(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run our ``dcmqridx``."""
    return run_qrscp(*args, module="qrscp.cli.dcmqridx", **kwargs)


def records_by_file(area: Path) -> dict[bytes, bytes]:
    """The live records of an index keyed by file name, with what legitimately differs zeroed: the
    pointer slots (DCMTK writes stack addresses) and RecordedDate."""
    data = (area / "index.dat").read_bytes()
    records = {}
    for slot in range(index.slot_count(len(data))):
        record = bytearray(data[index.record_offset(slot):index.record_offset(slot + 1)])
        if record[0]:
            record[index.RECORDED_DATE.offset:index.RECORDED_DATE.offset + 8] = bytes(8)
            for param in index.PARAMS:
                record[param.offset:param.offset + 8] = bytes(8)
            records[bytes(record[:index.FILENAME.size]).split(b"\0")[0]] = bytes(record)
    return records


def describe_difference(ours_record: bytes, dcmtk_record: bytes) -> str:
    a, b = index.decode_record(ours_record), index.decode_record(dcmtk_record)
    fields = [f"{p.keyword}: {x!r} != {y!r}" for p, x, y in zip(index.PARAMS, a.params, b.params) if x != y]
    fields += [f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}" for name in
               ("sop_class_uid", "image_size", "hstat", "instance_description") if getattr(a, name) != getattr(b, name)]
    return "; ".join(fields) or "raw bytes"


def normalised_print(output: bytes) -> bytes:
    return re.sub(rb"(LastRecDate|RecordedDate): .*", rb"\1", output)


def messages(stderr: bytes) -> list[bytes]:
    """What dcmqridx itself says (DCMTK's parser adds its own warnings about odd files)."""
    return [line for line in stderr.splitlines()
            if re.match(rb"(I: registering|E: cannot|W: file delete)", line)]


def compare_with_dcmtk(tmp_path: Path, files: list[str], *options: str) -> None:
    theirs_area, ours_area = tmp_path / "dcmtk", tmp_path / "ours"
    theirs_area.mkdir(), ours_area.mkdir()
    theirs = run_dcmtk("dcmqridx", "-v", *options, str(theirs_area), *files, cwd=tmp_path)
    mine = ours("-v", *options, str(ours_area), *files, cwd=tmp_path)
    assert (mine.returncode, messages(mine.stderr)) == (theirs.returncode, messages(theirs.stderr))
    expected, actual = records_by_file(theirs_area), records_by_file(ours_area)
    assert sorted(actual) == sorted(expected)
    different = {name: describe_difference(actual[name], expected[name]) for name in expected
                 if actual[name] != expected[name]}
    assert not different
    # DCMTK reads our index as its own, and we print its index as it does
    printed = [normalised_print(run_dcmtk("dcmqridx", "-p", str(area)).stdout) for area in (theirs_area, ours_area)]
    assert printed[0] == printed[1]
    assert ours("-p", str(theirs_area)).stdout == run_dcmtk("dcmqridx", "-p", str(theirs_area)).stdout


def test_pydicom_test_files_are_indexed_as_dcmtk_does(tmp_path):
    """All of pydicom's test files: every SOP class and transfer syntax there, broken files included."""
    compare_with_dcmtk(tmp_path, get_testdata_files())


def _write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return name


SR_CLASSES = ["1.2.840.10008.5.1.4.1.1.88.%d" % n for n in (11, 22, 33, 34, 35, 40, 50, 59, 65, 67, 68, 69, 70, 71,
                                                            72, 73, 74, 75, 76)] + \
             ["1.2.840.10008.5.1.4.1.1.78.6", "1.2.840.10008.5.1.4.1.1.79.1"]


def synthetic_files(directory: Path) -> list[str]:
    """Files for the corners of the value rules and of InstanceDescription (relative names)."""
    files = []
    for syntax in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED):
        data = dicom_file(value_rules_dataset(Encoder(syntax)), syntax, sop_instance_uid=b"1.2.3.4")
        files.append(_write(directory, f"rules_{syntax}.dcm", data))
    encoder = Encoder()

    def make(name: str, sop_class: str, n: int, extra: list) -> None:
        files.append(_write(directory, name, instance(b"1.2.9.%d" % n, b"1.2.10", sop_class_uid=sop_class.encode(),
                                                      extra=extra)))

    flags = [(0x0040A493, b"CS", b"UNVERIFIED"), (0x0040A491, b"CS", b"PARTIAL "), (0x0040A492, b"LO", b"d" * 130)]
    for n, sop_class in enumerate(SR_CLASSES):
        make(f"sr{n}.dcm", sop_class, n, flags[:n % 4] if n % 5 else [(0x0040A493, b"CS", b"")])
    comment = [(0x00204000, b"LT", b"comment ")]
    signed = encoder.sequence(0xFFFAFFFA, [b""])
    make("gsps.dcm", "1.2.840.10008.5.1.4.1.1.11.1", 100, [(0x00700081, b"LO", b"psdesc "), *comment])
    make("gsps_empty.dcm", "1.2.840.10008.5.1.4.1.1.11.1", 101, comment)
    make("hardcopy.dcm", "1.2.840.10008.5.1.1.29", 102, comment)
    make("stored_print.dcm", "1.2.840.10008.5.1.1.27", 103, comment)
    make("signed.dcm", "1.2.840.10008.5.1.4.1.1.7", 104, [*comment, (0xFFFAFFFA, b"SQ", signed[12:])])
    make("signed_empty.dcm", "1.2.840.10008.5.1.4.1.1.7", 105, [*comment, (0xFFFAFFFA, b"SQ", b"")])
    make("signed_no_comment.dcm", "1.2.840.10008.5.1.4.1.1.7", 106, [(0xFFFAFFFA, b"SQ", signed[12:])])
    nested_empty = encoder.sequence(0x00081140, [encoder.element(0xFFFAFFFA, b"SQ", b"")])
    make("signed_nested_first.dcm", "1.2.840.10008.5.1.4.1.1.7", 107,
         [*comment, (0x00081140, b"SQ", nested_empty[12:]), (0xFFFAFFFA, b"SQ", signed[12:])])
    for length in (118, 119):
        make(f"signed_{length}.dcm", "1.2.840.10008.5.1.4.1.1.7", 108 + length,
             [(0x00204000, b"LT", b"x" * length + b" " * (length % 2)), (0xFFFAFFFA, b"SQ", signed[12:])])
    make("latin1.dcm", "1.2.840.10008.5.1.4.1.1.7", 300,
         [(0x00080005, b"CS", b"ISO_IR 100"), (0x00100010, b"PN", b"M\xfcller^J\xf6rg ")])
    make("utf8.dcm", "1.2.840.10008.5.1.4.1.1.7", 301,
         [(0x00080005, b"CS", b"ISO_IR 192"), (0x00100010, b"PN", "Wang^XiaoDong=王^小東".encode())])
    make("charset_multi.dcm", "1.2.840.10008.5.1.4.1.1.7", 302, [(0x00080005, b"CS", b"\\ISO 2022 IR 87")])
    files.append(_write(directory, "no_sop_class.dcm", dicom_file(encoder.dataset(
        [(0x00080018, b"UI", b"1.2.9.400"), (0x0020000D, b"UI", b"1.2.10")]))))
    files.append(_write(directory, "no_sop_instance.dcm", dicom_file(encoder.dataset(
        [(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"), (0x0020000D, b"UI", b"1.2.10")]))))
    files.append(_write(directory, "no_study.dcm", dicom_file(encoder.dataset(
        [(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"), (0x00080018, b"UI", b"1.2.9.401\0")]))))
    files.append(_write(directory, "no_meta.dcm", dicom_file(value_rules_dataset(Encoder(IMPLICIT_LE)), meta=False)))
    files.append(_write(directory, "text.dcm", b"this is not a DICOM file at all\n" * 4))
    files.append("missing.dcm")
    return files


def test_corner_cases_are_indexed_as_dcmtk_does(tmp_path):
    compare_with_dcmtk(tmp_path, synthetic_files(tmp_path))


def test_not_new(tmp_path):
    _write(tmp_path, "a.dcm", instance(b"1.2.3.1"))
    compare_with_dcmtk(tmp_path, ["a.dcm"], "-n")
    assert b"  Status: is NOT new\n" in ours("-p", str(tmp_path / "ours")).stdout


@pytest.mark.parametrize("area", ["empty", "missing"])
def test_print_and_errors_as_dcmtk(tmp_path, area):
    if area == "empty":
        (tmp_path / area).mkdir()
    theirs = run_dcmtk("dcmqridx", "-p", str(tmp_path / area))
    (tmp_path / area / "index.dat").unlink(missing_ok=True)
    mine = ours("-p", str(tmp_path / area))
    assert (mine.returncode, mine.stdout, mine.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)


def test_check_and_repair(tmp_path):
    area = tmp_path / "area"
    area.mkdir()
    names = [_write(tmp_path, f"f{n}.dcm", instance(b"1.2.3.%d" % n, b"1.2.%d" % (n % 2), padding=n * 10))
             for n in range(5)]
    assert ours(str(area), *names, cwd=tmp_path).returncode == 0
    assert ours("--check", str(area), cwd=tmp_path).stdout == b"index consistent\n"
    # damage: a file gone, a file replaced by another instance, an instance indexed twice by DCMTK (ref
    # §1.8: it does not look for duplicates in a new study), a wrong study descriptor
    os.unlink(tmp_path / "f1.dcm")
    _write(tmp_path, "f2.dcm", instance(b"1.2.3.99", b"1.2.0"))
    _write(tmp_path, "again.dcm", instance(b"1.2.3.3", b"1.2.77"))
    assert run_dcmtk("dcmqridx", str(area), "again.dcm", cwd=tmp_path).returncode == 0
    data = bytearray((area / "index.dat").read_bytes())
    data[index.DESCRIPTORS_OFFSET + 80] += 5     # NumberofRegistratedImages of descriptor 0
    (area / "index.dat").write_bytes(data)
    check = ours("--check", str(area), cwd=tmp_path)
    assert check.returncode == 2
    report = check.stdout.decode()
    assert "record 1: cannot read f1.dcm: No such file or directory" in report
    assert "record 2: f2.dcm has SOP Instance UID 1.2.3.99, the index says 1.2.3.2" in report
    assert "record 3: SOP Instance UID 1.2.3.3 is indexed again in record 5" in report
    assert "study descriptor 0: study 1.2.0: 8 images" in report
    assert report.endswith("problem(s) found\n")
    repair = ours("--repair", "--check", str(area), cwd=tmp_path)
    assert repair.returncode == 0, repair.stdout
    assert repair.stdout.endswith(b"3 record(s) dropped, study descriptors rebuilt, old index kept as "
                                  + os.fsencode(area / "index.dat.bak") + b"\nindex consistent\n")
    assert (area / "index.dat.bak").read_bytes() == bytes(data)
    listing = run_dcmtk("dcmqridx", "-p", str(area)).stdout
    assert re.findall(rb"Filename: (.*)", listing) == [b"f0.dcm", b"f4.dcm", b"again.dcm"]


def test_check_names_files_in_the_area_the_index_does_not(tmp_path):
    """A ``.dcm`` file in the area's directory that no record names (a store killed mid-write, a record
    DCMTK lost) is reported; other files are not; registering it makes the area consistent."""
    area = tmp_path / "area"
    area.mkdir()
    indexed = str(area / _write(area, "CT_indexed.dcm", instance(b"1.2.3.1")))
    stray = str(area / _write(area, "CT_stray.dcm", instance(b"1.2.3.2")))
    _write(area, "notes.txt", instance(b"1.2.3.3"))
    assert ours(str(area), indexed).returncode == 0
    check = ours("--check", str(area))
    assert (check.returncode, check.stdout.decode().splitlines()) == (2, [
        f"{stray}: in the area but not in the index (an interrupted store or a lost record; dcmqridx "
        "registers it if it is complete)", "1 problem(s) found"])
    assert ours(str(area), stray).returncode == 0
    assert ours("--check", str(area)).stdout == b"index consistent\n"


def test_progress_is_shown_on_a_terminal_only(tmp_path):
    _write(tmp_path, "a.dcm", instance(b"1.2.3.1"))
    files = ["a.dcm"] * 150
    piped = ours(str(tmp_path), *files, cwd=tmp_path)
    assert (piped.returncode, piped.stderr) == (0, b"")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "qrscp.cli.dcmqridx", str(tmp_path), *files], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=terminal, timeout=120)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert process.returncode == 0
    assert b"\rregistering: 1/150, " in shown and b" files/s" in shown
    assert re.search(rb"\r\x1b\[Kregistered 150 of 150 files in \d+\.\d s \([\d,]+ files/s\)\r?\n$", shown), shown[-200:]


def test_verbose_registration_logs_its_progress_and_rate(tmp_path):
    """At -v: the file lines, a progress line after every tenth of the files, the rate at the end."""
    _write(tmp_path, "a.dcm", instance(b"1.2.3.1"))
    _write(tmp_path, "b.dcm", b"not DICOM")
    files = ["a.dcm"] * 149 + ["b.dcm"]
    lines = ours("-v", str(tmp_path), *files, cwd=tmp_path).stderr.decode().splitlines()
    progress = [line for line in lines if "files processed" in line]
    assert [line.split(",")[0] for line in progress] == [f"I: {n} of 150 files processed" for n in range(15, 150, 15)]
    assert all(re.fullmatch(r"I: \d+ of 150 files processed, [\d,]+ files/s", line) for line in progress)
    assert re.fullmatch(r"I: registered 149 of 150 files in \d+\.\d s \([\d,]+ files/s\)", lines[-1])
    assert lines.count("I: registering: a.dcm") == 149
