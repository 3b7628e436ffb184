"""The table of live workers that the supervisor and its workers share.

The supervisor never negotiates (decisions.md #4), so the rules that depend on the other associations
(``MaxAssociations``, ``--no-parallel-store``) are applied by each worker against this table: one slot per
worker in an anonymous shared memory mapping inherited through ``fork``, read and changed under a
``flock`` that every worker takes on its own open file description.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
from contextlib import contextmanager
from typing import Iterator

FREE, NEGOTIATING, ACCEPTED = 0, 1, 2

_SLOT = struct.Struct("<LBB16s")  # pid, state, has storage contexts, called AE title
_SLOT_SIZE = 32


class Scoreboard:
    """Slots for up to ``size`` concurrent workers."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size * _SLOT_SIZE, flags=mmap.MAP_SHARED)
        handle, self._lock_path = tempfile.mkstemp(prefix="qrscp-scoreboard-")
        os.close(handle)
        self._lock_fd: int | None = None
        self._lock_pid = 0

    def _slot(self, index: int) -> tuple[int, int, bool, str]:
        pid, state, storage, title = _SLOT.unpack_from(self._map, index * _SLOT_SIZE)
        return pid, state, bool(storage), title.rstrip(b"\0").decode("ascii", "replace")

    def _write(self, index: int, pid: int, state: int, storage: bool = False, title: str = "") -> None:
        _SLOT.pack_into(self._map, index * _SLOT_SIZE, pid, state, storage, title.encode("ascii", "replace")[:16])

    def claim(self) -> int | None:
        """Supervisor: a free slot for the worker about to be forked, or None if the table is full."""
        for index in range(self.size):
            if self._slot(index)[1] == FREE:
                self._write(index, 0, NEGOTIATING)
                return index
        return None

    def assign(self, index: int, pid: int) -> None:
        """Supervisor: record the pid of the worker forked for slot ``index`` (its state is the worker's)."""
        struct.pack_into("<L", self._map, index * _SLOT_SIZE, pid)

    def release_pid(self, pid: int) -> None:
        """Supervisor: free the slot of a worker that has exited."""
        for index in range(self.size):
            if self._slot(index)[0] == pid:
                self._write(index, 0, FREE)

    def live_workers(self) -> int:
        """Number of occupied slots."""
        return sum(1 for index in range(self.size) if self._slot(index)[1] != FREE)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access across processes (for check-then-mark sequences)."""
        if self._lock_fd is None or self._lock_pid != os.getpid():
            self._lock_fd = os.open(self._lock_path, os.O_RDWR)
            self._lock_pid = os.getpid()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def accepted_count(self, exclude: int) -> int:
        """Associations accepted by other workers (call under :meth:`locked`)."""
        return sum(1 for index in range(self.size) if index != exclude and self._slot(index)[1] == ACCEPTED)

    def storage_busy(self, called_ae_title: str, exclude: int) -> bool:
        """Another accepted association to ``called_ae_title`` holds storage contexts (call under :meth:`locked`)."""
        for index in range(self.size):
            pid, state, storage, title = self._slot(index)
            if index != exclude and state == ACCEPTED and storage and title == called_ae_title:
                return True
        return False

    def mark_accepted(self, index: int, called_ae_title: str, has_storage: bool) -> None:
        """Worker: its association was accepted (call under :meth:`locked`)."""
        self._write(index, os.getpid(), ACCEPTED, has_storage, called_ae_title)

    def close(self) -> None:
        """Supervisor, at exit: remove the lock file."""
        try:
            os.unlink(self._lock_path)
        except OSError:
            pass
