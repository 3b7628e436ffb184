"""Dropping privileges (``UserName``/``GroupName``, docs/process.md §1): after binding its port as root the
server becomes the configured user, and its workers then serve with nothing left to load from disk, even
when Python is installed where that user cannot read (pyenv or a virtual environment under /root)."""
from __future__ import annotations

import ast
import grp
import importlib.metadata
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, Server, echoscu, needs_dcmtk, run_dcmtk, simple_config
from corpus import make_ct, uid, write_instance
from packaging.requirements import Requirement
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from test_retrieve import getscu, movescu, storescp

needs_root_and_unshare = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                            reason="dropping privileges needs root; hiding Python, unshare")

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def _distribution_tops(names: list[str]) -> list[Path]:
    """The top-level files and directories (packages, modules, ``.dist-info``) of the distributions
    ``names`` and of everything they require, as this Python has them installed."""
    tops: set[Path] = set()
    seen: set[str] = set()
    while names:
        name = names.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or ():
            if file.parts[0] not in ("..", "__pycache__"):
                tops.add(Path(distribution.locate_file(file.parts[0])))
        for text in distribution.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                names.append(requirement.name)
    return sorted(tops)


@pytest.fixture(scope="module")
def hidden_python() -> Iterator[tuple[str, ...]]:
    """A command that runs qrscp (``... -m qrscp``) on a Python whose every file lies below a directory
    only root may enter: this Python's installation, qrscp's source and its requirements (and nothing
    else: no package that happens to import a codec early) are bind-mounted, in a private mount
    namespace, below a 0700 directory, with a virtual environment there that sees only them."""
    hidden = Path(tempfile.mkdtemp(prefix="qrscp-hidden-"))   # 0700, root's
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base_python = Path(sys.base_prefix, "bin", f"python{version}")
    assert base_python.exists(), base_python
    binds = [(Path(sys.base_prefix), hidden / "base"), (ROOT, hidden / "src")]
    requirements = [Requirement(text).name for text in importlib.metadata.requires("qrscp") or ()
                    if Requirement(text).marker is None]
    binds += [(top, hidden / "deps" / top.name) for top in _distribution_tops(requirements)]
    for source, target in binds:
        if source.is_dir():
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    venv = hidden / "venv"
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    script = "\n".join([
        "set -e",
        *(f'mount --bind "{source}" "{target}"' for source, target in binds),
        f'[ -d "{venv}" ] || "{hidden / "base" / "bin" / base_python.name}" -m venv --without-pip "{venv}"',
        f'printf "%s\\n" "{hidden / "src"}" "{hidden / "deps"}" > "{site / "under-test.pth"}"',
        f'exec "{venv / "bin" / "python"}" "$@"'])
    try:
        yield ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
    finally:
        shutil.rmtree(hidden)


def _patient(directory: Path, number: int, charset: str, name: str) -> Path:
    """A CT of a patient of its own, whose name is written in ``charset``."""
    dataset = make_ct(SpecificCharacterSet=charset, PatientName=name, PatientID=f"P{number}",
                      StudyInstanceUID=uid(70, number), SeriesInstanceUID=uid(70, number, 1),
                      SOPInstanceUID=uid(70, number, 1, 1))
    return write_instance(dataset, directory / f"patient{number}.dcm")


def _find_patient_names(port: int) -> list[str]:
    """pynetdicom's C-FIND for every study, in UTF-8: the patient names answered."""
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", port, ae_title="QRSCP")
    assert association.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.SpecificCharacterSet = "STUDY", "ISO_IR 192"
    query.StudyInstanceUID = query.PatientName = ""
    try:
        return sorted(str(identifier.PatientName) for status, identifier in
                      association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                      if identifier is not None and status.Status in (0xFF00, 0xFF01))
    finally:
        association.release()


@needs_dcmtk
@needs_root_and_unshare
def test_dropped_privileges_serve_with_python_out_of_reach(tmp_path: Path, hidden_python: tuple[str, ...]) -> None:
    """With ``UserName = nobody`` and Python out of nobody's reach, the workers answer an echo (a reverse
    lookup: the idna codec), stores and a find of patients in other character sets (their codecs), a move
    and a get, as nobody:nogroup."""
    files = [_patient(tmp_path, 1, "ISO_IR 100", "Müller^Jürgen"), _patient(tmp_path, 2, "ISO_IR 144", "Иванов^Иван")]
    area = Path(tempfile.mkdtemp(prefix="qrscp-nobody-"))   # where nobody may write
    area.chmod(0o777)
    try:
        with storescp(tmp_path / "moved") as destination:
            config = simple_config({"QRSCP": f"{area} RW (10, 10mb) ANY"},
                                   extra=f"UserName = nobody\nGroupName = {NOBODY_GROUP}",
                                   host_table=f"DEST = (DEST, 127.0.0.1, {destination})")
            with Server(tmp_path, config, "-v", interpreter=hidden_python) as server:
                assert echoscu(server.port).returncode == 0, server.log
                stored = run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(server.port), *map(str, files))
                assert stored.returncode == 0, server.log
                assert _find_patient_names(server.port) == ["Müller^Jürgen", "Иванов^Иван"], server.log
                keys = ("QueryRetrieveLevel=PATIENT", "PatientID=P1")
                assert movescu(server.port, "-P", keys)[0][-1].status == 0, server.log
                assert getscu(server.port, "-P", ("QueryRetrieveLevel=PATIENT", "PatientID=P2"),
                              tmp_path / "got")[0][-1].status == 0, server.log
                processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children()]
                assert {process.uids().effective for process in processes} == {NOBODY.pw_uid}
                assert {process.gids().effective for process in processes} == {NOBODY.pw_gid}
            log = server.log
        assert [path.name for path in (tmp_path / "moved").iterdir()] == [f"CT.{uid(70, 1, 1, 1)}"]
        assert [path.name for path in (tmp_path / "got").iterdir()] == [f"CT.{uid(70, 2, 1, 1)}"]
        assert "Error" not in log and "Traceback" not in log, log
        assert all(path.stat().st_uid == NOBODY.pw_uid for path in area.rglob("*"))
    finally:
        shutil.rmtree(area)


@needs_root_and_unshare
def test_the_hidden_python_is_out_of_nobodys_reach(tmp_path: Path, hidden_python: tuple[str, ...]) -> None:
    """The test above proves something: in the same set-up, nobody cannot import a module the server has
    not loaded before the drop (the idna codec, for one)."""
    code = (f"import os, codecs; os.setgid({NOBODY.pw_gid}); os.setuid({NOBODY.pw_uid})\n"
            "try:\n    codecs.lookup('idna')\nexcept LookupError as error:\n    print(error)")
    result = subprocess.run([*hidden_python, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "unknown encoding: idna", result.stderr


def _imports_in_functions() -> list[str]:
    """Every import statement inside a function of qrscp, as source text."""
    statements = []
    for path in sorted((ROOT / "qrscp").rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                statements += [ast.unparse(node) for node in ast.walk(function)
                               if isinstance(node, (ast.Import, ast.ImportFrom))]
    return statements


def test_preload_leaves_no_import_for_later() -> None:
    """An import inside a function runs on first use, perhaps in a worker after the drop: whatever such a
    statement would load is loaded by ``preload()`` already."""
    statements = _imports_in_functions()
    assert statements, "the check would be vacuous"
    code = ("import json, sys\nfrom qrscp.cli.dcmqrscp import preload\npreload()\nloaded = set(sys.modules)\n"
            "for statement in json.loads(sys.argv[1]):\n    exec(statement, {})\n"
            "print(json.dumps(sorted(set(sys.modules) - loaded)))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(statements)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
