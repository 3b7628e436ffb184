"""Recent index writes of this server's processes, in memory they all share.

Each worker keeps a cache of where things are in an ``index.dat`` (free slots, the slot of each SOP
Instance UID). When another process has written the file, the cache is stale; rebuilding it costs a read
of the whole index. With the journal, a worker that finds the file changed reads the entries that its
fellow workers appended since it last looked, checks that they account for every change (the file's
state before and after each write, its size, modification time and a digest of its study descriptors, form
an unbroken chain up to the file as it is now), and re-reads only the slots they name. A change by anyone
else (DCMTK, ``dcmqridx``) breaks the chain, and the cache is rebuilt from the file as before; the digest
catches such a change in the same tick of the file's clock as a fellow worker's, since every store and
deletion rewrites a study descriptor.
"""
from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass

from qrscp.archive.locking import ProcessSharedLock

#: seq, device, inode, size, mtime_ns and descriptor digest before, the same after, slot count, up to 16 slots
_ENTRY = struct.Struct("<QQQQqIQqII16I")
_HEADER = struct.Struct("<Q")  # the last sequence number given out
MAX_SLOTS = 16


def file_state(size: int, mtime_ns: int, descriptors: bytes) -> tuple[int, int, int]:
    """What the journal holds of an index file's state: its size, modification time and a digest of its
    study descriptors."""
    return size, mtime_ns, zlib.crc32(descriptors)


@dataclass(frozen=True)
class Write:
    """One journaled write of an index: the file's state (size, mtime_ns, descriptor digest) before and
    after, the slots written."""

    seq: int
    before: tuple[int, int, int]
    after: tuple[int, int, int]
    slots: tuple[int, ...]


class WriteJournal:
    """A ring of the last ``entries`` index writes, shared by the processes forked after it was made."""

    def __init__(self, entries: int = 4096) -> None:
        self.entries = entries
        self._map = mmap.mmap(-1, _HEADER.size + entries * _ENTRY.size, flags=mmap.MAP_SHARED)
        self._lock = ProcessSharedLock("qrscp-journal-")

    def last_seq(self) -> int:
        """The sequence number of the newest entry (0 before the first)."""
        return _HEADER.unpack_from(self._map, 0)[0]

    def record(self, file_id: tuple[int, int], before: tuple[int, int, int], after: tuple[int, int, int],
               slots: Collection[int]) -> int:
        """Append a write of the index ``file_id`` (device, inode); its sequence number. More than
        :data:`MAX_SLOTS` slots are recorded as "too many", which makes readers rebuild."""
        with self._lock.held():
            seq = self.last_seq() + 1
            listed = sorted(slots)[:MAX_SLOTS] if len(slots) <= MAX_SLOTS else []
            count = len(slots) if len(slots) <= MAX_SLOTS else MAX_SLOTS + 1
            _ENTRY.pack_into(self._map, _HEADER.size + (seq % self.entries) * _ENTRY.size, seq, *file_id,
                             *before, *after, count, *listed, *([0] * (MAX_SLOTS - len(listed))))
            _HEADER.pack_into(self._map, 0, seq)
            return seq

    def writes_since(self, seq: int, file_id: tuple[int, int]) -> list[Write] | None:
        """The writes of ``file_id`` after ``seq``, oldest first; None if some are no longer in the ring
        or name too many slots (the reader must rebuild)."""
        last = self.last_seq()
        if last - seq >= self.entries:
            return None
        writes = []
        for wanted in range(seq + 1, last + 1):
            entry = _ENTRY.unpack_from(self._map, _HEADER.size + (wanted % self.entries) * _ENTRY.size)
            if entry[0] != wanted:  # overwritten meanwhile
                return None
            if (entry[1], entry[2]) != file_id:
                continue
            count = entry[9]
            if count > MAX_SLOTS:
                return None
            writes.append(Write(wanted, entry[3:6], entry[6:9], tuple(entry[10:10 + count])))
        return writes
