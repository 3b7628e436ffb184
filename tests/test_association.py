"""Association handling of the real server (issue 2): accept, reject, negotiate, supervise.

Every test starts ``python -m qrscp`` on 127.0.0.1 and drives it with DCMTK's echoscu, or with
pynetdicom / raw PDUs where a client must misbehave or inspect a negotiation result.
"""
from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest
from conftest import Server, echoscu, needs_dcmtk, simple_config
from pynetdicom import AE, build_role
from pynetdicom.sop_class import CTImageStorage, Verification

from qrscp.dicom import uids
from qrscp.net import acse, dimse, pdu
from qrscp.net.pdu import PresentationContextRQ, pdv_header

pytestmark = needs_dcmtk

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


def associate(port: int, contexts, called: str = "QRSCP", calling: str = "PYNETDICOM", roles=()):
    """A pynetdicom association (the caller releases it)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = 10
    for context in contexts:
        ae.add_requested_context(*context)
    return ae.associate("127.0.0.1", port, ae_title=called, ext_neg=list(roles))


def raw_associate(port: int, rq: pdu.AssociateRQ, timeout: float = 10) -> bytes:
    """Send an A-ASSOCIATE-RQ as raw bytes; return whatever the server answers (b'' if it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(pdu.encode_associate_rq(rq))
        data = b""
        try:
            while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return data


def verification_rq(**changes) -> pdu.AssociateRQ:
    rq = pdu.AssociateRQ(called_ae_title="QRSCP", calling_ae_title="RAW",
                         contexts=[pdu.PresentationContextRQ(1, uids.VERIFICATION, [uids.IMPLICIT_VR_LE])],
                         application_context=uids.APPLICATION_CONTEXT, max_pdu_length=16384,
                         implementation_class_uid="1.2.3.4")
    for key, value in changes.items():
        setattr(rq, key, value)
    return rq


@pytest.fixture
def server(tmp_path):
    with Server(tmp_path, simple_config(), "-v") as running:
        yield running


def test_echo_succeeds_and_is_logged(server):
    result = echoscu(server.port)
    assert result.returncode == 0, result.stderr
    log = server.wait_for_log("I: Association Release")
    assert "I: Association Received (localhost:ECHOSCU -> QRSCP)" in log
    assert "I: Association Acknowledged (Max Send PDV: 16372)" in log
    assert "I: Received Echo SCP RQ: MsgID 1" in log
    assert "I: Association Release" in log


def test_unknown_called_ae_is_rejected_with_reason_7(server):
    result = echoscu(server.port, called="NOBODY")
    assert result.returncode != 0
    assert b"Called AE Title Not Recognized" in result.stderr
    assert "Refusing Association (BadAEService)" in server.log


def test_calling_ae_not_among_peers_is_rejected_with_reason_3(tmp_path):
    config = simple_config({"QRSCP": "area RW (10, 10mb) peer1"}, host_table="peer1 = (GOOD, localhost, 104)")
    with Server(tmp_path, config, "-v") as server:
        assert echoscu(server.port, calling="GOOD").returncode == 0
        result = echoscu(server.port, calling="BAD")
        assert b"Calling AE Title Not Recognized" in result.stderr
        assert "Peer localhost:BAD is not permitted to access QRSCP" in server.log


def test_peers_compare_host_names_and_dhl_switches_to_addresses(tmp_path):
    config = simple_config({"QRSCP": "area RW (10, 10mb) (GOOD, 127.0.0.1, 104)"})
    with Server(tmp_path, config) as server:
        assert echoscu(server.port, calling="GOOD").returncode != 0  # peer address is "localhost"
    with Server(tmp_path, config, "-dhl") as server:
        assert echoscu(server.port, calling="GOOD").returncode == 0


def test_refuse_rejects_every_association(tmp_path):
    with Server(tmp_path, simple_config(), "--refuse", "-v") as server:
        result = echoscu(server.port)
        assert b"Result: Rejected Permanent, Source: Service User" in result.stderr
        assert b"Reason: No Reason" in result.stderr
        assert "Refusing Association (forced via command line)" in server.log


def test_reject_without_implementation_class_uid(tmp_path):
    with Server(tmp_path, simple_config(), "--reject") as server:
        answer = raw_associate(server.port, verification_rq(implementation_class_uid=""))
        assert answer == pdu.encode_associate_rj(1, 1, 1)
        assert raw_associate(server.port, verification_rq())[0] == pdu.A_ASSOCIATE_AC


def test_bad_application_context_and_protocol_version(server):
    assert raw_associate(server.port, verification_rq(application_context="1.2.3")) == pdu.encode_associate_rj(2, 1, 2)
    body = bytearray(pdu.encode_associate_rq(verification_rq()))
    body[6:8] = b"\x00\x02"  # protocol version 2 only
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(bytes(body))
        assert sock.recv(100) == pdu.encode_associate_rj(1, 2, 2)


def test_blank_calling_ae_or_no_contexts_closes_without_pdu(server):
    assert raw_associate(server.port, verification_rq(calling_ae_title="")) == b""
    assert raw_associate(server.port, verification_rq(contexts=[])) == b""
    assert echoscu(server.port).returncode == 0


def test_max_associations_rejects_the_extra_one_transiently(tmp_path):
    with Server(tmp_path, simple_config(max_associations=1)) as server:
        held = associate(server.port, [(Verification,)])
        assert held.is_established
        try:
            result = echoscu(server.port)
            assert b"Result: Rejected Transient, Source: Service Provider (Presentation Related)" in result.stderr
            assert b"Local Limit Exceeded" in result.stderr
        finally:
            held.release()
        deadline = time.monotonic() + 5
        while echoscu(server.port).returncode != 0:
            assert time.monotonic() < deadline, "no association accepted after the first one ended"
            time.sleep(0.05)


def test_idle_connection_does_not_delay_others(server):
    idle = socket.create_connection(("127.0.0.1", server.port))
    try:
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(pdu.encode_associate_rq(verification_rq())[:20])  # half an A-ASSOCIATE-RQ
        started = time.monotonic()
        assert echoscu(server.port).returncode == 0
        assert time.monotonic() - started < 3
        half.close()
    finally:
        idle.close()


def test_acse_timeout_closes_a_silent_connection(tmp_path):
    with Server(tmp_path, simple_config(), "-ta", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(10) == b""
            assert time.monotonic() - started < 5


def test_single_process_serves_association_after_association(tmp_path):
    with Server(tmp_path, simple_config(), "-s") as server:
        for _ in range(4):
            assert echoscu(server.port).returncode == 0
        assert server.process.poll() is None


def test_shutdown_sop_class(tmp_path):
    with Server(tmp_path, simple_config()) as server:  # without --allow-shutdown: refused, association goes on
        assoc = associate(server.port, [(uids.PRIVATE_SHUTDOWN,), (Verification,)])
        assert assoc.is_established
        assert [c.abstract_syntax for c in assoc.rejected_contexts] == [uids.PRIVATE_SHUTDOWN]
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    with Server(tmp_path, simple_config(), "--allow-shutdown") as server:
        assoc = associate(server.port, [(uids.PRIVATE_SHUTDOWN,)])
        assert assoc.is_rejected
        assert server.process.wait(20) == 0


@pytest.mark.parametrize("option, proposed, expected", [
    ((), [uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_BE, uids.EXPLICIT_VR_LE], uids.EXPLICIT_VR_LE),
    ((), [uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_BE], uids.EXPLICIT_VR_BE),
    (("+xe",), [uids.EXPLICIT_VR_BE, uids.EXPLICIT_VR_LE], uids.EXPLICIT_VR_LE),
    (("+xb",), [uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_LE, uids.EXPLICIT_VR_BE], uids.EXPLICIT_VR_BE),
    (("+xi",), [uids.EXPLICIT_VR_LE, uids.IMPLICIT_VR_LE], uids.IMPLICIT_VR_LE),
    (("+xs",), [uids.EXPLICIT_VR_LE, JPEG_LOSSLESS], JPEG_LOSSLESS),
    ((), [JPEG_LOSSLESS, uids.EXPLICIT_VR_LE], uids.EXPLICIT_VR_LE),
])
def test_transfer_syntax_preferences(tmp_path, option, proposed, expected):
    with Server(tmp_path, simple_config(), *option) as server:
        assoc = associate(server.port, [(CT, proposed), (Verification, proposed)])
        assert assoc.is_established
        assert {c.transfer_syntax[0] for c in assoc.accepted_contexts} == {expected}
        assoc.release()


def test_unsupported_transfer_syntax_gets_reason_4_and_unknown_class_reason_3(server):
    assoc = associate(server.port, [(CT, [JPEG_LOSSLESS]), ("1.2.840.10008.5.1.4.31", [uids.IMPLICIT_VR_LE]),
                                    (Verification,)])
    results = {c.abstract_syntax: c.result for c in assoc.rejected_contexts}
    assert results == {CT: 4, "1.2.840.10008.5.1.4.31": 3}
    assoc.release()


def test_model_and_get_restrictions(tmp_path):
    contexts = [(uid,) for uid in uids.FIND_MODELS + uids.MOVE_MODELS + uids.GET_MODELS]
    with Server(tmp_path, simple_config(), "-QP", "--disable-get") as server:
        assoc = associate(server.port, contexts)
        refused = {c.abstract_syntax for c in assoc.rejected_contexts}
        assert refused == set(uids.PATIENT_ROOT_MODELS) | set(uids.GET_MODELS)
        assoc.release()
    result = subprocess.run([sys.executable, "-m", "qrscp", "-QP", "-QS", "-QO"], capture_output=True)
    assert result.returncode == 1 and b"error: cannot disable all Q/R models" in result.stderr


def test_require_find_refuses_move_and_get_without_find(tmp_path):
    with Server(tmp_path, simple_config(), "--require-find") as server:
        assoc = associate(server.port, [(uids.STUDY_ROOT_MOVE,), (uids.STUDY_ROOT_GET,),
                                        (uids.PATIENT_ROOT_FIND,), (uids.PATIENT_ROOT_MOVE,)])
        refused = {c.abstract_syntax: c.result for c in assoc.rejected_contexts}
        assert refused == {uids.STUDY_ROOT_MOVE: 1, uids.STUDY_ROOT_GET: 1}
        assoc.release()


def test_read_only_area_refuses_storage_except_get_receive_contexts(tmp_path):
    config = simple_config({"QRSCP": "area R (10, 10mb) ANY"})
    with Server(tmp_path, config) as server:
        assoc = associate(server.port, [(CT,)])
        assert [c.result for c in assoc.rejected_contexts] == [1]
        assoc.release()
        assoc = associate(server.port, [(CT,), (uids.STUDY_ROOT_GET,)], roles=[build_role(CT, scp_role=True, scu_role=False)])
        assert {c.abstract_syntax for c in assoc.accepted_contexts} == {CT, uids.STUDY_ROOT_GET}
        assoc.release()


def test_no_parallel_store_refuses_a_second_storage_association(tmp_path):
    config = simple_config({"QRSCP": "area RW (10, 10mb) ANY", "OTHER": "other RW (10, 10mb) ANY"})
    with Server(tmp_path, config, "--no-parallel-store") as server:
        first = associate(server.port, [(CT,)])
        assert first.accepted_contexts
        try:
            second = associate(server.port, [(CT,)])
            assert [c.result for c in second.rejected_contexts] == [1]
            second.release()
            other = associate(server.port, [(CT,)], called="OTHER")
            assert other.accepted_contexts
            other.release()
        finally:
            first.release()


def test_oversized_pdu_aborts_only_that_association(server):
    assoc = associate(server.port, [(Verification,)])
    assert assoc.is_established
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(pdu.encode_associate_rq(verification_rq()))
        sock.recv(65536)
        sock.sendall(struct.pack(">BBL", 4, 0, 0xFFFFFFF0) + b"\0" * 100)  # a 4 GiB P-DATA-TF
        assert sock.recv(100)[:1] in (bytes([pdu.A_ABORT]), b"")
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert echoscu(server.port).returncode == 0


def test_sigterm_stops_the_supervisor_with_exit_0(tmp_path):
    server = Server(tmp_path, simple_config())
    assert echoscu(server.port).returncode == 0
    assert server.stop() == 0


def test_no_worker_left_behind(tmp_path):
    """Workers are reused, so after a burst only the idle pool remains, and no zombie."""
    from qrscp.server.supervisor import MAX_IDLE_WORKERS

    with Server(tmp_path, simple_config()) as server:
        for _ in range(10):
            assert echoscu(server.port).returncode == 0
        time.sleep(0.5)
        children = psutil.Process(server.process.pid).children()
        assert 0 < len(children) <= MAX_IDLE_WORKERS
        assert all(child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert all(not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE for child in children)


def test_a_killed_worker_is_replaced_and_costs_only_its_association(tmp_path):
    with Server(tmp_path, simple_config()) as server:
        held = associate(server.port, [(Verification,)])
        busy = [c for c in psutil.Process(server.process.pid).children()
                if any(conn.status == psutil.CONN_ESTABLISHED for conn in c.net_connections())]
        assert len(busy) == 1
        busy[0].kill()
        time.sleep(0.2)
        assert not held.is_established or held.send_c_echo().Status is None
        for _ in range(3):
            assert echoscu(server.port).returncode == 0


def test_single_process_mode_runs_under_pdb(tmp_path):
    """``python -m pdb -m qrscp -s ...``: the debugger starts the server, which then serves association
    after association in the debugged process."""
    from conftest import free_port, wait_for_port

    port = free_port()
    (tmp_path / "server.cfg").write_text(simple_config().replace("{port}", str(port)))
    debugger = subprocess.Popen([sys.executable, "-m", "pdb", "-m", "qrscp", "-s", "-c", "server.cfg"],
                                cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        debugger.stdin.write(b"continue\n")
        debugger.stdin.flush()
        wait_for_port(port, process=debugger)
        for _ in range(3):
            assert echoscu(port).returncode == 0
        assert psutil.Process(debugger.pid).children() == []
    finally:  # after a clean stop pdb would restart the program: end the debugger itself
        debugger.kill()
        debugger.wait(20)


def _closing_peers_log(tmp_path, kind: str) -> list[str]:
    """What a server of ``kind`` logs for peers that close their connection: after the association is
    established, in the middle of a PDU, and in the middle of a C-STORE data set (between two PDUs, and
    in the middle of one)."""
    command = dimse.encode_command({"CommandField": dimse.C_STORE_RQ, "MessageID": 1, "Priority": 0,
                                    "AffectedSOPClassUID": CTImageStorage, "AffectedSOPInstanceUID": "1.2.3",
                                    "CommandDataSetType": dimse.DATASET_PRESENT})
    store = pdv_header(len(command), 1, 0x03) + command   # P-DATA-TF and PDV headers
    fragment = b"\x08\x00\x18\x00UI\x04\x001.2\x00"
    store_fragment = pdv_header(len(fragment), 1, 0x00) + fragment
    directory = tmp_path / kind
    (directory / "area").mkdir(parents=True)
    with Server(directory, simple_config(), "-v", dcmtk_server=kind == "dcmtk") as server:
        # what each peer sends before it closes, and how many ending lines the log then holds
        for sent, endings in ((b"", 1), (store_fragment[:9], 2), (store + store_fragment, 3),
                              (store + store_fragment[:9], 5)):
            association = acse.request_association(
                "127.0.0.1", server.port, calling_ae_title="CLOSER", called_ae_title="QRSCP",
                contexts=[PresentationContextRQ(1, CTImageStorage, [uids.EXPLICIT_VR_LE])],
                max_receive_pdu=16384, connect_timeout=10, acse_timeout=10)
            association.transport.send(sent)
            association.transport.sock.close()
            deadline = time.monotonic() + 10   # one after the other, so that the lines come in this order
            while len(re.findall("Association Aborted|DUL network closed", server.log)) < endings:
                assert time.monotonic() < deadline, server.log
                time.sleep(0.05)
        log = server.log
    log = log[log.index("Association Received (localhost:CLOSER"):]
    return [line for line in log.splitlines() if "Abort" in line or line.startswith(("E:", "W:"))]


def test_a_peer_closing_its_connection_is_logged_as_by_dcmtk(tmp_path):
    """Between two PDUs it is an abort (``I: Association Aborted``), in the middle of one a DIMSE failure
    with DCMTK's condition lines; in the middle of a C-STORE data set, ``Store SCP Failed`` comes first."""
    ours = _closing_peers_log(tmp_path, "qrscp")
    assert ours == _closing_peers_log(tmp_path, "dcmtk")
    assert ours[:4] == ["I: Association Aborted", "E: DIMSE Failure (aborting association): 0006:020d DIMSE Failed "
                        "to receive message", "E: 0006:020c DIMSE Read PDV failed", "E: 0006:0310 DUL network closed"]
    assert "E: Store SCP Failed: 0006:0317 Peer aborted Association (or never connected)" in ours
