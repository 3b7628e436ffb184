"""C-MOVE and C-GET of qrscp alone, driven by DCMTK's clients and listeners and by pynetdicom
(docs/association.md §4-§5).

The first part holds helpers that ``test_retrieve_differential.py`` shares: running DCMTK's ``movescu`` /
``getscu`` and reading their responses, a DCMTK ``storescp`` listener, a recording pynetdicom storage SCP,
and a canonical form of a data set that does not depend on its transfer syntax.
"""
from __future__ import annotations

import fcntl
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import pytest
from conftest import (
    Server,
    dcmtk,
    dcmtk_env,
    echoscu,
    free_port,
    needs_dcmtk,
    run_dcmtk,
    simple_config,
    wait_for_port,
)
from corpus import make_instance, uid, write_instance
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from qrscp.net import pdu

pytestmark = [pytest.mark.dcmtk, needs_dcmtk]

AE_TITLE = "QRSCP"
UNCOMPRESSED = (ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian)


# --- movescu / getscu and their responses -------------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """One C-MOVE-RSP or C-GET-RSP as DCMTK's ``movescu -d`` / ``getscu -d`` prints it.

    The counters are the printed strings: a number, or ``none`` when the response does not carry it.
    """

    status: int
    remaining: str
    completed: str
    failed: str
    warning: str
    identifier: tuple[str, ...] = ()

    @property
    def failed_uids(self) -> list[str]:
        """The Failed SOP Instance UID List (0008,0058) of the response identifier, if any."""
        for line in self.identifier:
            if line.startswith("(0008,0058)"):
                return line[line.index("[") + 1:line.rindex("]")].split("\\")
        return []


_FIELD = re.compile(r"^D: (Message Type|Remaining Suboperations|Completed Suboperations|Failed Suboperations|"
                    r"Warning Suboperations|DIMSE Status)\s*: (\S+)")


def retrieve_responses(output: str) -> list[Response]:
    """The C-MOVE/C-GET responses in the ``-d`` output of movescu or getscu, in order."""
    responses: list[Response] = []
    fields: dict[str, str] | None = None  # of the incoming DIMSE message being read
    reading_identifier = False  # the dump of the last response's identifier
    for line in output.splitlines():
        if reading_identifier:
            if line.startswith("D: ("):
                last = responses[-1]
                responses[-1] = replace(last, identifier=(*last.identifier, line[3:].split(" #")[0].rstrip()))
                continue
            if line.startswith("D: #") or line.rstrip() == "D:":
                continue
            reading_identifier = False
        if line.startswith("D: ===================== INCOMING DIMSE MESSAGE"):
            fields = {}
        elif fields is not None and line.startswith("D: ======================= END DIMSE MESSAGE"):
            if fields.get("Message Type") in ("C-MOVE", "C-GET"):
                responses.append(Response(int(fields["DIMSE Status"].rstrip(":"), 16),
                                          fields["Remaining Suboperations"], fields["Completed Suboperations"],
                                          fields["Failed Suboperations"], fields["Warning Suboperations"]))
            fields = None
        elif fields is not None and (match := _FIELD.match(line)):
            fields[match.group(1)] = match.group(2)
        elif line.startswith("D: Response Identifiers:") and responses:
            reading_identifier = True
    return responses


def movescu(port: int, model: str, keys: tuple[str, ...], *options: str, destination: str = "DEST",
            calling: str = "MOVESCU", timeout: float = 60) -> tuple[list[Response], str]:
    """DCMTK's movescu (``model``: ``-P``/``-S``/``-O``): its responses and its whole output."""
    arguments = [arg for key in keys for arg in ("-k", key)]
    result = run_dcmtk("movescu", "-d", model, "-aet", calling, "-aec", AE_TITLE, "-aem", destination, *options,
                       *arguments, "127.0.0.1", str(port), timeout=timeout)
    output = (result.stdout + result.stderr).decode(errors="replace")
    return retrieve_responses(output), output


def getscu(port: int, model: str, keys: tuple[str, ...], directory: Path, *options: str,
           calling: str = "GETSCU", timeout: float = 60) -> tuple[list[Response], str]:
    """DCMTK's getscu storing into ``directory``: its responses and its whole output."""
    arguments = [arg for key in keys for arg in ("-k", key)]
    directory.mkdir(parents=True, exist_ok=True)
    result = run_dcmtk("getscu", "-d", model, "-aet", calling, "-aec", AE_TITLE, "-od", str(directory), *options,
                       *arguments, "127.0.0.1", str(port), timeout=timeout)
    output = (result.stdout + result.stderr).decode(errors="replace")
    return retrieve_responses(output), output


# --- listeners ----------------------------------------------------------------------------------------------------

@contextmanager
def storescp(directory: Path, *options: str, ae_title: str = "DEST") -> Iterator[int]:
    """DCMTK's storescp writing into ``directory`` on a free port (yielded) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(directory.parent / f"storescp-{port}.log", "wb") as log:
        process = subprocess.Popen([dcmtk("storescp"), "-aet", ae_title, "-od", str(directory), *options,
                                    str(port)], env=dcmtk_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process=process)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class StoreRecord:
    """What a :class:`StorageSCP` saw of one C-STORE-RQ."""

    calling_ae_title: str
    message_id: int
    priority: int
    move_originator_ae_title: str | None
    move_originator_message_id: int | None
    sop_instance_uid: str


@dataclass
class StorageSCP:
    """A pynetdicom storage SCP on 127.0.0.1 that records every C-STORE it receives.

    It accepts ``sop_classes`` with ``transfer_syntaxes`` (only for called AE ``ae_title``) and sleeps
    ``delay`` seconds in each C-STORE before answering Success.
    """

    sop_classes: tuple[str, ...] = (CTImageStorage, MRImageStorage)
    transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED
    delay: float = 0.0
    ae_title: str = "DEST"
    records: list[StoreRecord] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None

    def _on_store(self, event) -> int:
        request = event.request
        self.records.append(StoreRecord(
            event.assoc.requestor.ae_title, request.MessageID, request.Priority,
            request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID,
            request.AffectedSOPInstanceUID))
        time.sleep(self.delay)
        return 0x0000

    @contextmanager
    def running(self) -> Iterator["StorageSCP"]:
        """Listen on a free port (``self.port``) until the block ends."""
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        for sop_class in self.sop_classes:
            ae.add_supported_context(sop_class, list(self.transfer_syntaxes))
        self.port = free_port()
        server = ae.start_server((self.host, self.port), block=False, ssl_context=self.ssl_context,
                                 evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        try:
            yield self
        finally:
            server.shutdown()


# --- data sets ----------------------------------------------------------------------------------------------------

_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def canonical(dataset: Dataset, big_endian: bool) -> list:
    """``dataset`` as (tag, value) pairs that equal for equal content in any uncompressed transfer syntax.

    Values are the decoded ones; byte values of word VRs are brought to little endian.
    """
    result: list = []
    for element in dataset:
        value = element.value
        if element.VR == "SQ":
            value = [canonical(item, big_endian) for item in value]
        elif isinstance(value, bytes):
            size = _WORD_SIZE.get(element.VR, 1)
            if big_endian and size > 1:
                value = b"".join(value[i:i + size][::-1] for i in range(0, len(value), size))
        elif isinstance(value, MultiValue):
            value = [str(item) for item in value]
        elif value is not None:
            value = str(value)
        result.append((int(element.tag), value))
    return result


def read_canonical(path: Path) -> tuple[str, str, list]:
    """(SOP Instance UID, transfer syntax, canonical data set) of a DICOM file."""
    dataset = dcmread(path)
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    return str(dataset.SOPInstanceUID), syntax, canonical(dataset, syntax == ExplicitVRBigEndian)


def received(directory: Path) -> dict[str, tuple[str, list]]:
    """SOP Instance UID -> (transfer syntax, canonical data set) of every file in ``directory``."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            sop_instance_uid, syntax, content = read_canonical(path)
            files[sop_instance_uid] = (syntax, content)
    return files


# --- the instances and our server ---------------------------------------------------------------------------------

STUDY_A = uid(50, 1)
"""8 CT and 2 MR instances, explicit VR little endian."""
STUDY_B = uid(50, 2)
"""A CT in implicit VR little endian, a CT in explicit VR big endian, an MR in explicit VR little endian."""
STUDY_C = uid(50, 3)
"""One CT, JPEG lossless (made by DCMTK's dcmcjpeg)."""


def study_keys(study_uid: str) -> tuple[str, ...]:
    """movescu/getscu keys of a Study Root STUDY-level retrieve."""
    return "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"


def study_identifier(study_uid: str) -> Dataset:
    """The identifier of a Study Root STUDY-level retrieve."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


@dataclass(frozen=True)
class Instances:
    """The files of the three studies, in storing order (each file is named after its SOP Instance UID)."""

    study_a: list[Path]
    study_b: list[Path]
    study_c: list[Path]


def uids(files: list[Path]) -> list[str]:
    """The SOP Instance UIDs of ``files``."""
    return [path.stem for path in files]


def _write(directory: Path, sop_class: str, study: str, series: int, number: int,
           syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write instance ``number`` of ``series`` of ``study`` in ``syntax``."""
    dataset = make_instance(sop_class, syntax, PatientID="PATRET", PatientName="Retrieve^Test",
                            StudyInstanceUID=study, SeriesInstanceUID=f"{study}.{series}",
                            SOPInstanceUID=f"{study}.{series}.{number}", SeriesNumber=str(series),
                            InstanceNumber=str(number))
    return write_instance(dataset, directory / f"{dataset.SOPInstanceUID}.dcm")


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Instances:
    """The instances of studies A, B and C as files."""
    directory = tmp_path_factory.mktemp("instances")
    study_a = [_write(directory, CTImageStorage, STUDY_A, 1, n) for n in range(1, 9)]
    study_a += [_write(directory, MRImageStorage, STUDY_A, 2, n) for n in (1, 2)]
    study_b = [_write(directory, CTImageStorage, STUDY_B, 1, 1, ImplicitVRLittleEndian),
               _write(directory, CTImageStorage, STUDY_B, 1, 2, ExplicitVRBigEndian),
               _write(directory, MRImageStorage, STUDY_B, 2, 1)]
    (directory / "uncompressed").mkdir()
    uncompressed = _write(directory / "uncompressed", CTImageStorage, STUDY_C, 1, 1)
    jpeg = directory / uncompressed.name
    result = run_dcmtk("dcmcjpeg", str(uncompressed), str(jpeg))  # JPEG lossless, first-order prediction
    assert result.returncode == 0, result.stderr.decode()
    assert dcmread(jpeg).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return Instances(study_a, study_b, [jpeg])


def serve(directory: Path, area: Path, *options: str, host_table: str = "", vendor_table: str = "",
          titles: tuple[str, ...] = (AE_TITLE,)) -> Server:
    """Our server in ``directory`` with ``options``: every AE of ``titles`` on ``area``, any peer."""
    directory.mkdir(parents=True)
    area.mkdir(parents=True, exist_ok=True)
    config = simple_config({title: f"{area} RW (200, 1024mb) ANY" for title in titles}, host_table=host_table,
                           vendor_table=vendor_table)
    return Server(directory, config, *options)


def store(port: int, files: list[Path], *options: str) -> None:
    """Store ``files``, in this order, with DCMTK's storescu."""
    result = run_dcmtk("storescu", "-aec", AE_TITLE, *options, "127.0.0.1", str(port), *map(str, files))
    assert result.returncode == 0 and b"E:" not in result.stdout + result.stderr, result.stderr.decode()


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory, instances: Instances) -> Path:
    """A storage area holding studies A and B, for the tests that do not change it."""
    base = tmp_path_factory.mktemp("shared")
    with serve(base / "filling", base / "area") as server:
        store(server.port, instances.study_a + instances.study_b)
    return base / "area"


def stored_files(area: Path) -> dict[str, Path]:
    """SOP Instance UID -> file of every image file in ``area``."""
    files = {}
    for path in area.iterdir():
        if path.name != "index.dat":
            files[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return files


@contextmanager
def associate(port: int, *abstract_syntaxes: str, calling: str = "SCU", called: str = AE_TITLE,
              scp_roles: tuple[str, ...] = (), handlers: list | None = None) -> Iterator[Association]:
    """A pynetdicom association to our server proposing ``abstract_syntaxes`` (the requestor is SCP of
    ``scp_roles``), released at the end of the block."""
    ae = AE(ae_title=calling)
    for abstract_syntax in abstract_syntaxes:
        ae.add_requested_context(abstract_syntax)
    association = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=handlers,
                               ext_neg=[build_role(sop_class, scp_role=True) for sop_class in scp_roles] or None)
    assert association.is_established
    try:
        yield association
    finally:
        if association.is_established:
            association.release()


def context_results(association: Association) -> dict[str, int]:
    """Abstract syntax -> presentation context result (0 accepted, 1 user rejection, 3 not supported)."""
    return {str(context.abstract_syntax): context.result
            for context in association.accepted_contexts + association.rejected_contexts}


def find_images(port: int, study_uid: str) -> list[str]:
    """The SOP Instance UIDs of ``study_uid`` that a Study Root IMAGE-level C-FIND returns."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = ""
    identifier.SOPInstanceUID = ""
    with associate(port, StudyRootQueryRetrieveInformationModelFind) as association:
        return [str(found.SOPInstanceUID) for status, found in
                association.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
                if status and status.Status == 0xFF00]


def final(responses: list[Response]) -> tuple[int, str, str, str]:
    """Status, completed, failed and warning counters of the final response."""
    assert responses, "no response"
    last = responses[-1]
    return last.status, last.completed, last.failed, last.warning


# --- move destinations --------------------------------------------------------------------------------------------

def test_unknown_destination(tmp_path: Path, area: Path) -> None:
    with serve(tmp_path / "server", area) as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY_A), destination="NOWHERE")
    assert [response.status for response in responses] == [0xA801], output
    assert responses[0].failed_uids == []


def test_move_aetitle_restricts_the_destination_to_the_requester(tmp_path: Path, area: Path) -> None:
    """``-ZA``: only a move to the requesting AE title itself is allowed."""
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", area, "-ZA",
            host_table=f"DEST = (DEST, 127.0.0.1, {port})\nMOVESCU = (MOVESCU, 127.0.0.1, {port})") as server:
        to_other, output = movescu(server.port, "-S", study_keys(STUDY_B), destination="DEST", calling="MOVESCU")
        to_self, _ = movescu(server.port, "-S", study_keys(STUDY_B), destination="MOVESCU", calling="MOVESCU")
    assert [response.status for response in to_other] == [0xA801], output
    assert final(to_self) == (0x0000, "3", "0", "0")


@pytest.mark.parametrize("options, allowed, refused", [
    (("-ZH",), "BYNAME", "BYADDRESS"),  # the requester's host is the reverse lookup of 127.0.0.1: localhost
    (("-ZH", "-dhl"), "BYADDRESS", "BYNAME"),  # without host name lookup it is the address itself
])
def test_move_host_compares_host_strings(tmp_path: Path, area: Path, options: tuple[str, ...], allowed: str,
                                         refused: str) -> None:
    """``-ZH``: the destination's configured host string must equal the requester's host as the server sees it."""
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", area, *options,
            host_table=f"BYNAME = (BYNAME, localhost, {port})\nBYADDRESS = (BYADDRESS, 127.0.0.1, {port})") as server:
        good, _ = movescu(server.port, "-S", study_keys(STUDY_B), destination=allowed)
        bad, output = movescu(server.port, "-S", study_keys(STUDY_B), destination=refused)
    assert final(good) == (0x0000, "3", "0", "0")
    assert [response.status for response in bad] == [0xA801], output


def test_move_vendor_needs_both_aes_in_one_vendor_entry(tmp_path: Path, area: Path) -> None:
    """``-ZV``: the requesting AE and the destination must share a VendorTable entry."""
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", area, "-ZV",
            host_table=f"DEST = (DEST, 127.0.0.1, {port})\nOTHER = (OTHER, 127.0.0.1, {port})\n"
                       "MOVESCU = (MOVESCU, localhost, 104)",
            vendor_table='"Acme Imaging" = MOVESCU, DEST') as server:
        same_vendor, _ = movescu(server.port, "-S", study_keys(STUDY_B), calling="MOVESCU", destination="DEST")
        other_destination, _ = movescu(server.port, "-S", study_keys(STUDY_B), calling="MOVESCU",
                                       destination="OTHER")
        unknown_requester, _ = movescu(server.port, "-S", study_keys(STUDY_B), calling="STRANGER",
                                       destination="DEST")
    assert final(same_vendor) == (0x0000, "3", "0", "0")
    assert [response.status for response in other_destination] == [0xA801]
    assert [response.status for response in unknown_requester] == [0xA801]


def test_check_move(tmp_path: Path, area: Path) -> None:
    """``--check-move``: an identifier with a key not allowed at its level is refused with 0xA900."""
    with storescp(tmp_path / "dest") as port, serve(tmp_path / "server", area, "-XM",
                                                    host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        valid, _ = movescu(server.port, "-S", study_keys(STUDY_B))
        with_patient_id, _ = movescu(server.port, "-S", (*study_keys(STUDY_B), "PatientID=PATRET"))
        get_with_patient_id, _ = getscu(server.port, "-S", (*study_keys(STUDY_B), "PatientID=PATRET"),
                                        tmp_path / "get")
    assert final(valid) == (0x0000, "3", "0", "0")
    assert [response.status for response in with_patient_id] == [0xA900]
    assert [response.status for response in get_with_patient_id] == [0xA900]
    assert not any((tmp_path / "get").iterdir())


# --- presentation contexts ----------------------------------------------------------------------------------------

def test_require_find_refuses_move_and_get_without_find(tmp_path: Path, area: Path) -> None:
    """``--require-find``: MOVE and GET contexts need the FIND context of their model (docs/differences.md #9)."""
    with serve(tmp_path / "server", area, "--require-find") as server:
        with associate(server.port, StudyRootQueryRetrieveInformationModelMove,
                       StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelFind,
                       PatientRootQueryRetrieveInformationModelMove) as association:
            results = context_results(association)
        get_responses, get_output = getscu(server.port, "-S", study_keys(STUDY_B), tmp_path / "get")
        move_responses, _ = movescu(server.port, "-S", study_keys(STUDY_B), destination="NOWHERE")
    assert results == {StudyRootQueryRetrieveInformationModelMove: 1, StudyRootQueryRetrieveInformationModelGet: 1,
                       PatientRootQueryRetrieveInformationModelFind: 0,
                       PatientRootQueryRetrieveInformationModelMove: 0}
    assert get_responses == [] and "No adequate Presentation Contexts" in get_output  # getscu proposes no FIND
    assert [response.status for response in move_responses] == [0xA801]  # movescu proposes FIND and MOVE


def test_disable_get(tmp_path: Path, area: Path) -> None:
    """``--disable-get``: the GET contexts are refused (abstract syntax not supported), getscu cannot work."""
    with serve(tmp_path / "server", area, "--disable-get") as server:
        with associate(server.port, StudyRootQueryRetrieveInformationModelGet,
                       StudyRootQueryRetrieveInformationModelMove) as association:
            results = context_results(association)
        responses, output = getscu(server.port, "-S", study_keys(STUDY_B), tmp_path / "get")
    assert results == {StudyRootQueryRetrieveInformationModelGet: 3, StudyRootQueryRetrieveInformationModelMove: 0}
    assert responses == [] and "No adequate Presentation Contexts" in output


def assert_index_unlocked(area: Path) -> None:
    """Nobody holds the area's index lock (DCMTK's flock): an exclusive lock is granted without waiting."""
    with open(area / "index.dat", "rb") as file:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)   # BlockingIOError while any lock is held
        fcntl.flock(file, fcntl.LOCK_UN)


def assert_images_unlocked(area: Path) -> None:
    """No stored file of the area is held under a sub-operation's lock (nor the one opened ahead of it)."""
    files = [path for path in area.iterdir() if path.name != "index.dat" and path.is_file()]
    assert files
    for path in files:
        with open(path, "rb") as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(file, fcntl.LOCK_UN)


# --- cancel -------------------------------------------------------------------------------------------------------

def test_cancel_during_move(tmp_path: Path, area: Path) -> None:
    """A C-CANCEL after the first pending response: final 0xFE00 with the counters, some remaining."""
    slow = StorageSCP(delay=0.2)
    move_model = StudyRootQueryRetrieveInformationModelMove
    with slow.running(), serve(tmp_path / "server", area, host_table=f"DEST = (DEST, 127.0.0.1, {slow.port})") \
            as server, associate(server.port, move_model) as association:
        responses = []
        for status, _ in association.send_c_move(study_identifier(STUDY_A), "DEST", move_model, msg_id=5):
            responses.append(status)
            if len(responses) == 1:
                association.send_c_cancel(5, query_model=move_model)
    assert responses[0].Status == 0xFF00
    last = responses[-1]
    assert last.Status == 0xFE00
    assert last.NumberOfRemainingSuboperations > 0 and last.NumberOfCompletedSuboperations >= 1
    assert last.NumberOfFailedSuboperations == last.NumberOfWarningSuboperations == 0
    assert last.NumberOfRemainingSuboperations + last.NumberOfCompletedSuboperations == 10
    assert len(slow.records) == last.NumberOfCompletedSuboperations


def test_cancel_during_get(tmp_path: Path, area: Path) -> None:
    """A C-CANCEL after the first pending C-GET response: final 0xFE00; no index lock and no file lock (the
    file opened ahead for the next sub-operation included) is left held while the association stays
    open, and the AE answers an echo."""
    stored: list[str] = []

    def on_store(event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.2)
        return 0x0000

    get_model = StudyRootQueryRetrieveInformationModelGet
    with serve(tmp_path / "server", area) as server:
        with associate(server.port, get_model, CTImageStorage, MRImageStorage,
                       scp_roles=(CTImageStorage, MRImageStorage),
                       handlers=[(evt.EVT_C_STORE, on_store)]) as association:
            responses = []
            for status, _ in association.send_c_get(study_identifier(STUDY_A), get_model, msg_id=9):
                responses.append(status)
                if len(responses) == 1:
                    association.send_c_cancel(9, query_model=get_model)
            assert_index_unlocked(area)
            assert_images_unlocked(area)
        echo = echoscu(server.port, timeout=10)
    assert responses[0].Status == 0xFF00
    last = responses[-1]
    assert last.Status == 0xFE00
    assert last.NumberOfRemainingSuboperations > 0 and last.NumberOfCompletedSuboperations >= 1
    assert last.NumberOfRemainingSuboperations + last.NumberOfCompletedSuboperations == 10
    assert len(stored) == last.NumberOfCompletedSuboperations
    assert echo.returncode == 0


# --- failing sub-operations ---------------------------------------------------------------------------------------

def test_destination_refusing_a_sop_class(tmp_path: Path, area: Path, instances: Instances) -> None:
    """A destination that supports only CT: the MR sub-operations fail, 0xB000 with their UIDs."""
    ct_only = StorageSCP(sop_classes=(CTImageStorage,))
    with ct_only.running(), serve(tmp_path / "server", area,
                                  host_table=f"DEST = (DEST, 127.0.0.1, {ct_only.port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY_A))
    assert [response.status for response in responses] == [0xFF00] * 10 + [0xB000], output
    assert final(responses) == (0xB000, "8", "2", "0")
    assert responses[-1].failed_uids == uids(instances.study_a)[8:]
    assert [record.sop_instance_uid for record in ct_only.records] == uids(instances.study_a)[:8]


def test_destination_down(tmp_path: Path, area: Path, instances: Instances) -> None:
    """No sub-association: 0xA702 at once, every match failed and listed."""
    with serve(tmp_path / "server", area, host_table=f"DEST = (DEST, 127.0.0.1, {free_port()})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY_A))
    assert [response.status for response in responses] == [0xA702], output
    assert final(responses) == (0xA702, "0", "10", "0")
    assert responses[0].failed_uids == uids(instances.study_a)


def test_destination_answering_with_an_unknown_pdu(tmp_path: Path, area: Path, instances: Instances) -> None:
    """A destination that accepts the sub-association and then sends a PDU of an unknown type: the
    sub-operations fail (listed), the requestor's association goes on (a C-ECHO on it afterwards)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answered = threading.Event()

    def destination() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)   # the A-ASSOCIATE-RQ
            accept = pdu.encode_associate_ac(pdu.AssociateAC(
                called_ae_title="DEST", calling_ae_title=AE_TITLE, max_pdu_length=16384,
                implementation_class_uid="1.2.3.4", implementation_version_name="ODD",
                application_context="1.2.840.10008.3.1.1.1",
                contexts=[pdu.PresentationContextAC(1, pdu.ACCEPTANCE, ExplicitVRLittleEndian)]))
            connection.sendall(accept)
            connection.recv(65536)   # the first C-STORE-RQ
            connection.sendall(bytes.fromhex("08000000000400000000"))   # PDU type 0x08
            answered.set()
            time.sleep(1)

    thread = threading.Thread(target=destination, daemon=True)
    thread.start()
    with serve(tmp_path / "server", area, host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server, \
            associate(server.port, StudyRootQueryRetrieveInformationModelMove, Verification) as association:
        statuses = [status.Status for status, _ in association.send_c_move(
            study_identifier(STUDY_A), "DEST", StudyRootQueryRetrieveInformationModelMove)]
        assert answered.is_set()
        assert statuses[-1] in (0xA702, 0xB000), statuses   # failed sub-operations, not an abort
        assert association.send_c_echo().Status == 0
        assert "DIMSE Failure" not in server.log
    thread.join(5)
    listener.close()


def test_file_deleted_between_match_and_send(tmp_path: Path, instances: Instances) -> None:
    """An image file that is gone when its turn comes counts as a failed sub-operation."""
    slow = StorageSCP(delay=0.1)
    move_model = StudyRootQueryRetrieveInformationModelMove
    with slow.running(), serve(tmp_path / "server", tmp_path / "area",
                               host_table=f"DEST = (DEST, 127.0.0.1, {slow.port})") as server:
        store(server.port, instances.study_a)
        last_uid = uids(instances.study_a)[-1]
        victim = stored_files(tmp_path / "area")[last_uid]
        with associate(server.port, move_model) as association:
            responses = []
            for status, identifier in association.send_c_move(study_identifier(STUDY_A), "DEST", move_model):
                responses.append((status, identifier))
                if len(responses) == 1:
                    victim.unlink()
    status, identifier = responses[-1]
    assert (status.Status, status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == \
        (0xB000, 9, 1)
    assert identifier.FailedSOPInstanceUIDList == last_uid
    assert [record.sop_instance_uid for record in slow.records] == uids(instances.study_a)[:9]


# --- the sub-association ------------------------------------------------------------------------------------------

def test_sub_association_identity_and_move_originator(tmp_path: Path, area: Path) -> None:
    """Calling AE of the sub-association = the AE the requester called; each C-STORE-RQ carries the Move
    Originator AE title and message ID and the C-MOVE's priority; message IDs count from 1 per move."""
    recorder = StorageSCP()
    move_model = StudyRootQueryRetrieveInformationModelMove
    with recorder.running(), serve(tmp_path / "server", area, titles=(AE_TITLE, "ARCHIVE"),
                                   host_table=f"DEST = (DEST, 127.0.0.1, {recorder.port})") as server, \
            associate(server.port, move_model, calling="ORIGIN", called="ARCHIVE") as association:
        first = [status.Status for status, _ in
                 association.send_c_move(study_identifier(STUDY_B), "DEST", move_model, msg_id=7, priority=1)]
        second = [status.Status for status, _ in
                  association.send_c_move(study_identifier(STUDY_B), "DEST", move_model, msg_id=8, priority=2)]
    assert first[-1] == second[-1] == 0x0000
    assert {(record.calling_ae_title, record.move_originator_ae_title) for record in recorder.records} == \
        {("ARCHIVE", "ORIGIN")}
    assert [(record.message_id, record.move_originator_message_id, record.priority)
            for record in recorder.records] == [(1, 7, 1), (2, 7, 1), (3, 7, 1), (1, 8, 2), (2, 8, 2), (3, 8, 2)]


def test_move_pending_responses_count_each_sub_operation(tmp_path: Path, area: Path) -> None:
    """A pending response after each sub-operation, with its counters as they were then, before the final
    one; it may be sent once the next sub-operation's C-STORE-RQ is out (docs/association.md §4), never
    later, so the destination has received k or k + 1 instances when the k-th arrives."""
    recorder = StorageSCP(delay=0.05)
    move_model = StudyRootQueryRetrieveInformationModelMove
    with recorder.running(), serve(tmp_path / "server", area, host_table=f"DEST = (DEST, 127.0.0.1, {recorder.port})") \
            as server, associate(server.port, move_model) as association:
        seen = [(status.Status, status.get("NumberOfRemainingSuboperations"),
                 status.get("NumberOfCompletedSuboperations"), len(recorder.records))
                for status, _ in association.send_c_move(study_identifier(STUDY_A), "DEST", move_model)]
    assert [entry[:3] for entry in seen] == [(0xFF00, 10 - k, k) for k in range(1, 11)] + [(0x0000, None, 10)]
    assert all(k <= received <= k + 1 for k, (_, _, _, received) in enumerate(seen[:-1], start=1)), seen


@contextmanager
def throttled(port: int, bytes_per_second: int = 1 << 20) -> Iterator[int]:
    """A TCP relay on a free port to ``port`` on 127.0.0.1 that passes what it is sent at about
    ``bytes_per_second`` (replies at full speed), for connections made until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    chunk = 1 << 15

    def pump(source: socket.socket, target: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(chunk):
                target.sendall(data)
                if slow:
                    time.sleep(len(data) / bytes_per_second)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def relay() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_requestor_gone_during_a_sub_operation_is_not_the_destinations_fault(tmp_path: Path) -> None:
    """The requestor resets its connection while a C-STORE-RQ is on its way to the destination, so that the
    pending response due meanwhile cannot be sent (docs/association.md §4): the sub-operation completes,
    the sub-association is released (not aborted, no file blamed), and the server serves on."""
    study = uid(77)
    small = write_instance(make_instance(CTImageStorage, StudyInstanceUID=study, SeriesInstanceUID=uid(77, 0),
                                         SOPInstanceUID=uid(77, 1)), tmp_path / "small.dcm")
    large = make_instance(CTImageStorage, StudyInstanceUID=study, SeriesInstanceUID=uid(77, 0),
                          SOPInstanceUID=uid(77, 2))
    large.Rows, large.Columns, large.PixelData = 2048, 2048, bytes(2048 * 2048 * 2)   # more than the buffers hold
    large = write_instance(large, tmp_path / "large.dcm")
    recorder = StorageSCP()
    move_model = StudyRootQueryRetrieveInformationModelMove
    with recorder.running(), throttled(recorder.port, 4 << 20) as port, \
            serve(tmp_path / "server", tmp_path / "area", "-v", host_table=f"DEST = (DEST, 127.0.0.1, {port})") \
            as server:
        store(server.port, [small, large])
        with associate(server.port, move_model) as association:
            def reset_once_the_first_is_stored() -> None:
                while not recorder.records:
                    time.sleep(0.01)
                time.sleep(0.3)   # the 8 MB C-STORE-RQ is on its way, for about 2 s
                connection = association.dul.socket.socket
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
            threading.Thread(target=reset_once_the_first_is_stored, daemon=True).start()
            try:
                for _ in association.send_c_move(study_identifier(study), "DEST", move_model):
                    pass
            except Exception:   # noqa: BLE001 - pynetdicom's side of the reset is not what is tested
                pass
        log = server.wait_for_log("Releasing Sub-Association", timeout=20)
        echo = echoscu(server.port, called=AE_TITLE, timeout=10)
    assert "sub-association failed" not in log and "storeSCU" not in log, log
    assert len(recorder.records) == 2
    assert echo.returncode == 0


@pytest.mark.parametrize("destination", ["QRSCP2", AE_TITLE])
def test_move_to_an_ae_of_the_same_server_and_area(tmp_path: Path, instances: Instances, destination: str) -> None:
    """Another AE on the same storage area, or the requested AE itself, as destination: completes, no deadlock
    (docs/differences.md #3); the re-stored instances replace themselves, nothing is lost or doubled."""
    area = tmp_path / "area"
    with serve(tmp_path / "server", area, titles=(AE_TITLE, "QRSCP2"),
               host_table=f"{AE_TITLE} = ({AE_TITLE}, 127.0.0.1, {{port}})\n"
                          "QRSCP2 = (QRSCP2, 127.0.0.1, {port})") as server:
        store(server.port, instances.study_a)
        responses, output = movescu(server.port, "-S", study_keys(STUDY_A), destination=destination, timeout=30)
        found = find_images(server.port, STUDY_A)
    assert final(responses) == (0x0000, "10", "0", "0"), output
    assert sorted(found) == sorted(uids(instances.study_a))
    assert sorted(stored_files(area)) == sorted(uids(instances.study_a))


@pytest.mark.parametrize("destination, status", [("NOWHERE", 0xA801), ("DOWN", 0xA702)])
def test_echo_right_after_a_failed_move(tmp_path: Path, area: Path, destination: str, status: int) -> None:
    """A failed C-MOVE leaves no index lock behind while its association is still open, and a C-ECHO to
    the same AE is answered (docs/differences.md #2)."""
    move_model = StudyRootQueryRetrieveInformationModelMove
    with serve(tmp_path / "server", area, host_table=f"DOWN = (DOWN, 127.0.0.1, {free_port()})") as server, \
            associate(server.port, move_model) as association:
        statuses = [response.Status for response, _ in
                    association.send_c_move(study_identifier(STUDY_A), destination, move_model)]
        assert_index_unlocked(area)
        echo = echoscu(server.port, timeout=10)
        assert association.is_established
    assert statuses == [status]
    assert echo.returncode == 0, echo.stderr.decode()
    if destination == "DOWN":   # logged in DCMTK's words
        assert ("E: moveSCP: Sub-Association Request Failed: 0006:031c TCP Initialization Error: Connection refused"
                in server.log)


# --- transfer syntaxes --------------------------------------------------------------------------------------------

def test_compressed_data(tmp_path: Path, instances: Instances) -> None:
    """Stored JPEG lossless data: proposed as stored whatever the ``-x`` option, so a destination that
    accepts it gets it unchanged; one that accepts only uncompressed syntaxes gets it decoded (the codecs
    extra: tests/test_transcoding.py covers the conversions, and the server without the extra)."""
    area = tmp_path / "area"
    jpeg_uid = uids(instances.study_c)[0]
    with storescp(tmp_path / "plain") as plain_port, storescp(tmp_path / "jpeg", "+xs") as jpeg_port:
        host_table = f"PLAIN = (PLAIN, 127.0.0.1, {plain_port})\nJPEG = (JPEG, 127.0.0.1, {jpeg_port})"
        for options in ((), ("-xs",)):
            with serve(tmp_path / f"proposing{''.join(options)}", area, "+xs", *options,
                       host_table=host_table) as server:
                store(server.port, instances.study_c, "-xs")
                for destination in ("PLAIN", "JPEG"):
                    responses, output = movescu(server.port, "-S", study_keys(STUDY_C), destination=destination)
                    assert final(responses) == (0x0000, "1", "0", "0"), output
            _, syntax, content = read_canonical(instances.study_c[0])
            assert received(tmp_path / "jpeg") == {jpeg_uid: (JPEGLosslessSV1, content)}
            assert {uid: syntax for uid, (syntax, _) in received(tmp_path / "plain").items()} == \
                {jpeg_uid: ExplicitVRLittleEndian}
            for path in (*(tmp_path / "jpeg").iterdir(), *(tmp_path / "plain").iterdir()):
                path.unlink()


@pytest.mark.parametrize("server_options, listener_options, syntax", [
    ((), ("+xi",), ImplicitVRLittleEndian),
    ((), ("+xb",), ExplicitVRBigEndian),
    ((), (), ExplicitVRLittleEndian),
    (("-xi",), (), ImplicitVRLittleEndian),
], ids=["to-implicit-only", "to-big-endian", "to-explicit-little", "proposing-implicit-only"])
def test_uncompressed_conversion(tmp_path: Path, area: Path, instances: Instances, server_options: tuple[str, ...],
                                 listener_options: tuple[str, ...], syntax: str) -> None:
    """Instances stored implicit, big and little endian reach a destination that accepts another uncompressed
    syntax converted to it, with equal data sets."""
    with storescp(tmp_path / "dest", *listener_options) as port, serve(
            tmp_path / "server", area, *server_options, host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY_B))
    assert final(responses) == (0x0000, "3", "0", "0"), output
    expected = {}
    for path in instances.study_b:
        sop_instance_uid, _, content = read_canonical(path)
        expected[sop_instance_uid] = (syntax, content)
    assert received(tmp_path / "dest") == expected
