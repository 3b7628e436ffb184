"""Faults around a real server (robustness, item 3): killed workers and supervisor, a full disk, a
truncated or destroyed ``index.dat``, a storage area that becomes read-only.

After each fault the server answers a C-ECHO and a C-FIND with the stored data intact, the index passes
``python -m qrscp.cli.dcmqridx --check`` (every record's file exists and holds its instance; study descriptors
agree), no half-written file is indexed, and where a process survives to tell, the client got a failure
status and the log says what failed. A worker killed with SIGKILL cannot answer: its client sees the
connection close without a response, which no client takes for success.

The disk-full tests mount a 2 MiB tmpfs over the storage area and the read-only test bind-mounts the
area read-only over itself; both skip when mounting is not possible.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest
from conftest import Server, needs_dcmtk, run_qrscp, simple_config
from health import (
    assert_healthy,
    echo_ok,
    find_uids,
    index_problems,
    indexed_uids,
    log_size,
    server_processes,
    store,
    worker_serving,
)
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from rawpeer import (
    CT_CONTEXT,
    FIND_CONTEXT,
    MOVE_CONTEXT,
    REFUSED_OUT_OF_RESOURCES,
    SUCCESS,
    RawPeer,
    ServerEnded,
    dataset_bytes,
    identifier,
    instance,
    query_request,
    store_request,
)
from test_retrieve import StorageSCP

from qrscp.archive import index
from qrscp.archive.storage_area import StorageArea
from qrscp.dicom import uids
from qrscp.net import dimse, pdu

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]

BRANCH = 83
AE_TITLE = "QRSCP"


# --- helpers ------------------------------------------------------------------------------------------------------

def start(root: Path, area: Path, directory: Path | None = None, port: int | None = None) -> Server:
    """Our server on ``area`` (RW, ANY peer) with ``-v``; ``directory`` (default ``root``) holds its
    configuration and log."""
    directory = directory or root
    directory.mkdir(parents=True, exist_ok=True)
    return Server(directory, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v", port=port)


def seeded(server: Server, count: int) -> list[str]:
    """Store instances 1 to ``count`` of test study 1; their SOP Instance UIDs."""
    datasets = [instance(BRANCH, 1, n) for n in range(1, count + 1)]
    assert store(server.port, datasets) == [SUCCESS] * count
    return [str(d.SOPInstanceUID) for d in datasets]


def with_payload(number: int, size: int) -> Dataset:
    """Instance ``number`` of test study 1 carrying ``size`` bytes of a private OB element."""
    dataset = instance(BRANCH, 1, number)
    dataset.private_block(0x0009, "QRSCP TESTS", create=True).add_new(0x01, "OB", bytes(size))
    return dataset


def dcmqridx_check(area: Path) -> subprocess.CompletedProcess:
    """``python -m qrscp.cli.dcmqridx --check <area>``."""
    return run_qrscp("--check", str(area), module="qrscp.cli.dcmqridx")


def assert_checked(area: Path) -> None:
    """The real ``dcmqridx --check`` program finds the area consistent."""
    result = dcmqridx_check(area)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")


def image_files(area: Path) -> set[str]:
    """The names of the image files in ``area``."""
    return {p.name for p in area.iterdir() if p.suffix == ".dcm"}


def indexed_files(area: Path) -> set[str]:
    """The file names the live records of ``area``'s index name."""
    with StorageArea(str(area), 500, -1, create_directory=False) as storage:
        return {os.path.basename(name.decode()) for name in storage.read_columns(["filename"])["filename"]}


def wait_for(condition: Callable[[], bool], timeout: float = 10, interval: float = 0.02) -> None:
    """Poll ``condition()`` until it is true (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def gone(pid: int) -> bool:
    """True if process ``pid`` has exited (a zombie counts: it runs no more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill(process: psutil.Process) -> None:
    """SIGKILL a process this test's server forked, and wait until it is gone."""
    process.send_signal(signal.SIGKILL)
    wait_for(lambda: gone(process.pid))


@contextmanager
def mounted(*commands: list[str], undo: list[str]) -> Iterator[None]:
    """Run the mount ``commands`` (skip the test if one fails), then ``undo`` at the end."""
    for command in commands:
        result = subprocess.run(command, capture_output=True)
        if result.returncode != 0:
            if command is not commands[0]:
                subprocess.run(undo, capture_output=True)
            pytest.skip(f"cannot {' '.join(command)}: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(undo, capture_output=True)


def small_tmpfs(directory: Path, size: str = "2m") -> AbstractContextManager[None]:
    """``directory`` as the mount point of a tmpfs of ``size``."""
    directory.mkdir(parents=True, exist_ok=True)
    return mounted(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                   undo=["umount", "-l", str(directory)])


def read_only(directory: Path) -> AbstractContextManager[None]:
    """``directory`` made read-only by a read-only bind mount over itself (descriptors opened earlier
    keep their access)."""
    return mounted(["mount", "--bind", str(directory), str(directory)],
                   ["mount", "-o", "remount,bind,ro", str(directory)], undo=["umount", "-l", str(directory)])


def partial_store(peer: RawPeer, dataset: Dataset) -> bytes:
    """Start a C-STORE of ``dataset``: the command and the first half of the data set; the rest (to
    send later)."""
    data = dataset_bytes(dataset)
    command = {**store_request(dataset), "CommandDataSetType": dimse.DATASET_PRESENT}
    peer.send_fragments(CT_CONTEXT, dimse.encode_command(command), command=True)
    peer.send_fragments(CT_CONTEXT, data[:len(data) // 2], command=False, last=False)
    return data[len(data) // 2:]


# --- killed workers -----------------------------------------------------------------------------------------------

def test_worker_killed_during_a_store(tmp_path: Path) -> None:
    """SIGKILL of the worker that is writing a C-STORE's file: the client's connection closes without a
    response, the supervisor reaps the worker, the half-written file is not indexed, and the same
    instance can be stored again at once; ``dcmqridx --check`` reports the half-written file."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        expected = seeded(server, 2)
        dataset = with_payload(3, 200_000)
        with RawPeer(server.port) as peer:
            peer.establish()
            files_before = image_files(area)
            partial_store(peer, dataset)
            wait_for(lambda: image_files(area) != files_before)   # the worker is writing the file
            worker = worker_serving(server, peer.client_port)
            kill(worker)
            assert peer.ending() == []
        wait_for(lambda: not psutil.pid_exists(worker.pid))   # reaped by the supervisor
        partial = image_files(area) - indexed_files(area)
        assert len(partial) == 1
        # dcmqridx --check finds the records consistent and names the file the killed store left behind
        check = dcmqridx_check(area)
        assert check.returncode == 2
        assert check.stdout.decode().splitlines() == [
            f"{area / next(iter(partial))}: in the area but not in the index (an interrupted store or a lost "
            "record; dcmqridx registers it if it is complete)", "1 problem(s) found"]
        (area / partial.pop()).unlink()   # what its operator does with a partial file
        assert_healthy(server, area, expected)
        assert store(server.port, [dataset]) == [SUCCESS]
        assert_healthy(server, area, [*expected, str(dataset.SOPInstanceUID)])


def test_worker_killed_mid_association_is_logged_as_an_error(tmp_path: Path) -> None:
    """A worker that dies from a signal while it serves an association is an error the log must show
    (level E or W, naming the process and the signal)."""
    with start(tmp_path, tmp_path / "area") as server:
        with RawPeer(server.port) as peer:
            peer.establish()
            worker = worker_serving(server, peer.client_port)
            since = log_size(server)
            kill(worker)
            peer.ending()
        wait_for(lambda: not psutil.pid_exists(worker.pid))   # reaped by the supervisor
        log = server.wait_for_log(str(worker.pid), since)
        assert_healthy(server, tmp_path / "area", [])
        assert any(line[:2] in ("E:", "W:") and str(worker.pid) in line for line in log.splitlines()), log


def test_worker_killed_while_receiving_a_find_identifier(tmp_path: Path) -> None:
    """SIGKILL of a worker inside a C-FIND (its identifier half received): the connection closes, the
    next C-FIND is answered in full."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        expected = seeded(server, 5)
        with RawPeer(server.port) as peer:
            peer.establish()
            query = identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID="", SeriesInstanceUID="",
                               SOPInstanceUID="")
            command = {**query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND),
                       "CommandDataSetType": dimse.DATASET_PRESENT}
            peer.send_fragments(FIND_CONTEXT, dimse.encode_command(command), command=True)
            peer.send_fragments(FIND_CONTEXT, query[:10], command=False, last=False)
            time.sleep(0.1)
            kill(worker_serving(server, peer.client_port))
            assert peer.ending() == []
        assert_healthy(server, area, expected)
        assert_checked(area)


def test_worker_killed_in_a_stream_of_finds(tmp_path: Path) -> None:
    """SIGKILL at a random moment of a client that runs C-FINDs back to back on one association (the
    worker is matching or answering): the next clients are served in full."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        expected = seeded(server, 20)
        query = identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID="", SeriesInstanceUID="",
                           SOPInstanceUID="")
        counts: list[int] = []
        with RawPeer(server.port) as peer:
            peer.establish()

            def finds() -> None:
                try:
                    for message_id in range(1, 10_000):
                        peer.send_message(FIND_CONTEXT, query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND,
                                                                      message_id), query)
                        final, pending = peer.final_response()
                        assert final["Status"] == SUCCESS
                        counts.append(len(pending))
                except (ServerEnded, OSError):
                    pass

            client = threading.Thread(target=finds)
            client.start()
            wait_for(lambda: len(counts) >= 3)
            kill(worker_serving(server, peer.client_port))
            client.join(10)
            assert not client.is_alive()
        assert set(counts) == {len(expected)}
        assert_healthy(server, area, expected)
        assert_checked(area)


def test_worker_killed_during_a_move(tmp_path: Path) -> None:
    """SIGKILL of a worker between the sub-operations of a C-MOVE: the client's connection closes, the
    destination's sub-association ends, the stored data are untouched, and the next C-MOVE delivers
    everything."""
    area = tmp_path / "area"
    destination = StorageSCP(sop_classes=(CTImageStorage,), delay=0.3)
    with destination.running():
        host_table = f"dest = (DEST, localhost, {destination.port})"
        with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}, host_table=host_table),
                    "-v") as server:
            expected = seeded(server, 5)
            move = {**query_request(dimse.C_MOVE_RQ, uids.STUDY_ROOT_MOVE), "MoveDestination": "DEST"}
            study_uid = str(instance(BRANCH, 1, 1).StudyInstanceUID)
            query = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
            with RawPeer(server.port) as peer:
                peer.establish()
                peer.send_message(MOVE_CONTEXT, move, query)
                wait_for(lambda: len(destination.records) >= 1)
                kill(worker_serving(server, peer.client_port))
                assert set(peer.ending()) <= {pdu.P_DATA_TF}   # perhaps a pending response, then the close
            assert len(destination.records) < 5
            assert_healthy(server, area, expected)
            destination.records.clear()
            destination.delay = 0
            with RawPeer(server.port) as peer:
                peer.establish()
                peer.send_message(MOVE_CONTEXT, move, query)
                final, _pending = peer.final_response()
            assert final["Status"] == SUCCESS and final["NumberOfCompletedSuboperations"] == 5
            assert sorted(r.sop_instance_uid for r in destination.records) == sorted(expected)
            assert_checked(area)


# --- the supervisor -----------------------------------------------------------------------------------------------

def test_supervisor_killed_with_workers_running_then_restarted(tmp_path: Path) -> None:
    """SIGKILL of the supervisor while one association is idle and another is half-way through a
    C-STORE: both associations go on to completion, the idle workers exit, a new server starts on the
    same port at once and serves everything stored, and the old workers exit when their associations end."""
    area = tmp_path / "area"
    first = start(tmp_path, area, directory=tmp_path / "first")
    try:
        expected = seeded(first, 2)
        idle_peer, storing_peer = RawPeer(first.port), RawPeer(first.port)
        idle_peer.establish()
        storing_peer.establish()
        dataset = with_payload(3, 50_000)
        rest = partial_store(storing_peer, dataset)
        busy = {worker_serving(first, peer.client_port).pid for peer in (idle_peer, storing_peer)}
        others = {p.pid for p in server_processes(first)[1:]} - busy
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        wait_for(lambda: all(gone(pid) for pid in others))   # idle workers see their channel close
        storing_peer.send_fragments(CT_CONTEXT, rest, command=False)
        assert storing_peer.final_response()[0]["Status"] == SUCCESS
        expected.append(str(dataset.SOPInstanceUID))
        second = start(tmp_path, area, directory=tmp_path / "second", port=first.port)
        try:
            assert idle_peer.echo_status() == SUCCESS
            assert_healthy(second, area, expected)
            for peer in (idle_peer, storing_peer):
                peer.send(pdu.RELEASE_RQ)
                assert peer.ending() == [pdu.A_RELEASE_RP]
                peer.close()
            wait_for(lambda: all(gone(pid) for pid in busy))
            assert_healthy(second, area, expected)
            assert_checked(area)
        finally:
            second.stop()
    finally:
        first.stop()


# --- a full disk --------------------------------------------------------------------------------------------------

def test_disk_full_during_a_store(tmp_path: Path) -> None:
    """A 3 MB instance into an area on a 2 MiB tmpfs: 0xA700, "Cannot write image file" logged, the
    partial file deleted; smaller stores succeed afterwards."""
    area = tmp_path / "area"
    with small_tmpfs(area), start(tmp_path, area) as server:
        expected = seeded(server, 1)
        since = log_size(server)
        assert store(server.port, [with_payload(2, 3 << 20)]) == [REFUSED_OUT_OF_RESOURCES]
        log = server.wait_for_log("Cannot write image file", since)
        assert "No space left on device" in log
        assert_healthy(server, area, expected)
        assert image_files(area) == indexed_files(area)
        expected += [str(instance(BRANCH, 1, 3).SOPInstanceUID)]
        assert store(server.port, [instance(BRANCH, 1, 3)]) == [SUCCESS]
        assert_healthy(server, area, expected)
        assert_checked(area)


def test_association_goes_on_after_a_disk_full_store(tmp_path: Path) -> None:
    """On one association: a C-STORE too large for the disk (0xA700), then a small one, which succeeds
    as it does with DCMTK."""
    area = tmp_path / "area"
    with small_tmpfs(area), start(tmp_path, area) as server:
        expected = seeded(server, 1)
        small = instance(BRANCH, 1, 3)
        assert store(server.port, [with_payload(2, 3 << 20), small]) == [REFUSED_OUT_OF_RESOURCES, SUCCESS]
        assert_healthy(server, area, [*expected, str(small.SOPInstanceUID)])


@pytest.mark.parametrize("spare_pages", [0, 1], ids=["record-not-written", "record-half-written"])
def test_disk_fills_while_the_index_grows(tmp_path: Path, spare_pages: int) -> None:
    """The disk has room for the image file but not (or only partly) for its new index record: the store
    fails with 0xA700 and is logged, its file is deleted, the index stays consistent, and once space is
    freed stores succeed again."""
    area = tmp_path / "area"
    with small_tmpfs(area), start(tmp_path, area) as server:
        datasets = [with_payload(n, 100_000) for n in (1, 2)]
        assert store(server.port, datasets) == [SUCCESS, SUCCESS]
        expected = [str(d.SOPInstanceUID) for d in datasets]
        pages = -(-max((area / name).stat().st_size for name in image_files(area)) // 4096)
        status = os.statvfs(area)
        filler = area / "filler.bin"
        filler.write_bytes(bytes(status.f_bavail * status.f_frsize - (pages + spare_pages) * 4096))
        since = log_size(server)
        assert store(server.port, [with_payload(3, 100_000)]) == [REFUSED_OUT_OF_RESOURCES]
        server.wait_for_log("No space left on device", since)
        assert image_files(area) == indexed_files(area)
        assert index_problems(area) == []
        filler.unlink()
        assert store(server.port, [with_payload(4, 100_000)]) == [SUCCESS]
        expected.append(str(instance(BRANCH, 1, 4).SOPInstanceUID))
        assert_healthy(server, area, expected)
        assert_checked(area)


# --- a damaged index ----------------------------------------------------------------------------------------------

def test_index_truncated_mid_record(tmp_path: Path) -> None:
    """``index.dat`` loses the second half of its last record while the server runs: the server warns
    about it, the intact records are still found, stores go on (the next record takes the cut slot),
    every record names its complete file; ``dcmqridx --check`` reports the cut and the file it no longer
    indexes, ``--repair`` fixes the study descriptors, ``dcmqridx`` registers the file again, and the
    server serves the repaired index."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        expected = seeded(server, 3)
        index_file = area / index.FILE_NAME
        os.truncate(index_file, index_file.stat().st_size - index.RECORD_SIZE // 2)
        since = log_size(server)
        assert echo_ok(server.port)
        cut = expected.pop()   # the cut record is gone
        assert sorted(find_uids(server.port)) == sorted(expected)
        log = server.wait_for_log("index.dat", since)
        assert any(line[:2] in ("W:", "E:") and "index.dat" in line for line in log.splitlines()), log
        new = instance(BRANCH, 1, 4)
        assert store(server.port, [new]) == [SUCCESS]
        expected.append(str(new.SOPInstanceUID))
        assert sorted(find_uids(server.port)) == sorted(expected)
        assert sorted(indexed_uids(area)) == sorted(expected)
        assert not [problem for problem in index_problems(area) if problem.startswith("record")]
        check = dcmqridx_check(area)
        assert check.returncode == 2 and b"study descriptor 0" in check.stdout
        repair = run_qrscp("--repair", str(area), module="qrscp.cli.dcmqridx")
        assert repair.returncode == 0, repair.stderr
        # the cut record's file is complete: --check names it, dcmqridx registers it again
        check = dcmqridx_check(area)
        unindexed = image_files(area) - indexed_files(area)
        assert len(unindexed) == 1 and check.stdout.decode().splitlines()[:-1] == [
            f"{area / next(iter(unindexed))}: in the area but not in the index (an interrupted store or a lost "
            "record; dcmqridx registers it if it is complete)"]
        assert run_qrscp(str(area), str(area / unindexed.pop()), module="qrscp.cli.dcmqridx").returncode == 0
        assert_checked(area)
        expected.append(cut)
        assert_healthy(server, area, expected)


def test_destroyed_index_header_is_never_written_to(tmp_path: Path) -> None:
    """``index.dat`` cut to 5 bytes (its header destroyed) while the server runs: no association stores
    into it (each is refused or aborted, logged with the reference's message) and the file is left as
    it is; once it is removed the area starts afresh and ``dcmqridx`` re-registers the orphaned files."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        seeded(server, 3)
        index_file = area / index.FILE_NAME
        os.truncate(index_file, 5)
        since = log_size(server)
        for number in range(4, 7):
            try:
                statuses = store(server.port, [instance(BRANCH, 1, number)])
            except AssertionError:   # association refused or aborted
                statuses = []
            assert SUCCESS not in statuses
        assert index_file.read_bytes() == b"QRDB0"
        server.wait_for_log("unknown/legacy QRDB database file format", since)
        index_file.unlink()
        files = sorted(str(area / name) for name in image_files(area))
        assert run_qrscp(str(area), *files, module="qrscp.cli.dcmqridx").returncode == 0
        assert_healthy(server, area, [str(instance(BRANCH, 1, n).SOPInstanceUID) for n in (1, 2, 3)])


# --- a read-only storage area -------------------------------------------------------------------------------------

def test_storage_area_made_read_only(tmp_path: Path) -> None:
    """The area becomes read-only while the server runs: a C-STORE is answered 0xA700, the failure is
    logged, nothing is written; made writable again, the area takes stores."""
    area = tmp_path / "area"
    with start(tmp_path, area) as server:
        expected = seeded(server, 2)
        before = {p.name: p.stat().st_mtime_ns for p in area.iterdir()}
        since = log_size(server)
        with read_only(area):
            assert store(server.port, [instance(BRANCH, 1, 3)]) == [REFUSED_OUT_OF_RESOURCES]
            server.wait_for_log("Read-only file system", since)
            assert {p.name: p.stat().st_mtime_ns for p in area.iterdir()} == before
        new = instance(BRANCH, 1, 4)
        assert store(server.port, [new]) == [SUCCESS]
        assert_healthy(server, area, [*expected, str(new.SOPInstanceUID)])
        assert_checked(area)


def test_read_only_area_still_answers_echo_and_find(tmp_path: Path) -> None:
    """On a read-only area, whichever worker serves it, C-ECHO and C-FIND succeed and C-STORE gets 0xA700."""
    area = tmp_path / "area"
    query = identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID="", SeriesInstanceUID="", SOPInstanceUID="")
    with start(tmp_path, area) as server:
        expected = seeded(server, 2)
        with read_only(area):
            peers = [RawPeer(server.port) for _ in range(3)]   # three workers at once: fresh ones among them
            try:
                for peer in peers:
                    peer.establish()
                for peer in peers:
                    assert peer.echo_status() == SUCCESS
                    peer.send_message(FIND_CONTEXT, query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND), query)
                    final, pending = peer.final_response()
                    assert final["Status"] == SUCCESS and len(pending) == len(expected)
                    dataset = instance(BRANCH, 1, 9)
                    peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
                    assert peer.final_response()[0]["Status"] == REFUSED_OUT_OF_RESOURCES
            finally:
                for peer in peers:
                    peer.close()
        assert_healthy(server, area, expected)


# --- the system runs out of descriptors ---------------------------------------------------------------------------

def test_out_of_descriptors_the_supervisor_waits_and_serves_on(tmp_path: Path) -> None:
    """Under a descriptor limit of 48, silent connections take every worker the supervisor can start: forks
    that fail are logged and retried, the supervisor stays up, and once the silent peers' ``-ta`` (2 s) has
    ended their connections the server serves again."""
    area = tmp_path / "area"
    area.mkdir()
    config = simple_config({"QRSCP": f"{area} RW (200, 1024mb) ANY"}, max_associations=40)
    with Server(tmp_path, config, "-ta", "2", interpreter=("prlimit", "--nofile=48:48", sys.executable)) as server:
        silent = []
        try:
            for _ in range(40):
                silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            server.wait_for_log("cannot start a worker", timeout=20)
        finally:
            for connection in silent:
                connection.close()
        assert server.process.poll() is None
        deadline = time.monotonic() + 30
        while not echo_ok(server.port):
            assert time.monotonic() < deadline and server.process.poll() is None, server.log[-2000:]
            time.sleep(0.5)
