"""The one inflater of deflated data sets (Deflated Explicit VR Little Endian, PS3.5 §A.5), bounded.

Whatever a deflated stream claims, inflating it never yields more than the caller's limit: a stream
that would is refused with :class:`InflateLimitExceeded` as soon as the limit is passed, having cost at
most one chunk beyond it. DICOM's deflated streams are raw (no zlib header); a stream with one is
accepted too, as DCMTK accepts it.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from qrscp.dicom.elements import DataSetError

#: Inflated bytes produced per step.
CHUNK = 1 << 20


class InflateError(DataSetError):
    """The data does not inflate."""


class InflateLimitExceeded(InflateError):
    """The data inflates to more than the limit."""


class BoundedInflater:
    """Inflates a deflated stream fed in pieces, refusing to produce more than ``limit`` bytes (``what``
    names the stream in messages)."""

    def __init__(self, limit: int, what: str = "data set") -> None:
        self.limit = limit
        self.what = what
        self.produced = 0
        self._inflater: zlib._Decompress | None = None
        self._head = b""      # the first bytes, until the stream's format is known

    @staticmethod
    def _start(head: bytes) -> zlib._Decompress:
        """Raw deflate, unless the stream starts with a zlib header (RFC 1950: deflate method, header a
        multiple of 31)."""
        zlib_header = head[0] & 0x0F == zlib.DEFLATED and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """The inflated bytes of the next piece ``data``, in chunks of at most :data:`CHUNK` bytes."""
        if self._inflater is None:
            self._head += bytes(data)
            if len(self._head) < 2:
                return
            self._inflater = self._start(self._head)
            data, self._head = self._head, b""
        pending = bytes(data)
        while pending:
            try:
                out = self._inflater.decompress(pending, CHUNK)
            except zlib.error as error:
                raise InflateError(f"the deflated {self.what} does not inflate: {error}") from error
            pending = self._inflater.unconsumed_tail
            if out:
                self.produced += len(out)
                if self.produced > self.limit:
                    raise InflateLimitExceeded(f"the deflated {self.what} inflates to more than {self.limit} bytes")
                yield out
            elif self._inflater.eof:
                return

    def finish(self) -> Iterator[bytes]:
        """Whatever the inflater still holds, once the whole stream was fed."""
        if self._inflater is None:
            if self._head:
                raise InflateError(f"the deflated {self.what} does not inflate: too short")
            return
        while True:
            try:
                out = self._inflater.flush(CHUNK) if not self._inflater.eof else b""
            except zlib.error as error:
                raise InflateError(f"the deflated {self.what} does not inflate: {error}") from error
            if not out:
                return
            self.produced += len(out)
            if self.produced > self.limit:
                raise InflateLimitExceeded(f"the deflated {self.what} inflates to more than {self.limit} bytes")
            yield out


def inflate_pieces(pieces: Iterable[bytes | memoryview], limit: int, what: str = "data set") -> Iterator[bytes]:
    """The inflated bytes of a deflated stream given in ``pieces``, at most ``limit`` of them."""
    inflater = BoundedInflater(limit, what)
    for piece in pieces:
        yield from inflater.feed(piece)
    yield from inflater.finish()


def inflate(data: bytes | memoryview, limit: int, what: str = "data set") -> bytes:
    """The deflated ``data`` inflated, at most ``limit`` bytes of it (else :class:`InflateLimitExceeded`)."""
    return b"".join(inflate_pieces((data,), limit, what))
