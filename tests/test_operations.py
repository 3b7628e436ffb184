"""Operations (issue 7): log configuration files, signals, the systemd unit, the association summary."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    ROOT,
    Server,
    echoscu,
    free_port,
    needs_dcmtk,
    run_dcmtk,
    simple_config,
)
from corpus import make_ct, write_instance
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from test_retrieve import getscu, movescu, storescp

pytestmark = needs_dcmtk

DCMTK_FILELOG = "/etc/dcmtk/filelog.cfg"
DCMTK_LOGGER = "/etc/dcmtk/logger.cfg"


def _open_association(port: int, called: str = "QRSCP"):
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    return assoc


@pytest.mark.skipif(not os.path.exists(DCMTK_FILELOG), reason="DCMTK's filelog.cfg is not installed")
def test_dcmtk_filelog_cfg_writes_dcmqrscp_log(tmp_path):
    with Server(tmp_path, simple_config(), "-lc", DCMTK_FILELOG) as server:
        assert echoscu(server.port).returncode == 0
        time.sleep(0.3)
    lines = (tmp_path / "dcmqrscp.log").read_text().splitlines()
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  INFO - dcmqrdb  - "
                         r"Association Received \(localhost:ECHOSCU -> QRSCP\)$")
    assert any(pattern.match(line) for line in lines), lines
    assert any(line.endswith("DEBUG - dcmqrdb  - Association Received: localhost") for line in lines)


@pytest.mark.skipif(not os.path.exists(DCMTK_LOGGER), reason="DCMTK's logger.cfg is not installed")
def test_dcmtk_logger_cfg_is_accepted(tmp_path):
    with Server(tmp_path, simple_config(), "-lc", DCMTK_LOGGER) as server:
        assert echoscu(server.port).returncode == 0


def test_verbose_logs_one_summary_line_per_association(tmp_path):
    with Server(tmp_path, simple_config(), "-v") as server:
        assert echoscu(server.port).returncode == 0
        summary = [line for line in server.wait_for_log("Association Summary").splitlines()
                   if "Association Summary" in line]
    assert len(summary) == 1
    assert re.match(r"I: Association Summary \(localhost:ECHOSCU -> QRSCP\): 1 C-ECHO in \d+\.\d+ s", summary[0])


def test_sigterm_lets_a_running_association_finish_then_exits_0(tmp_path):
    server = Server(tmp_path, simple_config())
    assoc = _open_association(server.port)
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:   # the port closes once the supervisor has taken the signal
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)
    assert server.process.poll() is None, "the supervisor must wait for the running association"
    assert echoscu(server.port).returncode != 0, "no new association after SIGTERM"
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert server.process.wait(20) == 0
    server.stop()


def test_sighup_rereads_the_configuration_for_new_associations(tmp_path):
    with Server(tmp_path, simple_config()) as server:
        assert echoscu(server.port, called="LATER").returncode != 0
        server.config_path.write_text(server.config_path.read_text().replace(
            "AETable END", "LATER later RW (10, 10mb) ANY\nAETable END"))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while echoscu(server.port, called="LATER").returncode != 0:
            assert time.monotonic() < deadline, "the new AE title was not taken up"
            time.sleep(0.1)
        # a broken file is reported and the running configuration kept
        server.config_path.write_text("AETable BEGIN\n")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("keeping the previous configuration")
        assert echoscu(server.port, called="LATER").returncode == 0


def test_sighup_does_not_disturb_a_running_association(tmp_path):
    with Server(tmp_path, simple_config(), "-v") as server:
        assoc = _open_association(server.port)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("re-read configuration file")
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert echoscu(server.port).returncode == 0


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # ExecStart names the script in the virtual environment the README installs: point it at one that exists
    # here (tests/test_readme.py verifies the unit with that environment installed as written)
    unit = tmp_path / "dcmqrscp.service"
    text = (ROOT / "scripts" / "dcmqrscp.service").read_text()
    assert "ExecStart=/opt/qrscp/bin/dcmqrscp " in text
    unit.write_text(text.replace("/opt/qrscp/bin/dcmqrscp", shutil.which("true")))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_systemd_unit_is_type_notify_and_hardened():
    unit = (ROOT / "scripts" / "dcmqrscp.service").read_text()
    for setting in ("Type=notify", "User=qrscp", "ProtectSystem=strict", "ReadWritePaths=/var/lib/qrscp",
                    "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed"):
        assert setting in unit


def test_ready_notification_is_sent_once_the_port_is_bound(tmp_path):
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(20)
        os.environ["NOTIFY_SOCKET"] = address
        try:
            server = Server(tmp_path, simple_config())
        finally:
            del os.environ["NOTIFY_SOCKET"]
        try:
            message = listener.recv(1024).decode()
            assert message.startswith("READY=1")
            assert f"MAINPID={server.process.pid}" in message
        finally:
            server.stop()
        assert listener.recv(1024).decode().startswith("STOPPING=1")


def test_the_server_keeps_numpy_out_without_claiming_it_is_loaded() -> None:
    """pydicom would import numpy for pixel data the archive never decodes: the server refuses it, and leaves
    no entry in sys.modules that tells other code (hypothesis seeds numpy's generator when it sees one) that
    numpy is there."""
    code = ("import sys\nfrom qrscp.dicom import transcoding\ntranscoding.keep_numpy_out()\nassert 'numpy' not in sys.modules\n"
            "try:\n    import numpy\nexcept ImportError as error:\n    print(error)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "No module named 'numpy' (the server keeps numpy out)\n"), \
        result.stderr


def test_a_serving_server_has_no_numpy_loaded(tmp_path):
    """dcmqrscp keeps numpy out of its processes while nothing is transcoded: none maps numpy's library."""
    with Server(tmp_path, simple_config()) as server:
        assert echoscu(server.port).returncode == 0
        processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children()]
        assert processes[1:]
        for process in processes:
            assert not [m.path for m in process.memory_maps() if "numpy" in m.path], process.pid


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@needs_root
@pytest.mark.parametrize("line, message", [("UserName = no-such-user", "F: bad user name no-such-user"),
                                           ("GroupName = no-such-group", "F: bad group name no-such-group")])
def test_unknown_user_or_group_exits_10(tmp_path, line, message):
    (tmp_path / "server.cfg").write_text(simple_config(extra=line).replace("{port}", "0"))
    ours = subprocess.run([sys.executable, "-m", "qrscp", "-c", "server.cfg", str(free_port())], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert (ours.returncode, ours.stderr.strip()) == (10, message)
    theirs = run_dcmtk("dcmqrscp", "-c", "server.cfg", str(free_port()), cwd=tmp_path, timeout=30)
    assert (theirs.returncode, theirs.stderr.decode().strip()) == (10, message)


# --- progress dots on stdout --------------------------------------------------------------------------------------

def _progress_lines(tmp_path: Path, kind: str, options: tuple[str, ...], files: list[Path]) -> list[str]:
    """The ``RECV:``/``XMIT:`` lines a server of ``kind`` prints on stdout for two C-STOREs, a C-MOVE of
    their study to DCMTK's storescp and a C-GET with a maximum PDU of 8192."""
    directory = tmp_path / kind
    directory.mkdir()
    with storescp(directory / "dest") as dest_port:
        config = simple_config({"QRSCP": f"{directory / 'area'} RW (200, 1024mb) ANY"},
                               host_table=f"DEST = (DEST, 127.0.0.1, {dest_port})")
        (directory / "area").mkdir()
        with Server(directory, config, *options, dcmtk_server=kind == "dcmtk") as server:
            assert run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(server.port),
                             *map(str, files)).returncode == 0
            keys = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.826.0.1.3680043.8.498.88")
            assert movescu(server.port, "-S", keys)[0][-1].status == 0
            assert getscu(server.port, "-S", keys, directory / "got", "-pdu", "8192")[0][-1].status == 0
        output = server.stdout_path.read_text()
    return [line for line in output.splitlines() if line.startswith(("RECV:", "XMIT:"))]


@pytest.mark.parametrize("options", [("-v",), ("-d",), (), ("-lc", DCMTK_LOGGER)], ids=str)
def test_progress_dots_on_stdout_as_dcmtk(tmp_path: Path, options: tuple[str, ...]) -> None:
    """DCMTK prints ``RECV: ...`` for every data set a C-STORE receives and ``XMIT: ...`` for every one a
    sub-operation sends, a dot per PDV, while the progress logger's level is exactly INFO (``-v``, DCMTK's
    logger.cfg); so do we."""
    if options[0:1] == ("-lc",) and not os.path.exists(DCMTK_LOGGER):
        pytest.skip("DCMTK's logger.cfg is not installed")
    files = []
    for number, payload in ((1, 0), (2, 100_000)):
        dataset = make_ct(StudyInstanceUID="1.2.826.0.1.3680043.8.498.88",
                          SeriesInstanceUID="1.2.826.0.1.3680043.8.498.88.1",
                          SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.88.1.{number}")
        dataset.private_block(0x0009, "QRSCP TESTS", create=True).add_new(0x01, "OB", bytes(payload))
        files.append(write_instance(dataset, tmp_path / f"ct{number}.dcm"))
    ours = _progress_lines(tmp_path, "qrscp", options, files)
    assert ours == _progress_lines(tmp_path, "dcmtk", options, files)
    shown = options[0:1] in (("-v",), ("-lc",))
    assert len(ours) == (6 if shown else 0)
    assert any(line.count(".") > 1 for line in ours) == shown   # the big instance: several PDVs


# --- message dumps ------------------------------------------------------------------------------------------------

def _dumped_statuses(tmp_path: Path, kind: str, stored: Path) -> list[str]:
    """The ``Message Type`` and ``DIMSE Status`` lines a server of ``kind`` logs at ``-d`` for a C-STORE, a
    C-FIND, a C-FIND with a bad level, a C-MOVE to an unknown AE and a C-ECHO."""
    directory = tmp_path / kind
    (directory / "area").mkdir(parents=True)
    config = simple_config({"QRSCP": f"{directory / 'area'} RW (200, 1024mb) ANY"})
    with Server(directory, config, "-d", dcmtk_server=kind == "dcmtk") as server:
        port = str(server.port)
        assert run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", port, str(stored)).returncode == 0
        for level in ("STUDY", "BOGUS"):
            run_dcmtk("findscu", "-S", "-aec", "QRSCP", "-k", f"QueryRetrieveLevel={level}",
                      "-k", "StudyInstanceUID", "127.0.0.1", port)
        run_dcmtk("movescu", "-S", "-aec", "QRSCP", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", "StudyInstanceUID=1.2.826.0.1.3680043.8.498.88", "127.0.0.1", port)
        assert echoscu(server.port).returncode == 0
        log = server.wait_for_log("Received Echo SCP RQ")
    return [line for line in log.splitlines() if line[3:].startswith(("Message Type", "DIMSE Status"))]


def test_message_dumps_name_statuses_as_dcmtk(tmp_path: Path) -> None:
    """Which messages are dumped at ``-d``, and how their statuses are named: DCMTK names them per kind of
    response (``0xff00: Pending: Matches are continuing``, ``0xa801: Refused: Move Destination unknown``)."""
    stored = write_instance(make_ct(StudyInstanceUID="1.2.826.0.1.3680043.8.498.88"), tmp_path / "ct.dcm")
    ours = _dumped_statuses(tmp_path, "qrscp", stored)
    assert ours == _dumped_statuses(tmp_path, "dcmtk", stored)
    assert "D: DIMSE Status                  : 0xa801: Refused: Move Destination unknown" in ours


# --- the -v log, line for line ------------------------------------------------------------------------------------

#: Lines only one of the servers writes, by design: qrscp's summary line (issue 7), DCMTK's line for each
#: child process it reaps (qrscp's workers serve many associations, README difference 24).
_OWN_LINES = re.compile(r"I: (Association Summary|Cleaned up after child) ")


def _pydicom_find(port: int) -> None:
    """A C-FIND whose identifier DCMTK's findscu cannot write: implicit VR, sequences with an empty item,
    a private element, UTF-8, an AT value."""
    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientName = "Müller"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = MRImageStorage, "1.2.3.4"
    identifier.ReferencedStudySequence = [item, Dataset()]
    identifier.ReferencedPatientSequence = []
    identifier.add_new(0x00090010, "LO", "PRIV")
    identifier.add_new(0x00091001, "LO", "x")
    identifier.add_new(0x00209165, "AT", [0x00100020, 0x0020000D])
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title="QRSCP")
    assert association.is_established
    statuses = [status.Status for status, _ in association.send_c_find(identifier,
                                                                      StudyRootQueryRetrieveInformationModelFind)]
    association.release()
    assert statuses == [0x0000]


def _verbose_log(tmp_path: Path, kind: str, files: list[Path]) -> list[str]:
    """The ``-v`` log of a server of ``kind`` for echoes, stores, queries and retrieves, from the first
    association on (the start-up port probe is not part of it), with times and file names blanked."""
    directory = tmp_path / kind
    (directory / "area").mkdir(parents=True)
    with storescp(directory / "dest") as dest_port:
        config = simple_config({"QRSCP": f"{directory / 'area'} RW (200, 1024mb) ANY"},
                               host_table=f"DEST = (DEST, 127.0.0.1, {dest_port})")
        with Server(directory, config, "-v", dcmtk_server=kind == "dcmtk") as server:
            port = str(server.port)
            assert echoscu(server.port).returncode == 0
            assert run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", port, *map(str, files)).returncode == 0
            study = "StudyInstanceUID=1.2.826.0.1.3680043.8.498.88"
            for keys in (("-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName"),
                         ("-P", "QueryRetrieveLevel=PATIENT", "PatientID"),
                         ("-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=" + "A" * 70,
                          "StudyDescription=" + "B" * 39, "ModalitiesInStudy=CT\\MR", "SpecificCharacterSet=ISO_IR 100",
                          "(0008,1110)[0].(0008,1150)=1.2.840.10008.5.1.4.1.1.2", "(0008,1110)[1].(0008,1155)=1.2.3",
                          "(0008,1111)", "(0020,1206)=5", "(0028,0010)=512")):
                arguments = [keys[0], *(arg for key in keys[1:] for arg in ("-k", key))]
                assert run_dcmtk("findscu", "-aec", "QRSCP", *arguments, "127.0.0.1", port).returncode == 0
            _pydicom_find(server.port)
            for destination in ("DEST", "NOWHERE"):
                movescu(server.port, "-S", ("QueryRetrieveLevel=STUDY", study), destination=destination)
            getscu(server.port, "-S", ("QueryRetrieveLevel=STUDY", study), directory / "got")
            assert echoscu(server.port, called="NOBODY").returncode != 0
            log = server.wait_for_log("Association Received (localhost:ECHOSCU -> NOBODY)")
    log = log[log.index("I: Association Received (localhost:ECHOSCU"):]
    blanked = re.sub(r"\b(CT|MR)_[0-9a-f]{16}\b", "FILE", log)
    return [line for line in blanked.splitlines() if not _OWN_LINES.match(line)]


def test_verbose_log_as_dcmtk(tmp_path: Path) -> None:
    """At ``-v`` qrscp writes DCMTK's log lines: message dumps with DCMTK's UID names, the request
    identifiers as ``DcmDataset::print`` shows them (sequences, items, private and UTF-8 values), the
    response statuses as DCMTK names them."""
    files = [write_instance(make_ct(StudyInstanceUID="1.2.826.0.1.3680043.8.498.88",
                                    SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.88.1.{n}"), tmp_path / f"ct{n}.dcm")
             for n in (1, 2)]
    ours = _verbose_log(tmp_path, "qrscp", files)
    assert ours == _verbose_log(tmp_path, "dcmtk", files)
    assert "I: Affected SOP Class UID        : FINDStudyRootQueryRetrieveInformationModel" in ours
    assert "I: Move SCP Response 1 [status: Refused: MoveDestinationUnknown]" in ours
