"""A C-FIND answers from the index as it is now, although a worker keeps a table of the records (their
values, lookups, values converted to another character set) between queries (docs/index-format.md §12).

One association stays open and asks the same queries again after each kind of write: a store through
another association (another worker: the server's write journal), a registration by DCMTK's ``dcmqridx``
and a store by DCMTK's ``dcmqrscp`` serving the same area (writers outside the journal; the latter also
replaces an instance, the same slot rewritten) and a store on the same association (the worker's own
write). Half of the instances are in ISO_IR 100, so that the ASCII and UTF-8 queries compare them
converted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import Server, needs_dcmtk, run_dcmtk, simple_config
from corpus import make_ct, uid, write_instance
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

pytestmark = needs_dcmtk

AE_TITLE = "QRSCP"
BRANCH = 7301


def _instance(number: int, directory: Path, name: str = "Fresh") -> tuple[Dataset, Path]:
    """Instance ``number``: study ``number`` of patient P<number % 2>, on 2024-01-<number + 1>, named
    ``<name>^<number % 2>``, in ISO_IR 100 if ``number`` is even."""
    dataset = make_ct(PatientID=f"P{number % 2}", PatientName=f"{name}^{number % 2}",
                      StudyInstanceUID=uid(BRANCH, number), StudyDate=f"202401{number + 1:02d}",
                      SeriesInstanceUID=uid(BRANCH, number, 1), SOPInstanceUID=uid(BRANCH, number, 1, 1))
    if number % 2 == 0:
        dataset.SpecificCharacterSet = "ISO_IR 100"
    return dataset, write_instance(dataset, directory / f"in{number}-{name}.dcm")


#: Study Root queries, one per matching kind the record table serves, and which studies they match
#: (``renamed``: the studies whose instance is now named Renamed).
QUERIES = {
    "exact PatientID": (dict(PatientID="P1"), lambda n, renamed: n % 2 == 1),
    "UID list": (dict(StudyInstanceUID="\\".join(uid(BRANCH, n) for n in (0, 3, 4, 5))),
                 lambda n, renamed: n in (0, 3, 4, 5)),
    "wildcard PatientName": (dict(PatientName="Fre*^0"), lambda n, renamed: n % 2 == 0 and n not in renamed),
    "PatientName in UTF-8": (dict(SpecificCharacterSet="ISO_IR 192", PatientName="*^0"), lambda n, renamed: n % 2 == 0),
    "renamed patients": (dict(PatientName="Renamed*"), lambda n, renamed: n in renamed),
    "StudyDate range": (dict(StudyDate="20240102-20240105"), lambda n, renamed: 1 <= n <= 4),
    "image by SOPInstanceUID": (dict(QueryRetrieveLevel="IMAGE", SeriesInstanceUID=uid(BRANCH, 6, 1),
                                     SOPInstanceUID=uid(BRANCH, 6, 1, 1)), lambda n, renamed: n == 6),
}


def _answers(association) -> dict[str, list[str]]:
    """Each query's Study Instance UIDs."""
    answers = {}
    for name, (keys, _) in QUERIES.items():
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        found = []
        for status, identifier in association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            assert status.Status in (0xFF00, 0x0000), name
            if status.Status == 0xFF00:
                found.append(str(identifier.StudyInstanceUID))
        answers[name] = sorted(found)
    return answers


def _assert_answers(association, stored: list[int], renamed: tuple[int, ...] = ()) -> None:
    """Each query twice (the second search finds the lookups the first one built): both give the
    stored instances' studies that match."""
    for _ in range(2):
        assert _answers(association) == _expected(stored, renamed)


def _expected(stored: list[int], renamed: tuple[int, ...]) -> dict[str, list[str]]:
    return {name: sorted(uid(BRANCH, n) for n in stored if test(n, renamed)) for name, (_, test) in QUERIES.items()}


def test_queries_on_one_association_see_every_kind_of_write(tmp_path: Path) -> None:
    area = tmp_path / "area"
    instances = [_instance(number, tmp_path) for number in range(8)]
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (500, 1024mb) ANY"})) as server:
        assert run_dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(server.port),
                         *(str(path) for _, path in instances[:3])).returncode == 0
        ae = AE(ae_title="FRESHSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(CTImageStorage)
        association = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
        assert association.is_established
        try:
            _assert_answers(association, [0, 1, 2])
            # another association, hence another worker
            assert run_dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(server.port),
                             str(instances[3][1]), str(instances[4][1])).returncode == 0
            _assert_answers(association, [0, 1, 2, 3, 4])
            # DCMTK's dcmqridx, outside the server
            registered = shutil.copy(instances[5][1], area / "registered.dcm")
            assert run_dcmtk("dcmqridx", str(area), str(registered)).returncode == 0
            _assert_answers(association, [0, 1, 2, 3, 4, 5])
            # DCMTK's dcmqrscp on the same area: instance 2 again under another name (its slot rewritten)
            (tmp_path / "dcmtk").mkdir()
            config = simple_config({AE_TITLE: f"{area} RW (500, 1024mb) ANY"})
            with Server(tmp_path / "dcmtk", config, dcmtk_server=True) as dcmtk_server:
                _, renamed = _instance(2, tmp_path, name="Renamed")
                assert run_dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(dcmtk_server.port),
                                 str(renamed)).returncode == 0
            _assert_answers(association, [0, 1, 2, 3, 4, 5], renamed=(2,))
            # this association's own worker
            for dataset, _ in instances[6:]:
                assert association.send_c_store(dataset).Status == 0x0000
            _assert_answers(association, list(range(8)), renamed=(2,))
        finally:
            association.release()
