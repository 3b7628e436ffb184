"""Storage areas that already hold thousands of instances, built fast and once per run.

For qrscp and dcmqrscp: storing 50,000 instances into dcmqrscp, or indexing them with ``dcmqridx``,
takes about an hour, because every registration reads the whole ``index.dat``. So DCMTK's ``dcmqridx``
indexes ONE study, and the index of N studies is made from its bytes: every study-specific value in
the study's descriptor and records (study UID, and so series/SOP UIDs, patient, date, file names) is
overwritten with the other study's, at the same length (the corpus makes all such values fixed-width).
Only the few layout numbers of docs/index-format.md §2-§3 are used. The areas' file names point into the corpus.

For Orthanc: its own ingest (storescu, 4 associations in parallel), snapshotted after each size.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchlib.clients import ClientError, store_all
from benchlib.corpus import (
    STUDY_KEYS,
    Corpus,
    Instance,
    Kind,
    Template,
    study_file_prefix,
)
from benchlib.servers import (
    Endpoint,
    OrthancServer,
    copy_orthanc_database,
    dcmtk,
    dcmtk_env,
    have_dcmtk,
    stop_process,
)

#: index.dat format 5 (docs/index-format.md §2-§3): a 6-byte header, 500 study descriptors of 88 bytes, then records.
INDEX_HEADER_SIZE = 6
STUDY_DESCRIPTOR_SIZE = 88
STUDY_DESCRIPTORS = 500
RECORDS_OFFSET = INDEX_HEADER_SIZE + STUDY_DESCRIPTORS * STUDY_DESCRIPTOR_SIZE
RECORD_SIZE = 8032
#: The most studies one prefilled area gets: the format's limit of 500 study descriptors, less the one
#: the stores into the area need for their new study.
MAX_PREFILL_STUDIES = 499


def study_count(instances: int, study_size: int) -> int:
    """The studies of an area of ``instances`` in studies of ``study_size`` instances."""
    studies, rest = divmod(instances, study_size)
    if rest or not 0 < studies <= MAX_PREFILL_STUDIES:
        raise ValueError(f"{instances} instances do not make 1 to {MAX_PREFILL_STUDIES} studies of {study_size}")
    return studies


def build_index(corpus: Corpus, kind: Kind, studies: list[list[Instance]], work: Path, target: Path) -> None:
    """Write ``target``, the ``index.dat`` of an area holding ``studies`` (all of the same size)."""
    if not have_dcmtk("dcmqridx"):
        raise ClientError("DCMTK's dcmqridx is not installed")
    if len(studies) > STUDY_DESCRIPTORS:
        raise ValueError("too many studies for one storage area")
    seed_directory = work / "index-seed"
    shutil.rmtree(seed_directory, ignore_errors=True)
    seed_directory.mkdir(parents=True)
    first = studies[0]
    result = subprocess.run([dcmtk("dcmqridx"), str(seed_directory), *(str(i.path) for i in first)],
                            env=dcmtk_env(), capture_output=True, text=True, timeout=600)
    seed = (seed_directory / "index.dat").read_bytes()
    records = seed[RECORDS_OFFSET:]
    if result.returncode != 0 or len(records) != len(first) * RECORD_SIZE:
        raise ClientError(f"dcmqridx failed: {result.stderr.strip()[:300]}")

    first_values = _study_values(corpus, first, kind)
    descriptor = Template(seed[INDEX_HEADER_SIZE:INDEX_HEADER_SIZE + STUDY_DESCRIPTOR_SIZE],
                          {"study_uid": first_values["study_uid"]})
    block = Template(records, first_values)
    unused = bytes(STUDY_DESCRIPTOR_SIZE * (STUDY_DESCRIPTORS - len(studies)))
    with open(target, "wb") as out:
        out.write(seed[:INDEX_HEADER_SIZE])
        for study in studies:
            out.write(descriptor.render({"study_uid": _study_values(corpus, study, kind)["study_uid"]}))
        out.write(unused)
        for study in studies:
            out.write(block.render(_study_values(corpus, study, kind)))


def _study_values(corpus: Corpus, study: list[Instance], kind: Kind) -> dict[str, str]:
    """What differs between the index records of two studies: the corpus's study values and the
    study's part of the file names."""
    if len({instance.study for instance in study}) != 1:
        raise ValueError("instances of several studies given as one")
    values = {key: value for key, value in corpus.study_values(study[0].study).items() if key in STUDY_KEYS}
    values["file_prefix"] = study_file_prefix(kind, study[0].study)
    return values


def build_orthanc_databases(server: OrthancServer, sizes: list[int], studies: list[list[Instance]],
                            work: Path, timeout: float) -> dict[int, Path]:
    """Orthanc storage directories holding the first ``size`` instances of ``studies`` for each of
    ``sizes``, built by storing into one Orthanc: copied at each size, the last one is the database
    it built."""
    files = [instance.path for study in studies for instance in study]
    snapshots: dict[int, Path] = {}
    directory = work / "orthanc-build"
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "db"
    stored = 0
    for size in sorted(sizes):
        process, port = server.launch("PREFILL", directory, storage)
        try:
            outcome = store_all(Endpoint(port, "PREFILL", process.pid), files[stored:size], parallel=4,
                                timeout=timeout)
        finally:
            stop_process(process)  # a clean stop, so the database files are complete
        if outcome.failed:
            raise ClientError(f"Orthanc refused {len(outcome.failed)} prefill instances")
        stored = size
        snapshots[size] = work / f"orthanc-{size}"
        if size != max(sizes):
            copy_orthanc_database(storage, snapshots[size])
    storage.rename(snapshots[max(sizes)])
    return snapshots
