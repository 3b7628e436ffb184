"""The record table a worker keeps (qrscp.archive.records, docs/index-format.md §12): whatever updates it
went through, it holds what a table built afresh from the same records holds, and a storage area's
table agrees with a read of the file after every kind of write (its own, a fellow worker's, DCMTK's).
"""
from __future__ import annotations

import os
import shutil

import pytest
from conftest import needs_dcmtk, run_dcmtk
from corpus import make_ct, write_instance
from hypothesis import given, settings
from hypothesis import strategies as st

from qrscp.archive import index
from qrscp.archive.index_values import read_index_values
from qrscp.archive.journal import WriteJournal
from qrscp.archive.records import SPECIFIC_CHARACTER_SET, RecordTable, slots_of
from qrscp.archive.storage_area import StorageArea

PATIENT_NAME, PATIENT_ID, STUDY_UID, SOP_UID = 0x00100010, 0x00100020, 0x0020000D, 0x00080018
TAGS = (SPECIFIC_CHARACTER_SET, PATIENT_NAME, STUDY_UID, SOP_UID)
VALUES = {SPECIFIC_CHARACTER_SET: [b"", b"ISO_IR 100", b"ISO_IR 192"],
          PATIENT_NAME: [b"", b"Doe", b" Doe", b"Doe ", b"M\xfcller"],
          STUDY_UID: [b"1.2", b"1.3", b"1.2 "], SOP_UID: [b"1", b"2", b"3", b"4"]}


def _record(draw_values: tuple[int, ...]) -> dict[int, bytes]:
    return {tag: VALUES[tag][n % len(VALUES[tag])] for tag, n in zip(TAGS, draw_values)}


def _snapshot(table: RecordTable) -> tuple:
    """Everything a search can see of ``table``."""
    return (table.slot_count, table.live_slots(), sorted(table.charsets()),
            {tag: table.values(tag) for tag in TAGS},
            {tag: {key: tuple(slots_of(entry)) for key, entry in table.lookup(tag).items()} for tag in TAGS})


operations = st.lists(st.tuples(st.sampled_from(["put", "remove", "lookup"]), st.integers(0, 11),
                                st.tuples(*(st.integers(0, 4) for _ in TAGS))), max_size=60)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.one_of(st.none(), st.tuples(*(st.integers(0, 4) for _ in TAGS))), max_size=8), operations)
def test_an_updated_table_equals_one_built_afresh(initial, changes):
    live = [slot for slot, values in enumerate(initial) if values is not None]
    records = {slot: _record(initial[slot]) for slot in live}
    table = RecordTable(len(initial), live, {tag: [records[slot][tag] for slot in live] for tag in TAGS})
    for operation, slot, values in changes:
        if operation == "put":
            records[slot] = _record(values)
            table.put(slot, records[slot])
        elif operation == "remove":
            records.pop(slot, None)
            table.remove(slot)
        else:
            table.lookup(TAGS[slot % len(TAGS)])   # lookups built part-way are kept up to date
    slots = sorted(records)
    fresh = RecordTable(table.slot_count, slots, {tag: [records[slot][tag] for slot in slots] for tag in TAGS})
    assert _snapshot(table) == _snapshot(fresh)
    assert set(range(table.slot_count)) - set(slots) <= set(table.free)   # every free slot is a candidate
    for tag in TAGS:   # what was noted about a key goes with it
        assert set(table.notes(tag)) <= set(table.lookup(tag))


def test_notes_go_with_their_key():
    table = RecordTable(2, [0, 1], {SPECIFIC_CHARACTER_SET: [b"ISO_IR 100"] * 2, PATIENT_NAME: [b"A", b"B"]})
    notes = table.notes(PATIENT_NAME)
    notes[(b"ISO_IR 100", b"A")] = notes[(b"ISO_IR 100", b"B")] = "converted"
    table.put(0, {SPECIFIC_CHARACTER_SET: b"ISO_IR 100", PATIENT_NAME: b"B"})
    assert notes == {(b"ISO_IR 100", b"B"): "converted"}
    assert table.slots_with(PATIENT_NAME, b"B") == [0, 1]


# --- a storage area's table against its file ----------------------------------------------------------------------

def _store(area: StorageArea, directory, sop: str, study: str, name: str = "Doe^J") -> None:
    path = write_instance(make_ct(SOPInstanceUID=sop, StudyInstanceUID=study, PatientName=name),
                          directory / f"{sop}-{study}-{len(name)}.dcm")
    area.register(str(path), "1.2.840.10008.5.1.4.1.1.2", read_index_values(str(path)))


def _assert_table_is_the_file(area: StorageArea) -> None:
    tags = [PATIENT_NAME, STUDY_UID, SOP_UID, SPECIFIC_CHARACTER_SET]
    scanned = area.read_columns(["slot", *tags])
    with area.records(tags) as table:
        assert table.live_slots() == scanned["slot"]
        for tag in tags:
            assert [table.values(tag)[slot] for slot in scanned["slot"]] == scanned[tag]
            table.lookup(tag)


@pytest.mark.parametrize("quota", [(500, -1), (2, -1)])
def test_the_table_follows_every_write(tmp_path, quota):
    """Stores, replacements, evictions (``quota``: 2 studies), pruning, a fellow worker's stores and
    a writer outside the journal: after each, the table is what a read of the file gives."""
    journal = WriteJournal()
    area = StorageArea(str(tmp_path / "area"), *quota, journal=journal)
    _assert_table_is_the_file(area)
    for n in range(6):
        _store(area, tmp_path, f"1.2.3.{n}", f"1.2.{n % 3}")
        _assert_table_is_the_file(area)
    _store(area, tmp_path, "1.2.3.1", "1.2.1", name="Roe^K")      # replaced: the same slot
    _assert_table_is_the_file(area)
    fellow = StorageArea(str(tmp_path / "area"), *quota, journal=journal)
    _store(fellow, tmp_path, "1.2.3.7", "1.2.2")
    _store(fellow, tmp_path, "1.2.3.2", "1.2.2", name="Other")
    _assert_table_is_the_file(area)
    with StorageArea(str(tmp_path / "area"), *quota) as outsider:   # no journal
        _store(outsider, tmp_path, "1.2.3.8", "1.2.2", name="Out^Side")
    _assert_table_is_the_file(area)
    os.unlink(area.read_columns(["filename"])["filename"][0])
    area.prune_invalid_records()
    _assert_table_is_the_file(area)


@needs_dcmtk
def test_the_table_notices_dcmtk_rewriting_a_slot(tmp_path):
    """DCMTK's dcmqridx replaces an instance in place (its slot freed and taken again, the file's size
    unchanged): the next search sees the new values."""
    area_path = tmp_path / "area"
    area = StorageArea(str(area_path), 500, -1)
    for n in range(3):
        _store(area, tmp_path, f"1.2.3.{n}", "1.2.3", name="Before^X")
    _assert_table_is_the_file(area)
    size = os.path.getsize(area_path / index.FILE_NAME)
    again = write_instance(make_ct(SOPInstanceUID="1.2.3.1", StudyInstanceUID="1.2.3", PatientName="After^Y"),
                           tmp_path / "again.dcm")
    shutil.copy(again, area_path / "again.dcm")
    assert run_dcmtk("dcmqridx", str(area_path), str(area_path / "again.dcm")).returncode == 0
    assert os.path.getsize(area_path / index.FILE_NAME) == size
    _assert_table_is_the_file(area)
    with area.records([PATIENT_NAME]) as table:
        assert sorted(table.values(PATIENT_NAME)[slot] for slot in table.live_slots()) == \
            [b"After^Y", b"Before^X", b"Before^X"]
