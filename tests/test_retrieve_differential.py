"""Differential C-MOVE and C-GET tests: the same corpus and requests, qrscp against DCMTK's dcmqrscp.

The corpus of ``corpus.py`` is stored once into our server and once into DCMTK's (separate storage areas,
the same configuration: AE title ``QRSCP``, a HostTable whose move destination ``DEST`` is a DCMTK
``storescp``, one per server). Each area is served twice, without and with ``--check-move``. Every case of
``CASES`` then runs through DCMTK's ``movescu`` or ``getscu`` against both servers; the responses (status,
counters, Failed SOP Instance UID List) must be equal, and so must the received files: the same SOP
instances, in the same transfer syntax, with equal data sets (which must also equal the corpus files).
"""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Server, free_port, needs_dcmtk, run_dcmtk, simple_config
from corpus import uid, write_corpus
from test_retrieve import (
    AE_TITLE,
    Response,
    getscu,
    movescu,
    read_canonical,
    received,
    storescp,
)

pytestmark = [pytest.mark.dcmtk, needs_dcmtk]

MODES = {"default": (), "check-move": ("-XM",)}
"""Server runs: name -> extra command-line options of both servers."""


@dataclass(frozen=True)
class Case:
    """One retrieve request: ``service`` ``move``/``get``, model option ``-P``/``-S``/``-O``, the ``-k`` keys."""

    name: str
    service: str
    model: str
    keys: tuple[str, ...]
    mode: str = "default"
    destination: str = "DEST"


def move(name: str, model: str, level: str, *keys: str, mode: str = "default", destination: str = "DEST") -> Case:
    """A C-MOVE case at ``level``."""
    return Case(name, "move", model, (f"QueryRetrieveLevel={level}", *keys), mode, destination)


def get(name: str, model: str, level: str, *keys: str, mode: str = "default") -> Case:
    """A C-GET case at ``level``."""
    return Case(name, "get", model, (f"QueryRetrieveLevel={level}", *keys), mode)


def study(p: int, s: int) -> str:
    """The StudyInstanceUID key of study ``s`` of corpus patient ``p``."""
    return f"StudyInstanceUID={uid(p, s)}"


def series(p: int, s: int, r: int) -> str:
    """The SeriesInstanceUID key of series ``r`` of study ``s`` of corpus patient ``p``."""
    return f"SeriesInstanceUID={uid(p, s, r)}"


def image(*numbers: tuple[int, int, int, int]) -> str:
    """The SOPInstanceUID key listing the corpus instances ``(p, s, r, i)``."""
    return "SOPInstanceUID=" + "\\".join(uid(*n) for n in numbers)


_XM = "check-move"

CASES: tuple[Case, ...] = (
    # every level of every model, with the unique keys
    move("p_patient", "-P", "PATIENT", "PatientID=PAT002"),
    move("p_study_big_endian", "-P", "STUDY", "PatientID=PAT003", study(3, 1)),
    move("p_series_implicit", "-P", "SERIES", "PatientID=PAT001", study(1, 2), series(1, 2, 2)),
    move("p_image", "-P", "IMAGE", "PatientID=PAT004", study(4, 1), series(4, 1, 1), image((4, 1, 1, 2))),
    move("s_study", "-S", "STUDY", study(1, 1)),
    move("s_study_list_charsets", "-S", "STUDY", f"StudyInstanceUID={uid(5, 1)}\\{uid(9, 2)}\\{uid(3, 2)}"),
    move("s_series_big_endian", "-S", "SERIES", study(7, 2), series(7, 2, 1)),
    move("s_image_list", "-S", "IMAGE", study(11, 1), series(11, 1, 1), image((11, 1, 1, 1), (11, 1, 1, 4))),
    move("o_patient", "-O", "PATIENT", "PatientID=PAT006"),
    move("o_study_missing_attributes", "-O", "STUDY", "PatientID=PAT008", study(8, 1)),
    # matching without --check-move
    move("s_study_non_unique_key", "-S", "STUDY", "PatientName=Doe^John"),
    move("s_study_wrong_date", "-S", "STUDY", study(1, 1), "StudyDate=20000101"),
    move("p_study_missing_patient_id", "-P", "STUDY", study(1, 1)),
    move("s_series_missing_study_uid", "-S", "SERIES", series(1, 1, 1)),
    move("s_no_match", "-S", "STUDY", study(99, 1)),
    move("s_unknown_level", "-S", "FOO", study(1, 1)),
    # destinations
    move("unknown_destination", "-S", "STUDY", study(1, 1), destination="NOWHERE"),
    move("unknown_destination_no_match", "-S", "STUDY", study(99, 1), destination="NOWHERE"),
    move("destination_down", "-S", "STUDY", study(1, 1), destination="DOWN"),
    # --check-move
    move("xm_s_study", "-S", "STUDY", study(1, 1), mode=_XM),
    move("xm_s_study_list", "-S", "STUDY", f"StudyInstanceUID={uid(1, 1)}\\{uid(2, 1)}", mode=_XM),
    move("xm_p_image", "-P", "IMAGE", "PatientID=PAT001", study(1, 1), series(1, 1, 1), image((1, 1, 1, 3)),
         mode=_XM),
    move("xm_s_study_with_patient_id", "-S", "STUDY", "PatientID=PAT001", study(1, 1), mode=_XM),
    move("xm_s_patient_level", "-S", "PATIENT", "PatientID=PAT001", mode=_XM),
    move("xm_s_study_key_below_level", "-S", "STUDY", study(1, 1), series(1, 1, 1), mode=_XM),
    move("xm_s_study_empty_unique_key", "-S", "STUDY", "StudyInstanceUID", mode=_XM),
    move("xm_s_study_non_unique_key", "-S", "STUDY", study(1, 1), "StudyDate=20190312", mode=_XM),
    move("xm_p_study_missing_patient_id", "-P", "STUDY", study(1, 1), mode=_XM),
    move("xm_s_series_missing_study_uid", "-S", "SERIES", series(1, 1, 1), mode=_XM),
    move("xm_o_series_below_model", "-O", "SERIES", "PatientID=PAT001", study(1, 1), series(1, 1, 1), mode=_XM),
    # C-GET
    get("get_s_study", "-S", "STUDY", study(1, 1)),
    get("get_p_patient", "-P", "PATIENT", "PatientID=PAT002"),
    get("get_p_series_big_endian", "-P", "SERIES", "PatientID=PAT007", study(7, 2), series(7, 2, 1)),
    get("get_s_image", "-S", "IMAGE", study(5, 1), series(5, 1, 1), image((5, 1, 1, 3))),
    get("get_o_study", "-O", "STUDY", "PatientID=PAT011", study(11, 2)),
    get("get_s_no_match", "-S", "STUDY", study(99, 1)),
    get("get_s_series_missing_study_uid", "-S", "SERIES", series(1, 1, 1)),
    get("get_xm_s_study", "-S", "STUDY", study(2, 1), mode=_XM),
    get("get_xm_s_study_with_patient_id", "-S", "STUDY", "PatientID=PAT001", study(1, 1), mode=_XM),
    get("get_xm_p_series_missing_study_uid", "-P", "SERIES", "PatientID=PAT001", series(1, 1, 1), mode=_XM),
)
"""The requests: for C-MOVE the destination is ``DEST`` (storescp) unless stated; ``DOWN`` listens nowhere."""



@dataclass
class Answer:
    """What a case produced: the responses and the received files (SOP Instance UID -> (TS, data set))."""

    responses: list[Response]
    files: dict[str, tuple[str, list]]
    output: str


@dataclass
class Side:
    """One implementation: its servers by mode and its move destination's directory."""

    servers: dict[str, Server]
    destination: Path
    work: Path

    def run(self, case: Case) -> Answer:
        """Run ``case`` (the side's cases must run one after the other: they share the destination)."""
        port = self.servers[case.mode].port
        target = self.work / case.name
        if case.service == "move":
            responses, output = movescu(port, case.model, case.keys, destination=case.destination)
            target.mkdir()
            for path in self.destination.iterdir():  # storescp saves each file before it answers
                shutil.move(path, target / path.name)
        else:
            responses, output = getscu(port, case.model, case.keys, target)
        return Answer(responses, received(target), output)


def _side(stack: ExitStack, base: Path, files: list[Path], dcmtk_server: bool) -> Side:
    """Start storescp, a server per mode sharing one storage area, store the corpus."""
    destination = base / "dest"
    destination_port = stack.enter_context(storescp(destination))
    area = base / "area"
    area.mkdir()
    config = simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"},
                           host_table=f"DEST = (DEST, 127.0.0.1, {destination_port})\n"
                                      f"DOWN = (DOWN, 127.0.0.1, {free_port()})")
    servers = {}
    for mode, options in MODES.items():
        directory = base / mode
        directory.mkdir()
        servers[mode] = stack.enter_context(Server(directory, config, *options, dcmtk_server=dcmtk_server))
    result = run_dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(servers["default"].port), *map(str, files),
                       timeout=120)
    assert result.returncode == 0 and b"E:" not in result.stdout + result.stderr, result.stderr.decode()
    work = base / "received"
    work.mkdir()
    return Side(servers, destination, work)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory, corpus_files: list[Path]) -> dict[str, dict[str, Answer]]:
    """side ("dcmtk"/"qrscp") -> case name -> answer; the two sides run in parallel."""
    with ExitStack() as stack:
        sides = {name: _side(stack, tmp_path_factory.mktemp(name), corpus_files, name == "dcmtk")
                 for name in ("dcmtk", "qrscp")}
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(lambda side=side: {case.name: side.run(case) for case in CASES})
                       for name, side in sides.items()}
            return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def corpus_content(corpus_files: list[Path]) -> dict[str, list]:
    """SOP Instance UID -> canonical data set of every corpus file."""
    content = {}
    for path in corpus_files:
        sop_instance_uid, _, dataset = read_canonical(path)
        content[sop_instance_uid] = dataset
    return content


def _outcome(answer: Answer) -> list[str]:
    """The responses' statuses and identifiers, one line each, and the received files' transfer syntaxes."""
    lines = [f"0x{r.status:04X} {' '.join(r.identifier)}" for r in answer.responses]
    return lines + [f"file {name} {syntax}" for name, (syntax, _) in sorted(answer.files.items())]


def _counters(answer: Answer) -> list[str]:
    """The responses' statuses and counters, one line each."""
    return [f"0x{r.status:04X} remaining={r.remaining} completed={r.completed} failed={r.failed} "
            f"warning={r.warning}" for r in answer.responses]


def test_case_names_are_unique() -> None:
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_retrieve_matches_dcmtk(case: Case, answers: dict[str, dict[str, Answer]],
                                corpus_content: dict[str, list]) -> None:
    """Same statuses and Failed SOP Instance UID Lists, same instances and transfer syntaxes, equal data sets."""
    reference, ours = answers["dcmtk"][case.name], answers["qrscp"][case.name]
    assert reference.responses, f"DCMTK gave no response:\n{reference.output[-2000:]}"
    assert _outcome(ours) == _outcome(reference)
    for sop_instance_uid, (_, dataset) in ours.files.items():
        assert dataset == reference.files[sop_instance_uid][1], f"{sop_instance_uid} differs from DCMTK's"
        assert dataset == corpus_content[sop_instance_uid], f"{sop_instance_uid} differs from the stored file"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_retrieve_counters_match_dcmtk(case: Case, answers: dict[str, dict[str, Answer]]) -> None:
    """Every response carries the same Remaining/Completed/Failed/Warning counters as DCMTK's."""
    assert _counters(answers["qrscp"][case.name]) == _counters(answers["dcmtk"][case.name])
