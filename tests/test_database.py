"""A storage area (qrscp.archive.storage_area): opening, registration with duplicates and quota, concurrency,
crash safety, the acceleration cache and its speed."""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import dcmtk as dcmtk_path
from conftest import dcmtk_env, needs_dcmtk, run_dcmtk
from test_index import instance

from qrscp import log
from qrscp.archive import index
from qrscp.archive import storage_area as database
from qrscp.archive.index_values import read_index_values
from qrscp.archive.storage_area import DatabaseError, QuotaExceeded, StorageArea

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def db_log():
    """Messages the database logs, as ``X: message`` lines."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname[0]}: {record.getMessage()}")

    logger = log.get_logger(log.DB)
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def store(area: StorageArea, sop_uid: bytes, study_uid: bytes = b"1.2.3", padding: int = 0, **kw) -> str:
    """Write an instance into a new file of the area and register it; its path."""
    path, fd = area.create_image_file(CT_IMAGE)
    with os.fdopen(fd, "wb") as file:
        file.write(instance(sop_uid, study_uid, padding=padding))
    area.register(path, CT_IMAGE, read_index_values(path), **kw)
    return path


def consistent(area: StorageArea) -> database.Snapshot:
    """The area's snapshot, after checking the invariants every index must keep: one record per
    instance, each naming an existing file that holds it, descriptors that add up."""
    snapshot = area.read_snapshot()
    sop_uids = [record.sop_instance_uid for _, record in snapshot.records]
    assert len(sop_uids) == len(set(sop_uids)), "an instance is indexed twice"
    totals: dict[bytes, list[int]] = {}
    for _, record in snapshot.records:
        assert read_index_values(os.fsdecode(record.filename)).values[0x00080018] == record.sop_instance_uid
        totals.setdefault(record.study_instance_uid, [0, 0])
        totals[record.study_instance_uid][0] += 1
        totals[record.study_instance_uid][1] += record.image_size
    described = {d.study_instance_uid: [d.image_count, d.study_size] for d in snapshot.descriptors if d.in_use}
    assert described == totals
    return snapshot


def live_uids(area: StorageArea) -> list[bytes]:
    return area.read_columns([0x00080018])[0x00080018]


# --- opening ------------------------------------------------------------------------------------------------------

def test_open_creates_the_index_and_a_missing_directory(tmp_path, db_log):
    area_path = tmp_path / "new" / "area"
    StorageArea(str(area_path), 10, 1000).close()
    assert (area_path / "index.dat").read_bytes() == b"QRDB05"
    assert db_log == [f"W: storage area {area_path} does not exist, creating it"]
    with pytest.raises(DatabaseError, match=re.escape(f"{tmp_path}/gone/index.dat: No such file or directory")):
        StorageArea(str(tmp_path / "gone"), 10, 1000, create_directory=False)


def test_limits_are_clamped_as_the_reference_does(tmp_path, db_log):
    area = StorageArea(str(tmp_path), 501, 2 << 30)
    assert (area.max_studies, area.max_bytes_per_study) == (500, 1 << 30)
    assert db_log == ["W: maxStudiesPerStorageArea too large\n        setting to 500",
                      "W: maxBytesPerStudy too large\n        setting to 1073741824"]
    area = StorageArea(str(tmp_path), -1, -1)
    assert (area.max_studies, area.max_bytes_per_study) == (500, 1 << 30)


def test_image_file_names(tmp_path, monkeypatch):
    area = StorageArea(str(tmp_path), 10, -1)
    path, fd = area.create_image_file(CT_IMAGE)
    os.close(fd)
    assert re.fullmatch(re.escape(str(tmp_path)) + r"/CT_%08x[0-9a-f]{8}\.dcm" % area.creation_time, path)
    path, fd = area.create_image_file("1.2.3.4.5")
    os.close(fd)
    assert os.path.basename(path).startswith("XX_")
    # a name that is taken is never reused: the next random number is tried
    draws = iter([0x1234, 0x1234, 0x5678])
    monkeypatch.setattr(database.secrets, "randbits", lambda bits: next(draws))
    first, fd1 = area.create_image_file(CT_IMAGE)
    second, fd2 = area.create_image_file(CT_IMAGE)
    os.close(fd1), os.close(fd2)
    assert first.endswith("00001234.dcm") and second.endswith("00005678.dcm")


# --- registration -------------------------------------------------------------------------------------------------

def test_register_writes_record_and_descriptor(tmp_path):
    area = StorageArea(str(tmp_path), 10, -1)
    before = int(time.time())
    path = store(area, b"1.2.3.1")
    snapshot = consistent(area)
    ((slot, record),) = snapshot.records
    assert (slot, record.filename, record.sop_class_uid, record.hstat) == (0, os.fsencode(path), CT_IMAGE.encode(), 1)
    assert record.image_size == os.path.getsize(path)
    assert record.recorded_date == int(record.recorded_date) and before <= record.recorded_date <= time.time()
    assert snapshot.descriptors[0] == index.StudyDescriptor(b"1.2.3", record.image_size, record.recorded_date, 1)
    store(area, b"1.2.3.2", is_new=False)
    assert area.read_snapshot().records[1][1].hstat == 0


def test_duplicate_in_the_same_study_replaces_the_old_copy(tmp_path, db_log):
    area = StorageArea(str(tmp_path), 10, -1)
    old = store(area, b"1.2.3.1")
    store(area, b"1.2.3.2")
    new = store(area, b"1.2.3.1")
    snapshot = consistent(area)
    assert [(slot, r.filename) for slot, r in snapshot.records][0] == (0, os.fsencode(new))  # slot reused
    assert not os.path.exists(old)
    assert db_log == [f"W: Deleting file: {old} due to quota or duplicate SOP instance UID"]


def test_duplicate_in_another_study_replaces_the_old_copy(tmp_path):
    """docs/differences.md #6: the reference keeps both when the new study is not known yet."""
    area = StorageArea(str(tmp_path), 10, -1)
    old = store(area, b"1.2.3.1", b"1.2.3")
    store(area, b"1.2.3.1", b"1.2.4")
    snapshot = consistent(area)
    assert [r.study_instance_uid for _, r in snapshot.records] == [b"1.2.4"]
    assert not os.path.exists(old)
    assert [d.study_instance_uid for d in snapshot.descriptors if d.in_use] == [b"1.2.4"]


def test_without_file_deletion_duplicates_keep_their_files(tmp_path, db_log):
    area = StorageArea(str(tmp_path), 10, -1, delete_files=False)
    old = store(area, b"1.2.3.1")
    new = store(area, b"1.2.3.1")
    area.register(new, CT_IMAGE, read_index_values(new))   # the same file again: nothing to say
    assert os.path.exists(old) and live_uids(area) == [b"1.2.3.1"]
    assert db_log == [f"W: file delete operations are disabled, keeping file: {old} despite duplicate SOP "
                      "Instance UID"]


def test_free_slots_are_reused_first_come(tmp_path):
    area = StorageArea(str(tmp_path), 10, -1)
    paths = [store(area, b"1.2.3.%d" % n) for n in range(4)]
    os.unlink(paths[1]), os.unlink(paths[2])
    area.prune_invalid_records()
    assert area.read_columns(["slot"])["slot"] == [0, 3]
    store(area, b"1.2.3.9")
    assert area.read_columns(["slot", 0x00080018]) == {"slot": [0, 1, 3],
                                                       0x00080018: [b"1.2.3.0", b"1.2.3.9", b"1.2.3.3"]}
    consistent(area)


def test_prune_removes_records_of_unreadable_files(tmp_path, db_log):
    area = StorageArea(str(tmp_path), 10, -1)
    kept, gone = store(area, b"1.2.3.1"), store(area, b"1.2.3.2", b"1.2.4")
    os.unlink(gone)
    area.prune_invalid_records()
    snapshot = consistent(area)
    assert [r.filename for _, r in snapshot.records] == [os.fsencode(kept)]
    assert db_log == [f"W: removing index record of unreadable file: {gone}"]


def test_read_columns(tmp_path):
    area = StorageArea(str(tmp_path), 10, -1)
    paths = [store(area, b"1.2.3.%d" % n) for n in range(3)]
    columns = area.read_columns([0x00100010, "filename", "sop_class_uid", "charset", "slot", "PatientID"])
    assert columns == {0x00100010: [b"Doe^John"] * 3, "filename": [os.fsencode(p) for p in paths],
                       "sop_class_uid": [CT_IMAGE.encode()] * 3, "charset": [b""] * 3, "slot": [0, 1, 2],
                       "PatientID": [b"PID1"] * 3}
    with pytest.raises(KeyError):
        area.read_columns([0x00280010])


# --- quota --------------------------------------------------------------------------------------------------------

def test_too_many_studies_evict_exactly_the_oldest_study(tmp_path, db_log):
    """docs/differences.md #1: the reference would also delete study 1.2.33 (its UID starts with 1.2.3)."""
    area = StorageArea(str(tmp_path), 2, -1)
    evicted = store(area, b"1.2.3.1", b"1.2.3")
    store(area, b"1.2.33.1", b"1.2.33")
    store(area, b"1.2.4.1", b"1.2.4")
    snapshot = consistent(area)
    assert sorted(r.study_instance_uid for _, r in snapshot.records) == [b"1.2.33", b"1.2.4"]
    assert not os.path.exists(evicted)
    assert db_log == [f"W: Deleting file: {evicted} due to quota or duplicate SOP instance UID"]


def test_a_full_study_loses_its_oldest_images(tmp_path):
    size = len(instance(b"1.2.3.1", padding=1000))
    area = StorageArea(str(tmp_path), 10, size * 5 // 2)
    first, second = store(area, b"1.2.3.1", padding=1000), store(area, b"1.2.3.2", padding=1000)
    third = store(area, b"1.2.3.3", padding=1000)
    snapshot = consistent(area)
    assert [r.filename for _, r in snapshot.records] == [os.fsencode(third), os.fsencode(second)]  # slot reused
    assert not os.path.exists(first) and snapshot.descriptors[0].study_size == 2 * size


def test_an_image_larger_than_the_study_limit_is_refused_and_changes_nothing(tmp_path):
    area = StorageArea(str(tmp_path), 10, 2000)
    kept = store(area, b"1.2.3.1")
    before = (tmp_path / "index.dat").read_bytes()
    with pytest.raises(QuotaExceeded) as refused:
        store(area, b"1.2.3.1", padding=3000)
    assert refused.value.status == 0xA700
    assert (tmp_path / "index.dat").read_bytes() == before and os.path.exists(kept)


# --- sharing the area ---------------------------------------------------------------------------------------------

@needs_dcmtk
def test_the_cache_notices_changes_made_by_dcmtk(tmp_path):
    area = StorageArea(str(tmp_path / "area"), 500, -1)
    store(area, b"1.2.3.1")
    store(area, b"1.2.3.2")
    # DCMTK replaces 1.2.3.1 (same study: its record slot 0 is freed and reused) and adds 1.2.3.3
    outside = []
    for uid in (b"1.2.3.1", b"1.2.3.3"):
        outside.append(tmp_path / (uid.decode() + ".dcm"))
        outside[-1].write_bytes(instance(uid))
    assert run_dcmtk("dcmqridx", str(tmp_path / "area"), *map(str, outside)).returncode == 0
    store(area, b"1.2.3.3")    # must replace DCMTK's record, not add a second one
    store(area, b"1.2.3.4")    # must not overwrite one of DCMTK's records
    assert sorted(live_uids(area)) == [b"1.2.3.1", b"1.2.3.2", b"1.2.3.3", b"1.2.3.4"]
    consistent(area)


def _register_many(area: StorageArea, numbers: range, study_count: int) -> None:
    for n in numbers:
        store(area, b"1.2.9.%d" % n, b"1.2.8.%d" % (n % study_count))


def test_eight_processes_registering_at_once_lose_nothing(tmp_path):
    """Each process registers 30 instances, 10 of them also registered by its neighbour; the handle is
    inherited over fork and must not share its lock with the parent's."""
    area = StorageArea(str(tmp_path), 500, -1)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_register_many, args=(area, range(20 * k, 20 * k + 30), 7)) for k in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    snapshot = consistent(area)
    assert sorted(r.sop_instance_uid for _, r in snapshot.records) == sorted(b"1.2.9.%d" % n for n in range(170))
    on_disk = {str(p) for p in tmp_path.glob("*.dcm")}
    assert on_disk == {os.fsdecode(r.filename) for _, r in snapshot.records}   # replaced copies deleted


@needs_dcmtk
def test_dcmtk_and_we_register_into_one_area_at_the_same_time(tmp_path):
    """The index lock is the flock DCMTK takes: its dcmqridx and our processes interleave safely."""
    area_path, outside = tmp_path / "area", tmp_path / "outside"
    outside.mkdir()
    theirs = []
    for n in range(80):
        theirs.append(str(outside / f"{n}.dcm"))
        Path(theirs[-1]).write_bytes(instance(b"1.2.4.%d" % n, b"1.2.8.%d" % (n % 7)))
    area = StorageArea(str(area_path), 500, -1)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_register_many, args=(area, range(30 * k, 30 * k + 30), 7)) for k in range(4)]
    dcmtk = subprocess.Popen([dcmtk_path("dcmqridx"), str(area_path), *theirs], env=dcmtk_env(),
                             stderr=subprocess.PIPE)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert dcmtk.wait(60) == 0
    snapshot = consistent(area)
    assert sorted(r.sop_instance_uid for _, r in snapshot.records) == \
        sorted([b"1.2.9.%d" % n for n in range(120)] + [b"1.2.4.%d" % n for n in range(80)])


def _register_forever(path: str) -> None:
    area = StorageArea(path, 500, 200_000)
    n = 0
    while True:
        n += 1
        store(area, b"1.2.7.%d.%d" % (os.getpid(), n % 40), b"1.2.6.%d" % (n % 3), padding=random.randrange(20000))


def test_a_process_killed_while_registering_leaves_a_valid_index(tmp_path):
    context = multiprocessing.get_context("fork")
    for round_ in range(6):
        worker = context.Process(target=_register_forever, args=(str(tmp_path),))
        worker.start()
        time.sleep(0.15 + random.random() * 0.1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        with StorageArea(str(tmp_path), 500, 200_000) as area:
            snapshot = area.read_snapshot()
            assert snapshot.records, "nothing was registered"
            for _, record in snapshot.records:   # every record names a complete file holding its instance
                values = read_index_values(os.fsdecode(record.filename))
                assert values.values[0x00080018] == record.sop_instance_uid
                assert os.path.getsize(record.filename) == record.image_size
            store(area, b"1.2.5.%d" % round_)   # and the area goes on working


# --- a large index ------------------------------------------------------------------------------------------------

def _write_big_index(path: Path, records: int) -> None:
    """An index of ``records`` instances in 100-image studies, written directly (a registration of each
    would make the test slow)."""
    template = index.Record(b"/nonexistent/CT.dcm", CT_IMAGE.encode(), 1.7e9, 1000, 1, [b""] * 38, b"")
    descriptors = index.decode_descriptors(b"")
    with open(path / "index.dat", "wb") as file:
        file.write(index.HEADER + bytes(index.DESCRIPTORS_SIZE))
        for n in range(records):
            template.params = index.param_values({0x00080018: b"1.2.826.9.%d" % n,
                                                  0x0020000D: b"1.2.826.8.%d" % (n // 100),
                                                  0x00100010: b"Patient^%d" % (n // 100)})
            file.write(index.encode_record(template))
        for n in range(records // 100):
            descriptors[n] = index.StudyDescriptor(b"1.2.826.8.%d" % n, 100_000, 1.7e9, 100)
        file.seek(index.DESCRIPTORS_OFFSET)
        file.write(index.encode_descriptors(descriptors))


#: The functions that read a column of every record: the cache is built from them.
_FULL_SCANS = ("live_slots", "param_column", "string_column")


def test_registration_does_not_rescan_a_large_index(tmp_path, monkeypatch):
    """A store into a 10,000-record area reads its records once, to build the cache; the 40 stores after
    it read none of them again (their cost does not grow with the area; scripts/bench measures it)."""
    _write_big_index(tmp_path, 10_000)
    scans: list[str] = []
    for name in _FULL_SCANS:
        function = getattr(index, name)
        monkeypatch.setattr(index, name, lambda *args, _function=function, _name=name:
                            scans.append(_name) or _function(*args))
    area = StorageArea(str(tmp_path), 500, -1)
    store(area, b"1.2.6.0", b"1.2.6")
    assert "live_slots" in scans
    scans.clear()
    for n in range(40):
        store(area, b"1.2.7.%d" % n, b"1.2.7")
    assert scans == []
    assert len(area.read_snapshot().records) == 10_041
