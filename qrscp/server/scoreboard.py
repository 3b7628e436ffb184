"""The table of live workers that the supervisor and its workers share.

The supervisor never negotiates (docs/differences.md #4), so the rules that depend on the other associations
(``MaxAssociations``, ``--no-parallel-store``) are applied by each worker against this table: one slot per
worker in an anonymous shared memory mapping inherited through ``fork``, read and changed under a
``flock`` that every worker takes on its own open file description.
"""
from __future__ import annotations

import mmap
import os
import struct
from contextlib import AbstractContextManager
from typing import Iterator

from qrscp.archive.locking import ProcessSharedLock
from qrscp.dicom.elements import raw_bytes, raw_text

#: Slot states: no worker; a worker waiting for a connection; one with an accepted association; one that has
#: taken a connection not (yet) accepted.
FREE, WAITING, ACCEPTED, CONNECTED = 0, 1, 2, 3

_SLOT = struct.Struct("<LBB16s10x")  # pid, state, has storage contexts, called AE title (32 bytes)
_STATE_OFFSET = 4


class Scoreboard:
    """Slots for up to ``size`` concurrent workers."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size * _SLOT.size, flags=mmap.MAP_SHARED)
        self._lock = ProcessSharedLock("qrscp-scoreboard-")

    def _slots(self) -> Iterator[tuple[int, int, int, bool, str]]:
        """(index, pid, state, has storage, called AE title) of every slot, in one pass over the table."""
        for index, (pid, state, storage, title) in enumerate(_SLOT.iter_unpack(self._map)):
            yield index, pid, state, bool(storage), raw_text(title.rstrip(b"\0"))

    def _write(self, index: int, pid: int, state: int, storage: bool = False, title: str = "") -> None:
        _SLOT.pack_into(self._map, index * _SLOT.size, pid, state, storage, raw_bytes(title)[:16])

    def claim(self) -> int | None:
        """Supervisor: a free slot for the worker about to be forked, or None if the table is full."""
        index = self._map.find(bytes(_SLOT.size))  # a free slot is all zeros
        while index != -1 and index % _SLOT.size:
            index = self._map.find(bytes(_SLOT.size), index + 1)
        if index == -1:
            return None
        self._write(index // _SLOT.size, 0, WAITING)
        return index // _SLOT.size

    def assign(self, index: int, pid: int) -> None:
        """Supervisor: record the pid of the worker forked for slot ``index`` (its state is the worker's)."""
        struct.pack_into("<L", self._map, index * _SLOT.size, pid)

    def release_slot(self, index: int) -> None:
        """Supervisor: free a claimed slot whose worker could not be forked."""
        self._write(index, 0, FREE)

    def release_pid(self, pid: int) -> None:
        """Supervisor: free the slot of a worker that has exited."""
        for index, slot_pid, _state, _storage, _title in self._slots():
            if slot_pid == pid:
                self._write(index, 0, FREE)

    def locked(self) -> AbstractContextManager[None]:
        """Exclusive access across processes (for check-then-mark sequences)."""
        return self._lock.held()

    def _states(self) -> bytes:
        """The state byte of every slot, in slot order (one slice of the table)."""
        return self._map[_STATE_OFFSET::_SLOT.size]

    def accepted_count(self, exclude: int) -> int:
        """Associations accepted by other workers (call under :meth:`locked`)."""
        states = self._states()
        return states.count(ACCEPTED) - (states[exclude] == ACCEPTED)

    def storage_busy(self, called_ae_title: str, exclude: int) -> bool:
        """Another accepted association to ``called_ae_title`` holds storage contexts (call under :meth:`locked`)."""
        states, index = self._states(), -1
        while (index := states.find(ACCEPTED, index + 1)) != -1:
            if index != exclude:
                _pid, _state, storage, title = _SLOT.unpack_from(self._map, index * _SLOT.size)
                if storage and raw_text(title.rstrip(b"\0")) == called_ae_title:
                    return True
        return False

    def mark_accepted(self, index: int, called_ae_title: str, has_storage: bool) -> None:
        """Worker: its association was accepted (call under :meth:`locked`)."""
        self._write(index, os.getpid(), ACCEPTED, has_storage, called_ae_title)

    def mark_connected(self, index: int) -> int:
        """Worker: it has taken a connection; how many workers are still waiting for one."""
        self._map[index * _SLOT.size + _STATE_OFFSET] = CONNECTED
        return self._states().count(WAITING)

    def mark_idle(self, index: int) -> None:
        """Worker: its association has ended."""
        self._write(index, os.getpid(), WAITING)

    def waiting(self) -> list[int]:
        """The pids of the workers waiting for a connection."""
        states, pids, index = self._states(), [], -1
        while (index := states.find(WAITING, index + 1)) != -1:
            pids.append(struct.unpack_from("<L", self._map, index * _SLOT.size)[0])
        return pids

    def close(self) -> None:
        """Supervisor, at exit: release the lock file."""
        self._lock.close()
