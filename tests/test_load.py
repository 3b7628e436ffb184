"""Load on a real server (robustness, item 4): 16 concurrent storing associations, queries and moves.

Each round, 16 client streams store 2,000 instances with DCMTK's ``storescu``: one association per batch
of 25 instances, and each batch a new series of one of 80 studies. Meanwhile a pynetdicom client queries
back to back (the instances of a batch's series, and every fifth time the studies of the whole archive)
and another moves every fourth batch's series to a DCMTK ``storescp`` once it is stored. Then:

* every instance is stored exactly once (one index record, one file; ``dcmqridx --check`` passes);
* every query was consistent with the index at its moment: it returned everything whose store had been
  confirmed before it started and nothing that had not been sent before it ended, nothing twice;
* every move delivered the whole series;
* no worker is left behind, the supervisor's file descriptors and memory are flat, the workers' memory
  bounded; the server answers a C-ECHO and a C-FIND of everything.

Default mode runs one round (seconds); ``pytest --long`` repeats rounds for :data:`LONG_SOAK` seconds and
checks that descriptors and memory stay flat from round to round.
"""
from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from conftest import (
    Server,
    dcmtk,
    dcmtk_env,
    free_port,
    needs_dcmtk,
    run_dcmtk,
    simple_config,
    wait_for_port,
)
from corpus import uid, write_instance
from health import echo_ok, find_uids, index_problems, indexed_uids, server_processes
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from rawpeer import instance
from test_faults import assert_checked, image_files

from qrscp.dicom import uids
from qrscp.server.supervisor import MAX_IDLE_WORKERS

pytestmark = needs_dcmtk

BRANCH = 84
AE_TITLE = "QRSCP"
STREAMS = 16
STUDIES = 80
BATCH = 25
INSTANCES = STUDIES * BATCH   # per round
#: A STUDY-level query of the whole archive after every so many IMAGE-level queries of one batch.
STUDY_QUERY_EVERY = 5
#: Every so many batches one is moved to DEST after it is stored.
MOVE_EVERY = 4
MOVES_PER_ROUND = STUDIES // MOVE_EVERY
#: Seconds the long mode keeps running rounds.
LONG_SOAK = 180
#: Growth of the supervisor's resident memory over the run that still counts as flat.
MEMORY_SLACK = 8 << 20
#: Bound on a worker's memory other than its map of the index (which grows with the archive).
WORKER_MEMORY = 200 << 20


# --- instances, fast: one template, fixed-width UIDs patched in its bytes -----------------------------------------

def study_uid(study: int) -> str:
    return uid(BRANCH, 10000 + study)


def series_uid(study: int, round_number: int) -> str:
    return uid(BRANCH, 10000 + study, 100 + round_number)


def sop_instance_uid(study: int, round_number: int, number: int) -> str:
    return uid(BRANCH, 10000 + study, 100 + round_number, 100000 + number)


class Instances:
    """Files of CT instances written from one template by replacing its UIDs with others of the same
    length (study < 90000, round < 900, number < 900000), so that no element length changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        template = directory / "template.dcm"
        with pydicom_config.disable_value_validation():
            write_instance(instance(BRANCH, 0, 0, StudyInstanceUID=study_uid(0), SeriesInstanceUID=series_uid(0, 0),
                                    SOPInstanceUID=sop_instance_uid(0, 0, 0)), template)
        self.template = template.read_bytes().decode("latin-1")
        template.unlink()
        self.pattern = re.compile("|".join(re.escape(u) for u in (sop_instance_uid(0, 0, 0), series_uid(0, 0),
                                                                   study_uid(0))))

    def write(self, study: int, round_number: int, numbers: range) -> list[Path]:
        """The files of instances ``numbers`` of the series of ``study`` stored in round ``round_number``."""
        paths = []
        for number in numbers:
            replacements = {sop_instance_uid(0, 0, 0): sop_instance_uid(study, round_number, number),
                            series_uid(0, 0): series_uid(study, round_number), study_uid(0): study_uid(study)}
            path = self.directory / f"{study}-{round_number}-{number}.dcm"
            path.write_bytes(self.pattern.sub(lambda m: replacements[m.group(0)], self.template).encode("latin-1"))
            paths.append(path)
        return paths


# --- the load -----------------------------------------------------------------------------------------------------

@dataclass
class Batch:
    """One storescu association: a new series of one study, when it ran and how many stores succeeded."""

    study: int
    round_number: int
    uids: list[str]
    started: float = 0.0
    ended: float = 0.0
    successes: int = 0

    @property
    def series_uid(self) -> str:
        return series_uid(self.study, self.round_number)


@dataclass
class Query:
    """One C-FIND during the load: the instances of ``batch``'s series (IMAGE level) or, with ``batch``
    None, the Study Instance UIDs of the whole archive (STUDY level)."""

    started: float
    ended: float
    batch: Batch | None
    found: list[str]


@dataclass
class Load:
    """What the clients did during one round."""

    batches: list[Batch] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    moves: list[tuple[int, int]] = field(default_factory=list)   # (status, completed sub-operations)
    errors: list[str] = field(default_factory=list)


def run_batch(port: int, batch: Batch, files: list[Path]) -> None:
    batch.started = time.monotonic()
    result = run_dcmtk("storescu", "-v", "-nh", "-aet", "LOADSCU", "-aec", AE_TITLE, "127.0.0.1", str(port),
                       *map(str, files), timeout=120)
    batch.ended = time.monotonic()
    batch.successes = len(re.findall(rb"Received Store Response \(Success\)", result.stdout + result.stderr))


def _client(calling: str, *contexts: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(context, ExplicitVRLittleEndian)
    return ae


def find_studies(port: int) -> list[str]:
    """The Study Instance UIDs a STUDY-level Study Root C-FIND returns."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    association = _client("LOADFIND", uids.STUDY_ROOT_FIND).associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert association.is_established, "find association not established"
    try:
        found, final = [], None
        for status, answer in association.send_c_find(query, uids.STUDY_ROOT_FIND):
            if status.Status == 0xFF00:
                found.append(str(answer.StudyInstanceUID))
            else:
                final = int(status.Status)
        assert final == 0, f"C-FIND ended with {final}"
        return found
    finally:
        association.release()


def query_loop(port: int, load: Load, stop: threading.Event) -> None:
    """Back to back: the instances of a random batch that is being (or has been) stored, and every
    :data:`STUDY_QUERY_EVERY` queries the studies of the whole archive."""
    chooser = random.Random(BRANCH)
    number = 0
    while not stop.is_set():
        started_batches = [b for b in load.batches if b.started]
        if not started_batches:
            time.sleep(0.01)
            continue
        number += 1
        batch = None if number % STUDY_QUERY_EVERY == 0 else chooser.choice(started_batches)
        started = time.monotonic()
        try:
            found = find_studies(port) if batch is None else \
                find_uids(port, calling="LOADFIND", StudyInstanceUID=study_uid(batch.study),
                          SeriesInstanceUID=batch.series_uid)
        except AssertionError as error:
            load.errors.append(f"query: {error}")
            continue
        load.queries.append(Query(started, time.monotonic(), batch, found))


def move_loop(port: int, load: Load, stop: threading.Event) -> None:
    """C-MOVE the series of every :data:`MOVE_EVERY`-th batch to DEST once the batch is stored."""
    ae = _client("LOADMOVE", uids.STUDY_ROOT_MOVE)
    moved: set[int] = set()
    while not stop.is_set():
        batch = next((b for b in load.batches if b.ended and b.study % MOVE_EVERY == 0 and b.study not in moved),
                     None)
        if batch is None:
            time.sleep(0.02)
            continue
        moved.add(batch.study)
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid(batch.study)
        query.SeriesInstanceUID = batch.series_uid
        association = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        if not association.is_established:
            load.errors.append("move association not established")
            continue
        try:
            final = None
            for status, _ in association.send_c_move(query, "DEST", uids.STUDY_ROOT_MOVE):
                final = status
            if final is None or "Status" not in final:
                load.errors.append("C-MOVE without a final response")
            else:
                load.moves.append((int(final.Status), int(final.get("NumberOfCompletedSuboperations", 0))))
        finally:
            association.release()


def run_round(port: int, instances: Instances, round_number: int) -> Load:
    """Store INSTANCES new instances (a new series of BATCH in each of the STUDIES studies) in STREAMS
    concurrent streams while queries and moves run."""
    load = Load()
    plan: list[list[tuple[Batch, list[Path]]]] = [[] for _ in range(STREAMS)]
    for study in range(STUDIES):
        uids_ = [sop_instance_uid(study, round_number, n) for n in range(BATCH)]
        plan[study % STREAMS].append((Batch(study, round_number, uids_),
                                      instances.write(study, round_number, range(BATCH))))
    stop = threading.Event()
    helpers = [threading.Thread(target=query_loop, args=(port, load, stop)),
               threading.Thread(target=move_loop, args=(port, load, stop))]
    for helper in helpers:
        helper.start()

    def stream(batches: list[tuple[Batch, list[Path]]]) -> None:
        for batch, files in batches:
            load.batches.append(batch)
            run_batch(port, batch, files)
            for path in files:
                path.unlink()

    try:
        with ThreadPoolExecutor(STREAMS) as pool:
            list(pool.map(stream, plan))
        deadline = time.monotonic() + 30
        while len(load.moves) < MOVES_PER_ROUND and time.monotonic() < deadline and not load.errors:
            time.sleep(0.05)
    finally:
        stop.set()
        for helper in helpers:
            helper.join(60)
    return load


def assert_consistent_queries(load: Load, earlier_rounds: bool) -> None:
    """Each query found everything confirmed stored before it started and nothing not yet sent when it
    ended (with ``earlier_rounds``, every study exists from the start); nothing twice."""
    assert load.queries, "no query ran during the load"
    assert any(query.batch is None for query in load.queries), "no whole-archive query ran during the load"
    every_study = {study_uid(study) for study in range(STUDIES)}
    for query in load.queries:
        found = set(query.found)
        assert len(query.found) == len(found), "an entity answered twice"
        if query.batch is None:
            confirmed = {study_uid(b.study) for b in load.batches if b.ended and b.ended < query.started}
            possible = {study_uid(b.study) for b in load.batches if b.started and b.started < query.ended}
            if earlier_rounds:
                confirmed, possible = every_study, every_study
        else:
            batch = query.batch
            confirmed = set(batch.uids) if batch.ended and batch.ended < query.started else set()
            possible = set(batch.uids)
        assert confirmed <= found, f"{len(confirmed - found)} confirmed entities missing from a query"
        assert found <= possible, f"{len(found - possible)} entities found that were not sent"


@dataclass
class Gauge:
    """The supervisor's file descriptors (less one channel per worker) and resident memory."""

    fds: int
    rss: int

    @staticmethod
    def of(server: Server) -> "Gauge":
        supervisor = psutil.Process(server.process.pid)
        return Gauge(supervisor.num_fds() - len(supervisor.children()), supervisor.memory_info().rss)


def anonymous_memory(process: psutil.Process) -> int:
    """Resident memory that is not a mapped file (workers map the whole index, which grows)."""
    memory = process.memory_info()
    return memory.rss - memory.shared


def settled(server: Server, timeout: float = 10) -> list[psutil.Process]:
    """Wait until no more than the idle workers are left; the workers."""
    deadline = time.monotonic() + timeout
    while True:
        workers = server_processes(server)[1:]
        if len(workers) <= MAX_IDLE_WORKERS or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[int]:
    """DCMTK's storescp (AE title DEST, receiving and discarding) on a free port."""
    port = free_port()
    with open(tmp_path / "storescp.log", "wb") as log:
        process = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "--ignore", str(port)], env=dcmtk_env(),
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process=process)
            yield port
        finally:
            process.terminate()
            process.wait(10)


def test_concurrent_stores_queries_and_moves(tmp_path: Path, destination: int, long_run: bool) -> None:
    """16 concurrent storing associations, 2,000 instances per round, queries and moves meanwhile: every
    instance stored exactly once, every query consistent, every move complete, no worker left behind,
    the supervisor's descriptors and memory flat, the workers' memory bounded."""
    area = tmp_path / "area"
    instances = Instances(tmp_path / "in")
    config = simple_config({AE_TITLE: f"{area} RW (500, 1024mb) ANY"}, max_associations=40,
                           host_table=f"dest = (DEST, localhost, {destination})")
    with Server(tmp_path, config) as server:
        find_uids(server.port)   # warm up: a worker has opened the area
        settled(server)
        before = Gauge.of(server)
        gauges: list[Gauge] = []
        stored: list[str] = []
        started = time.monotonic()
        rounds = 0
        while rounds == 0 or (long_run and time.monotonic() - started < LONG_SOAK):
            load = run_round(server.port, instances, rounds)
            assert load.errors == []
            assert all(b.successes == len(b.uids) for b in load.batches), \
                [(b.study, b.successes) for b in load.batches if b.successes != len(b.uids)]
            assert_consistent_queries(load, earlier_rounds=rounds > 0)
            assert load.moves == [(0, BATCH)] * MOVES_PER_ROUND
            stored += [u for b in load.batches for u in b.uids]
            rounds += 1
            settled(server)
            gauges.append(Gauge.of(server))
        elapsed = time.monotonic() - started
        assert sorted(indexed_uids(area)) == sorted(stored)       # exactly once each
        assert len(image_files(area)) == len(stored)
        assert index_problems(area) == []
        assert echo_ok(server.port)
        assert sorted(find_uids(server.port)) == sorted(stored)
        workers = settled(server)
        assert len(workers) <= MAX_IDLE_WORKERS, f"{len(workers)} workers left"
        assert all(w.status() != psutil.STATUS_ZOMBIE for w in workers)
        after = Gauge.of(server)
        assert after.fds == before.fds, (before, after)
        assert after.rss - before.rss < MEMORY_SLACK, (before, after)
        assert gauges[-1].rss - gauges[0].rss < MEMORY_SLACK, gauges
        assert all(anonymous_memory(w) < WORKER_MEMORY for w in workers)
    assert_checked(area)
    print(f"\nload: {len(stored)} instances in {rounds} round(s) of {STREAMS} concurrent streams, "
          f"{elapsed:.1f} s, {len(stored) / elapsed:.0f} instances/s; {len(load.queries)} queries and "
          f"{len(load.moves)} moves in the last round")
