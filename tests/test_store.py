"""The C-STORE SCP at the server level (docs/storage.md, quota.md, index-format.md §9; differences #1, #6, #12, #16).

Real servers on 127.0.0.1, driven by DCMTK's ``storescu`` (and by pynetdicom where a request must be
malformed on purpose). The storage area is inspected on disk with :mod:`qrscp.archive.storage_area` and
:func:`qrscp.cli.dcmqridx.check_area`. Where the reference and qrscp agree, the same requests also go to
DCMTK's ``dcmqrscp`` and the outcomes are compared (statuses, stored bytes, file-name prefixes).
"""
from __future__ import annotations

import csv
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest
from conftest import ROOT, Server, needs_dcmtk, run_dcmtk, simple_config
from corpus import make_instance, uid, write_instance
from pydicom import config, dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)
from pynetdicom import AE, _config
from test_find_differential import findscu, q
from test_retrieve import getscu

from qrscp.archive import index
from qrscp.archive.storage_area import StorageArea
from qrscp.cli.dcmqridx import check_area
from qrscp.net import acse, dimse
from qrscp.net.pdu import PresentationContextRQ

pytestmark = needs_dcmtk

AE_TITLE = "QRSCP"
SUCCESS = 0x0000
REFUSED_OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
#: Every UID of this module lies under this branch of the corpus root.
BRANCH = 77
DELETING = "W: Deleting file: {} due to quota or duplicate SOP instance UID"


# --- clients ------------------------------------------------------------------------------------------------------

_SENDING = re.compile(r"^I: Sending file: (.*)$")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def storescu(port: int, files: list[Path], *options: str, calling: str = "STORESCU",
             timeout: float = 120) -> dict[Path, int]:
    """DCMTK's storescu with ``-nh`` (it carries on after a failed store): the DIMSE status of every
    file it sent (files it could not read or send are missing)."""
    result = run_dcmtk("storescu", "-d", "-nh", "-aet", calling, "-aec", AE_TITLE, *options, "127.0.0.1",
                       str(port), *map(str, files), timeout=timeout)
    statuses: dict[Path, int] = {}
    current: Path | None = None
    for line in (result.stdout + result.stderr).decode(errors="replace").splitlines():
        if sending := _SENDING.match(line):
            current = Path(sending.group(1))
        elif (status := _STATUS.search(line)) and current is not None:
            statuses[current] = int(status.group(1), 16)
            current = None
    return statuses


def store_all(port: int, files: list[Path], *options: str, calling: str = "STORESCU") -> None:
    """Store ``files`` with storescu; every one must succeed."""
    statuses = storescu(port, files, *options, calling=calling)
    assert statuses == {path: SUCCESS for path in files}


def image_level_uids(port: int, study_uid: str = "") -> list[str]:
    """The SOP Instance UIDs a Study Root IMAGE-level C-FIND returns (findscu), in response order."""
    answer = findscu(port, q("images", "S", "IMAGE", f"StudyInstanceUID={study_uid}", "SeriesInstanceUID",
                             "SOPInstanceUID"))
    assert answer["status"] == "0x0000", answer["status"]
    return [line.split("[", 1)[1].rstrip("]") for response in answer["responses"] for line in response
            if line.startswith("(0008,0018)")]


# --- instances ----------------------------------------------------------------------------------------------------

def instance(directory: Path, study: int, number: int, *, payload: int = 0, sop_class: str = CTImageStorage,
             name: str | None = None, **attributes) -> Path:
    """Write instance ``number`` of test study ``study`` (one series) into ``directory`` (file name
    ``name`` or ``s<study>i<number>.dcm``); ``payload`` bytes of a private OB element make the file as
    large as a test needs; ``attributes`` override the others (DICOM keywords)."""
    dataset = make_instance(sop_class, StudyInstanceUID=uid(BRANCH, study),
                            SeriesInstanceUID=uid(BRANCH, study, 1),
                            SOPInstanceUID=attributes.pop("SOPInstanceUID", uid(BRANCH, study, 1, number)),
                            InstanceNumber=str(number), PatientID=f"P{study}", **attributes)
    if payload:
        dataset.private_block(0x0009, "QRSCP TESTS", create=True).add_new(0x01, "OB", bytes(payload))
    directory.mkdir(parents=True, exist_ok=True)
    return write_instance(dataset, directory / (name or f"s{study}i{number}.dcm"))


# --- storage areas ------------------------------------------------------------------------------------------------

def opened(area: Path) -> StorageArea:
    """A handle on the existing area ``area`` (for reading: its limits do not matter)."""
    return StorageArea(str(area), index.MAX_STUDIES, index.MAX_BYTES_PER_STUDY, create_directory=False)


def live_records(area: Path) -> list[index.Record]:
    """The live index records of ``area`` in slot order."""
    with opened(area) as handle:
        return [record for _, record in handle.read_snapshot().records]


def study_descriptors(area: Path) -> dict[bytes, index.StudyDescriptor]:
    """The study descriptors in use, by Study Instance UID."""
    with opened(area) as handle:
        return {d.study_instance_uid: d for d in handle.read_snapshot().descriptors if d.in_use}


def assert_valid(area: Path) -> None:
    """The area passes ``dcmqridx --check``: descriptors agree with the records, every record names a
    readable file holding its instance."""
    with opened(area) as handle:
        assert check_area(handle) == []


def assert_consistent(area: Path) -> list[index.Record]:
    """The area is valid (:func:`assert_valid`), each instance is indexed once and every image file in the
    directory has a record; its live records."""
    assert_valid(area)
    records = live_records(area)
    sop_uids = [record.sop_instance_uid for record in records]
    assert len(set(sop_uids)) == len(sop_uids), "an instance is indexed twice"
    assert sorted(Path(record.filename.decode()).name for record in records) == image_files(area)
    return records


def image_files(area: Path) -> list[str]:
    """Names of the files in ``area`` other than ``index.dat``."""
    return sorted(path.name for path in area.iterdir() if path.name != index.FILE_NAME)


def record_of(area: Path, sop_instance_uid: str) -> index.Record:
    """The one live record of an instance."""
    found = [r for r in live_records(area) if r.sop_instance_uid == sop_instance_uid.encode()]
    assert len(found) == 1, f"{sop_instance_uid}: {len(found)} records"
    return found[0]


def qrscp(tmp_path: Path, quota: str = "(200, 1024mb)", *options: str) -> Server:
    """Our server in ``tmp_path`` with the storage area ``tmp_path/area`` (AE title QRSCP)."""
    area = tmp_path / "area"
    area.mkdir(exist_ok=True)
    return Server(tmp_path, simple_config({AE_TITLE: f"{area} RW {quota} ANY"}), *options)


def wait_for_next_second() -> None:
    """Sleep into the next second of ``time()`` (the resolution of the index's time stamps)."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


# --- quota (docs/quota.md, docs/differences.md #1) ----------------------------------------------------------------

def test_quota_evicts_exactly_the_least_recently_stored_study(tmp_path: Path) -> None:
    """maxStudies 2, a third study arrives: the study stored into least recently goes, records and files,
    each file logged at warning level; a study whose UID merely starts with its UID stays (docs/differences.md #1)."""
    data = tmp_path / "in"
    prefixed = instance(data, 77, 1)            # study ...77.77, stored first
    oldest = instance(data, 7, 1)               # study ...77.7: a prefix of ...77.77
    prefixed_again = instance(data, 77, 2)
    newest = instance(data, 8, 1)
    with qrscp(tmp_path, "(2, 10mb)") as server:
        area = tmp_path / "area"
        store_all(server.port, [prefixed, oldest])
        evicted = record_of(area, uid(BRANCH, 7, 1, 1)).filename.decode()
        wait_for_next_second()
        store_all(server.port, [prefixed_again, newest])  # ...77.77 is now newer than ...77.7
        log = server.log
    records = assert_consistent(area)
    assert sorted(r.sop_instance_uid.decode() for r in records) == sorted(
        [uid(BRANCH, 77, 1, 1), uid(BRANCH, 77, 1, 2), uid(BRANCH, 8, 1, 1)])
    assert not Path(evicted).exists()
    assert DELETING.format(evicted) in log
    assert sorted(study_descriptors(area)) == sorted([uid(BRANCH, 77).encode(), uid(BRANCH, 8).encode()])
    assert study_descriptors(area)[uid(BRANCH, 77).encode()].image_count == 2


def test_quota_evicts_the_oldest_images_of_a_full_study(tmp_path: Path) -> None:
    """maxBytesPerStudy 100 KiB, three images of ~40 KB: the third evicts the first (the oldest), and the
    study's size stays under the limit."""
    files = [instance(tmp_path / "in", 1, number, payload=40_000) for number in (1, 2, 3)]
    with qrscp(tmp_path, "(10, 100kb)") as server:
        area = tmp_path / "area"
        store_all(server.port, files[:2])
        first = record_of(area, uid(BRANCH, 1, 1, 1)).filename.decode()
        store_all(server.port, files[2:])
        log = server.log
        remaining = image_level_uids(server.port, uid(BRANCH, 1))
    records = assert_consistent(area)
    assert sorted(r.sop_instance_uid.decode() for r in records) == [uid(BRANCH, 1, 1, 2), uid(BRANCH, 1, 1, 3)]
    assert sorted(remaining) == [uid(BRANCH, 1, 1, 2), uid(BRANCH, 1, 1, 3)]
    assert not Path(first).exists()
    assert DELETING.format(first) in log
    descriptor = study_descriptors(area)[uid(BRANCH, 1).encode()]
    assert descriptor.image_count == 2
    assert descriptor.study_size == sum(r.image_size for r in records) <= 100 * 1024


def test_image_larger_than_the_study_quota_is_refused(tmp_path: Path) -> None:
    """An image larger than maxBytesPerStudy: 0xA700, for a new study and for a known one; neither a file
    nor a record is left behind, and the study already stored is untouched."""
    small = instance(tmp_path / "in", 1, 1, payload=1_000)
    too_large_known = instance(tmp_path / "in", 1, 2, payload=120_000)
    too_large_new = instance(tmp_path / "in", 2, 1, payload=120_000)
    with qrscp(tmp_path, "(10, 100kb)") as server:
        area = tmp_path / "area"
        store_all(server.port, [small])
        before = image_files(area)
        statuses = storescu(server.port, [too_large_known, too_large_new])
        log = server.log
    assert statuses == {too_large_known: REFUSED_OUT_OF_RESOURCES, too_large_new: REFUSED_OUT_OF_RESOURCES}
    assert "storeRequest Failed (Refused: OutOfResources)" in log
    records = assert_consistent(area)
    assert [r.sop_instance_uid.decode() for r in records] == [uid(BRANCH, 1, 1, 1)]
    assert image_files(area) == before
    assert list(study_descriptors(area)) == [uid(BRANCH, 1).encode()]


# --- duplicates (docs/index-format.md §8, docs/differences.md #6) -------------------------------------------------

def test_duplicate_in_the_same_study_replaces_the_old_file(tmp_path: Path) -> None:
    """The same SOP Instance UID again in its study: Success, one record naming the new file (with the
    new content), the old file deleted and logged."""
    old = instance(tmp_path / "in", 1, 1, name="old.dcm", PatientName="Old^Version")
    new = instance(tmp_path / "in", 1, 1, name="new.dcm", PatientName="New^Version")
    with qrscp(tmp_path) as server:
        area = tmp_path / "area"
        store_all(server.port, [old])
        old_file = record_of(area, uid(BRANCH, 1, 1, 1)).filename.decode()
        store_all(server.port, [new])
        log = server.log
        found = image_level_uids(server.port)
    records = assert_consistent(area)
    assert len(records) == 1 and found == [uid(BRANCH, 1, 1, 1)]
    record = records[0]
    assert record.filename.decode() != old_file and not Path(old_file).exists()
    assert record.params[index.PARAM_BY_TAG[0x00100010].index] == b"New^Version"
    assert dcmread(record.filename.decode()).PatientName == "New^Version"
    assert DELETING.format(old_file) in log
    assert study_descriptors(area)[uid(BRANCH, 1).encode()].image_count == 1


def test_duplicate_under_another_study_leaves_one_record(tmp_path: Path) -> None:
    """The same SOP Instance UID re-sent under another study: one record, in the new study, naming the
    newer file; the old file is deleted and the old study (now empty) is gone (docs/differences.md #6)."""
    sop_uid = uid(BRANCH, 1, 1, 1)
    first = instance(tmp_path / "in", 1, 1)
    other_image_of_new_study = instance(tmp_path / "in", 2, 5)
    moved = instance(tmp_path / "in", 2, 1, SOPInstanceUID=sop_uid)
    with qrscp(tmp_path) as server:
        area = tmp_path / "area"
        store_all(server.port, [first, other_image_of_new_study])
        old_file = record_of(area, sop_uid).filename.decode()
        store_all(server.port, [moved])
        studies = findscu(server.port, q("studies", "S", "STUDY", "StudyInstanceUID"))
        images = image_level_uids(server.port)
        log = server.log
    records = assert_consistent(area)
    record = record_of(area, sop_uid)
    assert record.study_instance_uid.decode() == uid(BRANCH, 2)
    assert record.filename.decode() != old_file and not Path(old_file).exists()
    assert DELETING.format(old_file) in log
    assert len(records) == 2 and sorted(images) == sorted([sop_uid, uid(BRANCH, 2, 1, 5)])
    assert studies["responses"] == [["(0008,0052) CS QueryRetrieveLevel [STUDY]",
                                     f"(0008,0054) AE RetrieveAETitle [{AE_TITLE}]",
                                     f"(0020,000D) UI StudyInstanceUID [{uid(BRANCH, 2)}]"]]
    assert list(study_descriptors(area)) == [uid(BRANCH, 2).encode()]
    assert study_descriptors(area)[uid(BRANCH, 2).encode()].image_count == 2


# --- --ignore, UID checks (docs/storage.md, storage.md §13) -------------------------------------------------------

def test_ignore_answers_success_and_stores_nothing(tmp_path: Path) -> None:
    """``--ignore``: every C-STORE is answered with Success, nothing is stored or indexed."""
    files = [instance(tmp_path / "in", 1, n) for n in (1, 2)]
    with qrscp(tmp_path, "(200, 1024mb)", "--ignore") as server:
        store_all(server.port, files)
        assert image_level_uids(server.port) == []
    assert live_records(tmp_path / "area") == [] and image_files(tmp_path / "area") == []


UID = uid(BRANCH, 9, 1, 10)        # an even number of characters: room for one padding space
PADDED = UID[:-1] + " "


class UidCase(NamedTuple):
    """A C-STORE whose command and data set name these UIDs, and its outcome."""

    command_class: str
    command_instance: str
    dataset_class: str
    dataset_instance: str | None     # None: the data set has no SOP Instance UID
    status: int
    indexed: str | None              # the SOP Instance UID then in the index


UID_CASES = {
    "matching": UidCase(CTImageStorage, UID, CTImageStorage, UID, SUCCESS, UID),
    "instance_differs": UidCase(CTImageStorage, UID, CTImageStorage, UID[:-1] + "2", DATASET_DOES_NOT_MATCH, None),
    "class_differs": UidCase(CTImageStorage, UID, MRImageStorage, UID, DATASET_DOES_NOT_MATCH, None),
    "instance_missing": UidCase(CTImageStorage, UID, CTImageStorage, None, CANNOT_UNDERSTAND, None),
    "data_set_uid_padded": UidCase(CTImageStorage, UID[:-1], CTImageStorage, PADDED, SUCCESS, UID[:-1]),
    "command_uid_padded": UidCase(CTImageStorage, PADDED, CTImageStorage, UID[:-1], SUCCESS, UID[:-1]),
    "both_padded": UidCase(CTImageStorage, PADDED, CTImageStorage, PADDED, SUCCESS, UID[:-1]),
}


def _uid_element(tag: int, value: bytes) -> bytes:
    """An explicit VR little endian UI element, padded with NUL to an even length."""
    value += b"\0" * (len(value) % 2)
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, b"UI", len(value)) + value


def crafted_file(path: Path, case: UidCase) -> Path:
    """A file whose meta information names the command's UIDs of ``case`` and whose data set carries its
    own SOP Class and (or no) SOP Instance UID, byte for byte (pynetdicom sends such a file as it is)."""
    dataset = make_instance(case.dataset_class, SOPInstanceUID="1.2", StudyInstanceUID=uid(BRANCH, 9),
                            SeriesInstanceUID=uid(BRANCH, 9, 1))
    with config.disable_value_validation():  # a space-padded UID is invalid on purpose
        dataset.file_meta.MediaStorageSOPClassUID = case.command_class
        dataset.file_meta.MediaStorageSOPInstanceUID = case.command_instance
        dataset.save_as(path, enforce_file_format=False)  # True would take the UIDs from the data set
    data = path.read_bytes()
    placeholder = _uid_element(0x00080018, b"1.2")
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, b"" if case.dataset_instance is None
                                  else _uid_element(0x00080018, case.dataset_instance.encode())))
    return path


@contextmanager
def file_sender(port: int, sop_classes: set[str]) -> Iterator[Callable[[Path], int | None]]:
    """A pynetdicom association to ``port``, yielding a function that C-STOREs a file as it is: the command
    takes its UIDs from the file meta information, the data set is sent byte for byte. The function
    returns the status (None without a response)."""
    ae = AE(ae_title="PYNETSCU")
    for sop_class in sorted(sop_classes):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert association.is_established
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True

    def send(path: Path) -> int | None:
        status = association.send_c_store(path)
        return int(status.Status) if status else None

    try:
        yield send
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        association.release()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("options", [(), ("-up",)], ids=["default", "uid-padding"])
def test_uid_checks_match_dcmtk(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Data set UIDs against the command's (docs/storage.md §6, §13): 0xA900 for a different SOP Class or
    Instance UID, 0xC000 without SOP Instance UID, space-padded UIDs accepted with or without ``-up``;
    the same statuses as DCMTK's, a failed store leaves nothing, a padded UID is indexed unpadded."""
    files = {name: crafted_file(tmp_path / f"{name}.dcm", case) for name, case in UID_CASES.items()}
    outcome: dict[str, dict[str, int | None]] = {}
    for kind in ("qrscp", "dcmtk"):
        directory = tmp_path / kind
        area = directory / "area"
        area.mkdir(parents=True)
        indexed: set[str] = set()
        outcome[kind] = {}
        with Server(directory, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), *options,
                    dcmtk_server=kind == "dcmtk") as server, \
                file_sender(server.port, {case.command_class for case in UID_CASES.values()}) as send:
            for name, case in UID_CASES.items():
                outcome[kind][name] = send(files[name])
                indexed |= {case.indexed} if case.indexed else set()
                assert {r.sop_instance_uid.decode() for r in live_records(area)} == indexed, f"{kind}: {name}"
                assert len(image_files(area)) == len(indexed), f"{kind}: {name}"
        if kind == "qrscp":
            assert_consistent(area)
    assert outcome["qrscp"] == outcome["dcmtk"] == {name: case.status for name, case in UID_CASES.items()}


#: A SOP class that is no storage class (the server accepts no context for it).
UNKNOWN_CLASS = "1.2.826.0.1.3680043.8.498.99.1"
SOP_CLASS_NOT_SUPPORTED = 0x0122

#: Data sets sent with a C-STORE-RQ for UNKNOWN_CLASS and instance UID, and the status DCMTK answers.
UNKNOWN_CLASS_CASES = {
    "data set of another class": (dict(), DATASET_DOES_NOT_MATCH),
    "data set of the class": (dict(SOPClassUID=UNKNOWN_CLASS), SOP_CLASS_NOT_SUPPORTED),
    "big data set of the class": (dict(SOPClassUID=UNKNOWN_CLASS, payload=300_000), SOP_CLASS_NOT_SUPPORTED),
    "another instance": (dict(SOPClassUID=UNKNOWN_CLASS, SOPInstanceUID=UID[:-1] + "2"), DATASET_DOES_NOT_MATCH),
    "no instance UID": (dict(SOPClassUID=UNKNOWN_CLASS, SOPInstanceUID=None), CANNOT_UNDERSTAND),
}


def _unknown_class_data_set(SOPClassUID: str = CTImageStorage, SOPInstanceUID: str | None = UID,
                            payload: int = 0) -> bytes:
    dataset = make_instance(CTImageStorage, SOPInstanceUID=UID, StudyInstanceUID=uid(BRANCH, 9),
                            SeriesInstanceUID=uid(BRANCH, 9, 1))
    dataset.SOPClassUID = SOPClassUID
    if SOPInstanceUID is None:
        del dataset.SOPInstanceUID
    else:
        dataset.SOPInstanceUID = SOPInstanceUID
    if payload:
        dataset.private_block(0x0009, "QRSCP TESTS", create=True).add_new(0x01, "OB", bytes(payload))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def test_unknown_sop_class_checks_the_data_set_first_as_dcmtk(tmp_path: Path) -> None:
    """A C-STORE-RQ naming a SOP class that is no storage class (on a CT context): the data set is received
    and dropped, but first checked against the request as DCMTK does (docs/storage.md §2, §6): 0xA900 if its SOP
    Class or Instance UID differs, 0xC000 without SOP Instance UID, else 0x0122; nothing is stored; the
    statuses and the warning and error lines are DCMTK's."""
    outcome: dict[str, list[int]] = {}
    logged: dict[str, list[str]] = {}
    for kind in ("qrscp", "dcmtk"):
        directory = tmp_path / kind
        area = directory / "area"
        area.mkdir(parents=True)
        with Server(directory, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v",
                    dcmtk_server=kind == "dcmtk") as server:
            association = acse.request_association(
                "127.0.0.1", server.port, calling_ae_title="PROBESCU", called_ae_title=AE_TITLE,
                contexts=[PresentationContextRQ(1, CTImageStorage, [ExplicitVRLittleEndian])],
                max_receive_pdu=16384, connect_timeout=10, acse_timeout=10)
            outcome[kind] = []
            for number, (fields, _) in enumerate(UNKNOWN_CLASS_CASES.values(), start=1):
                association.send_message(1, {"CommandField": dimse.C_STORE_RQ, "MessageID": number,
                                             "AffectedSOPClassUID": UNKNOWN_CLASS, "AffectedSOPInstanceUID": UID,
                                             "Priority": 0}, _unknown_class_data_set(**fields))
                outcome[kind].append(association.receive_command(10, 10)[1]["Status"])
            association.release(10)
            log = server.wait_for_log("Association Release")
        log = log[log.index("Association Received (localhost:PROBESCU"):]   # not the start-up port probe
        logged[kind] = [line for line in log.splitlines() if line.startswith(("W:", "E:"))]
        assert live_records(area) == [] and image_files(area) == []
    assert outcome["qrscp"] == outcome["dcmtk"] == [status for _, status in UNKNOWN_CLASS_CASES.values()]
    assert logged["qrscp"] == logged["dcmtk"]


# --- output options (docs/storage.md §7) --------------------------------------------------------------------------

def _meta_length(data: bytes) -> int:
    """Bytes of preamble and file meta information at the start of ``data`` (0 without)."""
    if data[128:132] != b"DICM":
        return 0
    return 144 + struct.unpack_from("<I", data, 140)[0]


def _without_trailing_padding(data: bytes) -> bytes:
    """An explicit VR little endian data set without its top-level DataSetTrailingPadding: how much padding
    a file needs depends on the length of its file meta information, which names each program's own
    implementation."""
    padding = read_dataset(DicomBytesIO(data), False, True).get(0xFFFCFFFC)
    return data[:-(12 + len(padding.value))] if padding is not None else data


def rich_instance(directory: Path) -> Path:
    """A CT with what the output options act on: a sequence, a group length, UT and UN elements (written in
    explicit VR little endian)."""
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid(BRANCH, 5, 1, 9)
    dataset = make_instance(CTImageStorage, StudyInstanceUID=uid(BRANCH, 5), SeriesInstanceUID=uid(BRANCH, 5, 1),
                            SOPInstanceUID=uid(BRANCH, 5, 1, 1), ReferencedImageSequence=Sequence([item]),
                            TextValue="a UT value", PatientComments="odd")
    dataset.add_new(0x00090010, "LO", "QRSCP TESTS")
    dataset.add_new(0x00091001, "UN", b"\x01\x02\x03\x04")
    dataset.add_new(0x00100000, "UL", 0)  # a group length, recomputed or removed by the options
    directory.mkdir(parents=True, exist_ok=True)
    return write_instance(dataset, directory / "rich.dcm")


def _groups_with_length(tags: list[int]) -> set[int]:
    return {tag >> 16 for tag in tags if tag & 0xFFFF == 0}


def _every_group_has_a_length(_file: bytes, tags: list[int]) -> bool:
    return {tag >> 16 for tag in tags} == _groups_with_length(tags)


UNDEFINED_LENGTH_SEQUENCE = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
UT_AS_OB = struct.pack("<HH2s", 0x0040, 0xA160, b"OB")
UN_AS_OB = struct.pack("<HH2s", 0x0009, 0x1001, b"OB")


@dataclass(frozen=True)
class OutputCase:
    """How an output option is exercised and what it must produce."""

    scu_options: tuple[str, ...]         # storescu's (which transfer syntax to send in)
    transfer_syntax: str | None          # of the stored file; None: no file meta information (-F)
    #: what else must hold, given the whole stored file and the top-level tags of its data set (explicit VR
    #: little endian files only)
    check: Callable[[bytes, list[int]], bool] | None = None
    padded: bool = False                 # the files end with padding (compared without it)


OUTPUT_OPTIONS: dict[str, OutputCase] = {
    "+F": OutputCase((), ExplicitVRLittleEndian),
    "-F": OutputCase((), None),
    "+te": OutputCase(("-xi",), ExplicitVRLittleEndian),
    "+tb": OutputCase((), ExplicitVRBigEndian),
    "+ti": OutputCase((), ImplicitVRLittleEndian),
    "+td": OutputCase((), DeflatedExplicitVRLittleEndian),
    "+B": OutputCase(("-xi",), ImplicitVRLittleEndian),
    "+g": OutputCase((), ExplicitVRLittleEndian, _every_group_has_a_length),
    "-g": OutputCase((), ExplicitVRLittleEndian, lambda _file, tags: not _groups_with_length(tags)),
    "-e": OutputCase((), ExplicitVRLittleEndian, lambda file, _tags: UNDEFINED_LENGTH_SEQUENCE in file),
    "+p 8 2": OutputCase((), ExplicitVRLittleEndian, lambda file, _tags: len(file) % 8 == 0, padded=True),
    "-u": OutputCase((), ExplicitVRLittleEndian, lambda file, _tags: UT_AS_OB in file and UN_AS_OB in file),
    "+cl 9 +td": OutputCase((), DeflatedExplicitVRLittleEndian),
}


@pytest.mark.parametrize("option", OUTPUT_OPTIONS, ids=lambda option: option.replace(" ", "_"))
def test_output_option(tmp_path: Path, option: str) -> None:
    """Each output option: the data set we store is byte for byte DCMTK's with the same option, the file
    meta information names the transfer syntax the option selects and the calling AE title, and the
    stored file is still served (C-FIND finds it, C-GET returns it)."""
    case = OUTPUT_OPTIONS[option]
    source = rich_instance(tmp_path / "in")
    stored: dict[str, bytes] = {}
    for kind in ("dcmtk", "qrscp"):
        directory = tmp_path / kind
        area = directory / "area"
        area.mkdir(parents=True)
        with Server(directory, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), *option.split(),
                    dcmtk_server=kind == "dcmtk") as server:
            store_all(server.port, [source], *case.scu_options, calling="OPTSCU")
            if kind == "qrscp":
                assert image_level_uids(server.port) == [uid(BRANCH, 5, 1, 1)]
                responses, output = getscu(server.port, "-S", ("QueryRetrieveLevel=STUDY",
                                                              f"StudyInstanceUID={uid(BRANCH, 5)}"),
                                           tmp_path / "got")
                assert responses and responses[-1].status == SUCCESS, output
                assert dcmread(next((tmp_path / "got").iterdir())).SOPInstanceUID == uid(BRANCH, 5, 1, 1)
        (name,) = image_files(area)
        stored[kind] = (area / name).read_bytes()
    ours, theirs = stored["qrscp"], stored["dcmtk"]
    data_set, their_data_set = ours[_meta_length(ours):], theirs[_meta_length(theirs):]
    if case.padded:
        data_set, their_data_set = _without_trailing_padding(data_set), _without_trailing_padding(their_data_set)
    assert data_set == their_data_set
    if case.transfer_syntax is None:
        assert _meta_length(ours) == 0
    else:
        meta = dcmread(BytesIO(ours), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == case.transfer_syntax
        assert meta.SourceApplicationEntityTitle == "OPTSCU"
        assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == \
            (CTImageStorage, uid(BRANCH, 5, 1, 1))
    if case.check is not None:
        tags = read_dataset(DicomBytesIO(ours[_meta_length(ours):]), False, True).keys()
        assert case.check(ours, [int(tag) for tag in tags])


# --- file names, file meta, new areas (docs/index-format.md §9, docs/differences.md #12) --------------------------

def file_prefixes() -> dict[str, str]:
    """SOP Class UID -> file-name prefix, from ``qrscp/dicom/storage_sop_classes.tsv``."""
    with open(ROOT / "qrscp" / "dicom" / "storage_sop_classes.tsv", newline="") as table:
        rows = csv.reader((line for line in table if not line.startswith("#")), delimiter="\t")
        return {row[1]: row[4] for row in rows}


NAMED_CLASSES = (CTImageStorage, MRImageStorage, UltrasoundImageStorage, SecondaryCaptureImageStorage,
                 ComputedRadiographyImageStorage, BasicTextSRStorage, ComprehensiveSRStorage,
                 GrayscaleSoftcopyPresentationStateStorage)


def test_file_names_and_file_meta(tmp_path: Path) -> None:
    """Stored files are named ``<prefix>_<8 hex association time><8 hex>.dcm`` with the prefixes of the
    storage table, which are DCMTK's; their meta information names the calling AE title."""
    files = [instance(tmp_path / "in", 1, n, sop_class=sop_class) for n, sop_class in enumerate(NAMED_CLASSES, 1)]
    names: dict[str, dict[str, str]] = {}
    times: dict[str, tuple[int, int]] = {}   # when the association started and ended
    for kind in ("qrscp", "dcmtk"):
        directory = tmp_path / kind
        area = directory / "area"
        area.mkdir(parents=True)
        with Server(directory, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}),
                    dcmtk_server=kind == "dcmtk") as server:
            started = int(time.time())
            store_all(server.port, files, calling="NAMINGSCU")
            times[kind] = (started, int(time.time()))
        names[kind] = {r.sop_class_uid.decode(): Path(r.filename.decode()).name for r in live_records(area)}
    prefixes = file_prefixes()
    started, finished = times["qrscp"]
    for sop_class, name in names["qrscp"].items():
        match = re.fullmatch(r"([A-Za-z]+)_([0-9a-f]{8})[0-9a-f]{8}\.dcm", name)
        assert match, name
        assert match.group(1) == prefixes[sop_class] == names["dcmtk"][sop_class].split("_")[0]
        assert started <= int(match.group(2), 16) <= finished
        meta = dcmread(tmp_path / "qrscp" / "area" / name, stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == "NAMINGSCU"
        assert meta.MediaStorageSOPClassUID == sop_class
    assert sorted(names["qrscp"]) == sorted(NAMED_CLASSES)


#: Storage classes DCMTK 3.7.0 added (Photoacoustic, Label Map Segmentation, Waveform Annotation SR) and three
#: whose prefix DCMTK 3.7.0's table spells with a stray blank (RT Plan, Multiple Volume Rendering VPS, OCT B-scan
#: Volume Analysis), with the prefixes 3.7.0 names their files by.
CLASSES_370 = {"1.2.840.10008.5.1.4.1.1.6.3": "PA", "1.2.840.10008.5.1.4.1.1.66.7": "SGl",
               "1.2.840.10008.5.1.4.1.1.88.77": "SRw", "1.2.840.10008.5.1.4.1.1.481.5": "RP",
               "1.2.840.10008.5.1.4.1.1.11.11": "VPm", "1.2.840.10008.5.1.4.1.1.77.1.5.8": "OCb"}


def test_storage_classes_of_dcmtk_370(tmp_path: Path) -> None:
    """Every storage class of DCMTK 3.7.0's table is accepted (202, where 3.6.7 has 186) and named by its
    prefix; DCMTK 3.6.7 refuses the new ones."""
    datasets = [dcmread(instance(tmp_path / "in", 1, n, sop_class=sop_class))
                for n, sop_class in enumerate(CLASSES_370, 1)]
    ae = AE(ae_title="PYSCU")
    for sop_class in CLASSES_370:
        ae.add_requested_context(sop_class)

    def store(port: int) -> list[int | None]:
        association = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        try:
            return [association.send_c_store(dataset).get("Status") if any(
                context.abstract_syntax == dataset.SOPClassUID for context in association.accepted_contexts)
                else None for dataset in datasets]
        finally:
            association.release()

    with qrscp(tmp_path) as server:
        assert store(server.port) == [SUCCESS] * len(datasets)
    names = {r.sop_class_uid.decode(): Path(r.filename.decode()).name for r in live_records(tmp_path / "area")}
    assert {sop_class: name.split("_")[0] for sop_class, name in names.items()} == CLASSES_370
    assert sum(1 for row in file_prefixes()) >= 202
    (tmp_path / "dcmtk").mkdir()
    (tmp_path / "dcmtk-area").mkdir()
    with Server(tmp_path / "dcmtk", simple_config({AE_TITLE: f"{tmp_path / 'dcmtk-area'} RW (200, 1024mb) ANY"}),
                dcmtk_server=True) as server:
        assert store(server.port)[:3] == [None, None, None]     # 3.6.7 refuses the new classes' contexts


def test_file_names_carry_the_time_of_their_association(tmp_path: Path) -> None:
    """The first 8 hex digits of a stored file's name are the time its association started (index-format.md §9), for
    a worker's later associations too."""
    first, second = instance(tmp_path / "in", 1, 1), instance(tmp_path / "in", 1, 2)
    with qrscp(tmp_path) as server:
        store_all(server.port, [first])
        wait_for_next_second()
        started = int(time.time())
        store_all(server.port, [second])
    name = Path(record_of(tmp_path / "area", uid(BRANCH, 1, 1, 2)).filename.decode()).name
    assert int(name.split("_")[1][:8], 16) >= started


def test_missing_area_directory_is_created(tmp_path: Path) -> None:
    """A storage area whose directory does not exist yet is created on first use, with a warning
    (docs/differences.md #12), and the store succeeds."""
    area = tmp_path / "not" / "yet" / "area"
    source = instance(tmp_path / "in", 1, 1)
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"})) as server:
        store_all(server.port, [source])
        assert image_level_uids(server.port) == [uid(BRANCH, 1, 1, 1)]
        log = server.log
    assert "W: storage area" in log and "creating it" in log
    assert [r.sop_instance_uid.decode() for r in assert_consistent(area)] == [uid(BRANCH, 1, 1, 1)]


# --- concurrency and crashes (docs/differences.md #16) ------------------------------------------------------------

def test_parallel_stores_index_every_instance_once(tmp_path: Path) -> None:
    """8 storescu processes, 50 distinct instances each, in 5 studies they share: every store succeeds,
    every instance is indexed exactly once and its file is there (docs/differences.md #16)."""
    classes = (CTImageStorage, MRImageStorage)
    clients = [[instance(tmp_path / "in" / str(c), 1 + n % 5, 1000 * c + n, sop_class=classes[c % 2])
                for n in range(50)] for c in range(8)]
    with qrscp(tmp_path) as server:
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            results = list(pool.map(lambda files: storescu(server.port, files), clients))
        found = image_level_uids(server.port)
    for files, statuses in zip(clients, results):
        assert statuses == {path: SUCCESS for path in files}
    expected = sorted(uid(BRANCH, 1 + n % 5, 1, 1000 * c + n) for c in range(8) for n in range(50))
    records = assert_consistent(tmp_path / "area")
    assert sorted(r.sop_instance_uid.decode() for r in records) == expected
    assert sorted(found) == expected
    assert sum(d.image_count for d in study_descriptors(tmp_path / "area").values()) == 400
