"""A minimal, fast DICOM upper-layer client (PS3.8) on a raw socket, for the benchmark's latency rows.

It does only what the benchmark needs: associate with a few presentation contexts (over TLS when given a
context), send C-ECHO, C-FIND or C-MOVE requests, read the responses' command sets (identifiers are
counted, not decoded), release.
Everything is built once and sent with one ``sendall``, so the client costs a few tens of microseconds
per message and the server's time dominates what is measured. Independent of the package under test.
"""
from __future__ import annotations

import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
#: A UUID-derived UID (PS3.5 B.2) naming this client.
IMPLEMENTATION_CLASS_UID = "2.25.110981712377800924660028977266124053054"
IMPLEMENTATION_VERSION = "QRSCP_BENCH"

C_ECHO_RQ, C_FIND_RQ, C_MOVE_RQ = 0x0030, 0x0020, 0x0021
NO_DATA_SET, DATA_SET_PRESENT = 0x0101, 0x0000
PENDING_STATUSES = (0xFF00, 0xFF01)
MAX_PDU = 16384

_PDU_HEADER = struct.Struct(">BxL")
_ITEM_HEADER = struct.Struct(">BxH")
_PDV_HEADER = struct.Struct(">LBB")
_ELEMENT_HEADER = struct.Struct("<HHL")


class DicomError(Exception):
    """The peer rejected, aborted or answered something this client does not expect."""


def _item(item_type: int, payload: bytes) -> bytes:
    return _ITEM_HEADER.pack(item_type, len(payload)) + payload


def associate_rq(called: str, calling: str, abstract_syntaxes: list[str]) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing one context (Implicit VR Little Endian) per abstract syntax,
    with ids 1, 3, 5, ..."""
    variable = _item(0x10, APPLICATION_CONTEXT.encode())
    for number, abstract_syntax in enumerate(abstract_syntaxes):
        body = bytes((2 * number + 1, 0, 0, 0)) + _item(0x30, abstract_syntax.encode()) + \
            _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN.encode())
        variable += _item(0x20, body)
    user = _item(0x51, struct.pack(">L", MAX_PDU)) + _item(0x52, IMPLEMENTATION_CLASS_UID.encode()) + \
        _item(0x55, IMPLEMENTATION_VERSION.encode())
    variable += _item(0x50, user)
    fixed = struct.pack(">HH16s16s32x", 1, 0, called.ljust(16).encode(), calling.ljust(16).encode())
    return _PDU_HEADER.pack(0x01, len(fixed) + len(variable)) + fixed + variable


def _element(group_element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return _ELEMENT_HEADER.pack(0, group_element, len(value)) + value


def command_set(command_field: int, sop_class_uid: str, message_id: int, data_set_type: int,
                priority: int | None = None, move_destination: str | None = None) -> bytes:
    """A request command set (group 0000, Implicit VR Little Endian) with its group length."""
    body = _element(0x0002, sop_class_uid.encode()) + _element(0x0100, struct.pack("<H", command_field)) + \
        _element(0x0110, struct.pack("<H", message_id))
    if move_destination is not None:
        body += _element(0x0600, (move_destination + " " * (len(move_destination) % 2)).encode())  # AE: space-padded
    if priority is not None:
        body += _element(0x0700, struct.pack("<H", priority))
    body += _element(0x0800, struct.pack("<H", data_set_type))
    return _ELEMENT_HEADER.pack(0, 0x0000, 4) + struct.pack("<L", len(body)) + body


def p_data(context_id: int, data: bytes, is_command: bool) -> bytes:
    """A command set or data set as P-DATA-TF PDUs of at most :data:`MAX_PDU` bytes (the peers' limit
    in the benchmark), one fragment each, the last one flagged as such."""
    step = MAX_PDU - 12
    chunks = [data[start:start + step] for start in range(0, len(data), step)] or [b""]
    pdus = []
    for number, chunk in enumerate(chunks):
        control = (0x01 if is_command else 0x00) | (0x02 if number == len(chunks) - 1 else 0x00)
        pdv = _PDV_HEADER.pack(len(chunk) + 2, context_id, control) + chunk
        pdus.append(_PDU_HEADER.pack(0x04, len(pdv)) + pdv)
    return b"".join(pdus)


def encode_identifier(identifier: Dataset) -> bytes:
    """``identifier`` encoded in Implicit VR Little Endian (the only syntax this client proposes)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, identifier)
    return buffer.getvalue()


def identifier(**elements: str) -> bytes:
    """An identifier of ``elements`` (keyword: value), encoded by :func:`encode_identifier`."""
    dataset = Dataset()
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    return encode_identifier(dataset)


def _us_value(command: bytes, element: int) -> int | None:
    """The US value of element (0000,``element``) of a command set, or None when absent."""
    position = 0
    while position + 8 <= len(command):
        _, found, length = _ELEMENT_HEADER.unpack_from(command, position)
        if found == element:
            return struct.unpack_from("<H", command, position + 8)[0]
        position += 8 + length
    return None


def status_of(command: bytes) -> int:
    """The Status (0000,0900) of a response command set."""
    status = _us_value(command, 0x0900)
    if status is None:
        raise DicomError("response without Status")
    return status


@dataclass
class Association:
    """An established association: ``contexts`` maps accepted abstract syntax -> context id."""

    sock: socket.socket
    contexts: dict[str, int]
    _pending: deque[tuple[int, bytes]] = field(default_factory=deque)

    # --- reading ------------------------------------------------------------------------------------

    def _read_exact(self, size: int) -> bytes:
        chunks, remaining = [], size
        while remaining:
            chunk = self.sock.recv(remaining)
            if not chunk:
                raise DicomError("connection closed by the peer")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = _PDU_HEADER.unpack(self._read_exact(6))
        return pdu_type, self._read_exact(length)

    def _next_pdv(self) -> tuple[int, bytes]:
        """The next presentation data value: (message control header, fragment)."""
        while not self._pending:
            pdu_type, body = self.read_pdu()
            if pdu_type != 0x04:
                raise DicomError(f"unexpected PDU type {pdu_type:#04x} while waiting for a response")
            position = 0
            while position < len(body):
                length, _, control = _PDV_HEADER.unpack_from(body, position)
                self._pending.append((control, body[position + 6:position + 4 + length]))
                position += 4 + length
        return self._pending.popleft()

    def read_message(self) -> bytes:
        """The command set of the next message; its data set, if any, is read and dropped."""
        command = b""
        while True:
            control, fragment = self._next_pdv()
            if not control & 0x01:
                raise DicomError("data set fragment where a command was expected")
            command += fragment
            if control & 0x02:
                break
        if _us_value(command, 0x0800) not in (None, NO_DATA_SET):
            while True:
                control, _ = self._next_pdv()
                if control & 0x01:
                    raise DicomError("command fragment inside a data set")
                if control & 0x02:
                    break
        return command

    # --- services -----------------------------------------------------------------------------------

    def echo(self, message_id: int = 1) -> int:
        """One C-ECHO; its status."""
        context_id = self.contexts[VERIFICATION]
        self.sock.sendall(p_data(context_id, command_set(C_ECHO_RQ, VERIFICATION, message_id, NO_DATA_SET),
                                 True))
        return status_of(self.read_message())

    def find(self, model: str, identifier: bytes, message_id: int = 1) -> tuple[int, int]:
        """One C-FIND with an encoded ``identifier``: (final status, number of pending responses)."""
        context_id = self.contexts[model]
        request = p_data(context_id, command_set(C_FIND_RQ, model, message_id, DATA_SET_PRESENT, priority=0),
                         True) + p_data(context_id, identifier, False)
        self.sock.sendall(request)
        matches = 0
        while True:
            status = status_of(self.read_message())
            if status not in PENDING_STATUSES:
                return status, matches
            matches += 1

    def move(self, identifier: bytes, destination: str, message_id: int = 1) -> tuple[int, int, int]:
        """One Study Root C-MOVE of an encoded ``identifier`` to AE ``destination``: (final status,
        completed sub-operations, failed sub-operations)."""
        context_id = self.contexts[STUDY_ROOT_MOVE]
        command = command_set(C_MOVE_RQ, STUDY_ROOT_MOVE, message_id, DATA_SET_PRESENT, priority=0,
                              move_destination=destination)
        self.sock.sendall(p_data(context_id, command, True) + p_data(context_id, identifier, False))
        while True:
            response = self.read_message()
            status = status_of(response)
            if status not in PENDING_STATUSES:
                return status, _us_value(response, 0x1021) or 0, _us_value(response, 0x1022) or 0

    def release(self) -> None:
        """A-RELEASE-RQ, wait for the A-RELEASE-RP, close."""
        try:
            self.sock.sendall(_PDU_HEADER.pack(0x05, 4) + bytes(4))
            pdu_type, _ = self.read_pdu()
            if pdu_type != 0x06:
                raise DicomError(f"expected A-RELEASE-RP, got PDU type {pdu_type:#04x}")
        finally:
            self.sock.close()


def connect(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
            tls: ssl.SSLContext | None = None) -> socket.socket:
    """A TCP connection with Nagle's algorithm off (every exchange here is one small message), with a TLS
    handshake first when given a ``tls`` context."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        try:
            return tls.wrap_socket(sock)
        except BaseException:
            sock.close()
            raise
    return sock


def associate(port: int, called: str, calling: str, abstract_syntaxes: list[str],
              request: bytes | None = None, host: str = "127.0.0.1",
              tls: ssl.SSLContext | None = None, timeout: float = 30.0) -> Association:
    """Open an association (over TLS with a ``tls`` context); ``request`` is a pre-encoded A-ASSOCIATE-RQ
    for ``abstract_syntaxes``; ``timeout``: for every read and write on it."""
    sock = connect(port, host, timeout, tls=tls)
    association = Association(sock, {})
    try:
        sock.sendall(request or associate_rq(called, calling, abstract_syntaxes))
        pdu_type, body = association.read_pdu()
        if pdu_type != 0x02:
            raise DicomError(f"association not accepted (PDU type {pdu_type:#04x}, {body[:4].hex()})")
        association.contexts = _accepted_contexts(body, abstract_syntaxes)
    except BaseException:
        sock.close()
        raise
    return association


def _accepted_contexts(body: bytes, abstract_syntaxes: list[str]) -> dict[str, int]:
    accepted: dict[str, int] = {}
    position = 68
    while position + 4 <= len(body):
        item_type, length = _ITEM_HEADER.unpack_from(body, position)
        if item_type == 0x21 and body[position + 6] == 0:
            context_id = body[position + 4]
            accepted[abstract_syntaxes[(context_id - 1) // 2]] = context_id
        position += 4 + length
    return accepted
