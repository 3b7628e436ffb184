"""The health of a server under attack: is it still serving, with its data intact and its memory bounded?"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable

import psutil
from conftest import Server, echoscu
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from rawpeer import AE_TITLE, PENDING, SUCCESS

from qrscp.archive.storage_area import StorageArea
from qrscp.cli.dcmqridx import check_area
from qrscp.dicom import uids

#: A server process whose resident memory exceeds this is runaway: the guard kills it.
MEMORY_LIMIT = 400 << 20


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
