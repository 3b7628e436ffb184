"""The journal of index writes shared by the server's processes (qrscp.archive.journal, qrscp.archive.storage_area)."""
from __future__ import annotations

import os

from corpus import make_ct, write_instance

from qrscp.archive import index
from qrscp.archive.index_values import read_index_values
from qrscp.archive.journal import MAX_SLOTS, WriteJournal
from qrscp.archive.storage_area import StorageArea


PATIENT_NAME, SOP_INSTANCE_UID = 0x00100010, 0x00080018
FIELDS = [PATIENT_NAME, SOP_INSTANCE_UID]


def test_writes_since_returns_the_writes_of_one_file_in_order():
    journal = WriteJournal(entries=8)
    first = journal.record((1, 10), (100, 1, 7), (200, 2, 8), [3])
    journal.record((1, 11), (0, 0, 0), (5, 5, 5), [1])  # another index
    journal.record((1, 10), (200, 2, 8), (300, 3, 9), [4, 5])
    writes = journal.writes_since(first - 1, (1, 10))
    assert [(w.before, w.after, w.slots) for w in writes] == [((100, 1, 7), (200, 2, 8), (3,)),
                                                              ((200, 2, 8), (300, 3, 9), (4, 5))]
    assert journal.writes_since(journal.last_seq(), (1, 10)) == []


def test_lost_or_oversized_entries_make_the_reader_rebuild():
    journal = WriteJournal(entries=4)
    start = journal.last_seq()
    for n in range(5):
        journal.record((1, 10), (n, n, n), (n + 1, n + 1, n + 1), [n])
    assert journal.writes_since(start, (1, 10)) is None  # the first entries are gone from the ring
    seq = journal.last_seq()
    journal.record((1, 10), (5, 5, 5), (6, 6, 6), range(MAX_SLOTS + 1))
    assert journal.writes_since(seq, (1, 10)) is None


def _register(area: StorageArea, directory, sop: str, study: str) -> str:
    path = write_instance(make_ct(SOPInstanceUID=sop, StudyInstanceUID=study), directory / f"{sop}-{study}.dcm")
    area.register(str(path), "1.2.840.10008.5.1.4.1.1.2", read_index_values(str(path)))
    return str(path)


def test_a_worker_catches_up_with_another_workers_writes_without_a_rebuild(tmp_path):
    area = StorageArea(str(tmp_path / "area"), 500, -1, journal=WriteJournal())
    _register(area, tmp_path, "1.2.3.1", "1.2.3")
    table = area._cache.table
    pid = os.fork()
    if pid == 0:  # another worker: a new instance, and a duplicate of the first under another study
        try:
            _register(area, tmp_path, "1.2.3.2", "1.2.3")
            _register(area, tmp_path, "1.2.3.1", "1.2.4")
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    _register(area, tmp_path, "1.2.3.1", "1.2.5")  # this worker must see the other's copy of 1.2.3.1
    assert area._cache.table is table, "the cache was rebuilt instead of caught up"
    records = area.read_snapshot().records
    assert sorted(r.sop_instance_uid for _, r in records) == [b"1.2.3.1", b"1.2.3.2"]
    assert [r.study_instance_uid for _, r in records if r.sop_instance_uid == b"1.2.3.1"] == [b"1.2.5"]


def test_a_write_outside_the_journal_makes_the_cache_rebuild(tmp_path):
    area = StorageArea(str(tmp_path / "area"), 500, -1, journal=WriteJournal())
    _register(area, tmp_path, "1.2.3.1", "1.2.3")
    table = area._cache.table
    with StorageArea(str(tmp_path / "area"), 500, -1) as outsider:  # as dcmqridx would: no journal entry
        _register(outsider, tmp_path, "1.2.3.1", "1.2.9")
    _register(area, tmp_path, "1.2.3.2", "1.2.3")
    assert area._cache.table is not table
    records = area.read_snapshot().records
    assert sorted((r.sop_instance_uid, r.study_instance_uid) for _, r in records) == \
        [(b"1.2.3.1", b"1.2.9"), (b"1.2.3.2", b"1.2.3")]
    assert index.check_header(open(area._index_file, "rb").read(6), area.index_path) is None


def test_a_write_outside_the_journal_in_the_same_tick_as_a_fellows_is_noticed(tmp_path):
    """DCMTK replaces an instance right after a fellow worker's journaled write, within the same tick of the
    file's clock (the modification time put back here) and leaving the index's size as it was: the study
    descriptor it rewrote (the study's size changed) breaks the journal's chain, so the table is read
    again. (A replacement by a file of the very same size in the same second leaves no trace but the
    record: docs/index-format.md §12.)"""
    journal = WriteJournal()
    area = StorageArea(str(tmp_path / "area"), 500, -1, journal=journal)
    for n in range(3):
        _register(area, tmp_path, f"1.2.3.{n}", "1.2.3")
    with area.records(FIELDS):   # the table this worker keeps, with the fields asked below
        pass
    fellow = StorageArea(str(tmp_path / "area"), 500, -1, journal=journal)
    _register(fellow, tmp_path, "1.2.3.9", "1.2.3")
    index_path = tmp_path / "area" / index.FILE_NAME
    after_fellow = os.stat(index_path)
    with StorageArea(str(tmp_path / "area"), 500, -1) as outsider:   # no journal entry, as DCMTK
        path = write_instance(make_ct(SOPInstanceUID="1.2.3.1", StudyInstanceUID="1.2.3", PatientName="After^Yonder^Longer"),
                              tmp_path / "replacement.dcm")
        outsider.register(str(path), "1.2.840.10008.5.1.4.1.1.2", read_index_values(str(path)))
    os.utime(index_path, ns=(after_fellow.st_atime_ns, after_fellow.st_mtime_ns))
    assert os.stat(index_path).st_size == after_fellow.st_size
    with area.records(FIELDS) as table:
        names = {table.values(SOP_INSTANCE_UID)[slot]: table.values(PATIENT_NAME)[slot] for slot in table.live_slots()}
    assert names == {b"1.2.3.0": b"Test^Patient", b"1.2.3.1": b"After^Yonder^Longer", b"1.2.3.2": b"Test^Patient",
                     b"1.2.3.9": b"Test^Patient"}
