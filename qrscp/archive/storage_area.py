"""A storage area: its ``index.dat``, registration of stored instances, and reads for find/move.

:class:`StorageArea` is DCMTK's DB handle (docs/index-format.md, locking.md, quota.md, storage.md): it
creates or validates the index when opened, registers instances under the exclusive ``flock``
(duplicates replaced, quota enforced, study descriptors maintained) and gives readers the live records
under the shared lock. DCMTK's ``dcmqrscp``/``dcmqridx`` can use the same area at the same time.

Speed that does not decay with the size of the area (docs/differences.md #7, index-format.md §12): neither a
store nor a query reads the whole index. A worker keeps a :class:`~qrscp.archive.records.RecordTable` of the
live records (the free slots; the values of the fields it was asked for; their lookups) and the decoded
study descriptors. They are trusted only while the file is as we last saw it (size, modification time and
the 44,000-byte descriptor block, which every DCMTK store rewrites); the table is updated slot by slot from
our own writes and from those of our fellow workers (the journal), and built again from the file after
any other change, which takes a few column reads over an ``mmap``. Every slot the table names is checked
on disk before it is written.
"""
from __future__ import annotations

import errno
import heapq
import mmap
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from qrscp import log
from qrscp.archive import index, locking
from qrscp.archive.index_values import IndexValues
from qrscp.archive.journal import WriteJournal, file_state
from qrscp.archive.records import SPECIFIC_CHARACTER_SET, RecordTable
from qrscp.dicom import uids
from qrscp.dicom.elements import raw_bytes

LOG = log.get_logger(log.DB)

#: read_columns keys naming a param by another name than its tag, and record fields that are no param.
TAG_ALIASES = {"charset": SPECIFIC_CHARACTER_SET}
FIELD_ALIASES = {
    "filename": index.FILENAME,
    "sop_class_uid": index.SOP_CLASS_UID,
    "instance_description": index.INSTANCE_DESCRIPTION,
}
SLOT = "slot"
_MAX_NAME_TRIES = 1024
#: Column reads touch nearly every page of the index: fault them in at once.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
SOP_INSTANCE_UID = index.SOP_INSTANCE_UID.tag
STUDY_INSTANCE_UID = index.STUDY_INSTANCE_UID.tag
#: The field every record table holds: duplicates are found by it.
_TABLE_FIELDS = frozenset({SOP_INSTANCE_UID})


class DatabaseError(Exception):
    """The index cannot be used or changed; ``status`` is the C-STORE status it leads to."""

    status = 0xC000


class QuotaExceeded(DatabaseError):
    """The image is larger than maxBytesPerStudy: the C-STORE is refused with 0xA700."""

    status = 0xA700


class IndexWriteFailed(QuotaExceeded):
    """The index could not grow (a full disk): nothing was changed, the C-STORE is refused with 0xA700."""


@dataclass
class Snapshot:
    """The whole index at one moment: for printing, checking, repairing."""

    descriptors: list[index.StudyDescriptor]
    slot_count: int
    records: list[tuple[int, index.Record]]   # live records with their slot numbers
    partial_bytes: int                       # bytes of an incomplete record at the end of the file


class _Studies:
    """The study descriptors as decoded from the descriptor block: the descriptor of each study, and the
    descriptors a registration changed (only those are written back)."""

    def __init__(self, block: bytes, max_studies: int) -> None:
        self.descriptors = index.decode_descriptors(block)
        self.max_studies = max_studies
        self.changed: set[int] = set()
        self._numbers: dict[bytes, int] | None = None

    def number(self, study_uid: bytes) -> int | None:
        """The descriptor of ``study_uid``: the first in use among the first maxStudies (docs/quota.md §2)."""
        if self._numbers is None:
            self._numbers = {}
            for number, descriptor in enumerate(self.descriptors[:self.max_studies]):
                if descriptor.in_use:
                    self._numbers.setdefault(descriptor.study_instance_uid, number)
        return self._numbers.get(study_uid)

    def reset(self, number: int) -> None:
        """Descriptor ``number`` becomes free (the caller fills it in for a new study)."""
        self.descriptors[number] = index.StudyDescriptor()
        self.changed.add(number)
        self._numbers = None

    def touch(self, number: int) -> None:
        """Descriptor ``number`` was changed in place, its study still the same (or just filled in after
        :meth:`reset`)."""
        self.changed.add(number)

    def replace(self, descriptors: list[index.StudyDescriptor]) -> None:
        """All descriptors change."""
        self.descriptors = descriptors
        self.changed = set(range(len(descriptors)))
        self._numbers = None


@dataclass
class _Cache:
    """What we know about the index file while it is as we last saw it."""

    key: tuple[int, int, int]            # inode, size, mtime_ns
    descriptor_block: bytes
    table: RecordTable | None = None
    studies: _Studies | None = None
    journal_seq: int = 0                 # the journal's entries up to this one are reflected here


def _limit(value: int, upper: int, name: str) -> int:
    """A configured limit clamped as the reference does (negative: the upper limit)."""
    if value > upper:
        LOG.warning("%s too large\n        setting to %d", name, upper)
        return upper
    return upper if value <= 0 else value


class StorageArea:
    """One storage area (the reference's DB handle). Not to be shared between threads; a handle that
    crosses a ``fork`` reopens its index in the child (``flock`` locks follow open files)."""

    def __init__(self, path: str, max_studies: int, max_bytes_per_study: int, *, delete_files: bool = True,
                 create_directory: bool = True, journal: WriteJournal | None = None) -> None:
        """Open the area ``path``, creating ``index.dat`` (and, with ``create_directory``, the directory,
        docs/differences.md #12) or validating its header under ``LOCK_EX`` (docs/index-format.md §1). Raises
        :class:`DatabaseError` with the reference's message, which is also logged.

        ``journal``: the index writes shared by this server's processes; with it a worker catches up with
        the others' writes instead of re-reading the whole index."""
        self.path = path
        self.directory = os.path.abspath(path)
        #: the index as named in messages (the reference's texts use the configured path)
        self.index_path = os.path.join(path, index.FILE_NAME)
        self._index_file = os.path.join(self.directory, index.FILE_NAME)
        self.max_studies = _limit(max_studies, index.MAX_STUDIES, "maxStudiesPerStorageArea")
        self.max_bytes_per_study = _limit(max_bytes_per_study, index.MAX_BYTES_PER_STUDY, "maxBytesPerStudy")
        self.delete_files = delete_files
        self.journal = journal
        #: the handle's creation time: the first 8 hex digits of the names of the files it creates
        self.creation_time = int(time.time())
        self._fd = -1
        self._pid = 0
        #: the index could be opened for reading only (a read-only area: find and retrieve still work)
        self.read_only = False
        #: slots written since the last journal entry
        self._written: set[int] = set()
        #: the fields this handle's record tables hold (a table built again holds them all from the start)
        self._fields: set[int] = set(_TABLE_FIELDS)
        self._map: mmap.mmap | None = None
        self._cache: _Cache | None = None
        if create_directory and not os.path.isdir(self.directory):
            LOG.warning("storage area %s does not exist, creating it", path)
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as error:
                self._fail(f"{path}: {error.strerror}")
        self._open()

    # --- file handling -------------------------------------------------------------------------------

    def _fail(self, message: str) -> NoReturn:
        LOG.error("%s", message)
        raise DatabaseError(message)

    def _open(self) -> None:
        try:
            fd = os.open(self._index_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self.read_only = False
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EROFS) or not os.path.exists(self._index_file):
                self._fail(f"{self.index_path}: {error.strerror}")
            try:  # a read-only area can still be queried and retrieved from
                fd = os.open(self._index_file, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                self._fail(f"{self.index_path}: {error.strerror}")
            self.read_only = True
        try:
            with locking.exclusive(fd):
                if os.fstat(fd).st_size == 0:
                    os.pwrite(fd, index.HEADER, 0)
                else:
                    index.check_header(os.pread(fd, index.HEADER_SIZE, 0), self.index_path)
        except (index.IndexFormatError, OSError) as error:
            os.close(fd)
            self._fail(str(error) if isinstance(error, index.IndexFormatError)
                       else f"{self.index_path}: {error.strerror}")
        self._fd, self._pid = fd, os.getpid()

    def _reopen_if_needed(self) -> None:
        """Reopen the index in a forked child, or if the file was replaced or removed."""
        if self._fd < 0:
            raise DatabaseError(f"{self.index_path}: storage area is closed")
        try:
            on_disk = os.stat(self._index_file)
            opened = os.fstat(self._fd)
            same = (on_disk.st_ino, on_disk.st_dev) == (opened.st_ino, opened.st_dev)
        except FileNotFoundError:
            same = False
        if same and self._pid == os.getpid():
            return
        os.close(self._fd)  # after a fork the parent's descriptor stays open (and locked) in the parent
        self._fd = -1
        self._drop_map()
        self._open()

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[_Cache]:
        """The index locked (``LOCK_EX`` or ``LOCK_SH``) with a cache that is valid for it. The map of the
        file is dropped when the lock is (its pages would count as the worker's memory); a change that
        fails half-way drops the cache."""
        self._reopen_if_needed()
        with (locking.exclusive if exclusive else locking.shared)(self._fd):
            self._written = set()
            try:
                yield self._refresh()
            except BaseException:
                if exclusive:
                    self._cache = None
                raise
            finally:
                self._drop_map()

    def _refresh(self) -> _Cache:
        status = os.fstat(self._fd)
        key = (status.st_ino, status.st_size, status.st_mtime_ns)
        block = os.pread(self._fd, index.DESCRIPTORS_SIZE, index.DESCRIPTORS_OFFSET)
        cache = self._cache
        if cache is None or cache.key != key or cache.descriptor_block != block:
            try:
                caught_up = cache is not None and self._catch_up(cache, (status.st_dev, status.st_ino), key, block)
            except BaseException:
                self._cache = None   # half caught up
                raise
            if not caught_up:
                self._check_file(status.st_size)
                cache = self._cache = _Cache(key, block, journal_seq=self.journal.last_seq() if self.journal else 0)
        return cache

    def _catch_up(self, cache: _Cache, file_id: tuple[int, int], key: tuple[int, int, int], block: bytes) -> bool:
        """Bring the cache up to date from the journal of our fellow workers' writes (re-reading only the
        slots they wrote); False when the journal does not account for every change since the cache was
        made (a writer outside this server, such as DCMTK), so that the caller rebuilds."""
        if self.journal is None or cache.key[0] != key[0]:
            return False
        writes = self.journal.writes_since(cache.journal_seq, file_id)
        if not writes:
            return False
        state = file_state(*cache.key[1:], cache.descriptor_block)
        for write in writes:
            if write.before != state:
                return False
            state = write.after
        if state != file_state(*key[1:], block):
            return False
        if cache.table is not None:
            cache.table.resize(index.slot_count(key[1]))
            self._reread(cache.table, sorted({slot for write in writes for slot in write.slots}))
        cache.key, cache.descriptor_block, cache.journal_seq = key, block, self.journal.last_seq()
        cache.studies = None
        return True

    def _reread(self, table: RecordTable, slots: Iterable[int]) -> None:
        """Bring ``slots`` of ``table`` up to date from the file."""
        for slot in slots:
            data = os.pread(self._fd, index.RECORD_SIZE, index.record_offset(slot))
            if len(data) == index.RECORD_SIZE and not index.slot_is_free(data[:1]):
                table.put(slot, index.record_values(data, table.fields))
            else:
                table.remove(slot)

    def _check_file(self, size: int) -> None:
        """After a change by another writer: the header must still be valid (else DatabaseError); an
        incomplete last record is reported (and ignored, as the reference ignores it)."""
        try:
            index.check_header(os.pread(self._fd, index.HEADER_SIZE, 0), self.index_path)
        except index.IndexFormatError as error:
            self._fail(str(error))
        partial = (size - index.RECORDS_OFFSET) % index.RECORD_SIZE if size > index.RECORDS_OFFSET else 0
        if partial:
            LOG.warning("%s: the last record is incomplete (%d bytes): ignored", self.index_path, partial)

    def _buffer(self) -> mmap.mmap | bytes:
        """A read-only map of the whole index as it is now (under the lock)."""
        size = self._cache.key[1] if self._cache else os.fstat(self._fd).st_size
        if self._map is None or len(self._map) != size:
            self._drop_map()
            if size == 0:
                return b""
            self._map = mmap.mmap(self._fd, size, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
        return self._map

    def _drop_map(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def _remember_own_write(self, cache: _Cache) -> None:
        """After our own writes (the record table already updated, the changed study descriptors not yet
        written): write those descriptors; the cache describes the file again, and the journal tells the
        other workers which slots changed."""
        before = file_state(*cache.key[1:], cache.descriptor_block)
        studies = self._studies(cache)
        if studies.changed:
            block = bytearray(cache.descriptor_block.ljust(index.DESCRIPTORS_SIZE, b"\0"))
            for number in studies.changed:
                offset = number * index.DESCRIPTOR_SIZE
                block[offset:offset + index.DESCRIPTOR_SIZE] = index.encode_descriptor(studies.descriptors[number])
            start = min(studies.changed) * index.DESCRIPTOR_SIZE   # one write of the span that changed
            end = (max(studies.changed) + 1) * index.DESCRIPTOR_SIZE
            self._write([(index.DESCRIPTORS_OFFSET + start, bytes(block[start:end]))])
            cache.descriptor_block = bytes(block)
            studies.changed.clear()
        status = os.fstat(self._fd)
        key = (status.st_ino, status.st_size, status.st_mtime_ns)
        if self.journal is not None:
            cache.journal_seq = self.journal.record((status.st_dev, status.st_ino), before,
                                                    file_state(*key[1:], cache.descriptor_block), self._written)
        self._written = set()
        cache.key = key

    def start_association(self) -> None:
        """The handle serves a new association: check the index as the reference's new DB handle does
        (DatabaseError if it became unusable), and name its files with this time (docs/index-format.md §9)."""
        with self._locked(exclusive=False):
            pass
        self.creation_time = int(time.time())

    def close(self) -> None:
        """Release the index (a lock still held by this handle is released with it)."""
        self._drop_map()
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1
        self._cache = None

    def __enter__(self) -> "StorageArea":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------------

    def _column(self, live: list[int], key: int | str) -> list:
        """The values of ``key`` (see :meth:`read_columns`) of the ``live`` slots, read from the file."""
        param = index.PARAM_BY_TAG.get(TAG_ALIASES.get(key, key))  # type: ignore[arg-type]
        if key == SLOT:
            return list(live)
        if param is not None:
            return index.param_column(self._buffer(), param, live)
        if isinstance(key, str) and (key in FIELD_ALIASES or key in index.STRING_FIELDS):
            return index.string_column(self._buffer(), FIELD_ALIASES.get(key) or index.STRING_FIELDS[key], live)
        raise KeyError(f"{key!r} is not stored in the index")

    def read_columns(self, fields: Sequence[int | str]) -> dict[int | str, list]:
        """One consistent snapshot (under ``LOCK_SH``) of all live records in slot order, read from the file:
        for each field the list of stored values (bytes up to the NUL). Int keys are tags (the first param
        with that tag), str keys ``filename``, ``sop_class_uid``, ``charset``, ``instance_description``, a
        record field name of :mod:`qrscp.archive.index`, or ``slot`` (the record numbers, as ints)."""
        with self._locked(exclusive=False) as cache:
            live = index.live_slots(self._buffer(), index.slot_count(cache.key[1]))
            return {key: self._column(live, key) for key in fields}

    @contextmanager
    def records(self, fields: Iterable[int]) -> Iterator[RecordTable]:
        """The live records, holding (at least) the params ``fields`` (tags), under ``LOCK_SH``: the table
        is valid until the block ends. Raises KeyError for a tag the index does not store."""
        with self._locked(exclusive=False) as cache:
            yield self._table(cache, fields)

    def locations(self, slots: Iterable[int]) -> list[tuple[bytes, bytes]]:
        """The file name and SOP Class UID of each of the live ``slots``, from the file (within
        :meth:`records`, whose lock keeps them what the table says)."""
        result = []
        for slot in slots:
            data = os.pread(self._fd, index.SOP_CLASS_UID.offset + index.SOP_CLASS_UID.size, index.record_offset(slot))
            result.append((index.string_value(data, index.FILENAME), index.string_value(data, index.SOP_CLASS_UID)))
        return result

    def read_snapshot(self) -> Snapshot:
        """The whole index, decoded (under ``LOCK_SH``): for ``dcmqridx -p``, checks and repairs."""
        with self._locked(exclusive=False) as cache:
            buffer = self._buffer()
            slots = index.slot_count(cache.key[1])
            records = [(slot, index.read_record(buffer, slot)) for slot in index.live_slots(buffer, slots)]
            partial = max(0, cache.key[1] - index.RECORDS_OFFSET - slots * index.RECORD_SIZE)
            return Snapshot(index.decode_descriptors(cache.descriptor_block), slots, records, partial)

    # --- what the cache holds ------------------------------------------------------------------------

    def _table(self, cache: _Cache, fields: Iterable[int] = ()) -> RecordTable:
        """The record table of the file as it is now, holding ``fields`` too: built (from one column read
        per field the handle has ever asked for) or completed when needed."""
        fields = set(fields)
        unknown = [tag for tag in fields if tag not in index.PARAM_BY_TAG]
        if unknown:
            raise KeyError(f"{unknown[0]:#010x} is not stored in the index")
        self._fields |= fields
        table = cache.table
        if table is None:
            buffer = self._buffer()
            live = index.live_slots(buffer, index.slot_count(cache.key[1]))
            table = cache.table = RecordTable(index.slot_count(cache.key[1]), live, {
                tag: index.iter_param_column(buffer, index.PARAM_BY_TAG[tag], live) for tag in self._fields})
        elif not fields <= table.fields:
            buffer = self._buffer()
            live = table.live_slots()
            for tag in fields - table.fields:
                table.load(tag, index.iter_param_column(buffer, index.PARAM_BY_TAG[tag], live), live)
        return table

    def _studies(self, cache: _Cache) -> _Studies:
        if cache.studies is None:
            cache.studies = _Studies(cache.descriptor_block, self.max_studies)
        return cache.studies

    def _rebuild_table(self, cache: _Cache) -> None:
        LOG.debug("index cache of %s out of date, rebuilding it", self.index_path)
        cache.table = None
        self._table(cache)

    def _read_record(self, slot: int) -> index.Record:
        return index.decode_record(os.pread(self._fd, index.RECORD_SIZE, index.record_offset(slot)))

    def _verified(self, cache: _Cache, tag: int, value: bytes) -> list[tuple[int, index.Record]]:
        """The records whose param ``tag`` is ``value``, as the record table names them, each checked on
        disk; a table that named a wrong slot is built again and asked again."""
        param = index.PARAM_BY_TAG[tag]
        for _ in range(2):
            found = [(slot, self._read_record(slot)) for slot in self._table(cache, [tag]).slots_with(tag, value)]
            if all(not record.is_free and record.params[param.index] == value for _, record in found):
                return found
            self._rebuild_table(cache)
        raise DatabaseError(f"{self.index_path}: index records inconsistent")

    # --- registration --------------------------------------------------------------------------------

    def create_image_file(self, sop_class_uid: str) -> tuple[str, int]:
        """A new, empty image file ``<area>/<prefix>_<8 hex creation time><8 hex random>.dcm`` (index-format.md §9),
        created exclusively so that no other process can take the same name (docs/differences.md #16).
        Returns its absolute path and a descriptor open for writing; raises ``OSError``."""
        prefix = uids.file_prefix(sop_class_uid)
        for _ in range(_MAX_NAME_TRIES):
            name = f"{prefix}_{self.creation_time & 0xFFFFFFFF:08x}{secrets.randbits(32):08x}.dcm"
            path = os.path.join(self.directory, name)
            try:
                return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue
        raise FileExistsError(f"no free image file name in {self.directory}")

    def register(self, filename: str, sop_class_uid: str, values: IndexValues, *, is_new: bool = True) -> None:
        """Register the stored file ``filename`` (the reference's ``storeRequest``), under ``LOCK_EX``.

        Records of the same SOP Instance UID are replaced wherever they are (docs/differences.md #6), then the quota
        is enforced (docs/quota.md, evicting exactly the oldest study or the study's oldest images, differences #1),
        the study descriptor updated and the record written into the first free slot. Raises
        :class:`QuotaExceeded` for an image larger than maxBytesPerStudy (nothing is changed then),
        :class:`DatabaseError` if the file or the index cannot be used.
        """
        name = os.fsencode(filename)
        if len(name) > index.FILENAME.size - 1:
            raise DatabaseError(f"file name too long for the index: {filename}")
        try:
            image_size = os.stat(filename).st_size
        except OSError as error:
            raise DatabaseError(f"cannot access {filename}: {error.strerror}") from error
        if image_size > self.max_bytes_per_study:
            raise QuotaExceeded(f"image {filename} ({image_size} bytes) is larger than maxBytesPerStudy "
                                f"({self.max_bytes_per_study} bytes)")
        sop_uid = index.stored_value(index.SOP_INSTANCE_UID.field, values.values[index.SOP_INSTANCE_UID.tag])
        study_uid = index.stored_value(index.STUDY_INSTANCE_UID.field, values.study_instance_uid)
        record = index.Record(
            filename=name, sop_class_uid=raw_bytes(sop_class_uid), recorded_date=0.0,
            image_size=image_size, hstat=index.OBJECT_IS_NEW if is_new else index.OBJECT_IS_NOT_NEW,
            params=index.param_values(values.values), instance_description=values.instance_description)
        if self.read_only:
            raise IndexWriteFailed(f"{self.index_path}: {os.strerror(errno.EROFS)}")
        with self._locked(exclusive=True) as cache:
            table = self._table(cache)
            if not table.free and not table.slots_with(SOP_INSTANCE_UID, sop_uid):
                self._grow(cache)  # before anything is removed: a full disk then changes nothing
            for slot, old in self._verified(cache, SOP_INSTANCE_UID, sop_uid):
                self._remove(cache, slot, old, keep=name)
            studies = self._studies(cache)
            study = self._make_room(cache, study_uid, image_size, keep=name)
            now = float(int(time.time()))
            record.recorded_date = now
            descriptor = studies.descriptors[study]
            descriptor.study_instance_uid = study_uid
            descriptor.study_size += image_size
            descriptor.last_recorded_date = now
            descriptor.image_count += 1
            studies.touch(study)
            target = self._free_slot(cache)
            self._write(index.record_writes(target, index.encode_record(record)))
            self._table(cache).put(target, index.record_params(record))
            self._remember_own_write(cache)

    def _make_room(self, cache: _Cache, study_uid: bytes, image_size: int, keep: bytes) -> int:
        """Enforce the quota for a new image of ``study_uid``; the number of its study descriptor."""
        studies = self._studies(cache)
        number = studies.number(study_uid)
        if number is not None:
            excess = studies.descriptors[number].study_size + image_size - self.max_bytes_per_study
            if excess > 0:
                self._delete_oldest_images(cache, study_uid, excess, keep)
            return number
        for number, descriptor in enumerate(studies.descriptors[:self.max_studies]):
            if not descriptor.in_use:
                studies.reset(number)
                return number
        return self._delete_oldest_study(cache, keep)

    def _delete_oldest_images(self, cache: _Cache, study_uid: bytes, excess: int, keep: bytes) -> None:
        """Delete the study's oldest images until ``excess`` bytes are freed (ties: lowest slot first)."""
        images = self._verified(cache, STUDY_INSTANCE_UID, study_uid)
        freed = 0
        for slot, record in sorted(images, key=lambda item: (item[1].recorded_date, item[0])):
            if freed >= excess:
                break
            self._remove(cache, slot, record, keep)
            freed += record.image_size

    def _delete_oldest_study(self, cache: _Cache, keep: bytes) -> int:
        """Delete the study stored into least recently, exactly that study (docs/differences.md #1); its descriptor
        number, now free."""
        studies = self._studies(cache)
        candidates = [(d.last_recorded_date, n) for n, d in enumerate(studies.descriptors[:self.max_studies])
                      if d.in_use]
        if not candidates:
            raise DatabaseError(f"{self.index_path}: no study descriptor available")
        number = min(candidates)[1]
        for slot, record in self._verified(cache, STUDY_INSTANCE_UID, studies.descriptors[number].study_instance_uid):
            self._remove(cache, slot, record, keep)
        studies.reset(number)
        return number

    def _remove(self, cache: _Cache, slot: int, record: index.Record, keep: bytes) -> None:
        """Free record ``slot``, account for it in its study descriptor, then delete its file."""
        self._write(index.record_writes(slot, index.FREE_RECORD))  # before the file goes
        self._table(cache).remove(slot)
        studies = self._studies(cache)
        number = studies.number(record.study_instance_uid)
        if number is not None:
            descriptor = studies.descriptors[number]
            descriptor.image_count -= 1
            descriptor.study_size = max(0, descriptor.study_size - record.image_size)
            if descriptor.image_count <= 0:
                studies.reset(number)
            else:
                studies.touch(number)
        if record.filename != keep:
            self._delete_file(os.fsdecode(record.filename))

    def _delete_file(self, filename: str) -> None:
        if not self.delete_files:
            LOG.warning("file delete operations are disabled, keeping file: %s despite duplicate SOP "
                        "Instance UID", filename)
            return
        LOG.warning("Deleting file: %s due to quota or duplicate SOP instance UID", filename)
        try:
            locking.delete_image_file(filename)
        except FileNotFoundError:
            pass
        except OSError as error:
            LOG.error("cannot delete file: %s: %s", filename, error.strerror)

    def _free_slot(self, cache: _Cache) -> int:
        """The first free slot (checked on disk), else the slot after the last (docs/index-format.md §8)."""
        table = self._table(cache)
        while table.free:
            candidate = heapq.heappop(table.free)
            if index.slot_is_free(os.pread(self._fd, 1, index.liveness_offset(candidate))):
                return candidate
        return table.slot_count

    def _grow(self, cache: _Cache) -> None:
        """Append a free slot (and, to a new index, the descriptors), so that the disk space for the record
        is there before anything else changes. Raises :class:`IndexWriteFailed`, leaving the file as it
        was, if the index cannot grow."""
        table = self._table(cache)
        size = os.fstat(self._fd).st_size
        writes = [(index.record_offset(table.slot_count), index.FREE_RECORD)]
        block = cache.descriptor_block.ljust(index.DESCRIPTORS_SIZE, b"\0")
        if size < index.RECORDS_OFFSET:
            writes.insert(0, (index.DESCRIPTORS_OFFSET, block))
        try:
            self._write(writes)
        except OSError as error:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            message = f"{self.index_path}: {error.strerror}"
            LOG.error("%s", message)
            raise IndexWriteFailed(message) from error
        table.resize(table.slot_count + 1)
        cache.descriptor_block = block

    def _write(self, writes: list[tuple[int, bytes]]) -> None:
        """Write (offset, bytes) pairs in order; a short write (a full disk) raises OSError."""
        for offset, data in writes:
            if offset >= index.RECORDS_OFFSET:
                self._written.add((offset - index.RECORDS_OFFSET) // index.RECORD_SIZE)
            if os.pwrite(self._fd, data, offset) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # --- maintenance ---------------------------------------------------------------------------------

    def prune_invalid_records(self) -> None:
        """Remove the records whose file is not readable, fixing the descriptors (docs/index-format.md §8)."""
        with self._locked(exclusive=True) as cache:
            live = index.live_slots(self._buffer(), index.slot_count(cache.key[1]))
            dangling = [slot for slot, name in zip(live, self._column(live, "filename")) if not os.access(name, os.R_OK)]
            if not dangling:
                return
            self._table(cache)  # before the first record is freed
            for slot in dangling:
                record = self._read_record(slot)
                LOG.warning("removing index record of unreadable file: %s", os.fsdecode(record.filename))
                self._remove(cache, slot, record, keep=record.filename)
            self._remember_own_write(cache)

    def repair(self, dangling: Mapping[int, bytes], backup_path: str | None = None) -> int:
        """Under ``LOCK_EX``: copy the index to ``backup_path``, free the records ``dangling`` (slot ->
        the file name the record must still have, else it is left alone), cut an incomplete record at the
        end and rebuild every study descriptor from the records. Files are not touched. Returns the
        number of records freed."""
        with self._locked(exclusive=True) as cache:
            if backup_path is not None:
                self._copy_index(backup_path)
            freed = 0
            for slot, filename in dangling.items():
                if slot < index.slot_count(cache.key[1]) and self._read_record(slot).filename == filename:
                    self._write(index.record_writes(slot, index.FREE_RECORD))
                    freed += 1
            size = cache.key[1]
            complete = index.RECORDS_OFFSET + index.slot_count(size) * index.RECORD_SIZE
            if size > complete:
                os.ftruncate(self._fd, complete)
            self._cache = None
            cache = self._refresh()
            self._studies(cache).replace(self._descriptors_from_records(cache))
            self._remember_own_write(cache)
            return freed

    def _copy_index(self, path: str) -> None:
        with open(path, "wb") as copy:
            offset = 0
            while chunk := os.pread(self._fd, 1 << 20, offset):
                copy.write(chunk)
                offset += len(chunk)

    def _descriptors_from_records(self, cache: _Cache) -> list[index.StudyDescriptor]:
        """Study descriptors recomputed from the live records; studies keep their descriptor numbers
        where they had one."""
        old = index.decode_descriptors(cache.descriptor_block)
        buffer = self._buffer()
        live = index.live_slots(buffer, index.slot_count(cache.key[1]))
        studies: dict[bytes, index.StudyDescriptor] = {}
        for slot, study_uid in zip(live, index.param_column(buffer, index.STUDY_INSTANCE_UID, live)):
            date, size = index.recorded_date_and_size(buffer, slot)
            descriptor = studies.setdefault(study_uid, index.StudyDescriptor(study_uid))
            descriptor.study_size += size
            descriptor.image_count += 1
            descriptor.last_recorded_date = max(descriptor.last_recorded_date, date)
        descriptors = [index.StudyDescriptor() for _ in range(index.MAX_STUDIES)]
        unplaced = []
        for study_uid, descriptor in studies.items():
            number = next((n for n, d in enumerate(old) if d.in_use and d.study_instance_uid == study_uid
                           and not descriptors[n].in_use), None)
            if number is None:
                unplaced.append(descriptor)
            else:
                descriptors[number] = descriptor
        free = (n for n, d in enumerate(descriptors) if not d.in_use)
        for descriptor, number in zip(unplaced, free):
            descriptors[number] = descriptor
        if len(studies) > index.MAX_STUDIES:
            LOG.warning("%s: %d studies, only %d have a study descriptor", self.index_path, len(studies),
                        index.MAX_STUDIES)
        return descriptors
