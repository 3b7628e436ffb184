"""C-CANCEL of a C-FIND (issue 4): a cancel during the query ends it with 0xFE00; a late one is ignored."""
from __future__ import annotations

from conftest import Server, needs_dcmtk, run_dcmtk, simple_config
from corpus import make_ct, write_instance
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from qrscp.dicom import uids
from qrscp.net import acse, dimse
from qrscp.net.pdu import PresentationContextRQ

pytestmark = needs_dcmtk

FIND_CONTEXT = 1


def _store_studies(server: Server, directory, count: int) -> None:
    files = [write_instance(make_ct(PatientID=f"PAT{n:03d}", StudyInstanceUID=f"1.2.826.0.1.3680043.8.498.77.{n}",
                                    SeriesInstanceUID=f"1.2.826.0.1.3680043.8.498.77.{n}.1",
                                    SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.77.{n}.1.1"),
                            directory / f"ct{n}.dcm") for n in range(count)]
    result = run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(server.port), *map(str, files))
    assert result.returncode == 0, result.stderr


def _associate(port: int):
    return acse.request_association(
        "127.0.0.1", port, calling_ae_title="CANCELSCU", called_ae_title="QRSCP",
        contexts=[PresentationContextRQ(FIND_CONTEXT, uids.STUDY_ROOT_FIND, [uids.EXPLICIT_VR_LE]),
                  PresentationContextRQ(3, uids.VERIFICATION, [uids.IMPLICIT_VR_LE])],
        max_receive_pdu=16384, connect_timeout=10, acse_timeout=10)


def _study_query() -> bytes:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    return encode(identifier, False, True)


def _find_request(message_id: int) -> dimse.Command:
    return {"CommandField": dimse.C_FIND_RQ, "MessageID": message_id,
            "AffectedSOPClassUID": uids.STUDY_ROOT_FIND, "Priority": 0}


def _cancel(message_id: int) -> dimse.Command:
    return {"CommandField": dimse.C_CANCEL_RQ, "MessageIDBeingRespondedTo": message_id}


def _send_together(association, *messages) -> None:
    """Send several messages in one TCP write, so that the server has them all before it answers any."""
    written: list[bytes] = []
    send = association.transport.send
    association.transport.send = lambda data: written.append(bytes(data))
    try:
        for message in messages:
            association.send_message(*message)
    finally:
        association.transport.send = send
    send(b"".join(written))


def _responses(association, message_id: int) -> list[int]:
    statuses = []
    while True:
        context_id, command = association.receive_command(10, 10)
        assert command["MessageIDBeingRespondedTo"] == message_id
        if dimse.has_dataset(command):
            association.receive_dataset_bytes(context_id, 10)
        statuses.append(command["Status"])
        if command["Status"] not in (0xFF00, 0xFF01):
            return statuses


def test_cancel_during_a_query_ends_it_with_fe00(tmp_path):
    with Server(tmp_path, simple_config()) as server:
        _store_studies(server, tmp_path, 20)
        association = _associate(server.port)
        # the request and its cancel arrive together: the server sees the cancel before its first response
        _send_together(association, (FIND_CONTEXT, _find_request(7), _study_query()),
                       (FIND_CONTEXT, _cancel(7)))
        statuses = _responses(association, 7)
        assert statuses[-1] == 0xFE00
        assert len(statuses) < 21
        # the association goes on: a new query is answered in full
        association.send_message(FIND_CONTEXT, _find_request(8), _study_query())
        assert _responses(association, 8) == [0xFF00] * 20 + [0x0000]
        association.release(10)


def test_late_cancel_is_ignored(tmp_path):
    with Server(tmp_path, simple_config(), "-v") as server:
        _store_studies(server, tmp_path, 2)
        association = _associate(server.port)
        association.send_message(FIND_CONTEXT, _find_request(1), _study_query())
        assert _responses(association, 1) == [0xFF00, 0xFF00, 0x0000]
        association.send_message(FIND_CONTEXT, _cancel(1))
        association.send_message(3, {"CommandField": dimse.C_ECHO_RQ, "MessageID": 2,
                                     "AffectedSOPClassUID": uids.VERIFICATION})
        _context, echo = association.receive_command(10, 10)
        assert echo["CommandField"] == dimse.C_ECHO_RSP and echo["Status"] == 0
        association.release(10)
        server.wait_for_log("I: dispatch: late C-CANCEL-RQ, ignoring")
