"""Whole sessions of real clients, mutated and replayed against one long-running server (issue 16).

The sessions are recorded from DCMTK's tools and pynetdicom (C-ECHO, C-STORE in several transfer syntaxes,
C-FIND at every level with wildcards, ranges, UID lists, a sequence and character sets, C-GET, C-MOVE,
C-CANCEL, release, abort); ``session_fuzzer.Mutator`` changes them at every level; they are replayed
concurrently. After each batch the server must still answer, hold every instance it acknowledged in a
consistent index, have logged no internal error, have no connection left hanging, and stay flat in memory
and open descriptors. A short deterministic run is part of the suite; ``--long`` runs for minutes with
fresh seeds. A mutant that finds something is written to ``<tmp>/finding-*.bin`` with what was done to it,
and becomes a case of :data:`REGRESSIONS`.
"""
from __future__ import annotations

import random
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from conftest import (INTERNAL_ERROR, Server, dcmtk, dcmtk_env, free_port, needs_dcmtk, run_dcmtk, simple_config,
                      wait_for_port)
from corpus import LATIN1, UTF8, make_ct, make_mr, uid, write_instance
from health import echo_ok, index_problems, indexed_uids, server_processes
from pydicom.dataset import Dataset
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)
from session_fuzzer import Mutator, Recorder, Replay, Session, replay, responses, split_pdus, with_command_value

from qrscp.net import dimse, pdu
from qrscp.server.supervisor import MAX_IDLE_WORKERS

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]

BRANCH = 89
#: -ta/-td of the target: how long a silent peer may hold a worker.
TIMEOUT = 2
#: How long a replay waits for the server after sending everything, before closing the connection itself.
PATIENCE = 1.5
CONCURRENCY = 8
BATCH = 40
MUTANTS = 320
LONG_MUTANTS = 5000
#: Growth of the server's memory (all processes, RSS) over a run that counts as a leak.
MEMORY_GROWTH_LIMIT = 64 << 20

#: Mutants that once found something: (name, recorded session, command element, value, DCMTK's status).
#: Each is answered as DCMTK answers it, with no internal error: issue 16's findings (test_broken_peers.py
#: compares their relatives with DCMTK live).
REGRESSIONS: list[tuple[str, str, int, bytes, int]] = [
    ("echo-class-uid-0x80", "echoscu", 0x00000002, b"1.2.840.10008.1.1\x80", 0x0000),
    ("echo-class-uid-0xffff", "echoscu", 0x00000002, b"1.2.840.10008.1.1\xff\xff", 0x0000),
    ("store-instance-uid-0x80", "storescu", 0x00001000, uid(BRANCH, 1, 1, 1).encode() + b"\x80", 0xA900),
]


# --- the target, its move destination, and the recorded sessions --------------------------------------------------

@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory):
    """DCMTK's storescp, receiving and dropping what the target moves to it (AE title RECEIVER)."""
    port = free_port()
    process = subprocess.Popen([dcmtk("storescp"), "--ignore", "-aet", "RECEIVER", str(port)],
                               cwd=tmp_path_factory.mktemp("receiver"), env=dcmtk_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process=process)
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, receiver: int):
    root = tmp_path_factory.mktemp("session-fuzz")
    config = simple_config({"QRSCP": f"{root / 'area'} RW (500, 1024mb) ANY"},
                           host_table=f"receiver = (RECEIVER, 127.0.0.1, {receiver})", max_associations=32)
    with Server(root, config, "-v", "+xd", "-ta", str(TIMEOUT), "-td", str(TIMEOUT)) as server:
        yield server, root / "area"


def _instances(directory: Path, syntax: UID = ExplicitVRLittleEndian) -> list[Path]:
    """Three studies of a CT and an MR series each, written in `syntax`."""
    directory.mkdir(exist_ok=True)
    studies = [(1, "Doe^John", LATIN1), (2, "Müller^Jörg", LATIN1), (3, "山田^太郎", UTF8)]
    files = []
    for study, name, charset in studies:
        for number in (1, 2):
            make = make_ct if number == 1 else make_mr
            files.append(write_instance(make(PatientName=name, SpecificCharacterSet=charset, PatientID=f"P{study}",
                                             StudyInstanceUID=uid(BRANCH, study),
                                             SeriesInstanceUID=uid(BRANCH, study, number),
                                             SOPInstanceUID=uid(BRANCH, study, number, 1),
                                             StudyDate=f"2020010{study}", transfer_syntax=syntax), directory / f"{study}-{number}.dcm"))
    return files


def _pynetdicom_sessions(port: int, directory: Path) -> None:
    """Stores in other transfer syntaxes, finds of many kinds, a cancelled find, a C-GET, an abort."""
    ae = AE(ae_title="PYNETSCU")
    for syntax in (ExplicitVRBigEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ae.requested_contexts = []
        ae.add_requested_context(CTImageStorage, syntax)
        ae.add_requested_context(MRImageStorage, syntax)
        association = ae.associate("127.0.0.1", port, ae_title="QRSCP")
        for path in _instances(directory / syntax, syntax)[:2]:
            association.send_c_store(path)
        association.release()
    ae.requested_contexts = []
    for model in (StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind):
        ae.add_requested_context(model)
    queries = [dict(QueryRetrieveLevel="STUDY", StudyDate="20200101-20200102", StudyInstanceUID="",
                    PatientName="*"),
               dict(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{uid(BRANCH, 1)}\\{uid(BRANCH, 2)}",
                    ReferencedStudySequence=[]),
               dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="Müller*",
                    StudyInstanceUID=""),
               dict(QueryRetrieveLevel="STUDY", SpecificCharacterSet="ISO_IR 100", PatientName="M?ller*",
                    StudyInstanceUID=""),
               dict(QueryRetrieveLevel="IMAGE", StudyInstanceUID=uid(BRANCH, 1), SeriesInstanceUID="",
                    SOPInstanceUID="", InstanceNumber="")]
    association = ae.associate("127.0.0.1", port, ae_title="QRSCP")
    for keys in queries:
        identifier = Dataset()
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        list(association.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = "*"
    responses = association.send_c_find(identifier, PatientRootQueryRetrieveInformationModelFind)
    next(responses)
    association.send_c_cancel(1, 1)
    list(responses)
    association.abort()
    ae.requested_contexts = []
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    association = ae.associate("127.0.0.1", port, ae_title="QRSCP", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                               evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid(BRANCH, 1)
    list(association.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    association.release()


@pytest.fixture(scope="module")
def recorded(target, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Session], set[str]]:
    """The sessions of real clients with the target, and the instances it stored meanwhile."""
    server, area = target
    files = _instances(tmp_path_factory.mktemp("instances"))
    recorder = Recorder(server.port)
    port = str(recorder.port)
    try:
        commands = [
            ("echoscu", ["-aec", "QRSCP", "127.0.0.1", port]),
            ("storescu", ["-aec", "QRSCP", "127.0.0.1", port, *map(str, files)]),
            ("storescu", ["-aec", "QRSCP", "-xi", "127.0.0.1", port, str(files[0])]),
            ("storescu", ["-aec", "QRSCP", "-xd", "127.0.0.1", port, str(files[2])]),
            ("findscu", ["-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=D*",
                         "-k", "StudyInstanceUID", "127.0.0.1", port]),
            ("findscu", ["-P", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID",
                         "-k", "PatientName", "127.0.0.1", port]),
            ("findscu", ["-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=SERIES", "-k",
                         f"StudyInstanceUID={uid(BRANCH, 2)}", "-k", "SeriesInstanceUID", "-k", "Modality",
                         "127.0.0.1", port]),
            ("getscu", ["-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY", "-k",
                        f"StudyInstanceUID={uid(BRANCH, 3)}", "-od", str(tmp_path_factory.mktemp("got")),
                        "127.0.0.1", port]),
            ("movescu", ["-S", "-aec", "QRSCP", "-aem", "RECEIVER", "-k", "QueryRetrieveLevel=STUDY", "-k",
                         f"StudyInstanceUID={uid(BRANCH, 2)}", "127.0.0.1", port]),
        ]
        sessions = []
        for tool, arguments in commands:
            result = run_dcmtk(tool, *arguments)
            assert result.returncode == 0, result.stderr
            sessions += recorder.sessions(tool)
        _pynetdicom_sessions(recorder.port, tmp_path_factory.mktemp("syntaxes"))
        sessions += recorder.sessions("pynetdicom")
    finally:
        recorder.close()
    stored = set(indexed_uids(area))
    assert len(stored) == len(files), stored
    assert len(sessions) == 14, " ".join(session.name for session in sessions)
    return sessions, stored


# --- the checks ---------------------------------------------------------------------------------------------------

def _acknowledged(answer: bytes) -> set[str]:
    """The SOP Instance UIDs of the C-STORE requests the server answered with Success in ``answer``."""
    return {response.get("AffectedSOPInstanceUID", "") for response in responses(answer)
            if response["CommandField"] == dimse.C_STORE_RSP and response.get("Status") == 0}


def _connections_left(server: Server) -> int:
    """Connections to the server's port that its processes still hold."""
    count = 0
    for process in server_processes(server):
        try:
            count += sum(1 for c in process.net_connections(kind="tcp") if c.laddr and c.laddr.port == server.port
                         and c.status == psutil.CONN_ESTABLISHED)
        except psutil.NoSuchProcess:
            pass
    return count


def _footprint(server: Server) -> tuple[int, int]:
    """(resident memory of all the server's processes, descriptors the supervisor holds), once the pool has
    settled to its waiting workers (the supervisor lets extra ones go within a second or two)."""
    deadline = time.monotonic() + 10
    while len(server_processes(server)) > 1 + MAX_IDLE_WORKERS and time.monotonic() < deadline:
        time.sleep(0.2)
    processes = server_processes(server)
    memory = 0
    for process in processes:
        try:
            memory += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return memory, processes[0].num_fds() if processes else 0


def _assert_healthy(server: Server, area: Path, acknowledged: set[str], started_log: int, findings: Path,
                    batch: list[tuple[Session, list[str]]]) -> None:
    """The checks after a batch; on failure, the batch's mutants are written to ``findings``."""
    try:
        assert server.process.poll() is None, "the server died"
        assert echo_ok(server.port, "QRSCP"), "the server stopped answering"
        deadline = time.monotonic() + TIMEOUT + 10
        while _connections_left(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _connections_left(server) == 0, "connections left hanging after their peers closed"
        assert INTERNAL_ERROR not in server.log[started_log:], "an internal error was logged"
        assert index_problems(area) == []
        missing = acknowledged - set(indexed_uids(area))
        assert not missing, f"acknowledged instances lost: {sorted(missing)[:5]}"
    except AssertionError:
        for number, (mutant, done) in enumerate(batch):
            (findings / f"finding-{number}.bin").write_bytes(mutant.encode())
            (findings / f"finding-{number}.txt").write_text(f"{mutant.name}: {'; '.join(done)}\n")
        raise


def _run(target, recorded, tmp_path: Path, mutants: int, seed: int) -> dict[str, int]:
    server, area = target
    sessions, acknowledged = recorded
    acknowledged = set(acknowledged)
    rng = random.Random(seed)
    mutator = Mutator(rng)
    started_log = len(server.log)
    endings: dict[str, int] = {}
    baseline = None
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for first in range(0, mutants, BATCH):
            batch = [mutator.mutate(rng.choice(sessions), rng.choice((1, 1, 2, 3)))
                     for _ in range(min(BATCH, mutants - first))]
            replays: list[Replay] = list(pool.map(lambda item: replay(server.port, item[0], PATIENCE), batch))
            for result in replays:
                endings[result.ending] = endings.get(result.ending, 0) + 1
                acknowledged |= _acknowledged(result.answer)
            _assert_healthy(server, area, acknowledged, started_log, tmp_path, batch)
            if baseline is None:
                baseline = _footprint(server)
    memory, descriptors = _footprint(server)
    assert baseline is not None
    assert memory - baseline[0] < MEMORY_GROWTH_LIMIT, f"memory grew from {baseline[0] >> 20} to {memory >> 20} MiB"
    assert descriptors <= baseline[1] + 4, f"the supervisor's descriptors grew from {baseline[1]} to {descriptors}"
    return endings


def test_mutated_sessions_end_cleanly(target, recorded, tmp_path: Path, long_run: bool):
    mutants = LONG_MUTANTS if long_run else MUTANTS
    seed = random.randrange(1 << 32) if long_run else 16
    endings = _run(target, recorded, tmp_path, mutants, seed)
    print(f"session fuzzer: {mutants} mutants, seed {seed}: {endings}")
    assert sum(endings.values()) == mutants
    assert endings.get("closed", 0) + endings.get("reset", 0) > 0, "no mutant provoked the server to end anything"


@pytest.mark.parametrize("name, recorded_as, tag, value, status", REGRESSIONS, ids=[case[0] for case in REGRESSIONS])
def test_regressions(target, recorded, name: str, recorded_as: str, tag: int, value: bytes, status: int):
    """A mutant that once found something gets DCMTK's answer, and the server goes on."""
    server, area = target
    sessions, _ = recorded
    session = next(session for session in sessions if session.name.startswith(recorded_as))
    started = len(server.log)
    result = replay(server.port, with_command_value(session, tag, value), PATIENCE)
    assert [response.get("Status") for response in responses(result.answer)][:1] == [status], name
    assert echo_ok(server.port, "QRSCP")
    assert INTERNAL_ERROR not in server.log[started:]
    assert index_problems(area) == []


def test_the_recorded_sessions_replay_as_they_were(target, recorded):
    """Unmutated, every recorded session plays again to its end: the recording is faithful."""
    server, _area = target
    sessions, _ = recorded
    for session in sessions:
        result = replay(server.port, session, PATIENCE)
        assert result.ending in ("closed", "silent"), (session.name, result)
        assert result.answer[:1] in (bytes([pdu.A_ASSOCIATE_AC]), b""), session.name
