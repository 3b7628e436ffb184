"""BSD ``flock`` locks on the index and on image files, as DCMTK takes them (ref §2).

DCMTK locks with ``flock(2)``; POSIX record locks (``fcntl.lockf``) would not conflict with those, so only
``fcntl.flock`` is used here. Locks are whole-file, advisory and blocking, and belong to an open file
description: two descriptors opened separately in one process exclude each other, a descriptor
inherited over ``fork`` shares its lock with the parent.

The callers keep the scopes short (decisions #2/#3): an index lock is never held while waiting on the
network.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def shared(fd: int) -> Iterator[None]:
    """``LOCK_SH`` on ``fd`` for the ``with`` block (readers: C-FIND and C-MOVE/C-GET scans)."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def exclusive(fd: int) -> Iterator[None]:
    """``LOCK_EX`` on ``fd`` for the ``with`` block (writers: opening a DB handle, registration)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def image_for_reading(path: str) -> Iterator[int]:
    """Open an image file read-only under ``LOCK_SH`` (a retrieve sub-operation, ref §2.3).

    Yields the descriptor: read the file through it, so that a deletion by a concurrent store (which
    only unlinks the name) cannot affect the transfer. Raises ``OSError`` if the file cannot be opened
    (the reference then counts the sub-operation as failed).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        os.unlink(path)
    finally:
        os.close(fd)
