"""A DICOM peer driven by hand on a plain socket, and the messages the robustness tests send with it.

:class:`RawPeer` sends any bytes and reads PDUs as they come; after the server's A-ABORT it closes its end,
as real peers do. :meth:`RawPeer.connection_end` tells an orderly close (FIN) from a reset (RST), which is
how DCMTK ends some broken connections. Shared by ``test_hostile``, ``test_broken_peers``,
``test_access_control``, ``test_faults``, ``test_load``, ``test_fuzz`` and ``test_session_fuzzer``.
"""
from __future__ import annotations

import socket
import struct
import time

from corpus import make_instance, uid
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from qrscp.dicom import uids
from qrscp.net import dimse, pdu

AE_TITLE = "QRSCP"
SUCCESS = 0x0000
PENDING = 0xFF00
REFUSED_OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: The ACSE and DIMSE timeouts (-ta/-td) the robustness tests give their servers: how long a silent peer may
#: stall a worker.
PEER_TIMEOUT = 2
#: The bytes of the A-ABORT DCMTK sends (source service-user, no reason).
DCMTK_ABORT = bytes.fromhex("07000000000400000000")


def instance(branch: int, study: int, number: int, **attributes: object) -> Dataset:
    """CT instance ``number`` of study ``study`` (one series) under ``uid(branch, ...)``."""
    values: dict[str, object] = {"StudyInstanceUID": uid(branch, study), "SeriesInstanceUID": uid(branch, study, 1),
                                 "SOPInstanceUID": uid(branch, study, 1, number), "InstanceNumber": str(number),
                                 "PatientID": f"P{branch}-{study}"}
    values.update(attributes)
    with pydicom_config.disable_value_validation():   # over-long and path-like UIDs are meant
        return make_instance(CTImageStorage, ExplicitVRLittleEndian, **values)


def dataset_bytes(dataset: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """``dataset`` encoded as a DIMSE data set (no file meta information)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    buffer.is_little_endian = True
    with pydicom_config.disable_value_validation():
        write_dataset(buffer, dataset)
    return buffer.getvalue()


def pdu_bytes(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU of ``pdu_type`` with ``body``; ``length`` overrides the length field."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def item(item_type: int, value: bytes, length: int | None = None) -> bytes:
    """An A-ASSOCIATE item or sub-item; ``length`` overrides the length field."""
    return struct.pack(">BBH", item_type, 0, len(value) if length is None else length) + value


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One PDV item: its length, the context id, the message control header and ``data``."""
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu_bytes(pdu.P_DATA_TF, b"".join(pdvs))


FIND_CONTEXT, MOVE_CONTEXT, GET_CONTEXT, CT_CONTEXT = 3, 5, 7, 9
#: The presentation contexts :meth:`RawPeer.establish` proposes, with their ids.
STANDARD_CONTEXTS = {1: uids.VERIFICATION, FIND_CONTEXT: uids.STUDY_ROOT_FIND, MOVE_CONTEXT: uids.STUDY_ROOT_MOVE,
                     GET_CONTEXT: uids.STUDY_ROOT_GET, CT_CONTEXT: CTImageStorage}


def associate_rq(called: str = AE_TITLE, calling: str = "RAWSCU", contexts: dict[int, str] | None = None,
                 transfer_syntaxes: tuple[str, ...] = (uids.EXPLICIT_VR_LE,),
                 max_pdu_length: int = 16384) -> pdu.AssociateRQ:
    """A well-formed A-ASSOCIATE-RQ proposing ``contexts`` (id -> abstract syntax)."""
    contexts = STANDARD_CONTEXTS if contexts is None else contexts
    return pdu.AssociateRQ(called_ae_title=called, calling_ae_title=calling,
                           contexts=[pdu.PresentationContextRQ(i, a, list(transfer_syntaxes))
                                     for i, a in contexts.items()],
                           application_context=uids.APPLICATION_CONTEXT, max_pdu_length=max_pdu_length,
                           implementation_class_uid="1.2.826.0.1.3680043.8.498.1",
                           implementation_version_name="RAWSCU")


class ServerEnded(Exception):
    """The server aborted (``pdu_type`` A-ABORT) or closed (None) the connection instead of answering."""

    def __init__(self, pdu_type: int | None) -> None:
        super().__init__("A-ABORT" if pdu_type == pdu.A_ABORT else f"PDU {pdu_type}" if pdu_type else "closed")
        self.pdu_type = pdu_type


class RawPeer:
    """A DICOM peer driven by hand on a plain socket: it sends any bytes and reads PDUs as they come."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client_port = self.sock.getsockname()[1]
        self.timeout = timeout
        self.max_pdv = 16372
        #: whether the server reset the connection (rather than closing it in order)
        self.reset = False
        self._buffer = bytearray()

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the server had already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def read_pdu(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next PDU from the server, (type, body); None once it has closed the connection.
        Raises TimeoutError if no complete PDU arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buffer) >= 6:
                pdu_type, _, length = struct.unpack_from(">BBL", self._buffer)
                if len(self._buffer) >= 6 + length:
                    body = bytes(self._buffer[6:6 + length])
                    del self._buffer[:6 + length]
                    if pdu_type == pdu.A_ABORT:   # as real peers do: our end closes
                        self._shut_down()
                    return pdu_type, body
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server neither answered nor closed the connection")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except ConnectionResetError:
                self.reset = True
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk

    def ending(self, timeout: float | None = None) -> list[int]:
        """Read until the server closes the connection; the types of the PDUs it sent meanwhile."""
        types = []
        while (received := self.read_pdu(timeout)) is not None:
            types.append(received[0])
        return types

    def connection_end(self, timeout: float | None = None) -> tuple[list[bytes], str]:
        """Read until the server ends the connection without sending anything ourselves: the PDUs it
        sent meanwhile (whole, header included), and ``"FIN"`` for an orderly close or ``"RST"`` for a
        reset."""
        pdus = []
        while (received := self.read_pdu(timeout)) is not None:
            pdus.append(struct.pack(">BBL", received[0], 0, len(received[1])) + received[1])
        return pdus, "RST" if self.reset else "FIN"

    def _shut_down(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def associate(self, rq: pdu.AssociateRQ | None = None) -> tuple[int, bytes] | None:
        """Send ``rq`` (default :func:`associate_rq`); the server's answer PDU."""
        self.send(pdu.encode_associate_rq(rq or associate_rq()))
        return self.read_pdu()

    def establish(self, rq: pdu.AssociateRQ | None = None) -> dict[int, str]:
        """Associate; the accepted contexts (id -> transfer syntax). Fails the test unless accepted."""
        answer = self.associate(rq)
        assert answer is not None and answer[0] == pdu.A_ASSOCIATE_AC, f"association not accepted: {answer}"
        ac = pdu.decode_associate_ac(answer[1])
        if ac.max_pdu_length:
            self.max_pdv = ac.max_pdu_length - 12
        return {c.context_id: c.transfer_syntax for c in ac.contexts if c.result == pdu.ACCEPTANCE}

    def send_fragments(self, context_id: int, data: bytes, command: bool, last: bool = True,
                       size: int | None = None) -> bool:
        """``data`` as PDVs of at most ``size`` bytes (one per PDU); the final one flagged last if ``last``."""
        size = size or self.max_pdv
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        out = bytearray()
        for number, chunk in enumerate(chunks, 1):
            control = (0x01 if command else 0x00) | (0x02 if last and number == len(chunks) else 0x00)
            out += p_data(pdv(context_id, control, chunk))
        return self.send(bytes(out))

    def send_message(self, context_id: int, command: dimse.Command, dataset: bytes | None = None) -> bool:
        """A command (its CommandDataSetType set from ``dataset``) and the data set, if any."""
        command = {"CommandDataSetType": dimse.NO_DATASET if dataset is None else dimse.DATASET_PRESENT, **command}
        sent = self.send_fragments(context_id, dimse.encode_command(command), command=True)
        if dataset is not None:
            sent = self.send_fragments(context_id, dataset, command=False) and sent
        return sent

    def receive_message(self, timeout: float | None = None) -> tuple[dimse.Command, bytes | None]:
        """The next message from the server: (command, data set or None). Raises :class:`ServerEnded`."""
        command: bytearray = bytearray()
        dataset: bytearray | None = None
        decoded: dimse.Command | None = None
        while True:
            received = self.read_pdu(timeout)
            if received is None or received[0] != pdu.P_DATA_TF:
                raise ServerEnded(None if received is None else received[0])
            for _context_id, control, data in pdu.decode_p_data(received[1]):
                if control & 0x01:
                    command += data
                    if control & 0x02:
                        decoded = dimse.decode_command(bytes(command))
                        if not dimse.has_dataset(decoded):
                            return decoded, None
                        dataset = bytearray()
                else:
                    assert dataset is not None, "data set before its command"
                    dataset += data
                    if control & 0x02:
                        assert decoded is not None
                        return decoded, bytes(dataset)

    def final_response(self, timeout: float | None = None) -> tuple[dimse.Command, list[dimse.Command]]:
        """Read responses until one is not Pending: (final response, pending ones)."""
        pending = []
        while True:
            response, _dataset = self.receive_message(timeout)
            if response.get("Status") not in (PENDING, 0xFF01):
                return response, pending
            pending.append(response)

    def echo_status(self, context_id: int = 1, message_id: int = 99) -> int:
        """C-ECHO on this association; the status."""
        self.send_message(context_id, {"CommandField": dimse.C_ECHO_RQ, "MessageID": message_id,
                                       "AffectedSOPClassUID": uids.VERIFICATION})
        response, _ = self.receive_message()
        assert response["MessageIDBeingRespondedTo"] == message_id
        return response["Status"]


def store_request(dataset: Dataset, message_id: int = 1, **overrides: object) -> dimse.Command:
    """The C-STORE-RQ command for ``dataset`` (``overrides`` replace its fields)."""
    return {"CommandField": dimse.C_STORE_RQ, "MessageID": message_id, "Priority": 0,
            "AffectedSOPClassUID": str(dataset.SOPClassUID),
            "AffectedSOPInstanceUID": str(dataset.SOPInstanceUID), **overrides}


def query_request(command_field: int, sop_class: str, message_id: int = 1, **overrides: object) -> dimse.Command:
    return {"CommandField": command_field, "MessageID": message_id, "Priority": 0,
            "AffectedSOPClassUID": sop_class, **overrides}


def identifier(**keys: str) -> bytes:
    """An explicit VR little endian query identifier."""
    dataset = Dataset()
    with pydicom_config.disable_value_validation():
        for keyword, value in keys.items():
            setattr(dataset, keyword, value)
    return dataset_bytes(dataset)
