"""One storage area, two programs: qrscp and DCMTK's ``dcmqrscp``/``dcmqridx`` read and write the same
areas, even at the same time (the rule of docs/differences.md; docs/index-format.md, locking.md, dcmqridx.md).

pydicom's bundled test files that are storage objects go through DCMTK's ``storescu`` into qrscp; DCMTK's
``dcmqrscp`` then serves that very area and ``findscu`` gets the same answers from both servers at every
level. The same the other way round (DCMTK stores, qrscp serves), and for indexes built by DCMTK's
``dcmqridx`` and by ours. Records the two programs write for the same instance are compared byte for byte.
Finally both servers store into one area at the same time.

Compressed transfer syntaxes: a server accepts one of them at a time (its ``+x…`` option) and ``storescu``
proposes one with its ``-x…`` option, so each transfer syntax goes to a server of its own (all of them on
the same area). Test files left out, and why: see :func:`storage_test_files` and :data:`NOT_SENT_BY_STORESCU`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from answers import assert_same_answers, request_charset
from conftest import Server, needs_dcmtk, run_dcmtk, run_qrscp, simple_config
from corpus import uid
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
)
from test_find_differential import Query, findscu, q
from test_retrieve import getscu
from test_store import (
    AE_TITLE,
    BRANCH,
    SUCCESS,
    assert_consistent,
    image_level_uids,
    instance,
    live_records,
    storescu,
)

from qrscp.archive import index
from qrscp.dicom import uids

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore:Expected explicit VR")]  # odd test files

#: Transfer syntax -> (the servers' ``+x…`` option, storescu's ``-x…`` option) that carry it unchanged.
SYNTAXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ImplicitVRLittleEndian: ((), ("-xi",)),
    ExplicitVRLittleEndian: ((), ("-xe",)),
    ExplicitVRBigEndian: (("+xb",), ("-xb",)),
    DeflatedExplicitVRLittleEndian: (("+xd",), ("-xd",)),
    RLELossless: (("+xr",), ("-xr",)),
    JPEGBaseline8Bit: (("+xy",), ("-xy",)),
    JPEGExtended12Bit: (("+xx",), ("-xx",)),
    JPEGLosslessSV1: (("+xs",), ("-xs",)),
    JPEGLSLossless: (("+xt",), ("-xt",)),
    JPEGLSNearLossless: (("+xu",), ("-xu",)),
    JPEG2000Lossless: (("+xv",), ("-xv",)),
    JPEG2000: (("+xw",), ("-xw",)),
}

#: Test files DCMTK's storescu does not send (to either server), and why.
NOT_SENT_BY_STORESCU = {
    "MR_truncated.dcm": "truncated: DCMTK cannot read it",
    "rtplan_truncated.dcm": "truncated: DCMTK cannot read it",
    "SC_rgb_jpeg.dcm": "DCMTK cannot parse it (element (4544,4952) larger than the rest of the file)",
    "rtdose_rle.dcm": "DCMTK finds no SOP Class or Instance UID in it (odd-length OW pixel data)",
    "rtdose_rle_1frame.dcm": "DCMTK finds no SOP Class or Instance UID in it (odd-length OW pixel data)",
    "liver_1frame.dcm": "Segmentation Storage is not among the SOP classes storescu proposes",
    "liver_expb_1frame.dcm": "Segmentation Storage is not among the SOP classes storescu proposes",
}

#: The C-FIND requests both servers must answer alike: every level of every model, all supported keys.
QUERIES: tuple[Query, ...] = (
    q("patient_root_patients", "P", "PATIENT", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
      "PatientBirthTime", "IssuerOfPatientID", "0010,1000", "OtherPatientNames", "EthnicGroup"),
    q("patient_root_studies", "P", "STUDY", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime",
      "AccessionNumber", "StudyID"),
    q("patient_root_series", "P", "SERIES", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
      "SeriesNumber"),
    q("patient_root_images", "P", "IMAGE", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
      "SOPInstanceUID", "InstanceNumber"),
    q("study_root_studies", "S", "STUDY", "StudyInstanceUID", "PatientID", "PatientName", "StudyDate",
      "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
      "NameOfPhysiciansReadingStudy", "0020,1070", "AdmittingDiagnosesDescription", "PatientAge",
      "PatientSize", "PatientWeight", "Occupation"),
    q("study_root_series", "S", "SERIES", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber"),
    q("study_root_images", "S", "IMAGE", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
      "InstanceNumber", "PatientName", "StudyDate", "Modality"),
    q("study_root_images_utf8", "S", "IMAGE", "SpecificCharacterSet=ISO_IR 192", "StudyInstanceUID",
      "SeriesInstanceUID", "SOPInstanceUID", "PatientName", "ReferringPhysicianName", "StudyDescription"),
    q("patient_study_only_patients", "O", "PATIENT", "PatientName", "PatientID", "PatientBirthDate"),
    q("patient_study_only_studies", "O", "STUDY", "PatientID", "StudyInstanceUID", "StudyDate",
      "AccessionNumber"),
)


#: The programs that write areas: over the network (their servers) and with their ``dcmqridx``.
WRITERS = ("qrscp", "dcmtk")
#: The areas both servers serve, named after who wrote them.
AREAS = tuple(f"stored by {writer}" for writer in WRITERS) + \
    tuple(f"indexed by {writer}'s dcmqridx" for writer in WRITERS)


# --- the test files -----------------------------------------------------------------------------------------------

def storage_test_files() -> tuple[dict[str, list[Path]], dict[str, str]]:
    """pydicom's test files that are storage objects, by transfer syntax (in a fixed order), and the
    others with the reason they are left out."""
    by_syntax: dict[str, list[Path]] = {syntax: [] for syntax in SYNTAXES}
    left_out: dict[str, str] = {}
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            dataset = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as error:
            left_out[path.name] = f"no DICOM file with meta information: {error}"
            continue
        meta = dataset.file_meta
        if meta.get("MediaStorageSOPClassUID") not in uids.STORAGE_SOP_CLASSES:
            left_out[path.name] = f"not a storage SOP class: {meta.get('MediaStorageSOPClassUID')}"
        elif "SOPInstanceUID" not in dataset:
            left_out[path.name] = "no SOP Instance UID in the data set (storescu cannot send it)"
        elif meta.TransferSyntaxUID not in SYNTAXES:
            left_out[path.name] = f"transfer syntax {meta.TransferSyntaxUID} accepted by neither server"
        else:
            by_syntax[meta.TransferSyntaxUID].append(path)
    return by_syntax, left_out


# --- storing with every transfer syntax ---------------------------------------------------------------------------

def start_servers(stack: ExitStack, specs: list[tuple[Path, str, tuple[str, ...], bool]]) -> list[Server]:
    """Start servers side by side, each (directory, configuration, options, DCMTK's?), all stopped by
    ``stack``; every server that started is registered before a failure to start one is raised."""
    def start(spec: tuple[Path, str, tuple[str, ...], bool]) -> Server:
        directory, config, options, dcmtk_server = spec
        directory.mkdir(parents=True)
        return Server(directory, config, *options, dcmtk_server=dcmtk_server)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(start, spec) for spec in specs]
    for future in futures:
        if future.exception() is None:
            stack.enter_context(future.result())
    return [future.result() for future in futures]


@dataclass
class StoredArea:
    """An area filled over the network by one program, and what storescu reported."""

    area: Path
    statuses: dict[Path, int]
    offered: list[Path]


def store_test_files(base: Path, dcmtk_server: bool, by_syntax: dict[str, list[Path]]) -> StoredArea:
    """Store the test files into a new area of the program, transfer syntax by transfer syntax, each through
    a server with the matching preference (all servers share the area)."""
    area = base / "area"
    area.mkdir(parents=True)
    config = simple_config({AE_TITLE: f"{area} RW (500, 1024mb) ANY"})
    preferences = sorted({SYNTAXES[syntax][0] for syntax, files in by_syntax.items() if files})
    statuses: dict[Path, int] = {}
    with ExitStack() as stack:
        started = start_servers(stack, [(base / ("server" + "".join(preference)), config, preference, dcmtk_server)
                                        for preference in preferences])
        servers = dict(zip(preferences, started))
        for syntax, files in by_syntax.items():
            if files:
                server_option, scu_option = SYNTAXES[syntax]
                statuses.update(storescu(servers[server_option].port, files, *scu_option))
    return StoredArea(area, statuses, [path for files in by_syntax.values() for path in files])


@pytest.fixture(scope="module")
def storable_files() -> dict[str, list[Path]]:
    """The test files to store, by transfer syntax."""
    return storage_test_files()[0]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, storable_files: dict[str, list[Path]]) -> dict[str, StoredArea]:
    """The test files stored by qrscp and, separately, by DCMTK: writer -> area."""
    base = tmp_path_factory.mktemp("stored")
    with ThreadPoolExecutor(max_workers=2) as pool:
        areas = {writer: pool.submit(store_test_files, base / writer, writer == "dcmtk", storable_files)
                 for writer in WRITERS}
        return {writer: future.result() for writer, future in areas.items()}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, storable_files: dict[str, list[Path]]) -> dict[str, Path]:
    """The test files registered where they are by DCMTK's ``dcmqridx`` and by ours: indexer -> area."""
    base = tmp_path_factory.mktemp("indexed")
    files = [str(path) for paths in storable_files.values() for path in paths]
    areas = {writer: base / writer for writer in WRITERS}
    for area in areas.values():
        area.mkdir()
    assert run_dcmtk("dcmqridx", str(areas["dcmtk"]), *files).returncode == 0
    assert run_qrscp(str(areas["qrscp"]), *files, module="qrscp.cli.dcmqridx").returncode == 0
    return areas


def serve_and_ask(base: Path, area: Path, queries: tuple[Query, ...] = QUERIES) -> dict[str, dict[str, dict]]:
    """Serve ``area`` with both servers (default options) and ask each the queries: server -> query -> answer."""
    config = simple_config({AE_TITLE: f"{area} R (500, 1024mb) ANY"})
    answers: dict[str, dict[str, dict]] = {}
    for server_kind in ("qrscp", "dcmtk"):
        directory = base / server_kind
        directory.mkdir(parents=True)
        with Server(directory, config, dcmtk_server=server_kind == "dcmtk") as server:
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers[server_kind] = dict(zip((query.name for query in queries),
                                                pool.map(lambda query: findscu(server.port, query), queries)))
    return answers


def all_areas(stored: dict[str, StoredArea], indexed: dict[str, Path]) -> dict[str, Path]:
    """The areas both servers serve, by the names of :data:`AREAS`."""
    return dict(zip(AREAS, [stored[writer].area for writer in WRITERS] + [indexed[writer] for writer in WRITERS]))


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory, stored: dict[str, StoredArea],
            indexed: dict[str, Path]) -> dict[str, dict[str, dict[str, dict]]]:
    """area -> server -> query -> answer, for the areas written by each server and by each dcmqridx."""
    base = tmp_path_factory.mktemp("served")
    areas = all_areas(stored, indexed)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(serve_and_ask, base / name.replace(" ", "_").replace("'", ""), area)
                   for name, area in areas.items()}
        return {name: future.result() for name, future in futures.items()}


# --- the tests ----------------------------------------------------------------------------------------------------

def test_storage_test_files_cover_every_transfer_syntax(storable_files: dict[str, list[Path]]) -> None:
    """Every transfer syntax of the table has test files; what is left out is not a storage object (or has
    no SOP Instance UID), never a transfer syntax we lack."""
    assert all(storable_files.values()), [syntax for syntax, files in storable_files.items() if not files]
    left_out = storage_test_files()[1]
    assert not [name for name, reason in left_out.items() if reason.startswith("transfer syntax")]


@pytest.mark.parametrize("writer", WRITERS)
def test_every_sent_test_file_is_stored(writer: str, stored: dict[str, StoredArea]) -> None:
    """storescu sends every test file it can read (the same ones to both servers), each is answered with
    Success and indexed."""
    result = stored[writer]
    sent = set(result.statuses)
    assert sorted(path.name for path in result.offered if path not in sent) == sorted(NOT_SENT_BY_STORESCU)
    assert {path.name: status for path, status in result.statuses.items() if status != SUCCESS} == {}
    indexed_uids = {record.sop_instance_uid for record in live_records(result.area)}
    assert indexed_uids == {dcmread(path, stop_before_pixels=True).SOPInstanceUID.encode() for path in sent}


def _comparable(record: bytes) -> bytes:
    """An index record with what legitimately differs between two writers zeroed: the pointer slots (DCMTK
    writes stack addresses) and RecordedDate."""
    data = bytearray(record)
    data[index.RECORDED_DATE.offset:index.RECORDED_DATE.offset + index.RECORDED_DATE.size] = bytes(8)
    for param in index.PARAMS:
        data[param.offset:param.offset + 8] = bytes(8)
    return bytes(data)


def raw_records(area: Path) -> list[bytes]:
    """The live records of an area as stored (8032 bytes each), in slot order."""
    data = (area / index.FILE_NAME).read_bytes()
    return [data[index.record_offset(slot):index.record_offset(slot + 1)]
            for slot in range(index.slot_count(len(data))) if data[index.record_offset(slot)]]


def test_network_stores_write_the_same_records(stored: dict[str, StoredArea]) -> None:
    """The records both servers write for the same C-STORE are the same bytes, except the file name and its
    size (each program writes its own file meta information), the pointer slots and the time stamp."""
    def by_instance(area: Path) -> dict[bytes, bytes]:
        result = {}
        for raw in raw_records(area):
            data = bytearray(_comparable(raw))
            record = index.decode_record(raw)
            assert record.image_size == Path(record.filename.decode()).stat().st_size
            data[index.FILENAME.offset:index.FILENAME.offset + index.FILENAME.size] = bytes(index.FILENAME.size)
            data[index.IMAGE_SIZE.offset:index.IMAGE_SIZE.offset + index.IMAGE_SIZE.size] = bytes(4)
            result[record.sop_instance_uid + b"|" + record.study_instance_uid] = bytes(data)
        return result

    ours, theirs = by_instance(stored["qrscp"].area), by_instance(stored["dcmtk"].area)
    assert sorted(ours) == sorted(theirs)
    assert [key for key in ours if ours[key] != theirs[key]] == []


def test_dcmqridx_indexes_have_the_same_records(indexed: dict[str, Path]) -> None:
    """DCMTK's dcmqridx and ours, run on the same files, write the same records byte for byte (but for the
    pointer slots and the time stamp)."""
    def by_file(area: Path) -> dict[bytes, bytes]:
        return {index.decode_record(raw).filename: _comparable(raw) for raw in raw_records(area)}

    ours, theirs = by_file(indexed["qrscp"]), by_file(indexed["dcmtk"])
    assert sorted(ours) == sorted(theirs) and len(ours) > 50
    assert [name for name in ours if ours[name] != theirs[name]] == []


@pytest.mark.parametrize("query", QUERIES, ids=lambda query: query.name)
@pytest.mark.parametrize("area", AREAS)
def test_both_servers_answer_alike(area: str, query: Query, answers: dict) -> None:
    """qrscp and DCMTK's dcmqrscp serving the same area give the same C-FIND responses, in the same order,
    and the same final status (Success)."""
    ours, theirs = answers[area]["qrscp"][query.name], answers[area]["dcmtk"][query.name]
    assert ours["status"] == theirs["status"] == "0x0000"
    assert_same_answers(ours["responses"], theirs["responses"], request_charset(query.keys))
    assert ours["responses"], "no matches: the area was not read"


def test_image_level_answers_list_every_record(answers: dict, stored: dict[str, StoredArea],
                                               indexed: dict[str, Path]) -> None:
    """Each image-level answer has one response per record of its area."""
    for name, area in all_areas(stored, indexed).items():
        assert len(answers[name]["qrscp"]["study_root_images"]["responses"]) == len(live_records(area)), name


# --- both servers at once -----------------------------------------------------------------------------------------

def test_both_servers_store_into_one_area_at_once(tmp_path: Path) -> None:
    """qrscp and DCMTK's dcmqrscp on one area, two storescu into each at the same time, into the same four
    studies: every instance is indexed exactly once, and both servers find and return all of them.
    (DCMTK's own workers can pick the same file name when they store the same SOP class in the same
    second, docs/differences.md #16, so its two clients send different SOP classes.)"""
    area = tmp_path / "area"
    area.mkdir()
    config = simple_config({AE_TITLE: f"{area} RW (500, 1024mb) ANY"})
    clients = [(server_kind, sop_class) for server_kind in WRITERS for sop_class in (CTImageStorage, MRImageStorage)]
    files = [[instance(tmp_path / "in" / str(c), 1 + n % 4, 100 * c + n, sop_class=sop_class) for n in range(50)]
             for c, (_kind, sop_class) in enumerate(clients)]
    expected = sorted(uid(BRANCH, 1 + n % 4, 1, 100 * c + n) for c in range(len(clients)) for n in range(50))
    with ExitStack() as stack:
        servers = dict(zip(WRITERS, start_servers(stack, [(tmp_path / kind, config, (), kind == "dcmtk")
                                                          for kind in WRITERS])))
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            results = list(pool.map(lambda c: storescu(servers[clients[c][0]].port, files[c]),
                                    range(len(clients))))
        for client_files, statuses in zip(files, results):
            assert statuses == {path: SUCCESS for path in client_files}
        records = assert_consistent(area)
        assert sorted(record.sop_instance_uid.decode() for record in records) == expected
        for server_kind, server in servers.items():
            assert sorted(image_level_uids(server.port)) == expected, server_kind
            got = tmp_path / "got" / server_kind
            for study in range(1, 5):
                responses, output = getscu(server.port, "-S", ("QueryRetrieveLevel=STUDY",
                                                              f"StudyInstanceUID={uid(BRANCH, study)}"), got)
                assert responses and responses[-1].status == SUCCESS, output
            assert sorted(dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in got.iterdir()) == \
                expected, server_kind
