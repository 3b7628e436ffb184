"""Broken peers end as DCMTK 3.6.7 ends them: the same bytes on the wire, the same kind of close.

Each case runs against DCMTK's dcmqrscp and against ours (forking, and with ``-s``) and the outcomes are
compared: the PDUs the peer receives until the connection ends, and whether it ends in order (FIN) or is
reset (RST). The raw peer closes its end when it gets an A-ABORT, as real peers do. Where DCMTK resets,
it is because it closes with the peer's bytes still unread; PS3.8 would send an A-ABORT for some of these
(docs/differences.md: DCMTK wins unless it loses data or hangs a peer).
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Server, needs_dcmtk, simple_config
from corpus import uid
from health import echo_ok
from rawpeer import (
    CT_CONTEXT,
    DCMTK_ABORT,
    SUCCESS,
    RawPeer,
    associate_rq,
    dataset_bytes,
    instance,
    pdu_bytes,
    store_request,
)

from qrscp.dicom import uids
from qrscp.net import dimse, pdu

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]

BRANCH = 88
#: -ta/-td of every server here: a -td timeout must come within the test's patience.
TIMEOUTS = ("-ta", "5", "-td", "2")
SERVERS = ("dcmtk", "qrscp", "qrscp -s")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """DCMTK's dcmqrscp and ours (forking and ``-s``), each with a writable AE QRSCP and a read-only QRSCPRO."""
    running = {}
    try:
        for name in SERVERS:
            root = tmp_path_factory.mktemp(name.replace(" ", ""))
            (root / "area").mkdir()
            (root / "ro").mkdir()
            config = simple_config({"QRSCP": f"{root / 'area'} RW (200, 1024mb) ANY",
                                    "QRSCPRO": f"{root / 'ro'} R (200, 1024mb) ANY"})
            options = (*TIMEOUTS, "-s") if name.endswith("-s") else TIMEOUTS
            running[name] = Server(root, config, "-v", *options, dcmtk_server=name == "dcmtk")
        yield running
    finally:
        for server in running.values():
            server.stop()


def outcome(server: Server, case: Callable[[RawPeer], None]) -> tuple[list[bytes], str]:
    """Run ``case`` on a fresh connection; what the peer then received, and how the connection ended."""
    with RawPeer(server.port, timeout=20) as peer:
        case(peer)
        return peer.connection_end()


def compare(servers: dict[str, Server], case: Callable[[RawPeer], None],
            names: tuple[str, ...] = SERVERS) -> tuple[list[bytes], str]:
    """The outcome of ``case``: the same for every server of ``names`` (DCMTK's first); each server still
    answers a C-ECHO afterwards. DCMTK's ``-s`` dies after an accepted association, so it is not asked."""
    outcomes = {name: outcome(servers[name], case) for name in names}
    for name in names:
        assert outcomes[name] == outcomes[names[0]], f"{name}: {outcomes[name]} != {names[0]}: {outcomes[names[0]]}"
        assert echo_ok(servers[name].port), f"{name} stopped serving"
    return outcomes[names[0]]


# --- before an association: wrong PDUs, garbage, absurd lengths ---------------------------------------------------

#: A first PDU of a known kind other than A-ASSOCIATE-RQ: DCMTK answers with an A-ABORT and resets.
WRONG_FIRST_PDUS = {
    "A-RELEASE-RQ": pdu.RELEASE_RQ,
    "A-RELEASE-RP": pdu.RELEASE_RP,
    "P-DATA-TF": pdu_bytes(pdu.P_DATA_TF, struct.pack(">LBB", 4, 1, 3) + b"\0\0"),
    "A-ASSOCIATE-AC": pdu_bytes(pdu.A_ASSOCIATE_AC, pdu.encode_associate_rq(associate_rq())[6:]),
    "A-ASSOCIATE-RJ": pdu.encode_associate_rj(1, 1, 1),
}
#: First bytes DCMTK closes on without a word, resetting the connection.
SILENTLY_RESET = {
    "A-ABORT": pdu.encode_abort(),
    "garbage": bytes(range(0x47, 0x47 + 100)),
    "HTTP": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "TLS ClientHello": bytes.fromhex("160301004a0100004603") + bytes(70),
    "PDU type 0x08": bytes.fromhex("08000000000400000000"),
    "PDU type 0xFF": bytes.fromhex("ff000000000400000000"),
    "A-ASSOCIATE-RQ of 4 GiB": pdu_bytes(pdu.A_ASSOCIATE_RQ, pdu.encode_associate_rq(associate_rq())[6:],
                                         length=0xFFFFFFF0),
}


@pytest.mark.parametrize("name", WRONG_FIRST_PDUS)
def test_wrong_first_pdu_gets_an_abort_and_a_reset(servers, name):
    assert compare(servers, lambda peer: peer.send(WRONG_FIRST_PDUS[name])) == ([DCMTK_ABORT], "RST")


@pytest.mark.parametrize("name", SILENTLY_RESET)
def test_garbage_and_absurd_lengths_are_reset_without_a_word(servers, name):
    assert compare(servers, lambda peer: peer.send(SILENTLY_RESET[name])) == ([], "RST")


def test_a_header_alone_is_closed_in_order(servers):
    """With nothing unread the close is an orderly one: the reset came only from the unread bytes."""
    assert compare(servers, lambda peer: peer.send(pdu.RELEASE_RQ[:6])) == ([DCMTK_ABORT], "FIN")
    assert compare(servers, lambda peer: peer.send(SILENTLY_RESET["garbage"][:6])) == ([], "FIN")


def test_the_log_names_what_came(servers):
    ours = servers["qrscp"]
    since = len(ours.log)
    outcome(ours, lambda peer: peer.send(SILENTLY_RESET["HTTP"]))
    outcome(ours, lambda peer: peer.send(SILENTLY_RESET["A-ASSOCIATE-RQ of 4 GiB"]))
    outcome(ours, lambda peer: peer.send(WRONG_FIRST_PDUS["A-RELEASE-RQ"]))
    log = ours.wait_for_log("expected an A-ASSOCIATE-RQ PDU", since)
    assert "I: Failed to receive association: 0006:0321 Unrecognized PDU type: 47" in log
    assert "E: A-ASSOCIATE PDU too large: 4294967280 bytes, refusing." in log
    assert "I: Failed to receive association: 0006:0437 A-ASSOCIATE PDU too large" in log


# --- on an association --------------------------------------------------------------------------------------------

def _established(peer: RawPeer, called: str = "QRSCP") -> None:
    peer.establish(associate_rq(called=called))


def _command(**fields: object) -> Callable[[RawPeer], None]:
    def send(peer: RawPeer) -> None:
        _established(peer)
        peer.send_fragments(1, dimse.encode_command(fields), command=True)
    return send


@pytest.mark.parametrize("field", [0x0FFE, 0x00FF, 0x8FFF, 0x0000])
def test_unknown_command_field_is_aborted(servers, field):
    case = _command(CommandField=field, MessageID=1, AffectedSOPClassUID=uids.VERIFICATION,
                    CommandDataSetType=dimse.NO_DATASET)
    pdus, ending = compare(servers, case)
    assert (pdus, ending) == ([DCMTK_ABORT], "FIN")
    assert f"E: DIMSE Failure (aborting association): 0006:0201 DIMSE_parseCmdObject: Invalid Command Message: " \
           f"0x{field:x}" in servers["qrscp"].log


def test_cancel_without_the_message_it_cancels_is_aborted(servers):
    """A C-CANCEL-RQ must name the operation it cancels; one outside any operation that does is ignored."""
    case = _command(CommandField=dimse.C_CANCEL_RQ, MessageID=1, CommandDataSetType=dimse.NO_DATASET)
    pdus, ending = compare(servers, case)
    assert (pdus, ending) == ([DCMTK_ABORT], "FIN")
    assert "0006:020b DIMSE: Command Parse Failed: Element: (0000,0120) MessageIDBeingRespondedTo" in \
           servers["qrscp"].log


def test_data_set_that_stops_arriving_is_aborted_after_the_dimse_timeout(servers):
    """``-td 2``: half a C-STORE data set, then silence: an A-ABORT, no response, and nothing stored."""
    dataset = instance(BRANCH, 1, 1)
    data = dataset_bytes(dataset)

    def half_a_store(peer: RawPeer) -> None:
        _established(peer)
        peer.send_fragments(CT_CONTEXT, dimse.encode_command({**store_request(dataset),
                                                              "CommandDataSetType": dimse.DATASET_PRESENT}),
                            command=True)
        peer.send_fragments(CT_CONTEXT, data[:len(data) // 2 & ~1], command=False, last=False)

    pdus, ending = compare(servers, half_a_store)
    assert (pdus, ending) == ([DCMTK_ABORT], "FIN")
    log = servers["qrscp"].log
    assert "E: Store SCP Failed: 0006:0207 DIMSE No data available (timeout in non-blocking mode)" in log
    assert "E: DIMSE Failure (aborting association): 0006:0207 DIMSE No data available (timeout in non-blocking " \
           "mode)" in log


@pytest.mark.parametrize("roles", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("called", ["QRSCP", "QRSCPRO"])
def test_role_selection_is_answered_as_by_dcmtk(servers, called, roles):
    """The A-ASSOCIATE-AC repeats the proposed roles for a storage class, also where the context is
    refused (a read-only AE takes storage contexts only for C-GET, SCU 0 / SCP 1)."""
    rq = associate_rq(called=called, contexts={1: uids.VERIFICATION, CT_CONTEXT: "1.2.840.10008.5.1.4.1.1.2"})
    rq.roles = {"1.2.840.10008.5.1.4.1.1.2": roles}
    answers = {}
    for name in ("dcmtk", "qrscp"):
        with RawPeer(servers[name].port) as peer:
            answer = peer.associate(rq)
            assert answer is not None and answer[0] == pdu.A_ASSOCIATE_AC
            ac = pdu.decode_associate_ac(answer[1])
            answers[name] = ({c.context_id: c.result for c in ac.contexts}, ac.roles)
            peer.send(pdu.RELEASE_RQ)
    assert answers["qrscp"] == answers["dcmtk"]
    refused = called == "QRSCPRO" and roles != (False, True)
    assert answers["qrscp"] == ({1: 0, CT_CONTEXT: 1 if refused else 0}, {"1.2.840.10008.5.1.4.1.1.2": roles})


def test_server_goes_on_after_everything(servers, tmp_path: Path):
    """Each server still stores and finds after the cases above (the echo was checked after each)."""
    for name in ("qrscp", "qrscp -s"):
        with RawPeer(servers[name].port) as peer:
            peer.establish()
            assert peer.echo_status() == SUCCESS


# --- bytes outside ASCII, repeated and mis-sized elements in command sets (issue 16) ------------------------------

def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def _response(server: Server, command: bytes, dataset: bytes | None = None, context_id: int = 1,
              called: str = "QRSCP") -> tuple[bytes | None, list[bytes]]:
    """Send ``command`` (and ``dataset``) on a fresh association; the raw command set of the final response
    (None if the association ended instead) and the PDUs that ended it."""
    with RawPeer(server.port, timeout=20) as peer:
        _established(peer, called)
        peer.send_fragments(context_id, command, command=True)
        if dataset is not None:
            peer.send_fragments(context_id, dataset, command=False)
        raw = bytearray()
        while (received := peer.read_pdu()) is not None and received[0] == pdu.P_DATA_TF:
            for _context, control, data in pdu.decode_p_data(received[1]):
                if control & 0x01:
                    raw += data
                    if control & 0x02:
                        status = dimse.decode_command(bytes(raw))["Status"]
                        if status not in (0xFF00, 0xFF01):
                            peer.send(pdu.RELEASE_RQ)
                            assert peer.read_pdu()[0] == pdu.A_RELEASE_RP   # (DCMTK then waits for our close)
                            return bytes(raw), []
                        raw.clear()
        return None, [] if received is None else [received[0]]


def _same_response(servers, command: bytes, dataset: bytes | None = None, context_id: int = 1) -> bytes | None:
    answers = {name: _response(servers[name], command, dataset, context_id) for name in ("dcmtk", "qrscp")}
    assert answers["qrscp"] == answers["dcmtk"]
    return answers["qrscp"][0]


ECHO_HEAD = (_element(0x0100, struct.pack("<H", dimse.C_ECHO_RQ)), _element(0x0110, struct.pack("<H", 7)),
             _element(0x0800, struct.pack("<H", dimse.NO_DATASET)))


@pytest.mark.parametrize("uid", [b"1.2.840.10008.1.1\x80", b"1.2.840.10008.1.1\xff\xff\x00"])
def test_echo_with_a_byte_outside_ascii_in_its_uid_is_answered_byte_for_byte(servers, uid):
    response = _same_response(servers, _command_set(_element(0x0002, uid), *ECHO_HEAD))
    assert dimse.decode_command(response)["Status"] == SUCCESS
    assert uid in response


def test_store_with_a_byte_outside_ascii_in_its_uids(servers, tmp_path: Path):
    """In the command and the data set alike: stored, the byte kept in the file and the index; in only one
    of them: 0xA900, nothing stored."""
    for number, (bad_command, bad_dataset, status) in enumerate([(True, True, SUCCESS), (True, False, 0xA900),
                                                                 (False, True, 0xA900)], start=1):
        clean = uid(BRANCH, 2, 1, number) + ("" if len(uid(BRANCH, 2, 1, number)) % 2 else "9")   # odd: NUL-padded
        dataset = instance(BRANCH, 2, number, SOPInstanceUID=clean)
        data = dataset_bytes(dataset)
        if bad_dataset:
            data = data.replace(clean.encode() + b"\0", clean.encode() + b"\x80")
        command = dimse.encode_command({**store_request(dataset), "CommandDataSetType": dimse.DATASET_PRESENT,
                                        "AffectedSOPInstanceUID": clean + ("\udc80" if bad_command else "")})
        response = _same_response(servers, command, data, CT_CONTEXT)
        assert dimse.decode_command(response)["Status"] == status
    area = Path(servers["qrscp"].config_path.parent, "area")
    stored = [path.read_bytes() for path in area.glob("*.dcm")]
    assert [content.count(b"\x80") for content in stored] == [2]     # meta information and data set
    assert (uid(BRANCH, 2, 1, 1) + "9").encode() + b"\x80" in (area / "index.dat").read_bytes()


def test_find_with_a_byte_outside_ascii(servers):
    find = {"CommandField": dimse.C_FIND_RQ, "MessageID": 3, "Priority": 0,
            "CommandDataSetType": dimse.DATASET_PRESENT}
    query = _study_query(b"1.2.3\x80")
    response = _same_response(servers, dimse.encode_command({**find, "AffectedSOPClassUID": uids.STUDY_ROOT_FIND
                                                             + "\udc80"}), query, 3)
    assert dimse.decode_command(response)["Status"] == 0x0122
    assert "E: findSCP: Database: startFindRequest Failed (Refused: SOPClassNotSupported):" in servers["qrscp"].log
    response = _same_response(servers, dimse.encode_command({**find, "AffectedSOPClassUID": uids.STUDY_ROOT_FIND}),
                              query, 3)
    assert dimse.decode_command(response)["Status"] == SUCCESS


def test_repeated_command_elements_keep_the_first(servers):
    message_ids = (_element(0x0110, struct.pack("<H", 7)), _element(0x0110, struct.pack("<H", 9)))
    response = _same_response(servers, _command_set(_element(0x0002, b"1.2.840.10008.1.1\0"),
                                                    _element(0x0100, struct.pack("<H", dimse.C_ECHO_RQ)),
                                                    *message_ids, _element(0x0800, struct.pack("<H", 0x0101))))
    assert dimse.decode_command(response)["MessageIDBeingRespondedTo"] == 7
    assert "W: DcmItem: Element (0000,0110) found twice in one data set or item, ignoring second entry" in \
           servers["qrscp"].log


def test_command_elements_of_the_wrong_size(servers):
    """A 4-byte CommandField reads as its first value; a 1-byte or empty MessageID ends the association."""
    response = _same_response(servers, _command_set(_element(0x0002, b"1.2.840.10008.1.1\0"),
                                                    _element(0x0100, struct.pack("<HH", dimse.C_ECHO_RQ, 0)),
                                                    *ECHO_HEAD[1:]))
    assert dimse.decode_command(response)["Status"] == SUCCESS
    for message_id in (b"\x05", b""):
        command = _command_set(_element(0x0002, b"1.2.840.10008.1.1\0"), ECHO_HEAD[0], _element(0x0110, message_id),
                               ECHO_HEAD[2])
        assert _same_response(servers, command) == (None)


def test_move_to_a_destination_with_a_byte_outside_ascii(servers):
    dataset = instance(BRANCH, 3, 1)
    for name in ("dcmtk", "qrscp"):
        with RawPeer(servers[name].port) as peer:
            _established(peer)
            peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
            assert peer.final_response()[0]["Status"] == SUCCESS
    move = dimse.encode_command({"CommandField": dimse.C_MOVE_RQ, "MessageID": 4, "Priority": 0,
                                 "AffectedSOPClassUID": uids.STUDY_ROOT_MOVE, "MoveDestination": "DEST\udce9",
                                 "CommandDataSetType": dimse.DATASET_PRESENT})
    query = _study_query(str(dataset.StudyInstanceUID).encode())
    response = dimse.decode_command(_same_response(servers, move, query, 5))
    assert response["Status"] == 0xA801 and "NumberOfRemainingSuboperations" not in response


def test_calling_ae_title_with_a_byte_outside_ascii_is_echoed(servers):
    rq = associate_rq(calling="PE\udce9R")
    for name in ("dcmtk", "qrscp"):
        with RawPeer(servers[name].port) as peer:
            answer = peer.associate(rq)
            assert answer is not None and answer[0] == pdu.A_ASSOCIATE_AC
            assert answer[1][20:36] == b"PE\xe9R".ljust(16)
            assert peer.echo_status() == SUCCESS


def _study_query(study_instance_uid: bytes) -> bytes:
    """A STUDY-level identifier (explicit VR little endian) with the StudyInstanceUID key ``study_instance_uid``."""
    return b"".join(struct.pack("<HH2sH", 0x0008 if tag == 0x52 else 0x0020, tag, vr, len(value)) + value
                    for tag, vr, value in ((0x52, b"CS", b"STUDY "), (0x0D, b"UI", study_instance_uid)))
