"""TCP transport: socket options, bounded PDU reads and whole-buffer writes.

Every socket gets ``TCP_NODELAY`` (docs/differences.md #14): DICOM exchanges many small messages and Nagle's
algorithm would hold each one back until the peer's delayed ACK (about 40 ms).
"""
from __future__ import annotations

import select
import socket
import ssl
import time

from qrscp.net import pdu


class TransportClosed(Exception):
    """The peer closed the connection (or it broke, or stayed silent for :data:`SOCKET_TIMEOUT` seconds:
    ``timed_out``) before a complete PDU arrived; ``partial`` when part of that PDU had arrived (else the
    connection ended between two PDUs)."""

    def __init__(self, partial: bool = False, timed_out: bool = False) -> None:
        super().__init__("connection closed by peer" + (" in the middle of a PDU" if partial else ""))
        self.partial = partial
        self.timed_out = timed_out


def configure(sock: socket.socket) -> None:
    """Options every DICOM socket gets."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


#: ``-i4/-i6/-i0`` -> the address family of names resolved for outgoing connections.
_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, "auto": socket.AF_UNSPEC}


def connect(host: str, port: int, timeout: float | None, ip_family: str = "ipv4") -> socket.socket:
    """A configured TCP connection to ``host:port``; ``timeout`` bounds the connect only (``-to``).

    As DCMTK 3.7.0: an IPv4 address is reached over IPv4 whatever ``ip_family``; anything else (a name, an
    IPv6 address) is resolved in the family of the server's own ``-i4/-i6/-i0``, and the first address is
    used (``gaierror`` when there is none).
    """
    try:
        socket.inet_aton(host)
        family = socket.AF_INET
    except OSError:
        family = _FAMILIES[ip_family]
    address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0]
    sock = socket.socket(address[0], socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address[4])
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    configure(sock)
    return sock


#: DCMTK's socket send and receive timeout (``dcmSocketSendTimeout``/``dcmSocketReceiveTimeout``): a wait
#: without a timeout of its own (``-ta``, ``-td``) ends after this long, as if the peer had closed.
SOCKET_TIMEOUT = 60.0


class Transport:
    """A connected socket (plain or TLS) read PDU by PDU, with a small read-ahead buffer."""

    _CHUNK = 1 << 16

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._timeout: float | None = -1.0
        self._set_timeout(None)

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self.sock.settimeout(SOCKET_TIMEOUT if timeout is None else timeout)
            self._timeout = timeout

    def _read(self, length: int, exact: bool = False) -> bytes:
        """``length`` bytes; with ``exact``, reading nothing beyond them (what is left unread makes a
        close reset the connection, as DCMTK's does). Without a timeout of the caller's, a peer silent
        for :data:`SOCKET_TIMEOUT` seconds counts as gone (:class:`TransportClosed`)."""
        try:
            return self._receive(length, exact)
        except TimeoutError:
            if self._timeout is None:
                raise TransportClosed(timed_out=True) from None
            raise

    def _receive(self, length: int, exact: bool) -> bytes:
        buffer = self._buffer
        if len(buffer) < length and length - len(buffer) < self._CHUNK:
            while len(buffer) < length:
                chunk = self.sock.recv(length - len(buffer) if exact else self._CHUNK)
                if not chunk:
                    raise TransportClosed()
                buffer += chunk
        if len(buffer) >= length:
            data = bytes(buffer[:length])
            del buffer[:length]
            return data
        # a large body: receive straight into its own buffer
        data = bytearray(length)
        view = memoryview(data)
        position = len(buffer)
        view[:position] = buffer
        buffer.clear()
        while position < length:
            received = self.sock.recv_into(view[position:], length - position)
            if not received:
                raise TransportClosed()
            position += received
        return data  # type: ignore[return-value]  # a bytearray: no copy of a large body

    def read_pdu_header(self, timeout: float | None = None, exact: bool = False) -> tuple[int, int]:
        """Read the next PDU's header; (type, length of its variable part). Raises :class:`TransportClosed`
        when the connection ends, :class:`TimeoutError` on ``timeout``."""
        self._set_timeout(timeout)
        try:
            header = self._read(pdu.HEADER_SIZE, exact)
        except TransportClosed as closed:
            raise TransportClosed(bool(self._buffer), closed.timed_out) from None
        return pdu.decode_header(header)

    def read_pdu_body(self, length: int, exact: bool = False) -> bytes:
        """Read the variable part of the PDU whose header was read (within the timeout set for it)."""
        try:
            return self._read(length, exact)
        except TransportClosed as closed:
            raise TransportClosed(True, closed.timed_out) from None

    def read_pdu(self, max_length: int, timeout: float | None = None) -> tuple[int, bytes]:
        """Read one PDU; (type, variable part). ``max_length`` bounds the variable part of P-DATA-TF.

        Raises :class:`pdu.PDUError` for an unknown type or an over-long PDU (before reading its body),
        :class:`TransportClosed` when the connection ends, :class:`TimeoutError` on ``timeout``.
        """
        pdu_type, length = self.read_pdu_header(timeout)
        pdu.check_header(pdu_type, length, max_length)
        return pdu_type, self.read_pdu_body(length)

    def data_waiting(self) -> bool:
        """True if bytes from the peer are buffered or can be read without blocking."""
        if self._buffer or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``."""
        self._set_timeout(None)
        self.sock.sendall(data)

    def drain_and_close(self, timeout: float | None) -> None:
        """After an A-ABORT (PS3.8 ARTIM): read and drop what the peer still sends until it closes its end,
        at most ``timeout`` seconds, then close; the peer then sees its connection end in order, as DCMTK
        ends it, not reset."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.sock.settimeout(left)
                if not self.sock.recv(self._CHUNK):
                    break
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass
