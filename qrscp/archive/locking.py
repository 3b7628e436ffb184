"""BSD ``flock`` locks on the index and on image files, as DCMTK takes them (docs/locking.md).

DCMTK locks with ``flock(2)``; POSIX record locks (``fcntl.lockf``) would not conflict with those, so the
locks are taken through portalocker's ``FlockLocker``, which is ``flock(2)`` on every POSIX system whatever
portalocker's default. Locks are whole-file, advisory and blocking, and belong to an open file
description: two descriptors opened separately in one process exclude each other, a descriptor
inherited over ``fork`` shares its lock with the parent.

The callers keep the scopes short (docs/differences.md #2, #3): an index lock is never held while waiting on the
network.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from portalocker import AlreadyLocked, LockFlags
from portalocker.portalocker import FlockLocker

_FLOCK = FlockLocker()


@contextmanager
def shared(fd: int) -> Iterator[None]:
    """``LOCK_SH`` on ``fd`` for the ``with`` block (readers: C-FIND and C-MOVE/C-GET scans)."""
    _FLOCK.lock(fd, LockFlags.SHARED)
    try:
        yield
    finally:
        _FLOCK.unlock(fd)


@contextmanager
def exclusive(fd: int) -> Iterator[None]:
    """``LOCK_EX`` on ``fd`` for the ``with`` block (writers: opening a DB handle, registration; and the
    supervisor's shared tables)."""
    _FLOCK.lock(fd, LockFlags.EXCLUSIVE)
    try:
        yield
    finally:
        _FLOCK.unlock(fd)


@contextmanager
def image_for_reading(path: str) -> Iterator[int]:
    """Open an image file read-only under ``LOCK_SH`` (a retrieve sub-operation, docs/locking.md §3).

    Yields the descriptor: read the file through it, so that a deletion by a concurrent store (which
    only unlinks the name) cannot affect the transfer. Raises ``OSError`` if the file cannot be opened
    (the reference then counts the sub-operation as failed).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _FLOCK.lock(fd, LockFlags.SHARED)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def delete_image_file(path: str) -> None:
    """Delete an image file the way the reference does (``open(O_RDWR)``, ``LOCK_EX``, ``unlink``).

    Unlike the reference this never waits for the lock: it is called under the exclusive index lock, and
    a reader holding ``LOCK_SH`` may be a sub-operation waiting on the network (even on a store into
    this very area). Unlinking under a reader is harmless on POSIX, its open descriptor stays readable.
    Raises ``OSError`` if the file cannot be removed.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        os.unlink(path)  # e.g. no write permission on the file: the directory decides
        return
    try:
        try:
            _FLOCK.lock(fd, LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING)
        except AlreadyLocked:
            pass
        os.unlink(path)
    finally:
        os.close(fd)


class ProcessSharedLock:
    """An exclusive lock for the processes forked after it was made (the tables they share in memory).

    Its lock file is unlinked at once (nothing is left behind, whatever ends the server); each process
    reopens it through ``/proc``, which gives it an open file description, and so a lock, of its own.
    """

    def __init__(self, prefix: str) -> None:
        self._shared_fd, path = tempfile.mkstemp(prefix=prefix)
        os.unlink(path)
        self._fd = -1
        self._pid = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        if self._pid != os.getpid():
            self._fd = os.open(f"/proc/self/fd/{self._shared_fd}", os.O_RDWR | os.O_CLOEXEC)
            self._pid = os.getpid()
        with exclusive(self._fd):
            yield

    def close(self) -> None:
        """Release the lock file (the process that made it, at exit)."""
        os.close(self._shared_fd)
