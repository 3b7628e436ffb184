"""Hostile network input against a real server (robustness, item 1).

One server, seeded with a few instances, takes every attack in turn: garbage instead of an
A-ASSOCIATE-RQ, PDUs with absurd lengths (up to 4 GiB) and items, broken DIMSE command sets, data sets
that do not parse or nest without end, C-STOREs whose UIDs hold path characters or exceed 64 bytes,
values longer than the index fields. After each attack the attacked connection has ended with the right
status or an abort (never a hang), and the server still answers a C-ECHO and a C-FIND with the stored
data intact: the index is consistent, nothing was written outside the storage area, and no server
process grew beyond :data:`MEMORY_LIMIT` (a :class:`MemoryGuard` ends one that does, and the test fails).

The first part holds the helpers that the other robustness modules (``test_access_control``,
``test_faults``, ``test_load``, ``test_fuzz``) share.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import psutil
import pytest
from conftest import Server, echoscu, needs_dcmtk, simple_config
from corpus import make_instance, uid
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from qrscp.archive.storage_area import StorageArea
from qrscp.cli.dcmqridx import check_area
from qrscp.dicom import uids
from qrscp.net import dimse, pdu

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]   # pydicom on invalid UIDs

AE_TITLE = "QRSCP"
SUCCESS = 0x0000
PENDING = 0xFF00
REFUSED_OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: A server process whose resident memory exceeds this is runaway: the guard kills it.
MEMORY_LIMIT = 400 << 20
#: Every UID this module stores lies under this branch of the corpus root.
BRANCH = 81
SEED_COUNT = 3
#: The server's ACSE and DIMSE timeouts in this module (-ta/-td): how long a silent peer may stall a worker.
PEER_TIMEOUT = 2


# === helpers shared by the robustness modules =========================================================

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


def _client(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def store(port: int, datasets: Iterable[Dataset], called: str = AE_TITLE, calling: str = "STORESCU") -> list[int]:
    """C-STORE ``datasets`` on one pynetdicom association; their statuses (-1: no response)."""
    datasets = list(datasets)
    ae = _client(calling)
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate("127.0.0.1", port, ae_title=called)
    assert association.is_established, f"store association to {called} not established"
    try:
        statuses = []
        for dataset in datasets:
            status = association.send_c_store(dataset)
            statuses.append(int(status.Status) if "Status" in status else -1)
        return statuses
    finally:
        association.release()


def find_uids(port: int, called: str = AE_TITLE, calling: str = "FINDSCU", **keys: str) -> list[str]:
    """The SOP Instance UIDs an IMAGE-level Study Root C-FIND returns (one per pending response); ``keys``
    may give StudyInstanceUID and SeriesInstanceUID. Raises AssertionError unless the association is
    accepted and the find ends with Success."""
    ae = _client(calling)
    ae.add_requested_context(uids.STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = keys.get("StudyInstanceUID", "")
    identifier.SeriesInstanceUID = keys.get("SeriesInstanceUID", "")
    identifier.SOPInstanceUID = ""
    association = ae.associate("127.0.0.1", port, ae_title=called)
    assert association.is_established, f"find association to {called} not established"
    try:
        found, final = [], None
        for status, answer in association.send_c_find(identifier, uids.STUDY_ROOT_FIND):
            assert status is not None and "Status" in status, "C-FIND without a response"
            if status.Status == PENDING:
                found.append(str(answer.SOPInstanceUID))
            else:
                final = int(status.Status)
        assert final == SUCCESS, f"C-FIND ended with 0x{final:04x}" if final is not None else "no final response"
        return found
    finally:
        association.release()


def echo_ok(port: int, called: str = AE_TITLE) -> bool:
    """True if DCMTK's echoscu gets a C-ECHO answered by ``called`` (it exits 0 even after "E: Echo
    Failed", so its messages count too)."""
    result = echoscu(port, "-to", "10", "-ta", "10", "-td", "10", called=called)
    return result.returncode == 0 and b"E: " not in result.stdout + result.stderr


def indexed_uids(area: Path) -> list[str]:
    """The SOP Instance UIDs of the live records of ``area``'s index, in slot order."""
    with StorageArea(str(area), 500, -1, create_directory=False) as storage:
        return [value.decode() for value in storage.read_columns([0x00080018])[0x00080018]]


def index_problems(area: Path) -> list[str]:
    """What ``dcmqridx --check`` finds wrong with ``area`` (the same check, in process): [] if consistent."""
    with StorageArea(str(area), 500, -1, create_directory=False) as storage:
        return check_area(storage)


def server_processes(server: Server) -> list[psutil.Process]:
    """The server's supervisor and its live workers."""
    try:
        supervisor = psutil.Process(server.process.pid)
        return [supervisor, *supervisor.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def worker_serving(server: Server, client_port: int, timeout: float = 5) -> psutil.Process:
    """The worker whose TCP connection comes from the local port ``client_port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in server_processes(server)[1:]:
            try:
                if any(c.raddr and c.raddr.port == client_port for c in process.net_connections(kind="tcp")):
                    return process
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no worker serves the connection from port {client_port}")


def files_under(directory: Path) -> set[Path]:
    """Every file below ``directory``."""
    return {path for path in directory.rglob("*") if path.is_file()}


def log_size(server: Server) -> int:
    """The current length of the server's log, to read only what follows."""
    return len(server.stderr_path.read_text(errors="replace"))


class MemoryGuard:
    """While active, polls the resident memory of the server's processes; one above ``limit`` is killed
    (and recorded in ``runaway``) before it can exhaust the machine."""

    def __init__(self, server: Server, limit: int = MEMORY_LIMIT, interval: float = 0.01) -> None:
        self.server = server
        self.limit = limit
        self.interval = interval
        self.runaway: list[tuple[int, int]] = []   # (pid, rss) of the processes killed
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for process in server_processes(self.server):
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peak = max(self.peak, rss)
                if rss > self.limit:
                    self.runaway.append((process.pid, rss))
                    process.kill()
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemoryGuard":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def assert_bounded(self) -> None:
        assert not self.runaway, f"server processes grew beyond {self.limit >> 20} MiB: {self.runaway}"


def assert_healthy(server: Server, area: Path, expected: Iterable[str], called: str = AE_TITLE) -> None:
    """The server answers a C-ECHO and a C-FIND that returns exactly ``expected``; its index holds exactly
    those instances and is consistent; no server process is beyond :data:`MEMORY_LIMIT`."""
    assert server.process.poll() is None, f"server exited with {server.process.returncode}"
    assert echo_ok(server.port, called), "no C-ECHO answer"
    expected = sorted(expected)
    assert sorted(find_uids(server.port, called)) == expected
    assert sorted(indexed_uids(area)) == expected
    assert index_problems(area) == []
    for process in server_processes(server):
        try:
            assert process.memory_info().rss < MEMORY_LIMIT, f"process {process.pid} is too large"
        except psutil.NoSuchProcess:
            pass


# --- a hand-driven peer ---------------------------------------------------------------------------------

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


#: The presentation contexts :meth:`RawPeer.establish` proposes, with their ids.
STANDARD_CONTEXTS = {1: uids.VERIFICATION, 3: uids.STUDY_ROOT_FIND, 5: uids.STUDY_ROOT_MOVE,
                     7: uids.STUDY_ROOT_GET, 9: CTImageStorage}


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


# === this module's server ===============================================================================

@dataclass
class Archive:
    """The server under attack, its storage area and the instances it must still hold."""

    server: Server
    area: Path
    root: Path
    expected: set[str] = field(default_factory=set)
    outside: set[Path] = field(default_factory=set)   # files outside the area before the attacks

    def healthy(self) -> None:
        """:func:`assert_healthy` (which also finds any image file left unindexed); no file outside the
        area is new."""
        assert_healthy(self.server, self.area, self.expected)
        assert files_under(self.root) - files_under(self.area) == self.outside, "file written outside the area"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """The module's server (``-ta``/``-td`` :data:`PEER_TIMEOUT`) with :data:`SEED_COUNT` instances."""
    root = tmp_path_factory.mktemp("hostile")
    area = root / "area"
    with Server(root, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v",
                "-ta", str(PEER_TIMEOUT), "-td", str(PEER_TIMEOUT)) as server:
        seeds = [instance(BRANCH, 1, n) for n in range(1, SEED_COUNT + 1)]
        assert store(server.port, seeds) == [SUCCESS] * SEED_COUNT
        state = Archive(server, area, root, {str(d.SOPInstanceUID) for d in seeds})
        state.outside = files_under(root) - files_under(area)
        yield state


@pytest.fixture
def guarded(archive: Archive) -> Iterator[Archive]:
    """The archive, with its memory watched during the test and its health checked after it."""
    with MemoryGuard(archive.server) as guard:
        yield archive
    guard.assert_bounded()
    archive.healthy()


# === 1. garbage and absurd PDUs before an association ===================================================

def _rq_body(rq: pdu.AssociateRQ | None = None) -> bytes:
    return pdu.encode_associate_rq(rq or associate_rq())[6:]


def _fixed_part(called: bytes = b"QRSCP", calling: bytes = b"RAWSCU", version: int = 1) -> bytes:
    return struct.pack(">HH", version, 0) + called.ljust(16, b" ") + calling.ljust(16, b" ") + bytes(32)


def _user_information(*items: bytes) -> bytes:
    return item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4") + b"".join(items))


def _verification_context(context_id: int = 1, abstract: bytes = uids.VERIFICATION.encode(),
                          transfer: bytes = uids.IMPLICIT_VR_LE.encode()) -> bytes:
    return item(0x20, bytes((context_id, 0, 0, 0)) + item(0x30, abstract) + item(0x40, transfer))


def _associate(fixed: bytes = b"", *items: bytes) -> bytes:
    body = (fixed or _fixed_part()) + item(0x10, uids.APPLICATION_CONTEXT.encode()) + b"".join(items)
    return pdu_bytes(pdu.A_ASSOCIATE_RQ, body)


#: Byte strings sent on a fresh connection instead of a well-formed A-ASSOCIATE-RQ: the server must
#: answer with nothing but a close, an A-ASSOCIATE-RJ or an A-ABORT.
BAD_OPENINGS: dict[str, bytes] = {
    "connect-and-close": b"",
    "random-garbage": bytes((i * 131 + 7) % 256 for i in range(1024)),
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(160),
    "unknown-pdu-type-0x08": pdu_bytes(0x08, bytes(10)),
    "unknown-pdu-type-0xff": pdu_bytes(0xFF, bytes(10)),
    "associate-rq-4-GiB-length": pdu_bytes(pdu.A_ASSOCIATE_RQ, _rq_body()[:100], length=0xFFFFFFFF),
    "associate-rq-2-MiB-length": pdu_bytes(pdu.A_ASSOCIATE_RQ, _rq_body()[:100], length=2 << 20),
    "associate-rq-truncated-then-closed": pdu.encode_associate_rq(associate_rq())[:150],
    "associate-rq-shorter-than-fixed-part": pdu_bytes(pdu.A_ASSOCIATE_RQ, bytes(40)),
    "associate-rq-empty": pdu_bytes(pdu.A_ASSOCIATE_RQ, b""),
    "header-only": pdu_bytes(pdu.A_ASSOCIATE_RQ, b"")[:3],
    "release-rq-first": pdu.RELEASE_RQ,
    "abort-first": pdu.encode_abort(),
    "p-data-first": p_data(pdv(1, 3, dimse.encode_command({"CommandField": dimse.C_ECHO_RQ, "MessageID": 1,
                                                           "CommandDataSetType": dimse.NO_DATASET}))),
    "associate-ac-to-the-acceptor": pdu_bytes(pdu.A_ASSOCIATE_AC, _rq_body()),
    "associate-rj-to-the-acceptor": pdu.encode_associate_rj(1, 1, 1),
    "item-longer-than-pdu": _associate(b"", item(0x20, bytes(8), length=60000)),
    "item-header-cut": _associate(b"", b"\x20\x00"),
    "context-item-too-short": _associate(b"", item(0x20, b"\x01\x00"), _user_information()),
    "sub-item-longer-than-context": _associate(b"", item(0x20, bytes((1, 0, 0, 0)) + item(0x30, b"1.2", length=500))),
    "max-length-item-of-3-bytes": _associate(b"", _verification_context(),
                                             item(0x50, item(0x51, b"\x00\x40\x00"))),
    "role-selection-wrong-uid-length": _associate(b"", _verification_context(), _user_information(
        item(0x54, struct.pack(">H", 400) + b"1.2.840.10008.1.1" + b"\x01\x01"))),
    "role-selection-too-short": _associate(b"", _verification_context(), _user_information(item(0x54, b"\x00"))),
    "no-presentation-context": _associate(b"", _user_information()),
    "context-without-transfer-syntax": _associate(b"", item(0x20, bytes((1, 0, 0, 0))
                                                            + item(0x30, uids.VERIFICATION.encode())),
                                                  _user_information()),
    "calling-ae-all-spaces": _associate(_fixed_part(calling=b""), _verification_context(), _user_information()),
    "called-ae-with-nul-and-control-bytes": _associate(_fixed_part(called=b"QR\x00\x01\x1b[2J"),
                                                       _verification_context(), _user_information()),
    "called-ae-path-characters": _associate(_fixed_part(called=b"../../etc/passwd"), _verification_context(),
                                            _user_information()),
    "protocol-version-0": _associate(_fixed_part(version=0), _verification_context(), _user_information()),
    "wrong-application-context": pdu_bytes(pdu.A_ASSOCIATE_RQ, _fixed_part() + item(0x10, b"1.2.3")
                                           + _verification_context() + _user_information()),
    "application-context-60000-bytes": pdu_bytes(pdu.A_ASSOCIATE_RQ, _fixed_part() + item(0x10, b"1" * 60000)
                                                 + _verification_context() + _user_information()),
}


@pytest.mark.parametrize("name", list(BAD_OPENINGS))
def test_bad_opening_ends_only_that_connection(guarded: Archive, name: str) -> None:
    """Garbage, cut or absurd PDUs (up to a 4 GiB length field) instead of an A-ASSOCIATE-RQ: the server
    answers with a close, an A-ASSOCIATE-RJ or an A-ABORT, never an A-ASSOCIATE-AC, and never waits for
    more than its ACSE timeout."""
    with RawPeer(guarded.server.port) as peer:
        peer.send(BAD_OPENINGS[name])
        if name.endswith(("close", "closed")):
            peer.sock.shutdown(socket.SHUT_WR)
        answered = peer.ending(timeout=PEER_TIMEOUT + 5)
    assert set(answered) <= {pdu.A_ASSOCIATE_RJ, pdu.A_ABORT}, answered


def test_huge_length_field_is_refused_before_reading(guarded: Archive) -> None:
    """A 4 GiB A-ASSOCIATE-RQ length is refused at once (not after the ACSE timeout) and logged."""
    since = log_size(guarded.server)
    started = time.monotonic()
    with RawPeer(guarded.server.port) as peer:
        peer.send(pdu_bytes(pdu.A_ASSOCIATE_RQ, b"", length=0xFFFFFFFF))
        assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    assert time.monotonic() - started < PEER_TIMEOUT
    guarded.server.wait_for_log("Failed to receive association", since)


def test_silent_and_truncated_peers_stall_nobody(guarded: Archive) -> None:
    """Peers that connect and send nothing, or half an A-ASSOCIATE-RQ, do not delay a well-behaved client
    (decisions #4); the server closes their connections after its ACSE timeout."""
    peers = [RawPeer(guarded.server.port) for _ in range(6)]
    try:
        for number, peer in enumerate(peers):
            if number % 2:
                peer.send(pdu.encode_associate_rq(associate_rq())[:100])
        started = time.monotonic()
        assert echo_ok(guarded.server.port)
        assert sorted(find_uids(guarded.server.port)) == sorted(guarded.expected)
        assert time.monotonic() - started < PEER_TIMEOUT
        for peer in peers:
            assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    finally:
        for peer in peers:
            peer.close()


def _many_contexts(count: int) -> bytes:
    contexts = b"".join(_verification_context(1 + 2 * (n % 128)) for n in range(count))
    return _associate(b"", contexts, _user_information())


#: Absurd but parseable A-ASSOCIATE-RQs: the server may accept (then a C-ECHO on context 1 must work) or
#: reject them, but must stay bounded.
ABSURD_REQUESTS: dict[str, bytes] = {
    "5000-presentation-contexts": _many_contexts(5000),
    "abstract-syntax-of-60000-bytes": _associate(b"", _verification_context(),
                                                 _verification_context(3, abstract=b"9" * 60000),
                                                 _user_information()),
    "3000-transfer-syntaxes": _associate(b"", item(0x20, bytes((1, 0, 0, 0)) + item(0x30, uids.VERIFICATION.encode())
                                                    + b"".join(item(0x40, b"1.2.3.%d" % n) for n in range(3000))
                                                    + item(0x40, uids.IMPLICIT_VR_LE.encode())),
                                          _user_information()),
    "unknown-items-everywhere": _associate(b"", item(0x7F, bytes(60000)), _verification_context(),
                                           _user_information(item(0x7E, bytes(30000)), item(0x56, bytes(9)))),
    "2000-user-information-items": _associate(b"", _verification_context(),
                                              *[_user_information() for _ in range(2000)]),
    "1000-role-selections": _associate(b"", _verification_context(), _user_information(
        *[item(0x54, struct.pack(">H", 17) + b"1.2.840.10008.1.%d" % (n % 10) + b"\x01\x01")
          for n in range(1000)])),
    "calling-ae-non-ascii": _associate(_fixed_part(calling=bytes(range(0xF0, 0x100))), _verification_context(),
                                       _user_information()),
    "context-id-0-and-even": _associate(b"", _verification_context(0), _verification_context(2),
                                        _verification_context(1), _user_information()),
    "max-pdu-length-4-GiB": _associate(b"", _verification_context(), item(0x50, item(0x51, b"\xff\xff\xff\xff"))),
    "max-pdu-length-13": _associate(b"", _verification_context(), item(0x50, item(0x51, struct.pack(">L", 13)))),
}


@pytest.mark.parametrize("name", list(ABSURD_REQUESTS))
def test_absurd_associate_request(guarded: Archive, name: str) -> None:
    """Absurd items in an A-ASSOCIATE-RQ (thousands of contexts, transfer syntaxes or items, huge UIDs,
    non-ASCII titles, odd context ids, extreme maximum PDU lengths): refused, or accepted and then a
    C-ECHO on context 1 (if accepted) succeeds and the release is answered; bounded either way."""
    with RawPeer(guarded.server.port) as peer:
        peer.send(ABSURD_REQUESTS[name])
        answer = peer.read_pdu(timeout=PEER_TIMEOUT + 5)
        if answer is None or answer[0] != pdu.A_ASSOCIATE_AC:
            assert answer is None or answer[0] in (pdu.A_ASSOCIATE_RJ, pdu.A_ABORT), answer
            return
        accepted = [c for c in pdu.decode_associate_ac(answer[1]).contexts if c.result == pdu.ACCEPTANCE]
        if any(c.context_id == 1 for c in accepted):
            assert peer.echo_status(1) == SUCCESS
        peer.send(pdu.RELEASE_RQ)
        assert peer.ending() == [pdu.A_RELEASE_RP]


@pytest.mark.parametrize("max_pdu_length", [1, 12])
def test_tiny_maximum_pdu_length(guarded: Archive, max_pdu_length: int) -> None:
    """A peer that announces a maximum PDU length too small for any PDV (DCMTK then uses its default,
    "PDV send length ... (using default)"): the C-ECHO is answered, the worker stays bounded."""
    with MemoryGuard(guarded.server, limit=150 << 20) as guard, RawPeer(guarded.server.port) as peer:
        contexts = peer.establish(associate_rq(max_pdu_length=max_pdu_length, contexts={1: uids.VERIFICATION}))
        assert contexts
        try:
            status = peer.echo_status(1)
        except (ServerEnded, TimeoutError):
            status = None
    guard.assert_bounded()
    assert status == SUCCESS


# === 2. broken PDUs and DIMSE command sets on an established association ================================

FIND_CONTEXT, MOVE_CONTEXT, GET_CONTEXT, CT_CONTEXT = 3, 5, 7, 9


def _element(group: int, element: int, value: bytes, length: int | None = None) -> bytes:
    """An implicit VR little endian element (the encoding of command sets)."""
    return struct.pack("<HHL", group, element, len(value) if length is None else length) + value


def _echo_command(**fields: object) -> bytes:
    return dimse.encode_command({"CommandField": dimse.C_ECHO_RQ, "MessageID": 1,
                                 "AffectedSOPClassUID": uids.VERIFICATION, "CommandDataSetType": dimse.NO_DATASET,
                                 **fields})


def _command_pdu(command: bytes, context_id: int = 1, control: int = 0x03) -> bytes:
    return p_data(pdv(context_id, control, command))


_ECHO_ELEMENTS = _echo_command()[12:]   # without the group length element

#: Byte strings sent on an established association (contexts :data:`STANDARD_CONTEXTS`): each must end
#: the association with an A-ABORT (or a close), nothing else.
ABORTING_INPUT: dict[str, bytes] = {
    "p-data-longer-than-max-pdu": p_data(pdv(1, 0x03, bytes(16400))),
    "p-data-4-GiB-length": pdu_bytes(pdu.P_DATA_TF, bytes(64), length=0xFFFFFFFF),
    "p-data-without-pdv": pdu_bytes(pdu.P_DATA_TF, b""),
    "pdv-length-below-2": pdu_bytes(pdu.P_DATA_TF, struct.pack(">LBB", 1, 1, 3)),
    "pdv-longer-than-its-pdu": pdu_bytes(pdu.P_DATA_TF, struct.pack(">LBB", 1000, 1, 3) + bytes(10)),
    "pdv-header-cut": pdu_bytes(pdu.P_DATA_TF, b"\x00\x00\x00"),
    "pdv-on-unaccepted-context": _command_pdu(_echo_command(), context_id=99),
    "pdv-on-context-0": _command_pdu(_echo_command(), context_id=0),
    "data-set-fragment-instead-of-command": _command_pdu(_echo_command(), control=0x02),
    "command-without-command-field": _command_pdu(_element(0, 0x0110, b"\x01\x00")),
    "empty-command": _command_pdu(b""),
    "unknown-command-field": _command_pdu(dimse.encode_command({"CommandField": 0x0123, "MessageID": 1})),
    "response-sent-to-the-scp": _command_pdu(dimse.encode_command({"CommandField": dimse.C_ECHO_RSP,
                                                                   "MessageIDBeingRespondedTo": 1, "Status": 0})),
    "n-create-rq": _command_pdu(dimse.encode_command({"CommandField": 0x0140, "MessageID": 1})),
    "command-element-of-group-0008": _command_pdu(_ECHO_ELEMENTS + _element(0x0008, 0x0016, b"1.2\x00")),
    "command-element-longer-than-command": _command_pdu(_ECHO_ELEMENTS + _element(0, 0x1000, b"1.2", length=5000)),
    "command-element-length-4-GiB": _command_pdu(_ECHO_ELEMENTS + _element(0, 0x1000, b"1.2", length=0xFFFFFFFF)),
    "command-element-header-cut": _command_pdu(_ECHO_ELEMENTS + b"\x00\x00\x00\x10\x04"),
    "command-field-of-4-bytes": _command_pdu(_element(0, 0x0100, b"\x30\x00\x00\x00") + _ECHO_ELEMENTS[10:]),
    "command-uid-of-200-bytes": _command_pdu(_echo_command(AffectedSOPClassUID="1." * 100)),
    "move-destination-of-40-bytes": _command_pdu(dimse.encode_command(
        query_request(dimse.C_MOVE_RQ, uids.STUDY_ROOT_MOVE, MoveDestination="D" * 40)), context_id=MOVE_CONTEXT),
    "command-over-64-KiB": b"".join(p_data(pdv(1, 0x01, _element(0, 0x7777, bytes(16000)))) for _ in range(5)),
    "command-fragments-on-two-contexts": p_data(pdv(1, 0x01, _echo_command()[:20]))
                                         + p_data(pdv(3, 0x03, _echo_command()[20:])),
    "store-command-then-another-command": _command_pdu(dimse.encode_command(
        {**store_request(instance(BRANCH, 9, 1)), "CommandDataSetType": dimse.DATASET_PRESENT}), CT_CONTEXT)
                                          + _command_pdu(_echo_command()),
    "find-identifier-on-another-context": _command_pdu(dimse.encode_command(
        {**query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND), "CommandDataSetType": dimse.DATASET_PRESENT}),
        FIND_CONTEXT) + p_data(pdv(1, 0x02, identifier(QueryRetrieveLevel="STUDY"))),
    "unsolicited-release-rp": pdu.RELEASE_RP,
    "second-associate-rq": pdu.encode_associate_rq(associate_rq()),
    "associate-ac-mid-association": pdu_bytes(pdu.A_ASSOCIATE_AC, _rq_body()),
    "unknown-pdu-type": pdu_bytes(0x09, bytes(4)),
    "unknown-pdu-type-4-GiB": pdu_bytes(0x42, b"", length=0xFFFFFFFF),
}


@pytest.mark.parametrize("name", list(ABORTING_INPUT))
def test_broken_message_aborts_only_that_association(guarded: Archive, name: str) -> None:
    """Broken PDUs, PDVs and command sets (missing, unknown, too long or mis-typed elements, lengths up
    to 4 GiB) after the association is accepted: the server answers with an A-ABORT and closes, and
    logs why."""
    since = log_size(guarded.server)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send(ABORTING_INPUT[name])
        answered = peer.ending(timeout=PEER_TIMEOUT + 5)
    assert set(answered) <= {pdu.A_ABORT}, answered
    log = guarded.server.wait_for_log("Association Summary", since)
    assert "DIMSE Failure (aborting association)" in log or "Cannot handle command" in log


def test_over_long_identifier_is_refused(guarded: Archive) -> None:
    """A C-FIND identifier of more than 64 MiB is refused with an A-ABORT once the limit is crossed; the
    worker's memory stays bounded while it arrives."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(FIND_CONTEXT, {"CommandField": dimse.C_FIND_RQ, "MessageID": 1, "Priority": 0,
                                         "AffectedSOPClassUID": uids.STUDY_ROOT_FIND,
                                         "CommandDataSetType": dimse.DATASET_PRESENT})
        chunk = p_data(pdv(FIND_CONTEXT, 0x00, bytes(peer.max_pdv)))
        for _ in range((65 << 20) // peer.max_pdv):
            if not peer.send(chunk):
                break
        assert set(peer.ending(timeout=PEER_TIMEOUT + 5)) <= {pdu.A_ABORT}


# === 3. requests that do not parse or make no sense: a failure status, the association goes on =========

_SEQUENCE_ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def nested_sequences(depth: int, tag: int = 0x00400275) -> bytes:
    """An explicit VR little endian sequence element nested ``depth`` levels deep (undefined lengths)."""
    opening = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, b"SQ", 0, 0xFFFFFFFF) + _SEQUENCE_ITEM
    return opening * depth + (_ITEM_END + _SEQUENCE_END) * depth


def _explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element with a 16-bit length field (``length`` overrides it)."""
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value) if length is None else length) + value


_GARBAGE = bytes((i * 97 + 13) % 256 for i in range(4000))
_STUDY_QUERY = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="")


#: In :data:`FAILING_REQUESTS`: an A-ABORT is an acceptable answer too (DCMTK aborts there).
ABORT = -1
_UNPARSABLE = (ABORT, CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH)


@dataclass(frozen=True)
class Exchange:
    """One request on an established association and the outcomes allowed for it: final statuses, and
    :data:`ABORT` if an A-ABORT is acceptable."""

    command: dimse.Command
    context_id: int
    dataset: bytes | None
    outcomes: frozenset[int]

    @staticmethod
    def of(command: dimse.Command, context_id: int, dataset: bytes | None, *outcomes: int) -> "Exchange":
        return Exchange(command, context_id, dataset, frozenset(outcomes))


def _find(**fields: object) -> dimse.Command:
    return query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND, **fields)


def _move(**fields: object) -> dimse.Command:
    return query_request(dimse.C_MOVE_RQ, uids.STUDY_ROOT_MOVE, **fields)


def _get(**fields: object) -> dimse.Command:
    return query_request(dimse.C_GET_RQ, uids.STUDY_ROOT_GET, **fields)


def _without(command: dimse.Command, keyword: str) -> dimse.Command:
    return {key: value for key, value in command.items() if key != keyword}


_CT = instance(BRANCH, 5, 1, PixelData=None)
_CT_BYTES = dataset_bytes(_CT)

#: Requests that get a failure status (where DCMTK gives one, the same status) or an A-ABORT where that
#: is allowed; after a status the association goes on. Nothing is stored by any of them.
FAILING_REQUESTS: dict[str, Exchange] = {
    "find-garbage-identifier": Exchange.of(_find(), FIND_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "find-identifier-cut-in-a-header": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY[:-3], *_UNPARSABLE),
    "find-element-length-4-GiB": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY + struct.pack(
        "<HH2sHL", 0x0010, 0x0010, b"UN", 0, 0xFFFFFFF0) + b"x" * 64, *_UNPARSABLE),
    "find-sequences-nested-10000-deep": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY + nested_sequences(10000),
                                                    *_UNPARSABLE),
    "find-empty-identifier": Exchange.of(_find(), FIND_CONTEXT, b"", DATASET_DOES_NOT_MATCH),
    "find-unknown-level": Exchange.of(_find(), FIND_CONTEXT, identifier(QueryRetrieveLevel="BOGUS"),
                                      CANNOT_UNDERSTAND),
    "find-level-of-300-bytes": Exchange.of(_find(), FIND_CONTEXT, identifier(QueryRetrieveLevel="S" * 300),
                                           CANNOT_UNDERSTAND),
    "find-without-level": Exchange.of(_find(), FIND_CONTEXT, identifier(PatientID="*"), DATASET_DOES_NOT_MATCH),
    "find-without-sop-class": Exchange.of(_without(_find(), "AffectedSOPClassUID"), FIND_CONTEXT, _STUDY_QUERY,
                                          ABORT, SOP_CLASS_NOT_SUPPORTED),
    "find-verification-sop-class": Exchange.of(_find(AffectedSOPClassUID=uids.VERIFICATION), FIND_CONTEXT,
                                               _STUDY_QUERY, SOP_CLASS_NOT_SUPPORTED),
    "find-key-of-10000-bytes": Exchange.of(_find(), FIND_CONTEXT, identifier(
        QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="*" * 10000), SUCCESS),
    "move-garbage-identifier": Exchange.of(_move(MoveDestination="DEST"), MOVE_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "move-without-destination": Exchange.of(_move(), MOVE_CONTEXT, _STUDY_QUERY, ABORT, MOVE_DESTINATION_UNKNOWN),
    "move-destination-path-characters": Exchange.of(_move(MoveDestination="../../../tmp"), MOVE_CONTEXT,
                                                    _STUDY_QUERY, MOVE_DESTINATION_UNKNOWN),
    "move-sequences-nested-10000-deep": Exchange.of(_move(MoveDestination="DEST"), MOVE_CONTEXT,
                                                    _STUDY_QUERY + nested_sequences(10000), *_UNPARSABLE),
    "get-garbage-identifier": Exchange.of(_get(), GET_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "get-without-requestor-scp-role": Exchange.of(_get(), GET_CONTEXT, _STUDY_QUERY, 0xA702),
    "store-garbage-data-set": Exchange.of(store_request(_CT), CT_CONTEXT, _GARBAGE, ABORT, CANNOT_UNDERSTAND),
    "store-element-length-4-GiB": Exchange.of(store_request(_CT), CT_CONTEXT, _CT_BYTES + struct.pack(
        "<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFF0) + bytes(64), ABORT, CANNOT_UNDERSTAND),
    "store-value-cut-short": Exchange.of(store_request(_CT), CT_CONTEXT,
                                         _CT_BYTES + _explicit(0x00400280, b"ST", b"x", length=0xFFFF),
                                         ABORT, CANNOT_UNDERSTAND),
    "store-sequences-nested-100000-deep": Exchange.of(store_request(_CT), CT_CONTEXT,
                                                      _CT_BYTES + nested_sequences(100000), ABORT, CANNOT_UNDERSTAND),
    "store-empty-data-set": Exchange.of(store_request(_CT), CT_CONTEXT, b"", CANNOT_UNDERSTAND),
    "store-unknown-sop-class": Exchange.of(store_request(_CT, AffectedSOPClassUID="1.2.3"), CT_CONTEXT,
                                           _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-sop-class-with-path-characters": Exchange.of(store_request(_CT, AffectedSOPClassUID="../../../evil"),
                                                        CT_CONTEXT, _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-instance-uid-differs": Exchange.of(store_request(_CT, AffectedSOPInstanceUID="1.2.3"), CT_CONTEXT,
                                              _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-without-instance-uid": Exchange.of(store_request(_CT), CT_CONTEXT,
                                              dataset_bytes(instance(BRANCH, 5, 1, PixelData=None,
                                                                     SOPInstanceUID=None)), CANNOT_UNDERSTAND),
    "store-data-set-uid-over-64-bytes": Exchange.of(
        store_request(_CT, AffectedSOPInstanceUID=uid(BRANCH, 5, 1, 1) + ".1" * 10), CT_CONTEXT,
        dataset_bytes(instance(BRANCH, 5, 1, PixelData=None, SOPInstanceUID=uid(BRANCH, 5, 1, 1) + ".1" * 30)),
        DATASET_DOES_NOT_MATCH),
    "store-without-instance-uid-in-command": Exchange.of(_without(store_request(_CT), "AffectedSOPInstanceUID"),
                                                         CT_CONTEXT, _CT_BYTES, ABORT, DATASET_DOES_NOT_MATCH),
}


@pytest.mark.parametrize("exchange", list(FAILING_REQUESTS.values()), ids=list(FAILING_REQUESTS))
def test_failing_request(guarded: Archive, exchange: Exchange) -> None:
    """Identifiers and data sets that do not parse (garbage, cut short, 4 GiB lengths, sequences nested
    up to 100,000 deep), missing or senseless command fields, impossible destinations: the request gets
    a failure status (the one DCMTK gives, where it gives one) and the association goes on (a C-ECHO on
    it succeeds), or, where allowed, an A-ABORT. Nothing is stored."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(exchange.context_id, exchange.command, exchange.dataset)
        try:
            final, _pending = peer.final_response()
        except ServerEnded as ended:
            assert ABORT in exchange.outcomes, f"association ended: {ended}"
            assert ended.pdu_type == pdu.A_ABORT
            return
        assert final["Status"] in exchange.outcomes, f"0x{final['Status']:04x}"
        assert final["MessageIDBeingRespondedTo"] == exchange.command["MessageID"]
        assert peer.echo_status() == SUCCESS
        peer.send(pdu.RELEASE_RQ)
        assert peer.ending() == [pdu.A_RELEASE_RP]


def test_data_set_cut_inside_its_last_element_header_is_stored_as_by_dcmtk(guarded: Archive) -> None:
    """A data set that ends inside an element header is read up to that point and stored with Success,
    as DCMTK does; its index record and file are consistent."""
    dataset = instance(BRANCH, 12, 1, PixelData=None)
    data = dataset_bytes(dataset)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), data + struct.pack("<HH", 0x0040, 0x0280))
        assert peer.final_response()[0]["Status"] == SUCCESS
    guarded.expected.add(str(dataset.SOPInstanceUID))


def test_cancel_outside_an_operation_is_ignored(guarded: Archive) -> None:
    """A C-CANCEL-RQ for no running operation gets no answer; the association goes on."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(FIND_CONTEXT, {"CommandField": dimse.C_CANCEL_RQ, "MessageIDBeingRespondedTo": 7})
        assert peer.echo_status() == SUCCESS


def test_peer_vanishing_mid_store_leaves_nothing(guarded: Archive) -> None:
    """A peer that closes its connection in the middle of a C-STORE data set leaves no file and no record."""
    dataset = instance(BRANCH, 6, 1)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_fragments(CT_CONTEXT, dimse.encode_command({**store_request(dataset),
                                                              "CommandDataSetType": dimse.DATASET_PRESENT}), True)
        peer.send_fragments(CT_CONTEXT, dataset_bytes(dataset)[:200], command=False, last=False)
        time.sleep(0.2)
    time.sleep(0.3)   # the worker notices the close; healthy() then finds no stray file


# === 4. stores with hostile UIDs and values: stored inside the area, or refused ==========================

#: SOP Instance UIDs that are paths; ``{name}`` is replaced by the name of the test's root directory.
ESCAPING_UIDS = {"relative": "../../{name}-escape", "deeper": "../../../../{name}-escape",
                 "absolute": "/tmp/{name}-escape", "dots-only": "../..", "slashes": "1.2/3.4//5"}


@pytest.mark.parametrize("kind", list(ESCAPING_UIDS))
def test_path_characters_in_sop_instance_uid_stay_inside_the_area(guarded: Archive, kind: str) -> None:
    """A C-STORE whose SOP Instance UID is a path (``../``, ``/``): whatever the answer, nothing appears
    where the UID points (from the area or from the server's directory), the directories around are
    unchanged, and the stored file has the usual name in the area (names never derive from UIDs)."""
    sop_uid = ESCAPING_UIDS[kind].format(name=guarded.root.name)
    dataset = instance(BRANCH, 7, 1, SOPInstanceUID=sop_uid)
    targets = {Path(os.path.normpath(base / sop_uid)) for base in (guarded.area, guarded.root)}
    watched = (guarded.root.parent, guarded.root)   # the test session's own directories
    before = {directory: set(directory.iterdir()) for directory in watched}
    existed = {target for target in targets if target.exists()}
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
        status = peer.final_response()[0]["Status"]
    assert status in (SUCCESS, CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH)
    if status == SUCCESS:
        guarded.expected.add(sop_uid)
    assert {target for target in targets if target.exists()} == existed
    assert {directory: set(directory.iterdir()) for directory in watched} == before
    assert all(p.name.startswith("CT_") for p in guarded.area.iterdir() if p.suffix == ".dcm")


def test_values_longer_than_the_index_fields(guarded: Archive) -> None:
    """Values longer than their index fields (names of 400 bytes, a 100-byte Study Instance UID, a
    10,000-byte description) are stored; the index holds them truncated and stays consistent."""
    dataset = instance(BRANCH, 8, 1, PatientName="N" * 400, PatientID="I" * 300, AccessionNumber="A" * 200,
                       StudyID="S" * 200, StudyDescription="D" * 10000, ReferringPhysicianName="R^" * 200,
                       StudyInstanceUID=uid(BRANCH, 8) + ".9" * 30, SeriesDescription="x" * 70000)
    assert store(guarded.server.port, [dataset]) == [SUCCESS]
    guarded.expected.add(str(dataset.SOPInstanceUID))


@pytest.mark.parametrize("depth", [100, 20000])
def test_deeply_nested_sequences_in_a_stored_data_set(guarded: Archive, depth: int) -> None:
    """A data set with sequences nested ``depth`` levels deep is stored or refused with 0xC000; the
    worker neither crashes nor grows beyond the memory limit."""
    dataset = instance(BRANCH, 10, depth, PixelData=None)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset) + nested_sequences(depth))
        status = peer.final_response()[0]["Status"]
        assert peer.echo_status() == SUCCESS
    assert status in (SUCCESS, CANNOT_UNDERSTAND)
    if status == SUCCESS:
        guarded.expected.add(str(dataset.SOPInstanceUID))


def test_command_uid_longer_than_64_bytes_aborts(guarded: Archive) -> None:
    """A C-STORE-RQ whose Affected SOP Instance UID exceeds 64 bytes is a malformed command: A-ABORT,
    nothing stored, even though the data set carries the same UID."""
    long_uid = uid(BRANCH, 11, 1, 1) + ".1" * 30
    dataset = instance(BRANCH, 11, 1, SOPInstanceUID=long_uid)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
        assert set(peer.ending(timeout=PEER_TIMEOUT + 5)) <= {pdu.A_ABORT}


def test_connection_flood(guarded: Archive) -> None:
    """64 connections that never send a byte: a well-behaved client is served at once, the silent ones
    are closed after the ACSE timeout, and the workers they occupied retire (no worker left behind)."""
    from qrscp.server.supervisor import MAX_IDLE_WORKERS

    peers = [RawPeer(guarded.server.port) for _ in range(64)]
    try:
        assert echo_ok(guarded.server.port)
        assert len(server_processes(guarded.server)) > 64
        for peer in peers:
            assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    finally:
        for peer in peers:
            peer.close()
    deadline = time.monotonic() + 5
    while len(server_processes(guarded.server)) > 1 + MAX_IDLE_WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server_processes(guarded.server)) <= 1 + MAX_IDLE_WORKERS


def _deflate_bomb(dataset: Dataset, inflated: int) -> bytes:
    """``dataset`` followed by an OB element of ``inflated`` zero bytes, deflated (about 1/1000 the size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, inflated)
    data = compressor.compress(dataset_bytes(dataset) + header)
    block = bytes(1 << 20)
    data += b"".join(compressor.compress(block) for _ in range(inflated >> 20))
    return data + compressor.flush()


#: The storage output options a received data set can be converted with (and none: stored as received).
OUTPUT_OPTIONS = {"as-received": (), "+B": ("+B",), "+te": ("+te",), "+tb": ("+tb",), "+ti": ("+ti",),
                  "+td": ("+td",), "+td +cl 9": ("+td", "+cl", "9"), "+g": ("+g",), "-g": ("-g",), "-e": ("-e",),
                  "+p 256 16": ("+p", "256", "16"), "-u": ("-u",), "-F": ("-F",), "+cl 1": ("+cl", "1")}
#: The bound every server process stays within while a deflate bomb is received.
BOMB_MEMORY_LIMIT = 256 << 20


@pytest.fixture(scope="module")
def gigabyte_bomb() -> tuple[Dataset, bytes]:
    """A C-STORE data set whose 1 MiB of deflated bytes inflate to 1 GiB (an OB element of zeros)."""
    dataset = instance(BRANCH, 13, 1, PixelData=None)
    return dataset, _deflate_bomb(dataset, 1 << 30)


@pytest.mark.parametrize("options", OUTPUT_OPTIONS.values(), ids=OUTPUT_OPTIONS.keys())
def test_deflate_bomb_is_refused_within_bounded_memory(tmp_path: Path, gigabyte_bomb, options) -> None:
    """A C-STORE on a Deflated Explicit VR Little Endian context (``+xd``), whatever the output options:
    its data set inflates past the area's maxBytesPerStudy (64 MiB here) and is refused with 0xA700 as
    soon as it does; every server process stays under 256 MiB; nothing is stored; the server goes on."""
    area = tmp_path / "area"
    dataset, bomb = gigabyte_bomb
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 64mb) ANY"}), "+xd", *options) as server:
        with MemoryGuard(server, limit=BOMB_MEMORY_LIMIT) as guard, RawPeer(server.port, timeout=60) as peer:
            contexts = peer.establish(associate_rq(contexts={CT_CONTEXT: CTImageStorage},
                                                   transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE,)))
            assert contexts == {CT_CONTEXT: uids.DEFLATED_EXPLICIT_VR_LE}
            peer.send_message(CT_CONTEXT, store_request(dataset), bomb)
            status = peer.final_response()[0]["Status"]
        assert_healthy(server, area, [])
    guard.assert_bounded()
    assert status == REFUSED_OUT_OF_RESOURCES
    assert "inflates to more than 67108864 bytes (maxBytesPerStudy)" in server.log
    assert list(area.iterdir()) == [area / "index.dat"]   # no image file, no temporary file left


def test_large_deflated_data_set_is_stored_within_bounded_memory(tmp_path: Path) -> None:
    """A deflated data set that legitimately inflates to 256 MiB (under a 1 GiB maxBytesPerStudy) is
    stored, converted to explicit VR little endian (``+te``), with every process under 256 MiB."""
    area = tmp_path / "area"
    dataset = instance(BRANCH, 15, 1, PixelData=None)
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "+xd", "+te") as server:
        with MemoryGuard(server, limit=BOMB_MEMORY_LIMIT) as guard, RawPeer(server.port, timeout=60) as peer:
            peer.establish(associate_rq(contexts={CT_CONTEXT: CTImageStorage},
                                        transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE,)))
            peer.send_message(CT_CONTEXT, store_request(dataset), _deflate_bomb(dataset, 256 << 20))
            assert peer.final_response()[0]["Status"] == SUCCESS
        assert_healthy(server, area, [str(dataset.SOPInstanceUID)])
    guard.assert_bounded()
    stored = [path for path in area.iterdir() if path.suffix == ".dcm"]
    assert len(stored) == 1 and stored[0].stat().st_size > 256 << 20


def test_identifier_inflating_beyond_its_bound_and_nested_data_sets_end_nothing(tmp_path: Path) -> None:
    """At ``-v`` (where identifiers are printed): a deflated C-FIND identifier that inflates past the
    identifiers' 16 MiB bound, with sequences nested 2,000 deep behind that, and a C-STORE of a SOP class
    that is no storage class whose data set nests 2,000 deep before its UIDs, get failure statuses; the
    association and its worker go on."""
    area = tmp_path / "area"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    padding = struct.pack("<HH2sHL", 0x0009, 0x1001, b"OB", 0, 1 << 24)
    bomb = (compressor.compress(_STUDY_QUERY + padding) + compressor.compress(bytes(1 << 24))
            + compressor.compress(nested_sequences(2000)) + compressor.flush())
    dataset = instance(BRANCH, 14, 1, PixelData=None)
    deep = nested_sequences(2000, tag=0x00080006) + dataset_bytes(dataset)
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v", "+xd") as server, \
            RawPeer(server.port, timeout=30) as peer:
        contexts = peer.establish(associate_rq(contexts={FIND_CONTEXT: uids.STUDY_ROOT_FIND, 1: uids.VERIFICATION,
                                                         CT_CONTEXT: CTImageStorage},
                                               transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE, uids.EXPLICIT_VR_LE)))
        assert contexts[FIND_CONTEXT] == uids.DEFLATED_EXPLICIT_VR_LE
        peer.send_message(FIND_CONTEXT, _find(), bomb)
        assert peer.final_response()[0]["Status"] == CANNOT_UNDERSTAND
        assert peer.echo_status() == SUCCESS
        if contexts[CT_CONTEXT] == uids.DEFLATED_EXPLICIT_VR_LE:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            deep = compressor.compress(deep) + compressor.flush()
        peer.send_message(CT_CONTEXT, store_request(dataset, AffectedSOPClassUID="1.2.3"), deep)
        assert peer.final_response()[0]["Status"] == CANNOT_UNDERSTAND
        assert peer.echo_status() == SUCCESS
    assert "identifier inflates to more than 16777216 bytes" in server.log
