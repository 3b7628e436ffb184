"""The clients that drive every server alike: DCMTK's storescu/getscu/movescu, and our raw-socket client
(:mod:`benchlib.dicomclient`) for association rate and C-FIND latency, where a process start per
request would be measured instead of the server, and for C-MOVE over TLS (DCMTK 3.6.7's movescu has
none). An endpoint with TLS credentials is reached over TLS by every client that can."""
from __future__ import annotations

import multiprocessing
import re
import ssl
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from benchlib import dicomclient
from benchlib.servers import CLIENT_AE, RECEIVER_AE, Endpoint, dcmtk, dcmtk_env


class ClientError(Exception):
    """A client failed in a way that makes the measurement meaningless."""


@dataclass
class StoreOutcome:
    """What one or more storescu runs reported: the instances answered Success, the others, the time."""

    seconds: float
    succeeded: set[Path] = field(default_factory=set)
    failed: dict[Path, str] = field(default_factory=dict)


_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((.*)\)$")


def _parse_storescu(output: str, outcome: StoreOutcome) -> None:
    """Pair each 'Sending file' line with the response that follows it (storescu -v)."""
    current: Path | None = None
    for line in output.splitlines():
        if match := _SENDING.match(line):
            current = Path(match.group(1))
        elif (match := _RESPONSE.match(line)) and current is not None:
            if match.group(1) == "Success":
                outcome.succeeded.add(current)
            else:
                outcome.failed[current] = match.group(1)
            current = None


def storescu(endpoint: Endpoint, batches: list[list[Path]], timeout: float) -> StoreOutcome:
    """Send each batch of files with its own ``storescu`` (one association each), all batches at once;
    the wall time from the first start to the last exit."""
    def run(files: list[Path]) -> subprocess.CompletedProcess:
        tls = endpoint.tls.dcmtk_client_options() if endpoint.tls else []
        command = [dcmtk("storescu"), "-v", "-nh", *tls, "-aec", endpoint.called_ae, "-aet", CLIENT_AE,
                   "127.0.0.1", str(endpoint.port), *map(str, files)]
        return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)

    with ThreadPoolExecutor(len(batches)) as pool:
        start = time.perf_counter()
        results = list(pool.map(run, batches))
        seconds = time.perf_counter() - start
    outcome = StoreOutcome(seconds)
    for result in results:
        _parse_storescu(result.stdout + result.stderr, outcome)
    sent = sum(map(len, batches))
    if not outcome.succeeded and sent:
        errors = [line for result in results for line in _problems(result)]
        raise ClientError("no instance stored: " + (" | ".join(errors[:3]) or "storescu reported nothing"))
    for files in batches:
        for path in files:
            if path not in outcome.succeeded and path not in outcome.failed:
                outcome.failed[path] = "no response"
    return outcome


def store_all(endpoint: Endpoint, files: list[Path], parallel: int, timeout: float,
              batch_size: int = 1000) -> StoreOutcome:
    """Store many files (prefill): batches of ``batch_size``, ``parallel`` storescu at a time."""
    total = StoreOutcome(0.0)
    step = batch_size * parallel
    for start in range(0, len(files), step):
        chunk = files[start:start + step]
        batches = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        outcome = storescu(endpoint, batches, timeout)
        total.seconds += outcome.seconds
        total.succeeded |= outcome.succeeded
        total.failed.update(outcome.failed)
    return total


def _problems(result: subprocess.CompletedProcess) -> list[str]:
    """The error and fatal lines a DCMTK tool logged."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("E:", "F:"))]


def _query_keys(study_instance_uid: str) -> list[str]:
    return ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_instance_uid}"]


def getscu(endpoint: Endpoint, study_instance_uid: str, directory: Path, timeout: float,
           strict: bool = True) -> float:
    """C-GET of a whole study into ``directory`` with DCMTK's getscu; the seconds it took. ``strict``:
    any error the tool reports (a failed sub-operation too) is a :class:`ClientError`."""
    command = [dcmtk("getscu"), "-aec", endpoint.called_ae, "-aet", CLIENT_AE, *_query_keys(study_instance_uid),
               "-od", str(directory), "127.0.0.1", str(endpoint.port)]
    return _timed(command, timeout, strict)


def movescu(endpoint: Endpoint, study_instance_uid: str, timeout: float) -> float:
    """C-MOVE of a whole study to the receiver with DCMTK's movescu; the seconds it took."""
    command = [dcmtk("movescu"), "-aec", endpoint.called_ae, "-aet", CLIENT_AE, "-aem", RECEIVER_AE,
               *_query_keys(study_instance_uid), "127.0.0.1", str(endpoint.port)]
    return _timed(command, timeout)


def move(endpoint: Endpoint, study_instance_uid: str, timeout: float) -> float:
    """C-MOVE of a whole study to the receiver with the raw-socket client (over TLS if the endpoint has
    it); the seconds from the request to its final response."""
    identifier = dicomclient.identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_instance_uid)
    association = dicomclient.associate(endpoint.port, endpoint.called_ae, CLIENT_AE,
                                        [dicomclient.STUDY_ROOT_FIND, dicomclient.STUDY_ROOT_MOVE],
                                        tls=_context(endpoint), timeout=timeout)
    try:
        if dicomclient.STUDY_ROOT_MOVE not in association.contexts:
            raise ClientError("the C-MOVE model was not accepted")
        start = time.perf_counter()
        status, completed, failed = association.move(identifier, RECEIVER_AE)
        seconds = time.perf_counter() - start
    finally:
        association.release()
    if status != 0 or failed:
        raise ClientError(f"C-MOVE status {status:#06x}, {completed} completed, {failed} failed")
    return seconds


def _context(endpoint: Endpoint) -> ssl.SSLContext | None:
    """The raw-socket client's TLS context for ``endpoint``, or None when it is reached in the clear."""
    return endpoint.tls.client_context if endpoint.tls else None


def _timed(command: list[str], timeout: float, strict: bool = True) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    problems = _problems(result)
    if strict and (result.returncode != 0 or problems):
        raise ClientError(f"{Path(command[0]).name} exit {result.returncode}: " + " | ".join(problems[:3]))
    return seconds


def sop_instance_uids(directory: Path) -> set[str]:
    """The SOP Instance UIDs of the data sets in the files of ``directory`` (what was really received,
    whatever the files are called)."""
    uids = set()
    for path in directory.iterdir():
        try:
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                         .SOPInstanceUID))
        except Exception:  # noqa: BLE001 - an unreadable file holds no retrievable instance
            continue
    return uids


# --- raw-socket client rows ------------------------------------------------------------------------

def _echo_worker(endpoint: Endpoint, start_at: float, seconds: float, results) -> None:
    """One client process: associate, C-ECHO, release, as often as possible for ``seconds`` from the
    wall-clock time ``start_at``. Puts (successes, failures, first failure, elapsed seconds)."""
    request = dicomclient.associate_rq(endpoint.called_ae, CLIENT_AE, [dicomclient.VERIFICATION])
    tls = _context(endpoint)
    count, failures, error = 0, 0, ""
    while time.time() < start_at:
        time.sleep(0.001)
    begin = time.perf_counter()
    end = begin + seconds
    while time.perf_counter() < end and failures <= count:
        try:
            association = dicomclient.associate(endpoint.port, endpoint.called_ae, CLIENT_AE,
                                                [dicomclient.VERIFICATION], request, tls=tls)
            status = association.echo()
            association.release()
            if status != 0:
                raise dicomclient.DicomError(f"C-ECHO status {status:#06x}")
            count += 1
        except Exception as exc:  # noqa: BLE001 - counted, and reported by the parent
            failures += 1
            error = error or f"{type(exc).__name__}: {exc}"
    results.put((count, failures, error, time.perf_counter() - begin))


@dataclass(frozen=True)
class Rate:
    """Associations per second, and the associations that failed meanwhile (with the first error)."""

    per_second: float
    failures: int
    attempts: int
    first_error: str


def association_rate(endpoint: Endpoint, seconds: float, processes: int = 2) -> Rate:
    """Successful associations per second (one C-ECHO each) from ``processes`` client processes. A
    failed association is counted and the loop goes on; :class:`ClientError` when most fail."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.2
    workers = [context.Process(target=_echo_worker, args=(endpoint, start_at, seconds, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join()
    count = sum(outcome[0] for outcome in outcomes)
    failures = sum(outcome[1] for outcome in outcomes)
    first_error = next((outcome[2] for outcome in outcomes if outcome[2]), "")
    if failures > count:
        raise ClientError(f"{failures} of {count + failures} associations failed; first: {first_error}")
    return Rate(count / max(outcome[3] for outcome in outcomes), failures, count + failures, first_error)


@dataclass(frozen=True)
class Query:
    """A C-FIND request: its row label, model and encoded identifier, and how many matches it must get."""

    label: str
    model: str
    identifier: bytes
    expected_matches: int


def find_latency(endpoint: Endpoint, query: Query, repeats: int, budget: float = 3.0) -> float:
    """Median milliseconds of one C-FIND round trip (request sent to final response read), on one
    association, after one untimed warm-up query: ``repeats`` round trips, fewer (at least 3) once
    ``budget`` seconds are spent."""
    association = dicomclient.associate(endpoint.port, endpoint.called_ae, CLIENT_AE,
                                        [dicomclient.PATIENT_ROOT_FIND, dicomclient.STUDY_ROOT_FIND],
                                        tls=_context(endpoint))
    try:
        if query.model not in association.contexts:
            raise ClientError("the C-FIND model was not accepted")
        times: list[float] = []
        deadline = time.perf_counter() + budget
        for message_id in range(1, repeats + 2):
            if len(times) >= 3 and time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            status, matches = association.find(query.model, query.identifier, message_id)
            elapsed = time.perf_counter() - start
            if status != 0:
                raise ClientError(f"C-FIND status {status:#06x}")
            if matches != query.expected_matches:
                raise ClientError(f"{matches} matches, expected {query.expected_matches}")
            if message_id > 1:
                times.append(elapsed * 1000)
    finally:
        association.release()
    return statistics.median(times)
