"""Recent index writes of this server's processes, in memory they all share.

Each worker keeps a cache of where things are in an ``index.dat`` (free slots, the slot of each SOP
Instance UID). When another process has written the file, the cache is stale; rebuilding it costs a read
of the whole index. With the journal, a worker that finds the file changed reads the entries that its
fellow workers appended since it last looked, checks that they account for every change (the file's size
and modification time before and after each write form an unbroken chain up to the file as it is now),
and re-reads only the slots they name. A change by anyone else (DCMTK, ``dcmqridx``) breaks the chain, and
the cache is rebuilt from the file as before.
"""
from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass

from qrscp.archive.locking import ProcessSharedLock

#: seq, device, inode, size and mtime_ns before, size and mtime_ns after, slot count, up to 16 slots
_ENTRY = struct.Struct("<QQQQqQqI16I")
_HEADER = struct.Struct("<Q")  # the last sequence number given out
MAX_SLOTS = 16


@dataclass(frozen=True)
class Write:
    """One journaled write of an index: the file's (size, mtime_ns) before and after, the slots written."""

    seq: int
    before: tuple[int, int]
    after: tuple[int, int]
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

    def record(self, file_id: tuple[int, int], before: tuple[int, int], after: tuple[int, int],
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
            count = entry[7]
            if count > MAX_SLOTS:
                return None
            writes.append(Write(wanted, (entry[3], entry[4]), (entry[5], entry[6]), tuple(entry[8:8 + count])))
        return writes
