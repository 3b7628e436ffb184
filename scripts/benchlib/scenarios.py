"""The measurements: each scenario drives one server once (one repetition) and records its rows.

A failing measurement never stops the benchmark: its rows get an error for that server and repetition.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from benchlib import dicomclient
from benchlib.clients import (
    ClientError,
    Query,
    association_rate,
    find_latency,
    getscu,
    move,
    movescu,
    sop_instance_uids,
    store_all,
    storescu,
)
from benchlib.corpus import FIND_CT, LARGE_MULTIFRAME, SMALL_CT, Corpus, Instance
from benchlib.prefill import build_index, build_orthanc_databases, study_count
from benchlib.report import Row, Target
from benchlib import transcode
from benchlib.tls import Credentials, have_openssl, make_credentials
from benchlib.servers import (
    CLIENT_AE,
    Area,
    Endpoint,
    Memory,
    OrthancServer,
    PeakMemory,
    Receiver,
    Server,
    serving_process_memory,
)

@dataclass(frozen=True)
class Settings:
    """Counts and durations of one benchmark mode."""

    repetitions: int
    echo_seconds: float
    store_count: int
    parallel_count: int
    large_count: int
    into_count: int
    retrieve_count: int
    find_sizes: tuple[int, int, int]
    find_repeats: int
    timeout: float
    parallel: int = 4
    transcode_count: int = 100
    #: instances per study of the prefilled areas
    study_size: int = 200
    #: C-STOREs into the largest area and into the empty area beside it: a worker's first store into an
    #: area builds its record table (about 40 ms at 100,000 instances, once), which these amortize as an
    #: archive's ingest does; the rate after it is the empty area's
    big_count: int = 2000
    #: DCMTK's C-STOREs into the largest area (each of them reads the whole index, about 0.5 s)
    dcmtk_big_count: int = 20

    @property
    def into_size(self) -> int:
        """The prefilled area of the 'store into a full area' row: the middle C-FIND size."""
        return self.find_sizes[1]

    @property
    def big_size(self) -> int:
        """The largest area: the format's limit of 500 studies (less one for the stores into it)."""
        return self.find_sizes[-1]


MODES = {
    "full": Settings(repetitions=3, echo_seconds=3.0, store_count=1000, parallel_count=1000, large_count=4,
                     into_count=1000, retrieve_count=500, find_sizes=(1000, 10000, 99800), find_repeats=20,
                     timeout=600),
    "quick": Settings(repetitions=1, echo_seconds=1.5, store_count=500, parallel_count=1000, large_count=2,
                      into_count=300, retrieve_count=500, find_sizes=(1000, 10000, 99800), find_repeats=5,
                      timeout=300, big_count=1000, dcmtk_big_count=5),
    "smoke": Settings(repetitions=1, echo_seconds=0.3, store_count=20, parallel_count=20, large_count=1,
                      into_count=20, retrieve_count=20, find_sizes=(20, 40, 60), find_repeats=2,
                      timeout=120, transcode_count=3, study_size=20, big_count=20, dcmtk_big_count=3),
}

QUERY_KINDS = ("PATIENT by PatientID", "STUDY by StudyDate range", "STUDY by PatientName wildcard",
               "SERIES within one study", "IMAGE by SOPInstanceUID")
#: The query of the first C-FIND after start-up.
FIRST_QUERY = QUERY_KINDS[-1]
MIB = 1 << 20
#: The areas of a server's TLS twin besides those of each repetition.
TLS_ECHO, TLS_RETRIEVE = "TECHO", "TQR"


class NotApplicable(Exception):
    """The measurement does not apply to this server (its rows show "-" and a note why)."""


def make_rows(settings: Settings) -> dict[str, Row]:
    """Every row of the table, in print order, with qrscp's targets."""
    rows = [
        Row("assoc", "associations/s (one C-ECHO each)", target=Target(0.5)),
        Row("store1", f"C-STORE small, 1 association, inst/s ({settings.store_count})", target=Target(0.8)),
        Row("store4", f"C-STORE small, {settings.parallel} parallel associations, inst/s "
                      f"({settings.parallel_count})", target=Target(1.0, aim=3.0)),
        Row("into", f"C-STORE small into a {settings.into_size:,}-instance area, inst/s "
                    f"({settings.into_count})", target=Target(1.0, aim=3.0)),
        Row("intoempty", f"C-STORE small into an empty area, beside the next row, inst/s ({settings.big_count})"),
        Row("intobig", f"C-STORE small into a {settings.big_size:,}-instance area, inst/s ({settings.big_count}; "
                       f"DCMTK {settings.dcmtk_big_count})",
            target=(Target(0.8, baseline="intoempty", baseline_label="the empty area"), Target(1.0, peer="orthanc"))),
        Row("large", f"C-STORE 25 MB multi-frame, MB/s ({settings.large_count})", target=Target(0.8),
            decimals=1),
        Row("move", f"C-MOVE of a {settings.retrieve_count}-instance study, inst/s", target=Target(0.5)),
        Row("get", f"C-GET of a {settings.retrieve_count}-instance study, inst/s", target=Target(0.5)),
        Row("tls:assoc", "over TLS: associations/s (one C-ECHO each)", target=Target(1.0, peer="orthanc")),
        Row("tls:store1", f"over TLS: C-STORE small, 1 association, inst/s ({settings.store_count})",
            target=Target(1.0, peer="orthanc")),
        Row("tls:large", f"over TLS: C-STORE 25 MB multi-frame, MB/s ({settings.large_count})", decimals=1,
            target=(Target(0.7, baseline="large", baseline_label="plain"), Target(1.0, peer="orthanc"))),
        Row("tls:move", f"over TLS: C-MOVE of a {settings.retrieve_count}-instance study (sub-associations "
                        f"over TLS), inst/s", target=Target(1.0, peer="orthanc")),
    ]
    rows += [Row(key, label, decimals=1, target=Target(1.0, peer="orthanc") if not key.endswith(":mb") else None)
             for key, label in transcode.row_labels(settings.transcode_count)]
    for size in settings.find_sizes:
        for kind in QUERY_KINDS:
            targets = [Target(1.0), Target(1.0, peer="orthanc")]
            if size == settings.big_size:
                targets.append(Target(2.0, baseline=f"find:{kind}:{settings.into_size}",
                                      baseline_label=f"qrscp at {settings.into_size:,}"))
            rows.append(Row(f"find:{kind}:{size}", f"C-FIND {kind} at {size:,} instances, ms",
                            higher_is_better=False, decimals=2, target=tuple(targets)))
    big = f"{settings.big_size:,}"
    rows += [
        Row("startup", f"start-up with a {big}-instance area until its first C-ECHO is answered, s",
            higher_is_better=False, decimals=2, target=Target(limit=1.0)),
        Row("firstfind", f"first C-FIND after start-up ({FIRST_QUERY} at {big}), ms", higher_is_better=False,
            decimals=1),
        Row("findmemory", "then each C-FIND once: PSS of the process that answered them, MiB",
            higher_is_better=False, decimals=1),
        Row("pss", "peak PSS of the server's processes while storing in parallel, MiB",
            higher_is_better=False, target=Target(limit=80), decimals=1),
        Row("lost", "instances answered Success but not retrievable afterwards", higher_is_better=False,
            target=Target(limit=0)),
    ]
    return {row.key: row for row in rows}


def make_machine_rows() -> dict[str, Row]:
    return {row.key: row for row in (
        Row("loopback", "loopback TCP throughput (the 25 MB objects' bytes), MB/s", decimals=0),
        Row("write_large", "file write, no fsync (the 25 MB objects' bytes), MB/s", decimals=0),
        Row("write_small", "file creation + write, no fsync (the small objects' bytes), files/s",
            decimals=0),
    )}


class Bench:
    """One benchmark run: corpus, servers, receiver and results."""

    def __init__(self, settings: Settings, servers: list[Server], receiver: Receiver, work: Path,
                 scratch: Path, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.servers = servers
        self.receiver = receiver
        self.work = work
        self.scratch = scratch
        self.log = log
        self.rows = make_rows(settings)
        self.machine_rows = make_machine_rows()
        self.corpus = Corpus(work / "corpus")
        self.broken: dict[str, str] = {}
        self.receiver_problem: str | None = None
        self.retrieve_problems: dict[str, str] = {}
        self.index_seeds: dict[int, Path] = {}
        self.index_problem: str | None = None
        self.orthanc_seeds: dict[int, Path] = {}
        #: the TLS rows: credentials, their C-MOVE receiver, and each server's twin that serves TLS only
        self.tls: Credentials | None = None
        self.tls_receiver = Receiver(scratch / "receiver-tls")
        self.tls_problem: str | None = None
        self.tls_servers: dict[str, Server] = {}
        self.tls_broken: dict[str, str] = {}

    # --- set-up -------------------------------------------------------------------------------------

    def generate(self) -> None:
        """Every instance the run sends or queries (all servers get the same ones)."""
        s, corpus, small = self.settings, self.corpus, self.work / "corpus"
        started = time.perf_counter()
        reps = range(s.repetitions)
        self.store1 = [corpus.write_study(SMALL_CT, s.store_count, small / "store1") for _ in reps]
        self.store4 = [corpus.write_study(SMALL_CT, s.parallel_count, small / "store4") for _ in reps]
        self.large = [corpus.write_study(LARGE_MULTIFRAME, s.large_count, small / "large") for _ in reps]
        self.into = [corpus.write_study(SMALL_CT, s.into_count, small / "into") for _ in reps]
        self.into_empty = [corpus.write_study(SMALL_CT, s.big_count, small / "intoempty") for _ in reps]
        self.into_big = [corpus.write_study(SMALL_CT, s.big_count, small / "intobig") for _ in reps]
        self.retrieve = corpus.write_study(SMALL_CT, s.retrieve_count, small / "retrieve")
        self.transcode_studies = transcode.write_studies(small / "transcode", s.transcode_count)
        for size in s.find_sizes:
            study_count(size, s.study_size)   # raises for a size that makes no studies
        studies = study_count(s.big_size, s.study_size)
        self.find_studies = corpus.write_studies(FIND_CT, studies, s.study_size, small / "find")
        count = sum(map(len, self.store1 + self.store4 + self.large + self.into + self.into_empty + self.into_big)) + \
            len(self.retrieve) + studies * s.study_size
        self.log(f"corpus: {count:,} instances in {time.perf_counter() - started:.1f} s")

    def prefill(self) -> None:
        """The prefilled areas: index files for qrscp/dcmtk, databases for Orthanc."""
        s = self.settings
        if any(not isinstance(server, OrthancServer) for server in self.servers):
            for size in s.find_sizes:
                started = time.perf_counter()
                target = self.work / "seeds" / f"index-{size}.dat"
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    build_index(self.corpus, FIND_CT, self.find_studies[:study_count(size, s.study_size)],
                                self.work / "seeds", target)
                except Exception as error:  # noqa: BLE001 - recorded against the rows that need it
                    self.index_problem = f"no prefilled area: {error}"
                    break
                self.index_seeds[size] = target
                self.log(f"index of {size:,} instances: {time.perf_counter() - started:.1f} s")
        for server in self.servers:
            if isinstance(server, OrthancServer) and server.name not in self.broken:
                started = time.perf_counter()
                try:
                    self.orthanc_seeds = build_orthanc_databases(server, list(s.find_sizes), self.find_studies,
                                                                 self.work / "seeds", s.timeout)
                except Exception as error:  # noqa: BLE001 - recorded against every Orthanc cell
                    self.broken[server.name] = f"prefill failed: {error}"
                self.log(f"Orthanc prefill of {max(s.find_sizes):,} instances: "
                         f"{time.perf_counter() - started:.1f} s")

    def _area(self, server: Server, title: str, size: int | None = None, read_only: bool = False) -> Area:
        if size is None:
            return Area(title)
        if isinstance(server, OrthancServer):
            return Area(title, orthanc_db=self.orthanc_seeds.get(size), read_only=read_only)
        return Area(title, index=self.index_seeds.get(size), read_only=read_only)

    def start_receiver(self) -> None:
        """The C-MOVE destinations, in the clear and over TLS (before any server: Orthanc's prefill already
        needs the first)."""
        try:
            self.receiver.start()
        except Exception as error:  # noqa: BLE001 - only the C-MOVE row needs it
            self.receiver_problem = f"the C-MOVE receiver (storescp) did not start: {error}"
        if not have_openssl():
            self.tls_problem = "no TLS set-up: the openssl command is not installed"
            return
        try:
            self.tls = make_credentials(self.work / "tls")
            self.tls_receiver.tls = self.tls
            self.tls_receiver.start()
        except Exception as error:  # noqa: BLE001 - only the TLS rows need them
            self.tls_problem = f"no TLS set-up: {error}"

    def start_servers(self) -> None:
        """Start every server with all its areas; store the study of the C-MOVE/C-GET rows."""
        s = self.settings
        for server in self.servers:
            server.add_area(self._area(server, "ECHO"))
            server.add_area(self._area(server, "QR"))
            server.add_area(self._area(server, transcode.AREA))
            for rep in range(s.repetitions):
                for prefix in ("S1R", "S4R", "SLR", "INTOE"):
                    server.add_area(self._area(server, f"{prefix}{rep}"))
                server.add_area(self._area(server, f"INTO{rep}", s.into_size))
                server.add_area(self._area(server, f"INTOB{rep}", s.big_size))
            for size in s.find_sizes:
                server.add_area(self._area(server, f"F{size}", size, read_only=True))
            if server.name in self.broken:
                continue
            try:
                server.start()
            except Exception as error:  # noqa: BLE001 - the server's cells all become errors
                self.broken[server.name] = f"start failed: {error}"
                continue
            try:
                outcome = store_all(server.endpoint("QR"), [i.path for i in self.retrieve], 1, s.timeout)
                if outcome.failed:
                    self.retrieve_problems[server.name] = f"{len(outcome.failed)} instances of the study to " \
                                                          f"retrieve were not stored"
            except Exception as error:  # noqa: BLE001 - only the C-MOVE/C-GET rows need the study
                self.retrieve_problems[server.name] = f"storing the study to retrieve failed: {error}"

    def stop(self) -> None:
        """Stop every server and the receiver (again: a no-op)."""
        for server in [*self.servers, *self.tls_servers.values()]:
            server.stop()
        self.receiver.stop()
        self.tls_receiver.stop()

    # --- the run ------------------------------------------------------------------------------------

    def scenarios(self) -> list[tuple[str, Callable[[Server, int], None], tuple[str, ...]]]:
        """(name, measurement, rows it records) in run order."""
        find_rows = tuple(key for key in self.rows if key.startswith("find:"))
        return [
            ("associations", self.measure_associations, ("assoc",)),
            ("C-STORE, 1 association", self.measure_store_single, ("store1",)),
            ("C-STORE, parallel", self.measure_store_parallel, ("store4", "pss", "lost")),
            ("C-STORE into a full area", self.measure_store_into, ("into",)),
            ("C-STORE into the largest area", self.measure_store_big, ("intoempty", "intobig")),
            ("C-STORE large", self.measure_store_large, ("large",)),
            ("C-MOVE/C-GET", self.measure_retrieve, ("move", "get")),
            ("associations over TLS", self.measure_tls_associations, ("tls:assoc",)),
            ("C-STORE over TLS", self.measure_tls_store, ("tls:store1", "tls:large")),
            ("C-MOVE over TLS", self.measure_tls_move, ("tls:move",)),
            ("C-MOVE with transcoding", self.measure_transcode,
             tuple(key for key in self.rows if key.startswith("transcode:"))),
            ("C-FIND", self.measure_find, find_rows),
            ("start-up with the largest area", self.measure_startup, ("startup", "firstfind", "findmemory")),
        ]

    def run(self) -> None:
        """Every scenario, repetitions interleaved: each repetition visits every server, in an order
        rotated from one repetition to the next."""
        for name, measure, row_keys in self.scenarios():
            for rep in range(self.settings.repetitions):
                order = self.servers[rep % len(self.servers):] + self.servers[:rep % len(self.servers)]
                for server in order:
                    self._measure(server, rep, name, measure, row_keys)

    def _measure(self, server: Server, rep: int, name: str, measure: Callable[[Server, int], None],
                 row_keys: tuple[str, ...]) -> None:
        problem = self.broken.get(server.name) or server.problem()
        counts = {key: len(self.rows[key].values.get(server.name, [])) for key in row_keys}
        started = time.perf_counter()
        if problem is None:
            try:
                measure(server, rep)
            except NotApplicable as reason:
                for key in row_keys:
                    if str(reason) not in self.rows[key].notes.get(server.name, []):
                        self.rows[key].note(server.name, str(reason))
                self.log(f"{name} [{server.name}]: n/a, {reason}")
                return
            except Exception as error:  # noqa: BLE001 - becomes the cell's error
                problem = f"{type(error).__name__}: {error}" if not isinstance(error, ClientError) else str(error)
                if (late := server.problem()) is not None:
                    problem += f" ({late})"
        if problem is not None:
            for key in row_keys:
                if len(self.rows[key].values.get(server.name, [])) == counts[key] and \
                        problem not in self.rows[key].errors.get(server.name, []):
                    self.rows[key].fail(server.name, problem)
        self.log(f"{name} [{server.name}, repetition {rep + 1}]: "
                 f"{'ERROR ' + problem[:200] if problem else 'ok'} ({time.perf_counter() - started:.1f} s)")

    # --- scenarios ----------------------------------------------------------------------------------

    def measure_associations(self, server: Server, rep: int) -> None:
        rate = association_rate(server.endpoint("ECHO"), self.settings.echo_seconds)
        server.release("ECHO")
        row = self.rows["assoc"]
        row.record(server.name, rate.per_second)
        if rate.failures:
            row.note(server.name, f"{rate.failures} of {rate.attempts} associations failed; first: "
                                  f"{rate.first_error}")

    def _store(self, server: Server, title: str, instances: list[Instance], row: str, parallel: int = 1,
               megabytes: bool = False) -> set[str]:
        """Store ``instances`` into area ``title``; record the rate; the SOP Instance UIDs answered
        Success."""
        files = [instance.path for instance in instances]
        batch = -(-len(files) // parallel)
        os.sync()   # no store is measured during the kernel's writeback of what earlier rows wrote
        outcome = storescu(server.endpoint(title), [files[i:i + batch] for i in range(0, len(files), batch)],
                           self.settings.timeout)
        if megabytes:
            self.rows[row].record(server.name, sum(f.stat().st_size for f in files) / 1e6 / outcome.seconds)
        else:
            self.rows[row].record(server.name, len(files) / outcome.seconds)
        if outcome.failed:
            statuses = sorted(set(outcome.failed.values()))
            self.rows[row].note(server.name, f"{len(outcome.failed)} of {len(files)} C-STOREs not Success "
                                             f"({', '.join(statuses)[:200]})")
        succeeded = outcome.succeeded
        return {instance.sop_instance_uid for instance in instances if instance.path in succeeded}

    def measure_store_single(self, server: Server, rep: int) -> None:
        self._store(server, f"S1R{rep}", self.store1[rep], "store1")
        server.release(f"S1R{rep}")

    def measure_store_large(self, server: Server, rep: int) -> None:
        self._store(server, f"SLR{rep}", self.large[rep], "large", megabytes=True)
        server.release(f"SLR{rep}")

    def _check_prefilled(self, server: Server) -> None:
        if self.index_problem and not isinstance(server, OrthancServer):
            raise ClientError(self.index_problem)

    def measure_store_into(self, server: Server, rep: int) -> None:
        self._check_prefilled(server)
        self._store(server, f"INTO{rep}", self.into[rep], "into")
        server.release(f"INTO{rep}")

    def measure_store_parallel(self, server: Server, rep: int) -> None:
        title = f"S4R{rep}"
        endpoint = server.endpoint(title)
        with PeakMemory(endpoint.pid) as memory:
            succeeded = self._store(server, title, self.store4[rep], "store4", parallel=self.settings.parallel)
        self.rows["pss"].record(server.name, memory.peak / MIB)
        study = self.store4[rep][0].study_instance_uid
        with tempfile.TemporaryDirectory(dir=self.scratch) as directory:
            # Failed sub-operations are what this row counts: only a C-GET that brings nothing is an error.
            getscu(endpoint, study, Path(directory), self.settings.timeout, strict=False)
            retrieved = sop_instance_uids(Path(directory))
        server.release(title)
        if succeeded and not retrieved:
            raise ClientError("the C-GET that checks the stored instances retrieved nothing")
        self.rows["lost"].record(server.name, len(succeeded - retrieved))

    def measure_retrieve(self, server: Server, rep: int) -> None:
        if server.name in self.retrieve_problems:
            raise ClientError(self.retrieve_problems[server.name])
        endpoint = server.endpoint("QR")
        study = self.retrieve[0].study_instance_uid
        count = len(self.retrieve)
        try:
            if self.receiver_problem:
                raise ClientError(self.receiver_problem)
            self.receiver.clear()
            seconds = movescu(endpoint, study, self.settings.timeout)
            _check_received(len(os.listdir(self.receiver.directory)), count)
            self.rows["move"].record(server.name, count / seconds)
        except ClientError as error:
            self.rows["move"].fail(server.name, str(error))
        with tempfile.TemporaryDirectory(dir=self.scratch) as directory:
            seconds = getscu(endpoint, study, Path(directory), self.settings.timeout)
            _check_received(len(os.listdir(directory)), count)
            self.rows["get"].record(server.name, count / seconds)

    def _tls_twin(self, server: Server) -> Server:
        """``server``'s twin that serves TLS only (started on first use, with the study to retrieve)."""
        if server.no_tls:
            raise NotApplicable(server.no_tls)
        if self.tls_problem or self.tls is None:
            raise ClientError(self.tls_problem or "no TLS set-up")
        if server.name in self.tls_broken:
            raise ClientError(self.tls_broken[server.name])
        if server.name not in self.tls_servers:
            twin = type(server)(self.work / f"{server.name}-tls", self.tls_receiver.port, self.tls)
            for title in (TLS_ECHO, TLS_RETRIEVE, *(f"{prefix}{rep}" for rep in range(self.settings.repetitions)
                                                    for prefix in ("TS1R", "TSLR"))):
                twin.add_area(Area(title))
            self.tls_servers[server.name] = twin
            try:
                twin.start()
                outcome = store_all(twin.endpoint(TLS_RETRIEVE), [i.path for i in self.retrieve], 1,
                                    self.settings.timeout)
                if outcome.failed:
                    raise ClientError(f"{len(outcome.failed)} instances of the study to retrieve were not stored "
                                      f"over TLS")
            except Exception as error:
                self.tls_broken[server.name] = f"the TLS server: {error}"
                raise
        return self.tls_servers[server.name]

    def measure_tls_associations(self, server: Server, rep: int) -> None:
        twin = self._tls_twin(server)
        rate = association_rate(twin.endpoint(TLS_ECHO), self.settings.echo_seconds)
        twin.release(TLS_ECHO)
        self.rows["tls:assoc"].record(server.name, rate.per_second)
        if rate.failures:
            self.rows["tls:assoc"].note(server.name, f"{rate.failures} of {rate.attempts} associations over TLS "
                                                     f"failed; first: {rate.first_error}")

    def measure_tls_store(self, server: Server, rep: int) -> None:
        twin = self._tls_twin(server)
        self._store(twin, f"TS1R{rep}", self.store1[rep], "tls:store1")
        twin.release(f"TS1R{rep}")
        self._store(twin, f"TSLR{rep}", self.large[rep], "tls:large", megabytes=True)
        twin.release(f"TSLR{rep}")

    def measure_tls_move(self, server: Server, rep: int) -> None:
        twin = self._tls_twin(server)
        if self.tls_receiver.process is None:
            raise ClientError(self.tls_problem or "the TLS C-MOVE receiver is not running")
        self.tls_receiver.clear()
        seconds = move(twin.endpoint(TLS_RETRIEVE), self.retrieve[0].study_instance_uid, self.settings.timeout)
        _check_received(len(os.listdir(self.tls_receiver.directory)), len(self.retrieve))
        self.rows["tls:move"].record(server.name, len(self.retrieve) / seconds)

    def measure_transcode(self, server: Server, rep: int) -> None:
        if self.receiver_problem:
            raise ClientError(self.receiver_problem)
        if rep == 0:
            transcode.prepare(server, self.transcode_studies, self.settings.timeout)
        transcode.measure(server, self.receiver, self.transcode_studies, self.rows, self.settings.timeout)

    def queries(self, size: int) -> list[Query]:
        """The C-FIND requests of :data:`QUERY_KINDS` at an area of ``size`` instances, all from the middle
        of the area: a patient, a range of 5 study dates, the patients whose name starts like this one's
        (up to 10 studies), the series of a study, an image."""
        studies = self.find_studies[:study_count(size, self.settings.study_size)]
        middle = len(studies) // 2
        study = studies[middle]
        instance = study[len(study) // 2]
        last = min(middle + 4, len(studies) - 1)
        names = [self.corpus.study_values(s[0].study)["patient_name"] for s in studies]
        prefix = names[middle][:-1]

        identifier = dicomclient.identifier
        patient = identifier(QueryRetrieveLevel="PATIENT", PatientID=instance.patient_id, PatientName="")
        by_date = identifier(QueryRetrieveLevel="STUDY", StudyDate=f"{instance.study_date}-{studies[last][0].study_date}",
                             StudyInstanceUID="", PatientID="")
        by_name = identifier(QueryRetrieveLevel="STUDY", PatientName=prefix + "*", StudyInstanceUID="", PatientID="",
                             StudyDate="")
        series = identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=instance.study_instance_uid,
                            SeriesInstanceUID="", Modality="", SeriesNumber="")
        image = identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID=instance.study_instance_uid,
                           SeriesInstanceUID=instance.series_instance_uid, SOPInstanceUID=instance.sop_instance_uid)
        return [Query(QUERY_KINDS[0], dicomclient.PATIENT_ROOT_FIND, patient, 1),
                Query(QUERY_KINDS[1], dicomclient.STUDY_ROOT_FIND, by_date, last - middle + 1),
                Query(QUERY_KINDS[2], dicomclient.STUDY_ROOT_FIND, by_name,
                      sum(name.startswith(prefix) for name in names)),
                Query(QUERY_KINDS[3], dicomclient.STUDY_ROOT_FIND, series, 1),
                Query(QUERY_KINDS[4], dicomclient.STUDY_ROOT_FIND, image, 1)]

    def measure_find(self, server: Server, rep: int) -> None:
        self._check_prefilled(server)
        for size in self.settings.find_sizes:
            title = f"F{size}"
            endpoint = server.endpoint(title)
            for query in self.queries(size):
                row = self.rows[f"find:{query.label}:{size}"]
                try:
                    row.record(server.name, find_latency(endpoint, query, self.settings.find_repeats))
                except (ClientError, dicomclient.DicomError, OSError) as error:
                    row.fail(server.name, str(error) or type(error).__name__)
            server.release(title)

    def measure_store_big(self, server: Server, rep: int) -> None:
        """C-STORE into an empty area and into the largest area, one after the other (in turns)."""
        self._check_prefilled(server)
        big = self.into_big[rep][:self.settings.dcmtk_big_count] if server.name == "dcmtk" else self.into_big[rep]
        runs = [("INTOE", self.into_empty[rep], "intoempty"), ("INTOB", big, "intobig")]
        for prefix, instances, row in runs if rep % 2 == 0 else reversed(runs):
            self._store(server, f"{prefix}{rep}", instances, row)
            server.release(f"{prefix}{rep}")

    def measure_startup(self, server: Server, rep: int) -> None:
        """A server of the same kind started with only the largest area: the seconds until a C-ECHO to it
        is answered, the first C-FIND, then every C-FIND once on one association and the memory of the
        process that answered them."""
        self._check_prefilled(server)
        fresh = type(server)(self.work / f"{server.name}-startup{rep}", self.receiver.port)
        fresh.add_area(self._area(fresh, "BIG", self.settings.big_size, read_only=True))
        try:
            fresh.start()
            endpoint = fresh.endpoint("BIG")   # Orthanc: started here
            association = dicomclient.associate(endpoint.port, "BIG", CLIENT_AE, [dicomclient.VERIFICATION])
            status = association.echo()
            seconds = time.perf_counter() - fresh.started_at
            association.release()
            if status != 0:
                raise ClientError(f"C-ECHO status {status:#06x}")
            self.rows["startup"].record(server.name, seconds)
            query = next(q for q in self.queries(self.settings.big_size) if q.label == FIRST_QUERY)
            association = dicomclient.associate(endpoint.port, "BIG", CLIENT_AE, [query.model])
            try:
                started = time.perf_counter()
                status, matches = association.find(query.model, query.identifier)
                elapsed = time.perf_counter() - started
            finally:
                association.release()
            if status != 0 or matches != query.expected_matches:
                raise ClientError(f"first C-FIND: status {status:#06x}, {matches} matches")
            self.rows["firstfind"].record(server.name, elapsed * 1000)
            memory = self._memory_after_queries(endpoint, self.queries(self.settings.big_size))
            self.rows["findmemory"].record(server.name, memory.pss / MIB)
            self.rows["findmemory"].note(server.name, f"RSS {memory.rss / MIB:.1f} MiB, USS {memory.uss / MIB:.1f} MiB")
        finally:
            fresh.stop()

    @staticmethod
    def _memory_after_queries(endpoint: Endpoint, queries: list[Query]) -> Memory:
        """Each of ``queries`` once on one association, then the memory of the process serving it."""
        association = dicomclient.associate(endpoint.port, endpoint.called_ae, CLIENT_AE,
                                            list(dict.fromkeys(query.model for query in queries)))
        try:
            for number, query in enumerate(queries, 1):
                status, matches = association.find(query.model, query.identifier, number)
                if status != 0 or matches != query.expected_matches:
                    raise ClientError(f"{query.label}: status {status:#06x}, {matches} matches")
            return serving_process_memory(endpoint.pid, association.sock.getsockname()[1])
        finally:
            association.release()

    # --- the machine's limits ---------------------------------------------------------------------------

    def measure_machine(self) -> None:
        """Loopback TCP and file-write throughput for the same bytes the servers get."""
        large = [instance.path.read_bytes() for instance in self.large[0]]
        small = [instance.path.read_bytes() for instance in self.store1[0]]
        for _ in range(self.settings.repetitions):
            self.machine_rows["loopback"].record("machine", loopback_throughput(large))
            directory = Path(tempfile.mkdtemp(dir=self.work))
            started = time.perf_counter()
            for number, data in enumerate(large):
                (directory / f"large{number}").write_bytes(data)
            self.machine_rows["write_large"].record(
                "machine", sum(map(len, large)) / 1e6 / (time.perf_counter() - started))
            started = time.perf_counter()
            for number, data in enumerate(small):
                (directory / f"small{number}").write_bytes(data)
            self.machine_rows["write_small"].record("machine", len(small) / (time.perf_counter() - started))
            shutil.rmtree(directory)


def _check_received(received: int, expected: int) -> None:
    if received != expected:
        raise ClientError(f"received {received} of {expected} instances")


def loopback_throughput(payloads: list[bytes]) -> float:
    """MB/s of pushing ``payloads`` through a TCP connection on 127.0.0.1 to another process."""
    listener = socket.create_server(("127.0.0.1", 0))
    total = sum(map(len, payloads))
    pid = os.fork()
    if pid == 0:  # the receiving process
        try:
            connection, _ = listener.accept()
            buffer = bytearray(1 << 20)
            received = 0
            while received < total:
                count = connection.recv_into(buffer)
                if not count:
                    break
                received += count
            connection.sendall(b"k")
        finally:
            os._exit(0)
    try:
        with socket.create_connection(listener.getsockname()) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            for payload in payloads:
                sock.sendall(payload)
            sock.recv(1)
            seconds = time.perf_counter() - started
    finally:
        listener.close()
        os.waitpid(pid, 0)
    return total / 1e6 / seconds

