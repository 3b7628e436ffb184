"""Hostile network input against a real server (robustness, item 1).

One server, seeded with a few instances, takes every attack in turn: garbage instead of an
A-ASSOCIATE-RQ, PDUs with absurd lengths (up to 4 GiB) and items, broken DIMSE command sets, data sets
that do not parse or nest without end, C-STOREs whose UIDs hold path characters or exceed 64 bytes,
values longer than the index fields. After each attack the attacked connection has ended with the right
status or an abort (never a hang), and the server still answers a C-ECHO and a C-FIND with the stored
data intact: the index is consistent, nothing was written outside the storage area, and no server
process grew beyond :data:`MEMORY_LIMIT` (a :class:`MemoryGuard` ends one that does, and the test fails).

The raw peer is ``rawpeer.RawPeer``; the health checks are ``health``'s.
"""
from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from conftest import Server, needs_dcmtk, simple_config
from corpus import uid
from health import (
    MemoryGuard,
    assert_healthy,
    echo_ok,
    files_under,
    find_uids,
    log_size,
    server_processes,
    store,
)
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from rawpeer import (
    AE_TITLE,
    CANNOT_UNDERSTAND,
    CT_CONTEXT,
    DATASET_DOES_NOT_MATCH,
    FIND_CONTEXT,
    GET_CONTEXT,
    MOVE_CONTEXT,
    MOVE_DESTINATION_UNKNOWN,
    PEER_TIMEOUT,
    REFUSED_OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    RawPeer,
    ServerEnded,
    associate_rq,
    dataset_bytes,
    identifier,
    instance,
    item,
    p_data,
    pdu_bytes,
    pdv,
    query_request,
    store_request,
)

from qrscp.dicom import uids
from qrscp.net import dimse, pdu

pytestmark = [needs_dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]   # pydicom on invalid UIDs

#: Every UID this module stores lies under this branch of the corpus root.
BRANCH = 81
SEED_COUNT = 3


# === this module's server ===============================================================================

@dataclass
class Archive:
    """The server under attack, its storage area and the instances it must still hold."""

    server: Server
    area: Path
    root: Path
    expected: set[str] = field(default_factory=set)
    outside: set[Path] = field(default_factory=set)   # files outside the area before the attacks

    def healthy(self) -> None:
        """:func:`assert_healthy` (which also finds any image file left unindexed); no file outside the
        area is new."""
        assert_healthy(self.server, self.area, self.expected)
        assert files_under(self.root) - files_under(self.area) == self.outside, "file written outside the area"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """The module's server (``-ta``/``-td`` :data:`PEER_TIMEOUT`) with :data:`SEED_COUNT` instances."""
    root = tmp_path_factory.mktemp("hostile")
    area = root / "area"
    with Server(root, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v",
                "-ta", str(PEER_TIMEOUT), "-td", str(PEER_TIMEOUT)) as server:
        seeds = [instance(BRANCH, 1, n) for n in range(1, SEED_COUNT + 1)]
        assert store(server.port, seeds) == [SUCCESS] * SEED_COUNT
        state = Archive(server, area, root, {str(d.SOPInstanceUID) for d in seeds})
        state.outside = files_under(root) - files_under(area)
        yield state


@pytest.fixture
def guarded(archive: Archive) -> Iterator[Archive]:
    """The archive, with its memory watched during the test and its health checked after it."""
    with MemoryGuard(archive.server) as guard:
        yield archive
    guard.assert_bounded()
    archive.healthy()


# === 1. garbage and absurd PDUs before an association ===================================================

def _rq_body(rq: pdu.AssociateRQ | None = None) -> bytes:
    return pdu.encode_associate_rq(rq or associate_rq())[6:]


def _fixed_part(called: bytes = b"QRSCP", calling: bytes = b"RAWSCU", version: int = 1) -> bytes:
    return struct.pack(">HH", version, 0) + called.ljust(16, b" ") + calling.ljust(16, b" ") + bytes(32)


def _user_information(*items: bytes) -> bytes:
    return item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4") + b"".join(items))


def _verification_context(context_id: int = 1, abstract: bytes = uids.VERIFICATION.encode(),
                          transfer: bytes = uids.IMPLICIT_VR_LE.encode()) -> bytes:
    return item(0x20, bytes((context_id, 0, 0, 0)) + item(0x30, abstract) + item(0x40, transfer))


def _associate(fixed: bytes = b"", *items: bytes) -> bytes:
    body = (fixed or _fixed_part()) + item(0x10, uids.APPLICATION_CONTEXT.encode()) + b"".join(items)
    return pdu_bytes(pdu.A_ASSOCIATE_RQ, body)


#: Byte strings sent on a fresh connection instead of a well-formed A-ASSOCIATE-RQ: the server must
#: answer with nothing but a close, an A-ASSOCIATE-RJ or an A-ABORT.
BAD_OPENINGS: dict[str, bytes] = {
    "connect-and-close": b"",
    "random-garbage": bytes((i * 131 + 7) % 256 for i in range(1024)),
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(160),
    "unknown-pdu-type-0x08": pdu_bytes(0x08, bytes(10)),
    "unknown-pdu-type-0xff": pdu_bytes(0xFF, bytes(10)),
    "associate-rq-4-GiB-length": pdu_bytes(pdu.A_ASSOCIATE_RQ, _rq_body()[:100], length=0xFFFFFFFF),
    "associate-rq-2-MiB-length": pdu_bytes(pdu.A_ASSOCIATE_RQ, _rq_body()[:100], length=2 << 20),
    "associate-rq-truncated-then-closed": pdu.encode_associate_rq(associate_rq())[:150],
    "associate-rq-shorter-than-fixed-part": pdu_bytes(pdu.A_ASSOCIATE_RQ, bytes(40)),
    "associate-rq-empty": pdu_bytes(pdu.A_ASSOCIATE_RQ, b""),
    "header-only": pdu_bytes(pdu.A_ASSOCIATE_RQ, b"")[:3],
    "release-rq-first": pdu.RELEASE_RQ,
    "abort-first": pdu.encode_abort(),
    "p-data-first": p_data(pdv(1, 3, dimse.encode_command({"CommandField": dimse.C_ECHO_RQ, "MessageID": 1,
                                                           "CommandDataSetType": dimse.NO_DATASET}))),
    "associate-ac-to-the-acceptor": pdu_bytes(pdu.A_ASSOCIATE_AC, _rq_body()),
    "associate-rj-to-the-acceptor": pdu.encode_associate_rj(1, 1, 1),
    "item-longer-than-pdu": _associate(b"", item(0x20, bytes(8), length=60000)),
    "item-header-cut": _associate(b"", b"\x20\x00"),
    "context-item-too-short": _associate(b"", item(0x20, b"\x01\x00"), _user_information()),
    "sub-item-longer-than-context": _associate(b"", item(0x20, bytes((1, 0, 0, 0)) + item(0x30, b"1.2", length=500))),
    "max-length-item-of-3-bytes": _associate(b"", _verification_context(),
                                             item(0x50, item(0x51, b"\x00\x40\x00"))),
    "role-selection-wrong-uid-length": _associate(b"", _verification_context(), _user_information(
        item(0x54, struct.pack(">H", 400) + b"1.2.840.10008.1.1" + b"\x01\x01"))),
    "role-selection-too-short": _associate(b"", _verification_context(), _user_information(item(0x54, b"\x00"))),
    "no-presentation-context": _associate(b"", _user_information()),
    "context-without-transfer-syntax": _associate(b"", item(0x20, bytes((1, 0, 0, 0))
                                                            + item(0x30, uids.VERIFICATION.encode())),
                                                  _user_information()),
    "calling-ae-all-spaces": _associate(_fixed_part(calling=b""), _verification_context(), _user_information()),
    "called-ae-with-nul-and-control-bytes": _associate(_fixed_part(called=b"QR\x00\x01\x1b[2J"),
                                                       _verification_context(), _user_information()),
    "called-ae-path-characters": _associate(_fixed_part(called=b"../../etc/passwd"), _verification_context(),
                                            _user_information()),
    "protocol-version-0": _associate(_fixed_part(version=0), _verification_context(), _user_information()),
    "wrong-application-context": pdu_bytes(pdu.A_ASSOCIATE_RQ, _fixed_part() + item(0x10, b"1.2.3")
                                           + _verification_context() + _user_information()),
    "application-context-60000-bytes": pdu_bytes(pdu.A_ASSOCIATE_RQ, _fixed_part() + item(0x10, b"1" * 60000)
                                                 + _verification_context() + _user_information()),
}


@pytest.mark.parametrize("name", list(BAD_OPENINGS))
def test_bad_opening_ends_only_that_connection(guarded: Archive, name: str) -> None:
    """Garbage, cut or absurd PDUs (up to a 4 GiB length field) instead of an A-ASSOCIATE-RQ: the server
    answers with a close, an A-ASSOCIATE-RJ or an A-ABORT, never an A-ASSOCIATE-AC, and never waits for
    more than its ACSE timeout."""
    with RawPeer(guarded.server.port) as peer:
        peer.send(BAD_OPENINGS[name])
        if name.endswith(("close", "closed")):
            peer.sock.shutdown(socket.SHUT_WR)
        answered = peer.ending(timeout=PEER_TIMEOUT + 5)
    assert set(answered) <= {pdu.A_ASSOCIATE_RJ, pdu.A_ABORT}, answered


def test_huge_length_field_is_refused_before_reading(guarded: Archive) -> None:
    """A 4 GiB A-ASSOCIATE-RQ length is refused at once (not after the ACSE timeout) and logged."""
    since = log_size(guarded.server)
    started = time.monotonic()
    with RawPeer(guarded.server.port) as peer:
        peer.send(pdu_bytes(pdu.A_ASSOCIATE_RQ, b"", length=0xFFFFFFFF))
        assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    assert time.monotonic() - started < PEER_TIMEOUT
    guarded.server.wait_for_log("Failed to receive association", since)


def test_silent_and_truncated_peers_stall_nobody(guarded: Archive) -> None:
    """Peers that connect and send nothing, or half an A-ASSOCIATE-RQ, do not delay a well-behaved client
    (docs/differences.md #4); the server closes their connections after its ACSE timeout."""
    peers = [RawPeer(guarded.server.port) for _ in range(6)]
    try:
        for number, peer in enumerate(peers):
            if number % 2:
                peer.send(pdu.encode_associate_rq(associate_rq())[:100])
        started = time.monotonic()
        assert echo_ok(guarded.server.port)
        assert sorted(find_uids(guarded.server.port)) == sorted(guarded.expected)
        assert time.monotonic() - started < PEER_TIMEOUT
        for peer in peers:
            assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    finally:
        for peer in peers:
            peer.close()


def _many_contexts(count: int) -> bytes:
    contexts = b"".join(_verification_context(1 + 2 * (n % 128)) for n in range(count))
    return _associate(b"", contexts, _user_information())


#: Absurd but parseable A-ASSOCIATE-RQs: the server may accept (then a C-ECHO on context 1 must work) or
#: reject them, but must stay bounded.
ABSURD_REQUESTS: dict[str, bytes] = {
    "5000-presentation-contexts": _many_contexts(5000),
    "abstract-syntax-of-60000-bytes": _associate(b"", _verification_context(),
                                                 _verification_context(3, abstract=b"9" * 60000),
                                                 _user_information()),
    "3000-transfer-syntaxes": _associate(b"", item(0x20, bytes((1, 0, 0, 0)) + item(0x30, uids.VERIFICATION.encode())
                                                    + b"".join(item(0x40, b"1.2.3.%d" % n) for n in range(3000))
                                                    + item(0x40, uids.IMPLICIT_VR_LE.encode())),
                                          _user_information()),
    "unknown-items-everywhere": _associate(b"", item(0x7F, bytes(60000)), _verification_context(),
                                           _user_information(item(0x7E, bytes(30000)), item(0x56, bytes(9)))),
    "2000-user-information-items": _associate(b"", _verification_context(),
                                              *[_user_information() for _ in range(2000)]),
    "1000-role-selections": _associate(b"", _verification_context(), _user_information(
        *[item(0x54, struct.pack(">H", 17) + b"1.2.840.10008.1.%d" % (n % 10) + b"\x01\x01")
          for n in range(1000)])),
    "calling-ae-non-ascii": _associate(_fixed_part(calling=bytes(range(0xF0, 0x100))), _verification_context(),
                                       _user_information()),
    "context-id-0-and-even": _associate(b"", _verification_context(0), _verification_context(2),
                                        _verification_context(1), _user_information()),
    "max-pdu-length-4-GiB": _associate(b"", _verification_context(), item(0x50, item(0x51, b"\xff\xff\xff\xff"))),
    "max-pdu-length-13": _associate(b"", _verification_context(), item(0x50, item(0x51, struct.pack(">L", 13)))),
}


@pytest.mark.parametrize("name", list(ABSURD_REQUESTS))
def test_absurd_associate_request(guarded: Archive, name: str) -> None:
    """Absurd items in an A-ASSOCIATE-RQ (thousands of contexts, transfer syntaxes or items, huge UIDs,
    non-ASCII titles, odd context ids, extreme maximum PDU lengths): refused, or accepted and then a
    C-ECHO on context 1 (if accepted) succeeds and the release is answered; bounded either way."""
    with RawPeer(guarded.server.port) as peer:
        peer.send(ABSURD_REQUESTS[name])
        answer = peer.read_pdu(timeout=PEER_TIMEOUT + 5)
        if answer is None or answer[0] != pdu.A_ASSOCIATE_AC:
            assert answer is None or answer[0] in (pdu.A_ASSOCIATE_RJ, pdu.A_ABORT), answer
            return
        accepted = [c for c in pdu.decode_associate_ac(answer[1]).contexts if c.result == pdu.ACCEPTANCE]
        if any(c.context_id == 1 for c in accepted):
            assert peer.echo_status(1) == SUCCESS
        peer.send(pdu.RELEASE_RQ)
        assert peer.ending() == [pdu.A_RELEASE_RP]


@pytest.mark.parametrize("max_pdu_length", [1, 12])
def test_tiny_maximum_pdu_length(guarded: Archive, max_pdu_length: int) -> None:
    """A peer that announces a maximum PDU length too small for any PDV (DCMTK then uses its default,
    "PDV send length ... (using default)"): the C-ECHO is answered, the worker stays bounded."""
    with MemoryGuard(guarded.server, limit=150 << 20) as guard, RawPeer(guarded.server.port) as peer:
        contexts = peer.establish(associate_rq(max_pdu_length=max_pdu_length, contexts={1: uids.VERIFICATION}))
        assert contexts
        try:
            status = peer.echo_status(1)
        except (ServerEnded, TimeoutError):
            status = None
    guard.assert_bounded()
    assert status == SUCCESS


# === 2. broken PDUs and DIMSE command sets on an established association ================================


def _element(group: int, element: int, value: bytes, length: int | None = None) -> bytes:
    """An implicit VR little endian element (the encoding of command sets)."""
    return struct.pack("<HHL", group, element, len(value) if length is None else length) + value


def _echo_command(**fields: object) -> bytes:
    return dimse.encode_command({"CommandField": dimse.C_ECHO_RQ, "MessageID": 1,
                                 "AffectedSOPClassUID": uids.VERIFICATION, "CommandDataSetType": dimse.NO_DATASET,
                                 **fields})


def _command_pdu(command: bytes, context_id: int = 1, control: int = 0x03) -> bytes:
    return p_data(pdv(context_id, control, command))


_ECHO_ELEMENTS = _echo_command()[12:]   # without the group length element

#: Byte strings sent on an established association (contexts :data:`STANDARD_CONTEXTS`): each must end
#: the association with an A-ABORT (or a close), nothing else.
ABORTING_INPUT: dict[str, bytes] = {
    "p-data-longer-than-max-pdu": p_data(pdv(1, 0x03, bytes(16400))),
    "p-data-4-GiB-length": pdu_bytes(pdu.P_DATA_TF, bytes(64), length=0xFFFFFFFF),
    "p-data-without-pdv": pdu_bytes(pdu.P_DATA_TF, b""),
    "pdv-length-below-2": pdu_bytes(pdu.P_DATA_TF, struct.pack(">LBB", 1, 1, 3)),
    "pdv-longer-than-its-pdu": pdu_bytes(pdu.P_DATA_TF, struct.pack(">LBB", 1000, 1, 3) + bytes(10)),
    "pdv-header-cut": pdu_bytes(pdu.P_DATA_TF, b"\x00\x00\x00"),
    "pdv-on-unaccepted-context": _command_pdu(_echo_command(), context_id=99),
    "pdv-on-context-0": _command_pdu(_echo_command(), context_id=0),
    "data-set-fragment-instead-of-command": _command_pdu(_echo_command(), control=0x02),
    "command-without-command-field": _command_pdu(_element(0, 0x0110, b"\x01\x00")),
    "empty-command": _command_pdu(b""),
    "unknown-command-field": _command_pdu(dimse.encode_command({"CommandField": 0x0123, "MessageID": 1})),
    "response-sent-to-the-scp": _command_pdu(dimse.encode_command({"CommandField": dimse.C_ECHO_RSP,
                                                                   "MessageIDBeingRespondedTo": 1, "Status": 0})),
    "n-create-rq": _command_pdu(dimse.encode_command({"CommandField": 0x0140, "MessageID": 1})),
    "command-element-of-group-0008": _command_pdu(_ECHO_ELEMENTS + _element(0x0008, 0x0016, b"1.2\x00")),
    "command-element-longer-than-command": _command_pdu(_ECHO_ELEMENTS + _element(0, 0x1000, b"1.2", length=5000)),
    "command-element-length-4-GiB": _command_pdu(_ECHO_ELEMENTS + _element(0, 0x1000, b"1.2", length=0xFFFFFFFF)),
    "command-element-header-cut": _command_pdu(_ECHO_ELEMENTS + b"\x00\x00\x00\x10\x04"),
    "command-field-of-4-bytes": _command_pdu(_element(0, 0x0100, b"\x30\x00\x00\x00") + _ECHO_ELEMENTS[10:]),
    "command-uid-of-200-bytes": _command_pdu(_echo_command(AffectedSOPClassUID="1." * 100)),
    "move-destination-of-40-bytes": _command_pdu(dimse.encode_command(
        query_request(dimse.C_MOVE_RQ, uids.STUDY_ROOT_MOVE, MoveDestination="D" * 40)), context_id=MOVE_CONTEXT),
    "command-over-64-KiB": b"".join(p_data(pdv(1, 0x01, _element(0, 0x7777, bytes(16000)))) for _ in range(5)),
    "command-fragments-on-two-contexts": p_data(pdv(1, 0x01, _echo_command()[:20]))
                                         + p_data(pdv(3, 0x03, _echo_command()[20:])),
    "store-command-then-another-command": _command_pdu(dimse.encode_command(
        {**store_request(instance(BRANCH, 9, 1)), "CommandDataSetType": dimse.DATASET_PRESENT}), CT_CONTEXT)
                                          + _command_pdu(_echo_command()),
    "find-identifier-on-another-context": _command_pdu(dimse.encode_command(
        {**query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND), "CommandDataSetType": dimse.DATASET_PRESENT}),
        FIND_CONTEXT) + p_data(pdv(1, 0x02, identifier(QueryRetrieveLevel="STUDY"))),
    "unsolicited-release-rp": pdu.RELEASE_RP,
    "second-associate-rq": pdu.encode_associate_rq(associate_rq()),
    "associate-ac-mid-association": pdu_bytes(pdu.A_ASSOCIATE_AC, _rq_body()),
    "unknown-pdu-type": pdu_bytes(0x09, bytes(4)),
    "unknown-pdu-type-4-GiB": pdu_bytes(0x42, b"", length=0xFFFFFFFF),
}


@pytest.mark.parametrize("name", list(ABORTING_INPUT))
def test_broken_message_aborts_only_that_association(guarded: Archive, name: str) -> None:
    """Broken PDUs, PDVs and command sets (missing, unknown, too long or mis-typed elements, lengths up
    to 4 GiB) after the association is accepted: the server answers with an A-ABORT and closes, and
    logs why."""
    since = log_size(guarded.server)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send(ABORTING_INPUT[name])
        answered = peer.ending(timeout=PEER_TIMEOUT + 5)
    assert set(answered) <= {pdu.A_ABORT}, answered
    log = guarded.server.wait_for_log("Association Summary", since)
    assert "DIMSE Failure (aborting association)" in log or "Cannot handle command" in log


def test_over_long_identifier_is_refused(guarded: Archive) -> None:
    """A C-FIND identifier of more than 64 MiB is refused with an A-ABORT once the limit is crossed; the
    worker's memory stays bounded while it arrives."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(FIND_CONTEXT, {"CommandField": dimse.C_FIND_RQ, "MessageID": 1, "Priority": 0,
                                         "AffectedSOPClassUID": uids.STUDY_ROOT_FIND,
                                         "CommandDataSetType": dimse.DATASET_PRESENT})
        chunk = p_data(pdv(FIND_CONTEXT, 0x00, bytes(peer.max_pdv)))
        for _ in range((65 << 20) // peer.max_pdv):
            if not peer.send(chunk):
                break
        assert set(peer.ending(timeout=PEER_TIMEOUT + 5)) <= {pdu.A_ABORT}


# === 3. requests that do not parse or make no sense: a failure status, the association goes on =========

_SEQUENCE_ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def nested_sequences(depth: int, tag: int = 0x00400275) -> bytes:
    """An explicit VR little endian sequence element nested ``depth`` levels deep (undefined lengths)."""
    opening = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, b"SQ", 0, 0xFFFFFFFF) + _SEQUENCE_ITEM
    return opening * depth + (_ITEM_END + _SEQUENCE_END) * depth


def _explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element with a 16-bit length field (``length`` overrides it)."""
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value) if length is None else length) + value


_GARBAGE = bytes((i * 97 + 13) % 256 for i in range(4000))
_STUDY_QUERY = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="")


#: In :data:`FAILING_REQUESTS`: an A-ABORT is an acceptable answer too (DCMTK aborts there).
ABORT = -1
_UNPARSABLE = (ABORT, CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH)


@dataclass(frozen=True)
class Exchange:
    """One request on an established association and the outcomes allowed for it: final statuses, and
    :data:`ABORT` if an A-ABORT is acceptable."""

    command: dimse.Command
    context_id: int
    dataset: bytes | None
    outcomes: frozenset[int]

    @staticmethod
    def of(command: dimse.Command, context_id: int, dataset: bytes | None, *outcomes: int) -> "Exchange":
        return Exchange(command, context_id, dataset, frozenset(outcomes))


def _find(**fields: object) -> dimse.Command:
    return query_request(dimse.C_FIND_RQ, uids.STUDY_ROOT_FIND, **fields)


def _move(**fields: object) -> dimse.Command:
    return query_request(dimse.C_MOVE_RQ, uids.STUDY_ROOT_MOVE, **fields)


def _get(**fields: object) -> dimse.Command:
    return query_request(dimse.C_GET_RQ, uids.STUDY_ROOT_GET, **fields)


def _without(command: dimse.Command, keyword: str) -> dimse.Command:
    return {key: value for key, value in command.items() if key != keyword}


_CT = instance(BRANCH, 5, 1, PixelData=None)
_CT_BYTES = dataset_bytes(_CT)

#: Requests that get a failure status (where DCMTK gives one, the same status) or an A-ABORT where that
#: is allowed; after a status the association goes on. Nothing is stored by any of them.
FAILING_REQUESTS: dict[str, Exchange] = {
    "find-garbage-identifier": Exchange.of(_find(), FIND_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "find-identifier-cut-in-a-header": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY[:-3], *_UNPARSABLE),
    "find-element-length-4-GiB": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY + struct.pack(
        "<HH2sHL", 0x0010, 0x0010, b"UN", 0, 0xFFFFFFF0) + b"x" * 64, *_UNPARSABLE),
    "find-sequences-nested-10000-deep": Exchange.of(_find(), FIND_CONTEXT, _STUDY_QUERY + nested_sequences(10000),
                                                    *_UNPARSABLE),
    "find-empty-identifier": Exchange.of(_find(), FIND_CONTEXT, b"", DATASET_DOES_NOT_MATCH),
    "find-unknown-level": Exchange.of(_find(), FIND_CONTEXT, identifier(QueryRetrieveLevel="BOGUS"),
                                      CANNOT_UNDERSTAND),
    "find-level-of-300-bytes": Exchange.of(_find(), FIND_CONTEXT, identifier(QueryRetrieveLevel="S" * 300),
                                           CANNOT_UNDERSTAND),
    "find-without-level": Exchange.of(_find(), FIND_CONTEXT, identifier(PatientID="*"), DATASET_DOES_NOT_MATCH),
    "find-without-sop-class": Exchange.of(_without(_find(), "AffectedSOPClassUID"), FIND_CONTEXT, _STUDY_QUERY,
                                          ABORT, SOP_CLASS_NOT_SUPPORTED),
    "find-verification-sop-class": Exchange.of(_find(AffectedSOPClassUID=uids.VERIFICATION), FIND_CONTEXT,
                                               _STUDY_QUERY, SOP_CLASS_NOT_SUPPORTED),
    "find-key-of-10000-bytes": Exchange.of(_find(), FIND_CONTEXT, identifier(
        QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientID="*" * 10000), SUCCESS),
    "move-garbage-identifier": Exchange.of(_move(MoveDestination="DEST"), MOVE_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "move-without-destination": Exchange.of(_move(), MOVE_CONTEXT, _STUDY_QUERY, ABORT, MOVE_DESTINATION_UNKNOWN),
    "move-destination-path-characters": Exchange.of(_move(MoveDestination="../../../tmp"), MOVE_CONTEXT,
                                                    _STUDY_QUERY, MOVE_DESTINATION_UNKNOWN),
    "move-sequences-nested-10000-deep": Exchange.of(_move(MoveDestination="DEST"), MOVE_CONTEXT,
                                                    _STUDY_QUERY + nested_sequences(10000), *_UNPARSABLE),
    "get-garbage-identifier": Exchange.of(_get(), GET_CONTEXT, _GARBAGE, *_UNPARSABLE),
    "get-without-requestor-scp-role": Exchange.of(_get(), GET_CONTEXT, _STUDY_QUERY, 0xA702),
    "store-garbage-data-set": Exchange.of(store_request(_CT), CT_CONTEXT, _GARBAGE, ABORT, CANNOT_UNDERSTAND),
    "store-element-length-4-GiB": Exchange.of(store_request(_CT), CT_CONTEXT, _CT_BYTES + struct.pack(
        "<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFF0) + bytes(64), ABORT, CANNOT_UNDERSTAND),
    "store-value-cut-short": Exchange.of(store_request(_CT), CT_CONTEXT,
                                         _CT_BYTES + _explicit(0x00400280, b"ST", b"x", length=0xFFFF),
                                         ABORT, CANNOT_UNDERSTAND),
    "store-sequences-nested-100000-deep": Exchange.of(store_request(_CT), CT_CONTEXT,
                                                      _CT_BYTES + nested_sequences(100000), ABORT, CANNOT_UNDERSTAND),
    "store-empty-data-set": Exchange.of(store_request(_CT), CT_CONTEXT, b"", CANNOT_UNDERSTAND),
    "store-unknown-sop-class": Exchange.of(store_request(_CT, AffectedSOPClassUID="1.2.3"), CT_CONTEXT,
                                           _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-sop-class-with-path-characters": Exchange.of(store_request(_CT, AffectedSOPClassUID="../../../evil"),
                                                        CT_CONTEXT, _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-instance-uid-differs": Exchange.of(store_request(_CT, AffectedSOPInstanceUID="1.2.3"), CT_CONTEXT,
                                              _CT_BYTES, DATASET_DOES_NOT_MATCH),
    "store-without-instance-uid": Exchange.of(store_request(_CT), CT_CONTEXT,
                                              dataset_bytes(instance(BRANCH, 5, 1, PixelData=None,
                                                                     SOPInstanceUID=None)), CANNOT_UNDERSTAND),
    "store-data-set-uid-over-64-bytes": Exchange.of(
        store_request(_CT, AffectedSOPInstanceUID=uid(BRANCH, 5, 1, 1) + ".1" * 10), CT_CONTEXT,
        dataset_bytes(instance(BRANCH, 5, 1, PixelData=None, SOPInstanceUID=uid(BRANCH, 5, 1, 1) + ".1" * 30)),
        DATASET_DOES_NOT_MATCH),
    "store-without-instance-uid-in-command": Exchange.of(_without(store_request(_CT), "AffectedSOPInstanceUID"),
                                                         CT_CONTEXT, _CT_BYTES, ABORT, DATASET_DOES_NOT_MATCH),
}


@pytest.mark.parametrize("exchange", list(FAILING_REQUESTS.values()), ids=list(FAILING_REQUESTS))
def test_failing_request(guarded: Archive, exchange: Exchange) -> None:
    """Identifiers and data sets that do not parse (garbage, cut short, 4 GiB lengths, sequences nested
    up to 100,000 deep), missing or senseless command fields, impossible destinations: the request gets
    a failure status (the one DCMTK gives, where it gives one) and the association goes on (a C-ECHO on
    it succeeds), or, where allowed, an A-ABORT. Nothing is stored."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(exchange.context_id, exchange.command, exchange.dataset)
        try:
            final, _pending = peer.final_response()
        except ServerEnded as ended:
            assert ABORT in exchange.outcomes, f"association ended: {ended}"
            assert ended.pdu_type == pdu.A_ABORT
            return
        assert final["Status"] in exchange.outcomes, f"0x{final['Status']:04x}"
        assert final["MessageIDBeingRespondedTo"] == exchange.command["MessageID"]
        assert peer.echo_status() == SUCCESS
        peer.send(pdu.RELEASE_RQ)
        assert peer.ending() == [pdu.A_RELEASE_RP]


def test_data_set_cut_inside_its_last_element_header_is_stored_as_by_dcmtk(guarded: Archive) -> None:
    """A data set that ends inside an element header is read up to that point and stored with Success,
    as DCMTK does; its index record and file are consistent."""
    dataset = instance(BRANCH, 12, 1, PixelData=None)
    data = dataset_bytes(dataset)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), data + struct.pack("<HH", 0x0040, 0x0280))
        assert peer.final_response()[0]["Status"] == SUCCESS
    guarded.expected.add(str(dataset.SOPInstanceUID))


def test_cancel_outside_an_operation_is_ignored(guarded: Archive) -> None:
    """A C-CANCEL-RQ for no running operation gets no answer; the association goes on."""
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(FIND_CONTEXT, {"CommandField": dimse.C_CANCEL_RQ, "MessageIDBeingRespondedTo": 7})
        assert peer.echo_status() == SUCCESS


def test_peer_vanishing_mid_store_leaves_nothing(guarded: Archive) -> None:
    """A peer that closes its connection in the middle of a C-STORE data set leaves no file and no record."""
    dataset = instance(BRANCH, 6, 1)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_fragments(CT_CONTEXT, dimse.encode_command({**store_request(dataset),
                                                              "CommandDataSetType": dimse.DATASET_PRESENT}), True)
        peer.send_fragments(CT_CONTEXT, dataset_bytes(dataset)[:200], command=False, last=False)
        time.sleep(0.2)
    time.sleep(0.3)   # the worker notices the close; healthy() then finds no stray file


# === 4. stores with hostile UIDs and values: stored inside the area, or refused ==========================

#: SOP Instance UIDs that are paths; ``{name}`` is replaced by the name of the test's root directory.
ESCAPING_UIDS = {"relative": "../../{name}-escape", "deeper": "../../../../{name}-escape",
                 "absolute": "/tmp/{name}-escape", "dots-only": "../..", "slashes": "1.2/3.4//5"}


@pytest.mark.parametrize("kind", list(ESCAPING_UIDS))
def test_path_characters_in_sop_instance_uid_stay_inside_the_area(guarded: Archive, kind: str) -> None:
    """A C-STORE whose SOP Instance UID is a path (``../``, ``/``): whatever the answer, nothing appears
    where the UID points (from the area or from the server's directory), the directories around are
    unchanged, and the stored file has the usual name in the area (names never derive from UIDs)."""
    sop_uid = ESCAPING_UIDS[kind].format(name=guarded.root.name)
    dataset = instance(BRANCH, 7, 1, SOPInstanceUID=sop_uid)
    targets = {Path(os.path.normpath(base / sop_uid)) for base in (guarded.area, guarded.root)}
    watched = (guarded.root.parent, guarded.root)   # the test session's own directories
    before = {directory: set(directory.iterdir()) for directory in watched}
    existed = {target for target in targets if target.exists()}
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
        status = peer.final_response()[0]["Status"]
    assert status in (SUCCESS, CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH)
    if status == SUCCESS:
        guarded.expected.add(sop_uid)
    assert {target for target in targets if target.exists()} == existed
    assert {directory: set(directory.iterdir()) for directory in watched} == before
    assert all(p.name.startswith("CT_") for p in guarded.area.iterdir() if p.suffix == ".dcm")


def test_values_longer_than_the_index_fields(guarded: Archive) -> None:
    """Values longer than their index fields (names of 400 bytes, a 100-byte Study Instance UID, a
    10,000-byte description) are stored; the index holds them truncated and stays consistent."""
    dataset = instance(BRANCH, 8, 1, PatientName="N" * 400, PatientID="I" * 300, AccessionNumber="A" * 200,
                       StudyID="S" * 200, StudyDescription="D" * 10000, ReferringPhysicianName="R^" * 200,
                       StudyInstanceUID=uid(BRANCH, 8) + ".9" * 30, SeriesDescription="x" * 70000)
    assert store(guarded.server.port, [dataset]) == [SUCCESS]
    guarded.expected.add(str(dataset.SOPInstanceUID))


@pytest.mark.parametrize("depth", [100, 20000])
def test_deeply_nested_sequences_in_a_stored_data_set(guarded: Archive, depth: int) -> None:
    """A data set with sequences nested ``depth`` levels deep is stored or refused with 0xC000; the
    worker neither crashes nor grows beyond the memory limit."""
    dataset = instance(BRANCH, 10, depth, PixelData=None)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset) + nested_sequences(depth))
        status = peer.final_response()[0]["Status"]
        assert peer.echo_status() == SUCCESS
    assert status in (SUCCESS, CANNOT_UNDERSTAND)
    if status == SUCCESS:
        guarded.expected.add(str(dataset.SOPInstanceUID))


def test_command_uid_longer_than_64_bytes_aborts(guarded: Archive) -> None:
    """A C-STORE-RQ whose Affected SOP Instance UID exceeds 64 bytes is a malformed command: A-ABORT,
    nothing stored, even though the data set carries the same UID."""
    long_uid = uid(BRANCH, 11, 1, 1) + ".1" * 30
    dataset = instance(BRANCH, 11, 1, SOPInstanceUID=long_uid)
    with RawPeer(guarded.server.port) as peer:
        peer.establish()
        peer.send_message(CT_CONTEXT, store_request(dataset), dataset_bytes(dataset))
        assert set(peer.ending(timeout=PEER_TIMEOUT + 5)) <= {pdu.A_ABORT}


def test_connection_flood(guarded: Archive) -> None:
    """64 connections that never send a byte: a well-behaved client is served at once, the silent ones
    are closed after the ACSE timeout, and the workers they occupied retire (no worker left behind)."""
    from qrscp.server.supervisor import MAX_IDLE_WORKERS

    peers = [RawPeer(guarded.server.port) for _ in range(64)]
    try:
        assert echo_ok(guarded.server.port)
        assert len(server_processes(guarded.server)) > 64
        for peer in peers:
            assert peer.ending(timeout=PEER_TIMEOUT + 5) == []
    finally:
        for peer in peers:
            peer.close()
    deadline = time.monotonic() + 5
    while len(server_processes(guarded.server)) > 1 + MAX_IDLE_WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server_processes(guarded.server)) <= 1 + MAX_IDLE_WORKERS


def _deflate_bomb(dataset: Dataset, inflated: int) -> bytes:
    """``dataset`` followed by an OB element of ``inflated`` zero bytes, deflated (about 1/1000 the size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, inflated)
    data = compressor.compress(dataset_bytes(dataset) + header)
    block = bytes(1 << 20)
    data += b"".join(compressor.compress(block) for _ in range(inflated >> 20))
    return data + compressor.flush()


#: The storage output options a received data set can be converted with (and none: stored as received).
OUTPUT_OPTIONS = {"as-received": (), "+B": ("+B",), "+te": ("+te",), "+tb": ("+tb",), "+ti": ("+ti",),
                  "+td": ("+td",), "+td +cl 9": ("+td", "+cl", "9"), "+g": ("+g",), "-g": ("-g",), "-e": ("-e",),
                  "+p 256 16": ("+p", "256", "16"), "-u": ("-u",), "-F": ("-F",), "+cl 1": ("+cl", "1")}
#: The bound every server process stays within while a deflate bomb is received.
BOMB_MEMORY_LIMIT = 256 << 20


@pytest.fixture(scope="module")
def gigabyte_bomb() -> tuple[Dataset, bytes]:
    """A C-STORE data set whose 1 MiB of deflated bytes inflate to 1 GiB (an OB element of zeros)."""
    dataset = instance(BRANCH, 13, 1, PixelData=None)
    return dataset, _deflate_bomb(dataset, 1 << 30)


@pytest.mark.parametrize("options", OUTPUT_OPTIONS.values(), ids=OUTPUT_OPTIONS.keys())
def test_deflate_bomb_is_refused_within_bounded_memory(tmp_path: Path, gigabyte_bomb, options) -> None:
    """A C-STORE on a Deflated Explicit VR Little Endian context (``+xd``), whatever the output options:
    its data set inflates past the area's maxBytesPerStudy (64 MiB here) and is refused with 0xA700 as
    soon as it does; every server process stays under 256 MiB; nothing is stored; the server goes on."""
    area = tmp_path / "area"
    dataset, bomb = gigabyte_bomb
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 64mb) ANY"}), "+xd", *options) as server:
        with MemoryGuard(server, limit=BOMB_MEMORY_LIMIT) as guard, RawPeer(server.port, timeout=60) as peer:
            contexts = peer.establish(associate_rq(contexts={CT_CONTEXT: CTImageStorage},
                                                   transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE,)))
            assert contexts == {CT_CONTEXT: uids.DEFLATED_EXPLICIT_VR_LE}
            peer.send_message(CT_CONTEXT, store_request(dataset), bomb)
            status = peer.final_response()[0]["Status"]
        assert_healthy(server, area, [])
    guard.assert_bounded()
    assert status == REFUSED_OUT_OF_RESOURCES
    assert "inflates to more than 67108864 bytes (maxBytesPerStudy)" in server.log
    assert list(area.iterdir()) == [area / "index.dat"]   # no image file, no temporary file left


def test_large_deflated_data_set_is_stored_within_bounded_memory(tmp_path: Path) -> None:
    """A deflated data set that legitimately inflates to 256 MiB (under a 1 GiB maxBytesPerStudy) is
    stored, converted to explicit VR little endian (``+te``), with every process under 256 MiB."""
    area = tmp_path / "area"
    dataset = instance(BRANCH, 15, 1, PixelData=None)
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "+xd", "+te") as server:
        with MemoryGuard(server, limit=BOMB_MEMORY_LIMIT) as guard, RawPeer(server.port, timeout=60) as peer:
            peer.establish(associate_rq(contexts={CT_CONTEXT: CTImageStorage},
                                        transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE,)))
            peer.send_message(CT_CONTEXT, store_request(dataset), _deflate_bomb(dataset, 256 << 20))
            assert peer.final_response()[0]["Status"] == SUCCESS
        assert_healthy(server, area, [str(dataset.SOPInstanceUID)])
    guard.assert_bounded()
    stored = [path for path in area.iterdir() if path.suffix == ".dcm"]
    assert len(stored) == 1 and stored[0].stat().st_size > 256 << 20


def test_identifier_inflating_beyond_its_bound_and_nested_data_sets_end_nothing(tmp_path: Path) -> None:
    """At ``-v`` (where identifiers are printed): a deflated C-FIND identifier that inflates past the
    identifiers' 16 MiB bound, with sequences nested 2,000 deep behind that, and a C-STORE of a SOP class
    that is no storage class whose data set nests 2,000 deep before its UIDs, get failure statuses; the
    association and its worker go on."""
    area = tmp_path / "area"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    padding = struct.pack("<HH2sHL", 0x0009, 0x1001, b"OB", 0, 1 << 24)
    bomb = (compressor.compress(_STUDY_QUERY + padding) + compressor.compress(bytes(1 << 24))
            + compressor.compress(nested_sequences(2000)) + compressor.flush())
    dataset = instance(BRANCH, 14, 1, PixelData=None)
    deep = nested_sequences(2000, tag=0x00080006) + dataset_bytes(dataset)
    with Server(tmp_path, simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}), "-v", "+xd") as server, \
            RawPeer(server.port, timeout=30) as peer:
        contexts = peer.establish(associate_rq(contexts={FIND_CONTEXT: uids.STUDY_ROOT_FIND, 1: uids.VERIFICATION,
                                                         CT_CONTEXT: CTImageStorage},
                                               transfer_syntaxes=(uids.DEFLATED_EXPLICIT_VR_LE, uids.EXPLICIT_VR_LE)))
        assert contexts[FIND_CONTEXT] == uids.DEFLATED_EXPLICIT_VR_LE
        peer.send_message(FIND_CONTEXT, _find(), bomb)
        assert peer.final_response()[0]["Status"] == CANNOT_UNDERSTAND
        assert peer.echo_status() == SUCCESS
        if contexts[CT_CONTEXT] == uids.DEFLATED_EXPLICIT_VR_LE:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            deep = compressor.compress(deep) + compressor.flush()
        peer.send_message(CT_CONTEXT, store_request(dataset, AffectedSOPClassUID="1.2.3"), deep)
        assert peer.final_response()[0]["Status"] == CANNOT_UNDERSTAND
        assert peer.echo_status() == SUCCESS
    assert "identifier inflates to more than 16777216 bytes" in server.log
