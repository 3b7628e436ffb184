"""A Japanese and a Korean patient (ISO 2022 code extensions, PS3.5 Annex H and I) queried in UTF-8 by real
clients: pynetdicom, and Orthanc, which asks in UTF-8 and cannot read what DCMTK answers (README 19)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Server, needs_dcmtk, run_dcmtk, simple_config
from corpus import make_instance, uid, write_instance
from orthanc import Orthanc, needs_orthanc, wait_for_api
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

pytestmark = needs_dcmtk

#: (Specific Character Set, PatientName as text): the examples of PS3.5 H.3.1 and I.2.
PATIENTS = {
    "JAPANESE": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    "KOREAN": (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
}
BRANCH = 87


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """Our server holding the two patients, stored by DCMTK's storescu as written (in code extensions)."""
    directory = tmp_path_factory.mktemp("charset-peers")
    files = []
    for number, (patient_id, (charset, name)) in enumerate(PATIENTS.items(), start=1):
        dataset = make_instance(CTImageStorage, PatientID=patient_id, StudyInstanceUID=uid(BRANCH, number),
                                SeriesInstanceUID=uid(BRANCH, number, 1), SOPInstanceUID=uid(BRANCH, number, 1, 1))
        dataset.SpecificCharacterSet = charset
        dataset.PatientName = name
        files.append(str(write_instance(dataset, directory / f"{patient_id}.dcm")))
    assert b"\x1b$B;3ED\x1b(B" in Path(files[0]).read_bytes()       # the name is in ISO 2022 IR 87
    server = Server(directory, simple_config())
    result = run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(server.port), *files)
    assert result.returncode == 0, result.stderr
    yield server
    server.stop()


def test_pynetdicom_query_in_utf8_is_answered_in_utf8(archive: Server):
    ae = AE(ae_title="UTF8SCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", archive.port, ae_title="QRSCP")
    assert association.is_established
    try:
        from pydicom.dataset import Dataset
        query = Dataset()
        query.SpecificCharacterSet = "ISO_IR 192"
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = ""
        query.PatientName = ""
        answers = {}
        for status, identifier in association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status.Status == 0xFF00:
                answers[identifier.PatientID] = (identifier.SpecificCharacterSet, str(identifier.PatientName))
    finally:
        association.release()
    assert answers == {patient_id: ("ISO_IR 192", name) for patient_id, (_, name) in PATIENTS.items()}


@needs_orthanc
def test_orthanc_lists_the_studies(archive: Server, tmp_path: Path):
    """Orthanc's "list all studies" against the archive: both patients, their names readable."""
    with Orthanc(tmp_path, {"qrscp": ("QRSCP", archive.port)}, DefaultEncoding="Utf8") as orthanc:
        wait_for_api(orthanc)
        answers = orthanc.query("qrscp", "Study", {"PatientID": "", "PatientName": "", "StudyInstanceUID": ""})
    assert {answer["PatientID"]: answer["PatientName"] for answer in answers} == {
        patient_id: name for patient_id, (_, name) in PATIENTS.items()}
