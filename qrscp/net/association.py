"""An established association: DIMSE messages over P-DATA, release and abort (PS3.8 §7, PS3.7 §8).

One :class:`Association` serves both roles: the acceptor side of an incoming association and the
requestor side of a C-MOVE sub-association. Everything is synchronous: the caller decides when to read,
and :meth:`Association.command_waiting` lets a service look for a C-CANCEL between responses.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

from qrscp.dicom.reader import FileSource
from qrscp.net import dimse, pdu
from qrscp.net.dimse import Command
from qrscp.net.transport import Transport, TransportClosed

#: The longest command set we accept: real ones are a few hundred bytes.
MAX_COMMAND_LENGTH = 1 << 16
#: PDU and PDV headers that a P-DATA-TF of one PDV adds to its data (DCMTK reserves the same 12 bytes).
PDV_OVERHEAD = 12
#: Fragment size used when the peer announces no maximum PDU length (0 = unlimited).
UNLIMITED_PDV = 1 << 20
#: Bytes gathered into one write to the socket.
SEND_BATCH = 1 << 18

#: A data set to send: in memory, or in a file (a stored file, a conversion's spool), read as it is sent.
DataSetPayload = bytes | bytearray | memoryview | FileSource


def payload_size(dataset: DataSetPayload) -> int:
    """The length of a data set to send."""
    return dataset.size if isinstance(dataset, FileSource) else len(dataset)


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context accepted on this association.

    ``scu_role``/``scp_role`` are the requestor's roles: an acceptor may send C-STORE requests (C-GET
    sub-operations) only on a storage context where the requestor is SCP.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    scu_role: bool = True
    scp_role: bool = False


class PeerAborted(Exception):
    """The peer sent an A-ABORT."""


class ReleaseRequested(Exception):
    """The peer sent an A-RELEASE-RQ (the acceptor answers it with :meth:`Association.acknowledge_release`)."""


class ProtocolError(Exception):
    """The peer broke the protocol: the association must be aborted."""


#: How DCMTK words a message whose next fragment did not come within the DIMSE timeout (``-td``).
TIMEOUT_CONDITION = "0006:0207 DIMSE No data available (timeout in non-blocking mode)"


def closed_condition(closed: TransportClosed, reading_command: bool) -> str:
    """How DCMTK's network layer words a connection the peer closed while a message was being read:
    a peer abort between two PDUs, a failed read in the middle of one."""
    if not closed.partial:
        return "0006:0317 Peer aborted Association (or never connected)"
    failed_read = "0006:020c DIMSE Read PDV failed\n0006:0310 DUL network closed"
    return "0006:020d DIMSE Failed to receive message\n" + failed_read if reading_command else failed_read


class Association:
    """DIMSE message exchange on an established association."""

    def __init__(self, transport: Transport, *, called_ae_title: str, calling_ae_title: str, peer_host: str,
                 contexts: dict[int, AcceptedContext], max_receive_pdu: int, max_send_pdu: int,
                 artim_timeout: float | None = 30.0) -> None:
        self.transport = transport
        self.called_ae_title = called_ae_title
        self.calling_ae_title = calling_ae_title
        self.peer_host = peer_host
        self.contexts = contexts
        self.max_receive_pdu = max_receive_pdu
        # a peer's absurdly small maximum (below our own overhead) still gets one byte per PDV
        self.max_send_pdv = max(max_send_pdu - PDV_OVERHEAD, 1) if max_send_pdu else UNLIMITED_PDV
        #: how long an abort waits for the peer to close its end (the ACSE timeout, ``-ta``)
        self.artim_timeout = artim_timeout
        self._pdvs: deque[tuple[int, int, memoryview]] = deque()
        self._message_id = 0

    # -- receiving ---------------------------------------------------------------------------------

    def _next_pdv(self, timeout: float | None) -> tuple[int, int, memoryview]:
        while not self._pdvs:
            pdu_type, body = self.transport.read_pdu(self.max_receive_pdu, timeout)
            if pdu_type == pdu.P_DATA_TF:
                try:
                    for context_id, control, data in pdu.decode_p_data(memoryview(body)):
                        if context_id not in self.contexts:
                            raise ProtocolError(f"P-DATA on presentation context {context_id}, which was not accepted")
                        self._pdvs.append((context_id, control, data))
                except pdu.PDUError as error:
                    raise ProtocolError(str(error)) from error
            elif pdu_type == pdu.A_RELEASE_RQ:
                raise ReleaseRequested()
            elif pdu_type == pdu.A_ABORT:
                raise PeerAborted()
            else:
                raise ProtocolError(f"unexpected {pdu.PDU_NAMES[pdu_type]} PDU")
        return self._pdvs.popleft()

    def receive_command(self, timeout: float | None = None,
                        fragment_timeout: float | None = None) -> tuple[int, Command]:
        """Wait for the next command; (presentation context id, command set).

        ``timeout`` bounds the wait for its first fragment, ``fragment_timeout`` each later one.
        """
        parts: list[memoryview] = []
        length = 0
        context_id = None
        wait = timeout
        while True:
            pdv_context, control, data = self._next_pdv(wait)
            wait = fragment_timeout
            if not control & 0x01:
                raise ProtocolError("data set fragment where a command was expected")
            if context_id is None:
                context_id = pdv_context
            elif pdv_context != context_id:
                raise ProtocolError("command fragments on different presentation contexts")
            length += len(data)
            if length > MAX_COMMAND_LENGTH:
                raise ProtocolError("command set too long")
            parts.append(data)
            if control & 0x02:
                break
        try:
            return context_id, dimse.decode_command(b"".join(parts))
        except dimse.DIMSEError as error:
            raise ProtocolError(str(error)) from error

    def receive_dataset(self, context_id: int, write: Callable[[memoryview], object],
                        timeout: float | None = None) -> int:
        """Pass every fragment of the data set that follows a command to ``write``; the byte count."""
        total = 0
        while True:
            pdv_context, control, data = self._next_pdv(timeout)
            if control & 0x01:
                raise ProtocolError("command fragment where a data set was expected")
            if pdv_context != context_id:
                raise ProtocolError("data set on another presentation context than its command")
            write(data)
            total += len(data)
            if control & 0x02:
                return total

    def receive_dataset_bytes(self, context_id: int, timeout: float | None = None,
                              limit: int = 1 << 26) -> bytes:
        """The data set that follows a command, in memory (identifiers; bounded by ``limit``)."""
        parts: list[bytes] = []
        size = 0

        def collect(data: memoryview) -> None:
            nonlocal size
            size += len(data)
            if size > limit:
                raise ProtocolError("identifier too long")
            parts.append(bytes(data))

        self.receive_dataset(context_id, collect, timeout)
        return b"".join(parts)

    def command_waiting(self) -> bool:
        """True if the peer has sent something we have not read yet (e.g. a C-CANCEL-RQ)."""
        return bool(self._pdvs) or self.transport.data_waiting()

    def cancel_requested(self, message_id: int) -> bool:
        """Between two responses of operation ``message_id``: has the peer sent its C-CANCEL-RQ?

        Reads whatever the peer has sent meanwhile; a C-CANCEL-RQ for another message is ignored, any
        other command is a protocol error (no asynchronous operations are negotiated).
        """
        while self.command_waiting():
            _context_id, command = self.receive_command()
            if command["CommandField"] != dimse.C_CANCEL_RQ:
                raise ProtocolError("command received while an operation was running")
            if command.get("MessageIDBeingRespondedTo") == message_id:
                return True
        return False

    # -- sending -----------------------------------------------------------------------------------

    def next_message_id(self) -> int:
        """Message ID for a request we send (1, 2, 3, ... per association)."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def send_message(self, context_id: int, command: Command, dataset: DataSetPayload | None = None) -> None:
        """Send a command and its data set (if any) as P-DATA-TF PDUs, in few writes of bounded size (a
        data set in a file is read piece by piece as it is sent)."""
        command = dict(command)
        command["CommandDataSetType"] = dimse.NO_DATASET if dataset is None else dimse.DATASET_PRESENT
        pending: list = []
        size = 0
        fragments = self._fragments(context_id, dimse.encode_command(command), 0x01)
        if dataset is not None:
            fragments = itertools.chain(fragments, self._fragments(context_id, dataset, 0x00))
        for header, chunk in fragments:
            pending += (header, chunk)
            size += len(header) + len(chunk)
            if size >= SEND_BATCH:
                self.transport.send(b"".join(pending))
                pending.clear()
                size = 0
        if pending:
            self.transport.send(b"".join(pending))

    def fragment_count(self, size: int) -> int:
        """How many PDVs :meth:`send_message` sends a data set of ``size`` bytes in."""
        return max(1, -(-size // self.max_send_pdv))

    def _fragments(self, context_id: int, data: DataSetPayload,
                   kind: int) -> Iterator[tuple[bytes, bytes | memoryview]]:
        """(PDU and PDV header, data) of each fragment of a command (``kind`` 1) or data set (0)."""
        size = self.max_send_pdv
        total = payload_size(data)
        if isinstance(data, FileSource):
            def piece(start: int) -> bytes | memoryview:
                return data.read(start, min(size, total - start))
        else:
            view = memoryview(data)

            def piece(start: int) -> bytes | memoryview:
                return view[start:start + size]
        offset = 0
        while True:
            chunk = piece(offset)
            offset += len(chunk)
            last = offset >= total
            yield pdu.pdv_header(len(chunk), context_id, kind | (0x02 if last else 0)), chunk
            if last:
                return

    # -- ending ------------------------------------------------------------------------------------

    def acknowledge_release(self) -> None:
        """Answer the peer's A-RELEASE-RQ and close."""
        try:
            self.transport.send(pdu.RELEASE_RP)
        finally:
            self.transport.close()

    def release(self, timeout: float | None) -> None:
        """Release an association we requested: A-RELEASE-RQ, wait for the A-RELEASE-RP, close."""
        try:
            self.transport.send(pdu.RELEASE_RQ)
            while True:
                pdu_type, _body = self.transport.read_pdu(self.max_receive_pdu, timeout)
                if pdu_type in (pdu.A_RELEASE_RP, pdu.A_ABORT):
                    break
                if pdu_type == pdu.A_RELEASE_RQ:  # release collision (PS3.8 §7.2.2)
                    self.transport.send(pdu.RELEASE_RP)
                    break
        finally:
            self.transport.close()

    def abort(self) -> None:
        """Send an A-ABORT (as DCMTK sends it: source service-user, no reason), then close once the peer
        has closed its end or the ARTIM timer (``-ta``) has run out (PS3.8 §9.1.6, state 13)."""
        try:
            self.transport.send(pdu.encode_abort())
        except OSError:
            self.transport.close()
            return
        self.transport.drain_and_close(self.artim_timeout)

    def context_for(self, abstract_syntax: str, transfer_syntax: str | None = None,
                    requestor_scp: bool | None = None) -> AcceptedContext | None:
        """The first accepted context for ``abstract_syntax`` (and transfer syntax / role if given)."""
        for context in self.contexts.values():
            if context.abstract_syntax != abstract_syntax:
                continue
            if transfer_syntax is not None and context.transfer_syntax != transfer_syntax:
                continue
            if requestor_scp is not None and context.scp_role != requestor_scp:
                continue
            return context
        return None
